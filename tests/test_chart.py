"""The Helm chart: lint, rendering over a matrix of values, the values schema, the CRD copies, and
(marked cluster) dry runs, install, a job run to Succeeded, RBAC, upgrade and uninstall against a
real control plane of its own (fresh, so that Helm itself installs the CRDs and PriorityClasses)."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from chart_harness import (
    CHART,
    RBAC_DOC,
    RELEASE,
    ROOT,
    by_kind,
    documented_rules,
    is_hook,
    one,
    parse_can_i,
    render,
    rendered_rules,
    run_helm,
    set_args,
    template,
    value_keys,
)
from mcop_devcluster.binaries import MissingBinary
from mcop_devcluster.controlplane import ControlPlane
from mcop_devcluster.ports import free_port
from mcop_devcluster.pytest_cluster import KubeCluster
from mcop_devcluster.services import MissingProgram
from operator_harness import JobsHarness, secret_manifest, wait_for

FULLNAME = f"{RELEASE}-montecarlo-operator"
PROJECT_IMAGE = "montecarlo-operator:0.1.0"
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)

MATRIX: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-services": {"redis.enabled": False, "postgresql.enabled": False},
    "watch-namespaces": {"watchNamespaces": ["desk-a", "desk-b"]},
    "no-priority-classes": {"priorityClasses.create": False},
    "lean": {
        "perfTuning.create": False,
        "metrics.service.enabled": False,
        "metrics.podAnnotations": False,
        "serviceAccount.create": False,
        "serviceAccount.name": "mcop-operator",
        "postgresql.persistence.enabled": False,
    },
    "customised": {
        "image.repository": "registry.example/mc/montecarlo-operator",
        "image.digest": "sha256:" + "ab" * 32,
        "worker.image": "registry.example/mc/worker:1",
        "worker.imagePullPolicy": "Always",
        "operator.verbose": True,
        "operator.extraEnv": [{"name": "MCOP_LOG_LEVEL", "value": "DEBUG"}],
        "perfTuning.name": "desk",
        "perfTuning.spec": {"workers": {"maxConcurrentJobs": 3}, "redis": {"ttlSeconds": 60}},
        "redis.secret": {"name": "shared-redis", "key": "connection"},
        "postgresql.secret": {"name": "shared-pg", "key": "uri"},
    },
}


# -- pure: lint, render, schema ------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(MATRIX))
def test_helm_lint_strict(variant: str) -> None:
    out = run_helm("lint", "--strict", str(CHART), *set_args(MATRIX[variant]))
    assert "0 chart(s) failed" in out.stdout


def _pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


def _assert_restricted(where: str, pod: Mapping[str, Any]) -> None:
    """The Pod Security Standards' "restricted" profile, field by field."""
    ctx = pod["securityContext"]
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0, where
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, where
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), (where, key)
    for volume in pod.get("volumes", []):
        assert "hostPath" not in volume, where
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["capabilities"] == {"drop": ["ALL"]}, where
        assert not sc.get("privileged"), where


@pytest.mark.parametrize("variant", sorted(MATRIX))
def test_every_variant_renders_labelled_restricted_least_privilege_objects(variant: str) -> None:
    values = MATRIX[variant]
    docs = render(values)
    for doc in docs:
        labels = doc["metadata"].get("labels") or {}
        missing = [k for k in STANDARD_LABELS if k not in labels]
        assert not missing, f"{doc['kind']}/{doc['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
    for where, pod in _pod_specs(docs):
        _assert_restricted(where, pod)
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)

    deployment = one(docs, "Deployment", FULLNAME)
    # Two replicas, one leading: a rolling update keeps one running.
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
    (container,) = pod["containers"]
    assert "command" not in container, "the image's ENTRYPOINT (mcop) runs the operator"
    assert container["args"][0] == "operator"
    liveness = container["livenessProbe"]["httpGet"]
    assert liveness == {"path": "/healthz", "port": "healthz"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "healthz": 8081}
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["args"]
    assert {
        "--leader-elect",
        "--leader-election-namespace=mcop",
        f"--leader-election-id={FULLNAME}",
    } <= set(container["args"])
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pdb = one(docs, "PodDisruptionBudget", FULLNAME)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MCOP_METRICS_PORT"] == "8080"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}} in pod["volumes"]
    watched = values.get("watchNamespaces", [])
    assert [a for a in container["args"] if a.startswith("--namespace")] == [
        f"--namespace={ns}" for ns in watched
    ]
    assert pod["serviceAccountName"] == values.get("serviceAccount.name", FULLNAME)


def test_default_render_has_every_part_of_the_install() -> None:
    docs = render()
    kinds = sorted({d["kind"] for d in docs if not is_hook(d)})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PerfTuning",
        "PodDisruptionBudget",
        "PriorityClass",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
    container = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MCOP_WORKER_IMAGE"] == PROJECT_IMAGE
    assert container["image"] == PROJECT_IMAGE
    service = one(docs, "Service", f"{FULLNAME}-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "operator"
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": "mcop"}
    ]
    (lease_role,) = [r for r in by_kind(docs, "Role") if not is_hook(r)]
    assert lease_role["metadata"] == {**lease_role["metadata"], "namespace": "mcop"}
    assert rendered_rules(docs, "Role") == documented_rules("cluster-wide", home=True) - (
        documented_rules("cluster-wide")
    )


