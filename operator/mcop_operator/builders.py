"""Pure functions that build the objects the operator creates. Submitting them is kube.py's job."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from .naming import (
    API_VERSION,
    JOB_KIND,
    KUEUE_QUEUE_LABEL,
    WORKER_CONTAINER,
    child_labels,
    connection_secret_name,
    worker_job_name,
)
from .placement import apply_template, merge_templates
from .tuning import SecretKeyRef, Tuning

WORKER_UID = 10001


@dataclasses.dataclass(frozen=True)
class JobRef:
    name: str
    namespace: str
    uid: str


def owner_reference(job: JobRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": JOB_KIND,
        "name": job.name,
        "uid": job.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def restricted_pod_security() -> dict[str, Any]:
    """Pod-level settings of the Pod Security Standards' "restricted" profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "runAsGroup": WORKER_UID,
        "fsGroup": WORKER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def worker_env(
    job: JobRef, spec: Mapping[str, Any], spec_hash: str, tuning: Tuning
) -> list[dict[str, Any]]:
    """Everything ``mcop worker`` reads; credentials only ever as Secret references."""
    plain = {
        "MCOP_JOB_UID": job.uid,
        "MCOP_JOB_NAMESPACE": job.namespace,
        "MCOP_JOB_NAME": job.name,
        # Placement is the pods' business, not the engine's.
        "MCOP_SPEC": json.dumps(
            {k: v for k, v in spec.items() if k != "workerTemplate"},
            sort_keys=True,
            separators=(",", ":"),
        ),
        "MCOP_SPEC_HASH": spec_hash,
        "MCOP_SHARDS": str(spec.get("shards", 1)),
        # The root filesystem is read-only: numba and Python caches go to the /tmp volume.
        "NUMBA_CACHE_DIR": "/tmp/numba-cache",
        "PYTHONDONTWRITEBYTECODE": "1",
        **tuning.worker_env(),
    }
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
    env.append(
        _secret_env("MCOP_REDIS_URL", tuning.redis.url_secret.name, tuning.redis.url_secret.key)
    )
    env.append(
        _secret_env(
            "MCOP_POSTGRES_DSN", tuning.postgres.dsn_secret.name, tuning.postgres.dsn_secret.key
        )
    )
    return env


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def build_connection_secret(job: JobRef, values: Mapping[str, str]) -> dict[str, Any]:
    """The operator's default connection, copied for one job's worker pods (owned by the job, so
    it goes with it)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": connection_secret_name(job.name),
            "namespace": job.namespace,
            "labels": child_labels(job.name),
            "ownerReferences": [owner_reference(job)],
        },
        "stringData": dict(values),
    }


def on_connection_secret(tuning: Tuning, job: JobRef) -> Tuning:
    """``tuning`` with its Secret references pointing at the job's copy of the connection."""
    name = connection_secret_name(job.name)
    return dataclasses.replace(
        tuning,
        redis=dataclasses.replace(tuning.redis, url_secret=SecretKeyRef(name, "redis-url")),
        postgres=dataclasses.replace(
            tuning.postgres, dsn_secret=SecretKeyRef(name, "postgres-dsn")
        ),
    )


def build_worker_job(
    job: JobRef,
    spec: Mapping[str, Any],
    spec_hash: str,
    tuning: Tuning,
    priority_class: str,
    image: str,
    image_pull_policy: str = "IfNotPresent",
    shard_retries: int = 3,
) -> dict[str, Any]:
    """One Indexed Job: completion index i is shard i of ``spec.shards``."""
    shards = int(spec.get("shards", 1))
    labels = child_labels(job.name)
    timeout = spec.get("timeoutSeconds") or tuning.workers.job_timeout_seconds
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": ["mcop", "worker"],
        "env": worker_env(job, spec, spec_hash, tuning),
        "securityContext": restricted_container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if spec.get("resources"):
        container["resources"] = dict(spec["resources"])
    pod_template: dict[str, Any] = {
        "metadata": {"labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "priorityClassName": priority_class,
            # Workers never call the Kubernetes API: no token in their pods.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": restricted_pod_security(),
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
            "terminationGracePeriodSeconds": 10,
        },
    }
    placement = merge_templates(tuning.workers.template, spec.get("workerTemplate"))
    apply_template(pod_template, placement, labels)
    job_labels = dict(labels)
    queue_name = spec.get("queueName")
    if queue_name:  # Kueue admits it: created suspended, Kueue unsuspends it
        job_labels[KUEUE_QUEUE_LABEL] = str(queue_name)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": worker_job_name(job.name),
            "namespace": job.namespace,
            "labels": job_labels,
            "ownerReferences": [owner_reference(job)],
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": shards,
            "parallelism": shards,
            "backoffLimitPerIndex": shard_retries,
            "maxFailedIndexes": 0,
            "activeDeadlineSeconds": int(timeout),
            "ttlSecondsAfterFinished": int(spec.get("ttlSecondsAfterFinished", 86400)),
            "suspend": bool(spec.get("suspend", False) or queue_name),
            "template": pod_template,
        },
    }
