"""Names, labels and constants shared by everything the operator creates."""

from __future__ import annotations

import hashlib

GROUP = "montecarlo.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
JOB_PLURAL = "montecarlojobs"
TUNING_PLURAL = "perftunings"
JOB_KIND = "MonteCarloJob"
TUNING_KIND = "PerfTuning"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "montecarlo-operator"
JOB_LABEL = "montecarlo.io/job"

WORKER_CONTAINER = "worker"
# spec.queueName: the label by which Kueue's Job integration finds a Job's LocalQueue.
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


# Job names must leave room for the pod suffixes the Job controller appends (63 - 11); the CRD
# allows MonteCarloJob names of that length too.
MAX_WORKER_JOB_NAME = 52
_WORKERS = "-workers"


def worker_job_name(job_name: str) -> str:
    """The worker Job's name is derived from the MonteCarloJob's, so a retry never makes a twin:
    `<name>-workers`, or, for names too long for that, a prefix and 8 hex digits of the name's
    SHA-256 (two long names sharing their first characters get different Jobs)."""
    if len(job_name) + len(_WORKERS) <= MAX_WORKER_JOB_NAME:
        return f"{job_name}{_WORKERS}"
    digest = hashlib.sha256(job_name.encode()).hexdigest()[:8]
    head = job_name[: MAX_WORKER_JOB_NAME - len(_WORKERS) - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}{_WORKERS}"


def connection_secret_name(job_name: str) -> str:
    """The copy of the operator's default connection a job's worker pods read (namespaces without
    Secrets of their own): Secret references cannot cross namespaces."""
    return f"{job_name}-connection"


def child_labels(job_name: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, JOB_LABEL: job_name[:63]}