def test_one_replica_without_leader_election_and_never_more() -> None:
    docs = render({"operator.replicas": 1, "operator.leaderElection.enabled": False})
    deployment = one(docs, "Deployment", FULLNAME)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "affinity" not in deployment["spec"]["template"]["spec"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--leader-elect" not in container["args"]
    assert not by_kind(docs, "PodDisruptionBudget")
    assert not [r for r in by_kind(docs, "Role") if not is_hook(r)]
    refused = template({"operator.leaderElection.enabled": False}, check=False)
    assert refused.returncode != 0
    assert "operator.replicas > 1 needs operator.leaderElection.enabled" in refused.stderr


def test_priority_classes_are_the_files_own_and_switchable() -> None:
    source = [
        d for d in yaml.safe_load_all((CHART / "files" / "priorityclasses.yaml").read_text()) if d
    ]
    rendered = by_kind(render(), "PriorityClass")
    assert [(p["metadata"]["name"], p["value"]) for p in rendered] == [
        (p["metadata"]["name"], p["value"]) for p in source
    ]
    assert [p["metadata"]["name"] for p in rendered] == [
        "montecarlo-low",
        "montecarlo-normal",
        "montecarlo-high",
        "montecarlo-critical",
    ]
    assert [p["value"] for p in rendered] == sorted(p["value"] for p in rendered)
    for pc, src in zip(rendered, source, strict=True):
        assert {k: v for k, v in pc.items() if k != "metadata"} == {
            k: v for k, v in src.items() if k != "metadata"
        }
    assert not by_kind(render({"priorityClasses.create": False}), "PriorityClass")


def test_bundled_servers_get_generated_credentials_and_the_perftuning_names_them() -> None:
    docs = render()
    redis = one(docs, "Secret", "montecarlo-redis")["stringData"]
    postgres = one(docs, "Secret", "montecarlo-postgres")["stringData"]
    for data in (redis, postgres):
        assert re.fullmatch(r"[A-Za-z0-9]{32}", data["password"])
    assert redis["password"] != postgres["password"]
    assert redis["url"] == f"redis://:{redis['password']}@{FULLNAME}-redis.mcop.svc:6379/0"
    assert f"requirepass {redis['password']}" in redis["redis.conf"]
    assert postgres["dsn"] == (
        f"postgresql://montecarlo:{postgres['password']}@{FULLNAME}-postgresql.mcop.svc:5432/"
        "montecarlo"
    )
    tuning = one(docs, "PerfTuning", "default")
    assert tuning["metadata"]["namespace"] == "mcop"
    assert tuning["spec"] == {
        "redis": {"urlSecretRef": {"name": "montecarlo-redis", "key": "url"}},
        "postgres": {"dsnSecretRef": {"name": "montecarlo-postgres", "key": "dsn"}},
    }
    statefulset = one(docs, "StatefulSet", f"{FULLNAME}-postgresql")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    # Claim templates never change after creation: no version in their labels.
    assert "app.kubernetes.io/version" not in claim["metadata"]["labels"]
    # Passwords never on a command line.
    for _, pod in _pod_specs(docs):
        for container in pod["containers"]:
            argv = " ".join(container.get("command", []) + container.get("args", []))
            assert redis["password"] not in argv and postgres["password"] not in argv


def test_external_services_come_from_the_named_secrets() -> None:
    docs = render(MATRIX["external-services"])
    assert not by_kind(docs, "Secret") and not by_kind(docs, "StatefulSet")
    assert [d["metadata"]["name"] for d in by_kind(docs, "Deployment")] == [FULLNAME]
    assert [d["metadata"]["name"] for d in by_kind(docs, "Service")] == [f"{FULLNAME}-metrics"]
    custom = render({**MATRIX["external-services"], **MATRIX["customised"]})
    tuning = one(custom, "PerfTuning", "desk")
    assert tuning["spec"] == {
        "redis": {"urlSecretRef": {"name": "shared-redis", "key": "connection"}, "ttlSeconds": 60},
        "postgres": {"dsnSecretRef": {"name": "shared-pg", "key": "uri"}},
        "workers": {"maxConcurrentJobs": 3},
    }


def test_worker_placement_values_feed_the_default_perftuning() -> None:
    toleration = {"key": "spot", "operator": "Exists", "effect": "NoSchedule"}
    docs = render(
        {
            "imagePullSecrets": [{"name": "operator-pull"}],
            "worker.nodeSelector": {"pool": "compute"},
            "worker.tolerations": [toleration],
            "worker.serviceAccountName": "mc-workers",
            "worker.podLabels": {"team": "rates"},
            "perfTuning.spec": {
                "workers": {"maxConcurrentJobs": 3, "template": {"labels": {"a": "b"}}}
            },
        }
    )
    workers = one(docs, "PerfTuning", "default")["spec"]["workers"]
    assert workers == {
        "maxConcurrentJobs": 3,
        "template": {
            "imagePullSecrets": [{"name": "operator-pull"}],  # the operator's: the same image
            "nodeSelector": {"pool": "compute"},
            "tolerations": [toleration],
            "serviceAccountName": "mc-workers",
            "labels": {"team": "rates", "a": "b"},
        },
    }
    own = render({"imagePullSecrets": [{"name": "op"}], "worker.imagePullSecrets": [{"name": "w"}]})
    template = one(own, "PerfTuning", "default")["spec"]["workers"]["template"]
    assert template == {"imagePullSecrets": [{"name": "w"}]}
    assert "workers" not in one(render(), "PerfTuning", "default")["spec"]


def _operator_env(docs: list[Any]) -> dict[str, Any]:
    container = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_the_default_connection_is_the_charts_secrets_and_switchable_off() -> None:
    env = _operator_env(render(MATRIX["customised"]))
    assert env["MCOP_DEFAULT_CONNECTION_NAMESPACE"] == "mcop"
    assert env["MCOP_DEFAULT_REDIS_SECRET"] == "shared-redis/connection"
    assert env["MCOP_DEFAULT_POSTGRES_SECRET"] == "shared-pg/uri"
    assert ("secrets", "create") in rendered_rules(render(), "ClusterRole")
    off = render({"defaultConnection.enabled": False})
    assert "MCOP_DEFAULT_CONNECTION_NAMESPACE" not in _operator_env(off)
    assert ("secrets", "create") not in rendered_rules(off, "ClusterRole")
    # Watching other namespaces only: the operator may not read its own namespace's Secrets.
    assert "MCOP_DEFAULT_CONNECTION_NAMESPACE" not in _operator_env(
        render(MATRIX["watch-namespaces"])
    )
    watched = render({"watchNamespaces": ["mcop", "desk-a"]})
    assert _operator_env(watched)["MCOP_DEFAULT_CONNECTION_NAMESPACE"] == "mcop"


def test_watch_namespaces_get_roles_and_the_cluster_role_keeps_cluster_reads_only() -> None:
    docs = render(MATRIX["watch-namespaces"])
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles if not is_hook(r)) == [
        "desk-a",
        "desk-b",
        "mcop",  # the leader-election Role, in the release's namespace
    ]
    bindings = [b for b in by_kind(docs, "RoleBinding") if not is_hook(b)]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": FULLNAME, "namespace": "mcop"}
        ]
    assert rendered_rules(docs, "Role") == documented_rules(
        "namespaced", home=True
    ) - documented_rules("namespaced", watched=False)
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert cluster_role["metadata"]["name"] == f"{FULLNAME}-cluster"
    assert rendered_rules(docs, "ClusterRole") == documented_rules("namespaced", watched=False)


