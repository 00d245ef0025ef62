"""What happens when a MonteCarloJob is deleted: its workers stop first, then its blocks and live
keys go, so that no late block outlives the job. The worker Job itself would also go with its
owner reference; deleting it here only makes the stop prompt."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from . import naming
from .builders import JobRef
from .connections import ConnectionRegistry
from .kube import KubeApi, SecretProblem

log = logging.getLogger(__name__)

FINISHED_POD_PHASES = ("Succeeded", "Failed")


async def forget_job(
    kube: KubeApi,
    connections: ConnectionRegistry,
    ref: JobRef,
    tuning_name: str,
    tuning_spec: Mapping[str, Any] | None,
    worker_job: str = "",
) -> None:
    try:
        services = await connections.for_tuning(ref.namespace, tuning_name, tuning_spec)
    except SecretProblem as exc:
        log.warning("job %s/%s deleted; its blocks stay behind: %s", ref.namespace, ref.name, exc)
        return
    await services.request_stop(ref.uid, 0)
    await kube.delete_job(ref.namespace, worker_job or naming.worker_job_name(ref.name))
    pods = await kube.list_pods(ref.namespace, f"{naming.JOB_LABEL}={ref.name[:63]}")
    live = [p for p in pods if (p.get("status") or {}).get("phase") not in FINISHED_POD_PHASES]
    if live:
        raise kopf.TemporaryError(f"waiting for {len(live)} worker pod(s) to stop", delay=2)
    await services.forget_job(ref.uid)
