"""Where worker pods run: a job's ``spec.workerTemplate`` over its PerfTuning's
``spec.workers.template``, then onto the worker Job's pod template. Pure.

The merge, field by field: a field the job gives replaces the PerfTuning's field of the same name
whole (nodeSelector, tolerations, affinity, topologySpreadConstraints, serviceAccountName,
imagePullSecrets: a job that lists one toleration means exactly that one); labels and annotations
are merged key by key, the job's value winning. The operator's own labels always win over both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Fields copied onto the pod spec as they are (their schema in the CRDs is Kubernetes' own).
POD_SPEC_FIELDS = (
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "serviceAccountName",
    "imagePullSecrets",
)
MERGED_MAPS = ("labels", "annotations")


def merge_templates(
    default: Mapping[str, Any] | None, job: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The template a job's pods get: ``job`` over ``default``, as documented above."""
    default, job = default or {}, job or {}
    merged: dict[str, Any] = {}
    for field in POD_SPEC_FIELDS:
        if field in job:
            merged[field] = job[field]
        elif field in default:
            merged[field] = default[field]
    for field in MERGED_MAPS:
        both = {**(default.get(field) or {}), **(job.get(field) or {})}
        if both:
            merged[field] = both
    return merged


def apply_template(
    pod_template: dict[str, Any], template: Mapping[str, Any], own_labels: Mapping[str, str]
) -> dict[str, Any]:
    """``pod_template`` (metadata and spec of a Job's pods) with ``template`` applied, in place."""
    metadata = pod_template.setdefault("metadata", {})
    spec = pod_template.setdefault("spec", {})
    for field in POD_SPEC_FIELDS:
        if field in template:
            spec[field] = template[field]
    if template.get("labels"):
        metadata["labels"] = {**template["labels"], **own_labels}
    if template.get("annotations"):
        metadata["annotations"] = dict(template["annotations"])
    return pod_template