def test_cluster_role_is_the_documented_allow_list() -> None:
    assert rendered_rules(render(), "ClusterRole") == documented_rules("cluster-wide")


def test_the_customised_variant_uses_its_images() -> None:
    docs = render(MATRIX["customised"])
    container = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    image = "registry.example/mc/montecarlo-operator@sha256:" + "ab" * 32
    assert container["image"] == image
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MCOP_WORKER_IMAGE"] == "registry.example/mc/worker:1"
    assert env["MCOP_WORKER_IMAGE_PULL_POLICY"] == "Always"
    assert env["MCOP_LOG_LEVEL"] == "DEBUG"
    assert "--verbose" in container["args"]


BAD_VALUES = [
    ({"redis.enabled": "yes"}, "/redis/enabled"),
    ({"image.pullPolicy": "Sometimes"}, "/image/pullPolicy"),
    ({"image.digest": "latest"}, "/image/digest"),
    ({"metrics.port": 70000}, "/metrics/port"),
    ({"operator.livenessProbe.port": 0}, "/operator/livenessProbe/port"),
    ({"operator.reconcileIntervalSeconds": 0}, "/operator/reconcileIntervalSeconds"),
    ({"operator.shardRetries": -1}, "/operator/shardRetries"),
    ({"operator.listenAddress": "example.com"}, "/operator/listenAddress"),
    ({"watchNamespaces": ["Not_A_Namespace"]}, "/watchNamespaces/0"),
    ({"watchNamespaces": ["desk", "desk"]}, "/watchNamespaces"),
    ({"watchNamespaces": "desk"}, "/watchNamespaces"),
    ({"redis.secret.name": ""}, "/redis/secret/name"),
    ({"postgresql.secret.key": "bad key!"}, "/postgresql/secret/key"),
    ({"postgresql.persistence.size": "lots"}, "/postgresql/persistence/size"),
    ({"perfTuning.spec.redis.urlSecretRef": {"name": "x", "key": "y"}}, "/perfTuning/spec/redis"),
    ({"perfTuning.spec.cache": True}, "/perfTuning/spec"),
    ({"metrics.service.type": "Ingress"}, "/metrics/service/type"),
    ({"operator.resources": {"requests": {"cpu": "a lot"}}}, "/operator/resources/requests/cpu"),
    ({"replicas": 2}, "additional properties 'replicas' not allowed"),
    ({"worker.tolerations": {"key": "spot"}}, "/worker/tolerations"),
    ({"worker.serviceAccountName": "Not A Name"}, "/worker/serviceAccountName"),
    ({"operator.replicas": 0}, "/operator/replicas"),
    ({"operator.leaderElection.leaseDurationSeconds": 0}, "/operator/leaderElection"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_refuses_bad_values_naming_the_field(values: dict[str, Any], where: str) -> None:
    result = template(values, check=False)
    assert result.returncode != 0, f"accepted {values}"
    assert "don't meet the specifications of the schema" in result.stderr, result.stderr
    assert where in result.stderr, result.stderr


def test_required_service_account_name_when_not_created() -> None:
    result = template({"serviceAccount.create": False}, check=False)
    assert result.returncode != 0
    assert "serviceAccount.name is required" in result.stderr


def test_chart_crds_are_the_top_level_crds() -> None:
    top = {p.name: p.read_bytes() for p in sorted((ROOT / "crds").glob("*.yaml"))}
    chart = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.yaml"))}
    assert top, "no CRDs in crds/"
    assert chart == top, (
        "charts/montecarlo-operator/crds/ differs from crds/ (the source of truth): "
        "cp crds/*.yaml charts/montecarlo-operator/crds/"
    )


def test_readme_values_table_lists_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.M))
    keys = set(value_keys(values))
    assert keys - documented == set(), "values missing from the chart README's table"
    assert documented - keys == set(), "the chart README documents values that do not exist"


