"""Names, labels and constants shared by everything the operator creates."""

from __future__ import annotations

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


def worker_job_name(job_name: str) -> str:
    """The worker Job's name is derived from the MonteCarloJob's, so a retry never makes a twin."""
    # Job names must leave room for the pod suffixes the Job controller appends (63 - 11).
    return f"{job_name[:44]}-workers"


def connection_secret_name(job_name: str) -> str:
    """The copy of the operator's default connection a job's worker pods read (namespaces without
    Secrets of their own): Secret references cannot cross namespaces."""
    return f"{job_name}-connection"


def child_labels(job_name: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, JOB_LABEL: job_name[:63]}
