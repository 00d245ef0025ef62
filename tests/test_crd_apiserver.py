"""The CRDs in the real kube-apiserver: the good and bad manifests of test_validation.py, applied
with `kubectl apply` (strict field validation, as users run it). Every bad one must be refused at
the same field with the same reason as `mcop run` refuses it, and no rule may fail to evaluate."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bad_manifests import (
    ASIAN_SPEC_EXAMPLE,
    BAD_JOBS,
    BAD_TUNINGS,
    BASKET,
    GOOD_JOBS,
    GOOD_TUNINGS,
    BadCase,
    changed,
)
from mcop_worker.model import validation

pytestmark = pytest.mark.cluster

# Words the API server uses when a CEL rule cannot be compiled or evaluated (an unguarded field,
# a type mismatch, a blown cost budget): none may ever show up.
RULE_FAILURES = ("evaluating rule", "no such key", "no matching overload", "cost budget", "compil")


@pytest.fixture(scope="module")
def crd_namespace(kube_cluster: Any) -> Iterator[str]:
    """One namespace for the whole table (custom resources need no ServiceAccount)."""
    kube_cluster.install_crds()
    name = f"t-crds-{uuid.uuid4().hex[:6]}"
    rest = kube_cluster.rest()
    rest.create("/api/v1/namespaces", {"metadata": {"name": name}})
    try:
        yield name
    finally:
        rest.delete(f"/api/v1/namespaces/{name}", {"propagationPolicy": "Background"})


def _apply(cluster: Any, namespace: str, doc: dict[str, Any]) -> Any:
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc), check=False)


def _assert_refused(cluster: Any, namespace: str, case: BadCase) -> None:
    case_id, doc, field, fragment = case
    result = _apply(cluster, namespace, doc)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"{case_id}: the API server accepted it:\n{output}"
    # One error per line ("* field: ...") or after "is invalid: "; the field, then the reason.
    segments = output.replace("is invalid: ", "\n").replace("\n* ", "\n").splitlines()
    named = [s for s in segments if f"{field}:" in s or f'"{field}"' in s]
    assert any(fragment in s for s in named), (
        f"{case_id}: expected {field!r} with {fragment!r}, the API server said:\n{output}"
    )
    assert not any(word in output for word in RULE_FAILURES), output
    # mcop run says it in the same words.
    local = [e for e in validation.manifest_errors(doc, doc["kind"]) if e.field == field]
    assert local and local[0].message in output, (
        f"{case_id}: mcop run says {local[0] if local else None}, the API server:\n{output}"
    )


def _get(cluster: Any, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "-n", namespace, kind, name, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


@pytest.mark.parametrize("case", BAD_JOBS, ids=[c[0] for c in BAD_JOBS])
def test_bad_jobs_are_refused_by_the_api_server(
    kube_cluster: Any, crd_namespace: str, case: BadCase
) -> None:
    _assert_refused(kube_cluster, crd_namespace, case)


@pytest.mark.parametrize("case", BAD_TUNINGS, ids=[c[0] for c in BAD_TUNINGS])
def test_bad_tunings_are_refused_by_the_api_server(
    kube_cluster: Any, crd_namespace: str, case: BadCase
) -> None:
    _assert_refused(kube_cluster, crd_namespace, case)


@pytest.mark.parametrize("doc", GOOD_JOBS + GOOD_TUNINGS, ids=lambda d: d["metadata"]["name"])
def test_good_manifests_get_the_same_defaults_as_mcop_run(
    kube_cluster: Any, crd_namespace: str, doc: dict[str, Any]
) -> None:
    result = _apply(kube_cluster, crd_namespace, doc)
    assert result.returncode == 0, result.stdout + result.stderr
    stored = _get(kube_cluster, crd_namespace, doc["kind"].lower(), doc["metadata"]["name"])
    expected = validation.validate(doc)
    assert stored["spec"] == expected["spec"]  # 100 == 100.0: the numbers, not their JSON type


def test_immutable_fields_are_refused_and_operational_ones_change(
    kube_cluster: Any, crd_namespace: str
) -> None:
    doc = json.loads(json.dumps(ASIAN_SPEC_EXAMPLE))
    doc["metadata"]["name"] = "immutable"
    assert _apply(kube_cluster, crd_namespace, doc).returncode == 0
    refused = {
        "model": {"model": {"spot": 101.0}},
        "instrument": {"instrument": {"steps": 12}},
        "paths": {"paths": 20_000_000},
        "seed": {"seed": 43},
        "varianceReduction": {"varianceReduction": {"antithetic": False}},
        "targetStdErr": {"targetStdErr": None},
        "shards": {"shards": 8},
        "priority": {"priority": "critical"},
        "priorityClassName": {"priorityClassName": "other-class"},
        "resources": {"resources": {"requests": {"cpu": "2"}}},
        "workerTemplate": {"workerTemplate": {"nodeSelector": {"pool": "other"}}},
        "queueName": {"queueName": "batch"},
        "sampler": {"sampler": {"type": "sobol", "randomizations": 32}},
        "greeks": {"greeks": ["delta"]},
    }
    for field, patch in refused.items():
        result = kube_cluster.kubectl(
            "patch",
            "-n",
            crd_namespace,
            "montecarlojob",
            "immutable",
            "--type",
            "merge",
            "-p",
            json.dumps({"spec": patch}),
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"{field} could be changed"
        assert f"spec.{field}:" in output and "create a new MonteCarloJob" in output, output
    allowed = {"suspend": True, "timeoutSeconds": 60, "ttlSecondsAfterFinished": 0, "cache": False}
    kube_cluster.kubectl(
        "patch",
        "-n",
        crd_namespace,
        "montecarlojob",
        "immutable",
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": allowed}),
    )
    spec = _get(kube_cluster, crd_namespace, "montecarlojob", "immutable")["spec"]
    assert {k: spec[k] for k in allowed} == allowed


def test_kubectl_explain_and_columns(kube_cluster: Any, crd_namespace: str) -> None:
    explained = kube_cluster.kubectl("explain", "montecarlojob.spec.instrument").stdout
    assert "european, asian (arithmetic average" in explained
    assert "confidenceLevels" in explained and "var only" in explained
    explained = kube_cluster.kubectl("explain", "perftuning.spec.postgres.maxOverflow").stdout
    assert "poolSize + maxOverflow" in explained

    doc = json.loads(json.dumps(ASIAN_SPEC_EXAMPLE))
    doc["metadata"]["name"] = "columns"
    assert _apply(kube_cluster, crd_namespace, doc).returncode == 0
    header = kube_cluster.kubectl("get", "-n", crd_namespace, "mcj").stdout.splitlines()[0]
    assert header.split() == ["NAME", "PHASE", "PROGRESS", "ESTIMATE", "STDERR", "PRIORITY", "AGE"]
    wide = kube_cluster.kubectl("get", "-n", crd_namespace, "mcj", "-o", "wide").stdout
    assert wide.splitlines()[0].split()[-3:] == ["PATHS", "SHARDS", "ETA"]
    assert "columns" in kube_cluster.kubectl("get", "-n", crd_namespace, "montecarlo").stdout

    tuning = json.loads(json.dumps(GOOD_TUNINGS[1]))
    tuning["metadata"]["name"] = "columns"
    assert _apply(kube_cluster, crd_namespace, tuning).returncode == 0
    header = kube_cluster.kubectl("get", "-n", crd_namespace, "ptune").stdout.splitlines()[0]
    assert header.split() == [
        "NAME",
        "PHASE",
        "HIT-RATE",
        "DB-CONNECTIONS",
        "RUNNING",
        "QUEUED",
        "AGE",
    ]


def test_the_largest_allowed_portfolio_fits_the_cel_cost_budget(
    kube_cluster: Any, crd_namespace: str
) -> None:
    n = 64
    assets = [{"name": f"A{i}", "spot": 100.0, "volatility": 0.2} for i in range(n)]
    matrix = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    doc = changed(BASKET, "big-basket", spec__model__assets=assets, spec__model__correlation=matrix)
    result = _apply(kube_cluster, crd_namespace, doc)
    assert result.returncode == 0, result.stdout + result.stderr
    matrix[5][7] = 0.1
    asymmetric = changed(doc, "big-asymmetric", spec__model__correlation=matrix)
    _assert_refused(
        kube_cluster,
        crd_namespace,
        ("big-asymmetric", asymmetric, "spec.model.correlation", "must be symmetric"),
    )


def test_released_finalizers_let_a_namespace_without_operator_terminate(
    kube_cluster: Any, namespace: str
) -> None:
    """What the `namespace` fixture does after each test (mcop_devcluster.project_resources):
    objects finalized by an operator that is gone no longer hold their namespace."""
    from mcop_devcluster.project_resources import release_finalizers

    kube_cluster.install_crds()
    rest = kube_cluster.rest()
    finalizer = {"finalizers": ["montecarlo.io/finalizer"]}
    for doc, plural in ((GOOD_JOBS[0], "montecarlojobs"), (GOOD_TUNINGS[0], "perftunings")):
        held = {**doc, "metadata": {**doc["metadata"], **finalizer}}
        rest.create(f"/apis/montecarlo.io/v1alpha1/namespaces/{namespace}/{plural}", held)
    rest.delete(f"/api/v1/namespaces/{namespace}", {"propagationPolicy": "Background"})
    kube_cluster.wait_for(
        lambda: (
            "montecarlo.io/finalizer"
            in json.dumps(rest.get(f"/api/v1/namespaces/{namespace}").get("status", {}))
        ),
        timeout=60,
        what="the namespace held by the finalizers",
    )
    released = release_finalizers(rest, namespace)
    assert sorted(released) == sorted(
        [
            f"montecarlojobs/{GOOD_JOBS[0]['metadata']['name']}",
            f"perftunings/{GOOD_TUNINGS[0]['metadata']['name']}",
        ]
    )
    kube_cluster.wait_for(
        lambda: rest.get_or_none(f"/api/v1/namespaces/{namespace}") is None,
        timeout=60,
        what="the namespace gone",
    )