def test_rbac_doc_names_only_rules_the_chart_renders() -> None:
    docs = render()
    assert documented_rules("cluster-wide") == rendered_rules(docs, "ClusterRole")
    assert "wildcard" in RBAC_DOC.read_text()


# -- against a control plane of this module's own ------------------------------------------------
# Every request of every ServiceAccount, without bodies: what the operator really asks for.
SERVICE_ACCOUNT_AUDIT = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: [system:serviceaccounts]
- level: None
"""


@pytest.fixture(scope="module")
def chart_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """A fresh control plane (CRDs and PriorityClasses absent: Helm installs them) whose API
    server logs the requests of ServiceAccounts (``cluster.control_plane.audit_log``)."""
    audit_log = tmp_path_factory.mktemp("audit") / "audit.log"
    try:
        plane = ControlPlane(audit_log=audit_log, audit_policy=SERVICE_ACCOUNT_AUDIT)
    except (MissingBinary, MissingProgram) as error:
        pytest.fail(str(error), pytrace=False)
    try:
        plane.start()
        yield KubeCluster(plane)
    finally:
        if os.environ.get("MCOP_KEEP_CLUSTER_DIR"):  # logs and pod outputs, as kube_cluster does
            plane.stop()
        else:
            plane.cleanup()


POD_NAME_KEY = "authentication.kubernetes.io/pod-name"  # in user.extra: tokens bound to a pod


def requests_of(
    cluster: KubeCluster,
    user: str,
    refused_before: str = "~",
    outgoing: tuple[str, str] | None = None,
) -> tuple[set[tuple[str, str]], list[str]]:
    """What `user` asked the API server for, as (resource, verb), and the requests refused before
    `refused_before` (an RFC 3339 time: the audit log's timestamps compare as text).

    `outgoing` = (pod name, since): an upgrade that narrows the RBAC applies the new rules while the
    old pod is still running with the old scope until its replacement is ready; what the API server
    refuses that pod from `since` on is the upgrade's transition, not a missing rule."""
    log = cluster.control_plane.audit_log
    assert log is not None and log.exists(), "no audit log"
    return audited_requests(log.read_text(), user, refused_before, outgoing)


def audited_requests(
    audit_log: str, user: str, refused_before: str, outgoing: tuple[str, str] | None
) -> tuple[set[tuple[str, str]], list[str]]:
    """`requests_of` on the text of an audit log."""
    used: set[tuple[str, str]] = set()
    refused: list[str] = []
    for line in audit_log.splitlines():
        event = json.loads(line)
        if event["user"]["username"] != user or "objectRef" not in event:
            continue
        ref = event["objectRef"]
        resource = ref["resource"] + (f".{ref['apiGroup']}" if ref.get("apiGroup") else "")
        resource += f"/{ref['subresource']}" if ref.get("subresource") else ""
        used.add((resource, event["verb"]))
        received = str(event.get("requestReceivedTimestamp") or "")
        if (
            event.get("responseStatus", {}).get("code") not in (401, 403)
            or received >= refused_before
        ):
            continue
        pod = event["user"].get("extra", {}).get(POD_NAME_KEY, [""])[0]
        if outgoing is not None and pod == outgoing[0] and received >= outgoing[1]:
            continue
        refused.append(f"{event['verb']} {event['requestURI']} (pod {pod or '?'})")
    return used, refused


# Granted but only used on paths these tests do not take: suspend/resume patches the worker Job,
# a shard silent for three heartbeats gets its pod deleted (tests/test_operator_jobs.py), a
# namespace without Secrets gets a copy of the default connection, a create that meets an existing
# worker Job reads it (the watch serves every other read), a standby watches the Lease (one
# replica here: tests/test_operator_ha.py runs two); the operator's own end-to-end tests take them.
RARELY_USED = {("jobs.batch", "patch"), ("pods", "delete"), ("secrets", "create"),
               ("jobs.batch", "get"), ("leases.coordination.k8s.io", "watch")}  # fmt: skip


def _rfc3339_now() -> str:
    """Now as the audit log writes its times (microseconds, UTC), so the two compare as text."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def assert_used_as_documented(
    cluster: KubeCluster,
    user: str,
    granted: set[tuple[str, str]],
    uninstalled_at: str,
    outgoing: tuple[str, str] | None = None,
) -> None:
    """Refusals count until the uninstall: Helm deletes the Roles while the operator's pod is still
    stopping, and its last requests (giving the Lease up) may then be refused by design. The same
    holds for an `outgoing` pod after an upgrade began (see `requests_of`)."""
    used, refused = requests_of(cluster, user, uninstalled_at, outgoing)
    assert not refused, refused
    assert used <= granted, f"used without being documented: {used - granted}"
    assert granted - used <= RARELY_USED, f"granted but never used: {granted - used - RARELY_USED}"


def test_audit_reading_excuses_only_the_outgoing_pod_after_the_upgrade_began() -> None:
    sa = "system:serviceaccount:ns:op"

    def event(pod: str, at: str, code: int, user: str = sa) -> str:
        return json.dumps(
            {
                "user": {"username": user, "extra": {POD_NAME_KEY: [pod]}},
                "objectRef": {"resource": "secrets", "namespace": "ns", "name": "pg"},
                "verb": "get",
                "requestURI": f"/api/v1/namespaces/ns/secrets/pg?{pod}-{at}",
                "requestReceivedTimestamp": f"2026-11-28T12:00:{at}.000000Z",
                "responseStatus": {"code": code},
            }
        )

    log = "\n".join(
        [
            event("old", "01", 200),
            event("old", "02", 403),  # before the upgrade: a missing rule
            event("old", "05", 403),  # after it began: the old pod's old scope
            event("new", "06", 403),  # the new pod refused: a missing rule
            event("old", "07", 403, user="someone-else"),
            event("new", "09", 403),  # after the uninstall
        ]
    )
    used, refused = audited_requests(
        log, sa, "2026-11-28T12:00:08Z", ("old", "2026-11-28T12:00:04Z")
    )
    assert used == {("secrets", "get")}
    assert refused == [
        "get /api/v1/namespaces/ns/secrets/pg?old-02 (pod old)",
        "get /api/v1/namespaces/ns/secrets/pg?new-06 (pod new)",
    ]
    _, without_upgrade = audited_requests(log, sa, "2026-11-28T12:00:08Z", None)
    assert len(without_upgrade) == 3


@pytest.fixture(scope="module")
def helm_env(
    chart_cluster: KubeCluster, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """helm against that cluster, its cache and configuration in a folder of the test's."""
    home = tmp_path_factory.mktemp("helm")
    return {
        **chart_cluster.env,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


RESTRICTED = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
}


def make_namespace(cluster: KubeCluster, name: str) -> str:
    """A namespace enforcing the "restricted" profile, with its default ServiceAccount."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {**RESTRICTED, "mcop-test": "true"}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    cluster.wait_for(
        lambda: cluster.kubectl("-n", name, "get", "sa", "default", check=False).returncode == 0,
        timeout=30,
        what=f"ServiceAccount {name}/default",
    )
    return name


def install_values(**more: Any) -> dict[str, Any]:
    """Values for an install here: the test's Redis and PostgreSQL (the bundled images cannot run
    without a container engine), endpoints on free loopback ports, short intervals."""
    return {
        "redis.enabled": False,
        "postgresql.enabled": False,
        # One replica (still electing itself leader): pods run as local processes here, so two
        # would share the metrics and liveness ports (tests/test_operator_ha.py runs two).
        "operator.replicas": 1,
        "operator.listenAddress": "127.0.0.1",
        "metrics.port": free_port(),
        "operator.livenessProbe.port": free_port(),
        "operator.reconcileIntervalSeconds": 0.5,
        "operator.statusIntervalSeconds": 1,
        "operator.waitingIntervalSeconds": 1,
        **more,
    }


class Release:
    """One helm release in the module's cluster; uninstalled at the end of the test."""

    def __init__(self, cluster: KubeCluster, env: dict[str, str], namespace: str) -> None:
        self.cluster = cluster
        self.env = env
        self.namespace = namespace
        self.values: dict[str, Any] = {}
        self.installed = False

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_helm(*args, "--namespace", self.namespace, env=self.env, check=check)

    def install(self, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        self.values = values
        out = self.helm(
            "install", RELEASE, str(CHART), "--wait", "--timeout", "120s", *set_args(values)
        )
        self.installed = True
        return out

    def upgrade(self, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        self.values = values
        return self.helm(
            "upgrade", RELEASE, str(CHART), "--wait", "--timeout", "120s", *set_args(values)
        )

    def uninstall(self, *extra: str) -> subprocess.CompletedProcess[str]:
        out = self.helm("uninstall", RELEASE, "--wait", "--timeout", "120s", *extra)
        self.installed = False
        return out

    def operator_pod(self) -> dict[str, Any]:
        """The operator's running pod (waits for it)."""

        def running() -> dict[str, Any] | None:
            out = self.cluster.kubectl(
                "-n",
                self.namespace,
                "get",
                "pods",
                "-o",
                "json",
                "-l",
                "app.kubernetes.io/component=operator",
            )
            pods = [
                p
                for p in json.loads(out.stdout)["items"]
                if p["status"].get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")
            ]
            return pods[0] if len(pods) == 1 else None

        pod: dict[str, Any] = self.cluster.wait_for(running, timeout=60, what="the operator pod")
        return pod

    def operator_log(self) -> str:
        out = self.cluster.kubectl(
            "-n",
            self.namespace,
            "get",
            "pods",
            "-o",
            "name",
            "-l",
            "app.kubernetes.io/component=operator",
        )
        return "".join(
            self.cluster.pod_log(self.namespace, name.removeprefix("pod/"))
            for name in out.stdout.split()
        )


class OperatorPodLog:
    """What JobsHarness needs of an operator: its log (here, the chart's operator pod)."""

    def __init__(self, release: Release) -> None:
        self.release = release

    def log(self) -> str:
        return self.release.operator_log()


@pytest.fixture
def release(
    chart_cluster: KubeCluster, helm_env: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[Release]:
    name = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower().removeprefix("test_"))[:40]
    rel = Release(chart_cluster, helm_env, make_namespace(chart_cluster, f"c-{name}".strip("-")))
    try:
        yield rel
    finally:
        if rel.installed:
            rel.helm("uninstall", RELEASE, "--wait", "--timeout", "60s", check=False)


def add_connection_secrets(
    cluster: KubeCluster, namespace: str, redis_url: str, pg_dsn: str
) -> None:
    for doc in (
        secret_manifest(namespace, "montecarlo-redis", "url", redis_url),
        secret_manifest(namespace, "montecarlo-postgres", "dsn", pg_dsn),
    ):
        cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))


def sa_permissions(
    cluster: KubeCluster, namespace: str, account: str, home: str | None = None
) -> set[tuple[str, str]]:
    """(resource, verb) the ServiceAccount `home/account` may use in `namespace`, beyond what every
    authenticated user may (a ServiceAccount bound to nothing: the namespace's default one)."""

    def can_i(user: str) -> set[tuple[str, str, str, str]]:
        out = cluster.kubectl("auth", "can-i", "--list", "-n", namespace, f"--as={user}")
        return parse_can_i(out.stdout)

    user = f"system:serviceaccount:{home or namespace}:{account}"
    extra = can_i(user) - can_i(f"system:serviceaccount:{namespace}:default")
    assert all(urls == "" and names == "" for _, urls, names, _ in extra), extra
    return {(resource, verb) for resource, _, _, verb in extra}


def http_get(url: str) -> tuple[int, str]:
    """GET on the loopback address, never through a proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return int(response.status), response.read().decode()


SMALL_JOB: dict[str, Any] = {
    "model": {"type": "gbm", "spot": 100.0, "volatility": 0.2, "rate": 0.05},
    "instrument": {"type": "european", "optionType": "call", "strike": 100.0, "maturity": 1.0},
    "paths": 200_000,
    "seed": 11,
    "shards": 2,
    "priority": "high",
}


def run_job(release: Release, namespace: str, name: str, **over: Any) -> dict[str, Any]:
    jobs = JobsHarness(release.cluster, namespace, OperatorPodLog(release))  # type: ignore[arg-type]
    jobs.create_job(name, {**SMALL_JOB, **over})
    status = jobs.wait_phase(name, "Succeeded", "Failed", timeout=150)
    assert status["phase"] == "Succeeded", status
    return status


def assert_restricted_without_warnings(
    cluster: KubeCluster, namespace: str, pod: Mapping[str, Any]
) -> None:
    """The pod as the API server stored it (defaults filled in) is admitted again, with a new
    name, by the namespace enforcing "restricted", and without a single warning."""
    copy = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod["metadata"]["name"][:50] + "-again", "namespace": namespace},
        # Without what the scheduler and the Priority admission fill in themselves.
        "spec": {
            k: v
            for k, v in pod["spec"].items()
            if k not in ("nodeName", "priority", "preemptionPolicy")
        },
    }
    out = cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(copy))
    assert "Warning" not in out.stderr and "violate" not in out.stderr, out.stderr


JSONPATH = 'jsonpath={range .items[*]}{.metadata.namespace}/{.kind}/{.metadata.name}{"\\n"}{end}'


def leftovers(cluster: KubeCluster, namespaces: list[str]) -> list[str]:
    """Every object labelled with the release, cluster-scoped or in these namespaces (events
    left out), as kind/name."""
    kinds = cluster.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    kinds = [k for k in kinds if k not in ("events", "events.events.k8s.io")]
    out = cluster.kubectl(
        "get",
        ",".join(kinds),
        "-A",
        "--ignore-not-found",
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
        "-o",
        JSONPATH,
        timeout=120,
    )
    found = []
    for line in out.stdout.split():
        namespace, kind, name = line.split("/")
        if not namespace or namespace in namespaces:
            found.append(f"{kind}/{name}")
    return sorted(found)


def namespace_objects(cluster: KubeCluster, namespace: str) -> list[str]:
    kinds = (
        "all,secrets,configmaps,serviceaccounts,roles,rolebindings,persistentvolumeclaims,"
        "perftunings,montecarlojobs"
    )
    out = cluster.kubectl("-n", namespace, "get", kinds, "-o", "name")
    return sorted(out.stdout.split())


CLEAN_NAMESPACE = ["configmap/kube-root-ca.crt", "serviceaccount/default"]
USER_SECRETS = ["secret/montecarlo-postgres", "secret/montecarlo-redis"]


def uninstall_and_check_nothing_is_left(release: Release, job_namespaces: list[str]) -> None:
    """The documented procedure: delete the jobs while the operator runs, then helm uninstall."""
    for ns in job_namespaces:
        release.cluster.kubectl("-n", ns, "delete", "mcj", "--all", "--wait", "--timeout=60s")
    release.uninstall()
    cluster = release.cluster
    namespaces = [release.namespace, *job_namespaces]
    cluster.wait_for(
        lambda: not leftovers(cluster, namespaces),
        timeout=60,
        what="no object labelled with the release",
    )
    expected = sorted(CLEAN_NAMESPACE + USER_SECRETS)
    for ns in namespaces:

        def back_as_before(ns: str = ns) -> bool:
            return namespace_objects(cluster, ns) == expected

        cluster.wait_for(back_as_before, timeout=60, what=f"namespace {ns} as before the install")
    assert not cluster.kubectl("get", "priorityclasses", "-o", "name").stdout.count("montecarlo")
    assert release.helm("list", "-q").stdout.strip() == ""
    # The CRDs stay, on purpose (deleting them deletes every job of the cluster).
    cluster.kubectl("get", "crd", "montecarlojobs.montecarlo.io", "perftunings.montecarlo.io")


@pytest.mark.cluster
def test_helm_installs_crds_and_a_cluster_wide_operator_that_runs_a_job(
    release: Release, pg_dsn: str, redis_url: str
) -> None:
    cluster, ns = release.cluster, release.namespace
    for crd in ("montecarlojobs.montecarlo.io", "perftunings.montecarlo.io"):
        cluster.kubectl("delete", "crd", crd, "--ignore-not-found", "--wait", "--timeout=60s")
    add_connection_secrets(cluster, ns, redis_url, pg_dsn)
    values = install_values()
    installed = release.install(values)
    assert "would violate" not in installed.stderr, installed.stderr

    # Helm installed the CRDs from the chart's crds/; the documented upgrade command applies.
    for path in sorted((CHART / "crds").glob("*.yaml")):
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", "-f", str(path))
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))

    pod = release.operator_pod()
    assert pod["spec"]["serviceAccountName"] == FULLNAME
    assert pod["spec"]["containers"][0]["args"][0] == "operator"
    status, _ = wait_for(
        lambda: _try_get(f"http://127.0.0.1:{values['operator.livenessProbe.port']}/healthz"),
        timeout=60,
        what="kopf's /healthz",
    )
    assert status == 200

    done = run_job(release, ns, "euro")
    assert done["priorityClassName"] == "montecarlo-high"
    assert done["result"]["paths"] == SMALL_JOB["paths"]

    # The permissions are exactly the documented ones, and they were enough: no refusal logged.
    assert sa_permissions(cluster, ns, FULLNAME) == documented_rules("cluster-wide", home=True)
    log = release.operator_log()
    for refusal in ("Forbidden", "forbidden", "Not enough permissions", " 403"):
        assert refusal not in log, log[-3000:]

    # Prometheus metrics of the run.
    _, metrics = http_get(f"http://127.0.0.1:{values['metrics.port']}/metrics")
    finished = r'mcop_jobs_finished_total\{phase="Succeeded",reason="AllPathsSimulated"\} 1\.0'
    assert re.search(finished, metrics), metrics[-2000:]
    assert "mcop_redis_up" in metrics and "mcop_postgres_up" in metrics

    # The operator's pod and a worker pod, as stored, pass "restricted" without a warning.
    assert_restricted_without_warnings(cluster, ns, pod)
    workers = json.loads(
        cluster.kubectl(
            "-n", ns, "get", "pods", "-o", "json", "-l", "montecarlo.io/job=euro"
        ).stdout
    )["items"]
    assert workers, "no worker pod"
    assert workers[0]["spec"]["automountServiceAccountToken"] is False
    assert_restricted_without_warnings(cluster, ns, workers[0])

    uninstalled_at = _rfc3339_now()
    uninstall_and_check_nothing_is_left(release, [ns])
    # Each documented permission was needed: the operator used them (see RARELY_USED).
    assert_used_as_documented(
        cluster,
        f"system:serviceaccount:{ns}:{FULLNAME}",
        documented_rules("cluster-wide", home=True),
        uninstalled_at,
    )


def _try_get(url: str) -> tuple[int, str] | None:
    try:
        return http_get(url)
    except OSError:
        return None


@pytest.mark.cluster
def test_upgrade_to_watched_namespaces_moves_rbac_to_roles_and_jobs_still_run(
    release: Release, pg_dsn: str, redis_url: str
) -> None:
    cluster, ns = release.cluster, release.namespace
    desk = make_namespace(cluster, f"{ns[:50]}-desk")
    for where in (ns, desk):
        add_connection_secrets(cluster, where, redis_url, pg_dsn)
    values = install_values()
    release.install(values)
    first = release.operator_pod()
    run_job(release, ns, "before")
    # Jobs of a namespace the operator stops watching would keep its finalizer: delete them first.
    cluster.kubectl("-n", ns, "delete", "mcj", "before", "--wait", "--timeout=60s")

    upgraded = {
        **values,
        "watchNamespaces": [desk],
        "operator.statusIntervalSeconds": 2,
        "operator.verbose": True,
        "perfTuning.spec": {"workers": {"maxConcurrentJobs": 4}},
    }
    upgrade_began = _rfc3339_now()
    out = release.upgrade(upgraded)
    assert "would violate" not in out.stderr, out.stderr
    second = release.operator_pod()
    assert second["metadata"]["uid"] != first["metadata"]["uid"], "the operator was not restarted"
    container = second["spec"]["containers"][0]
    assert f"--namespace={desk}" in container["args"] and "--verbose" in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MCOP_STATUS_INTERVAL_SECONDS"] == "2"
    tuning = json.loads(cluster.kubectl("-n", ns, "get", "ptune", "default", "-o", "json").stdout)
    assert tuning["spec"]["workers"]["maxConcurrentJobs"] == 4

    # The ClusterRole with the namespaced rules is gone; a Role in the watched namespace instead.
    roles = cluster.kubectl("get", "clusterroles", "-o", "name").stdout.split()
    assert f"clusterrole.rbac.authorization.k8s.io/{FULLNAME}" not in roles
    assert f"clusterrole.rbac.authorization.k8s.io/{FULLNAME}-cluster" in roles
    assert sa_permissions(cluster, desk, FULLNAME, home=ns) == documented_rules("namespaced")
    assert sa_permissions(cluster, ns, FULLNAME) == documented_rules(
        "namespaced", watched=False, home=True
    )

    # The namespaced rules are enough: a job in the watched namespace (built-in PerfTuning
    # defaults there) runs; the release's namespace is no longer watched.
    run_job(release, desk, "after", seed=12)
    log = release.operator_log()
    for refusal in ("Forbidden", "forbidden", "Not enough permissions"):
        assert refusal not in log, log[-3000:]

    uninstalled_at = _rfc3339_now()
    uninstall_and_check_nothing_is_left(release, [ns, desk])
    assert_used_as_documented(
        cluster,
        f"system:serviceaccount:{ns}:{FULLNAME}",
        documented_rules("namespaced", home=True),
        uninstalled_at,
        outgoing=(first["metadata"]["name"], upgrade_began),
    )


@pytest.mark.cluster
def test_bundled_servers_keep_their_passwords_and_only_their_data_outlives_the_release(
    release: Release,
) -> None:
    """Redis and PostgreSQL as a first install gets them. Their images cannot run here (no
    container engine), so every pod stays unscheduled: the objects are what is tested."""
    cluster, ns = release.cluster, release.namespace
    nowhere = {"mcop-test/no-such-node": "true"}
    values = {
        "operator.nodeSelector": nowhere,
        "redis.nodeSelector": nowhere,
        "postgresql.nodeSelector": nowhere,
        "perfTuning.create": False,  # no operator runs to serve it
        "operator.listenAddress": "127.0.0.1",
    }
    out = release.helm("install", RELEASE, str(CHART), *set_args(values))
    release.installed = True
    assert "would violate" not in out.stderr, out.stderr

    def secret(name: str) -> dict[str, str]:
        doc = json.loads(cluster.kubectl("-n", ns, "get", "secret", name, "-o", "json").stdout)
        import base64

        return {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}

    redis, postgres = secret("montecarlo-redis"), secret("montecarlo-postgres")
    assert len(redis["password"]) == len(postgres["password"]) == 32
    assert redis["url"].startswith(f"redis://:{redis['password']}@")
    claim = f"data-{FULLNAME}-postgresql-0"
    cluster.wait_for(
        lambda: cluster.kubectl("-n", ns, "get", "pvc", claim, check=False).returncode == 0,
        timeout=60,
        what=f"PVC {claim}",
    )

    release.helm("upgrade", RELEASE, str(CHART), *set_args({**values, "redis.maxMemory": "128mb"}))
    after_redis, after_postgres = secret("montecarlo-redis"), secret("montecarlo-postgres")
    assert after_redis["password"] == redis["password"]
    assert after_redis["url"] == redis["url"]
    assert "maxmemory 128mb" in after_redis["redis.conf"]
    assert after_postgres == postgres

    release.uninstall()
    cluster.wait_for(
        lambda: leftovers(cluster, [ns]) == [f"PersistentVolumeClaim/{claim}"],
        timeout=60,
        what="only the PostgreSQL claim left",
    )
    cluster.wait_for(
        lambda: (
            namespace_objects(cluster, ns)
            == sorted([*CLEAN_NAMESPACE, f"persistentvolumeclaim/{claim}"])
        ),
        timeout=60,
        what=f"namespace {ns} holding only the data",
    )
    cluster.kubectl("-n", ns, "delete", "pvc", claim, "--wait=false")


@pytest.mark.cluster
@pytest.mark.parametrize("variant", sorted(MATRIX))
def test_api_server_accepts_every_rendered_manifest(
    chart_cluster: KubeCluster, variant: str
) -> None:
    """Server-side dry run of every object (hooks and CRDs included) in namespaces enforcing
    "restricted": valid for the API server, admitted, no warning."""
    values = MATRIX[variant]
    ns = make_namespace(chart_cluster, f"dry-{variant}")
    for other in values.get("watchNamespaces", []):
        make_namespace(chart_cluster, other)
    chart_cluster.install_crds(sorted((CHART / "crds").glob("*.yaml")))
    rendered = run_helm(
        "template", RELEASE, str(CHART), "--namespace", ns, "--include-crds", *set_args(values)
    ).stdout
    out = chart_cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "--field-manager=chart-test",
        "-f",
        "-",
        input=rendered,
    )
    assert "Warning" not in out.stderr and "violate" not in out.stderr, out.stderr
    count = sum(1 for d in yaml.safe_load_all(rendered) if d)
    assert out.stdout.count("(server dry run)") == count, out.stdout


@pytest.mark.cluster
def test_notes_say_what_to_run_and_warn_about_missing_secrets(
    chart_cluster: KubeCluster, helm_env: dict[str, str]
) -> None:
    """NOTES.txt as `helm install` prints it (a server-side dry run: lookup sees the cluster)."""
    ns = make_namespace(chart_cluster, "notes")
    chart_cluster.install_crds(sorted((CHART / "crds").glob("*.yaml")))  # a dry run installs none
    values = {"redis.enabled": False, "postgresql.enabled": False, "watchNamespaces": [ns]}
    args = ["install", RELEASE, str(CHART), "-n", ns, "--dry-run=server", *set_args(values)]
    notes = run_helm(*args, env=helm_env).stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {ns} apply -f examples/european.yaml" in notes
    assert f"kubectl -n {ns} get mcj -w" in notes
    assert f"The operator watches the namespaces {ns}." in notes
    for name in ("montecarlo-redis", "montecarlo-postgres"):
        assert f"Secret {ns}/{name}" in notes and "does not exist yet" in notes
    chart_cluster.kubectl("-n", ns, "create", "secret", "generic", "montecarlo-redis",
                          "--from-literal=url=redis://127.0.0.1:1/0")  # fmt: skip
    notes = run_helm(*args, env=helm_env).stdout.split("NOTES:", 1)[1]
    assert f"Secret {ns}/montecarlo-redis" not in notes
    assert f"Secret {ns}/montecarlo-postgres" in notes
