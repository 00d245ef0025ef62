"""The test control plane is a real Kubernetes: version, CRD validation with CEL, Jobs run by the
real Job controller through the pod runner, garbage collection, RBAC, and loopback-only traffic."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

from mcop_devcluster.binaries import KUBERNETES_VERSION
from mcop_devcluster.controlplane import NODE_NAME, ControlPlane
from mcop_devcluster.pytest_cluster import KubeCluster
from mcop_devcluster.rest import JsonObject, RestClient

pytestmark = pytest.mark.cluster


@pytest.fixture
def rest(kube_cluster: KubeCluster) -> RestClient:
    return kube_cluster.rest()


def _job(name: str, command: list[str], **spec: Any) -> JsonObject:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{"name": "main", "image": "mcop:test", "command": command}],
                }
            },
            **spec,
        },
    }


def _jobs(namespace: str) -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs"


def _pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def _job_end(rest: RestClient, namespace: str, name: str) -> str | None:
    job = rest.get(f"{_jobs(namespace)}/{name}")
    for condition in job.get("status", {}).get("conditions", []):
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return str(condition["type"])
    return None


def _pods(rest: RestClient, namespace: str, selector: str = "") -> list[JsonObject]:
    items: list[JsonObject] = rest.get(_pods_path(namespace), labelSelector=selector)["items"]
    return items


def _phase(rest: RestClient, namespace: str, name: str) -> str | None:
    pod = rest.get_or_none(f"{_pods_path(namespace)}/{name}")
    return None if pod is None else pod.get("status", {}).get("phase")


def _terminated(pod: JsonObject) -> JsonObject:
    state: JsonObject = pod["status"]["containerStatuses"][0]["state"]
    return dict(state["terminated"])


def test_server_reports_the_pinned_version_and_is_ready(kube_cluster: KubeCluster) -> None:
    version = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert kube_cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_node_is_ready_and_schedulable(rest: RestClient) -> None:
    node = rest.get(f"/api/v1/nodes/{NODE_NAME}")
    ready = [c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready == ["True"]
    assert not node["spec"].get("taints")


def test_the_charts_priority_classes_install_twice(
    kube_cluster: KubeCluster, rest: RestClient
) -> None:
    kube_cluster.install_priority_classes()
    kube_cluster.install_priority_classes()  # idempotent
    values = {
        name: rest.get(f"/apis/scheduling.k8s.io/v1/priorityclasses/{name}")["value"]
        for name in (
            "montecarlo-low",
            "montecarlo-normal",
            "montecarlo-high",
            "montecarlo-critical",
        )
    }
    assert list(values.values()) == sorted(values.values())


CRD = textwrap.dedent(
    """
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.harness.mcop.test
    spec:
      group: harness.mcop.test
      scope: Namespaced
      names: {plural: widgets, singular: widget, kind: Widget}
      versions:
      - name: v1
        served: true
        storage: true
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec:
                type: object
                required: [minReplicas, maxReplicas]
                properties:
                  minReplicas: {type: integer, minimum: 0}
                  maxReplicas: {type: integer}
                x-kubernetes-validations:
                - rule: self.minReplicas <= self.maxReplicas
                  message: minReplicas must not exceed maxReplicas
    """
)


def test_crd_with_cel_rule_is_served_and_enforced(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    kube_cluster.kubectl("apply", "-f", "-", input=CRD)
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.harness.mcop.test"
    )

    def widget(name: str, low: int, high: int) -> str:
        return json.dumps({
            "apiVersion": "harness.mcop.test/v1", "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"minReplicas": low, "maxReplicas": high},
        })  # fmt: skip

    kube_cluster.kubectl("create", "-f", "-", input=widget("good", 1, 3))
    refused = kube_cluster.kubectl("create", "-f", "-", input=widget("bad", 5, 3), check=False)
    assert refused.returncode != 0
    assert "minReplicas must not exceed maxReplicas" in refused.stderr
    schema = kube_cluster.kubectl("create", "-f", "-", input=widget("neg", -1, 3), check=False)
    assert schema.returncode != 0
    assert "spec.minReplicas" in schema.stderr
    names = kube_cluster.kubectl("get", "widgets", "-n", namespace, "-o", "name").stdout.split()
    assert names == ["widget.harness.mcop.test/good"]


def test_indexed_job_completes_through_the_job_controller(
    kube_cluster: KubeCluster, rest: RestClient, namespace: str
) -> None:
    job = _job(
        "indexed",
        ["sh", "-c", "echo index=$JOB_COMPLETION_INDEX pod=$POD_NAME"],
        completions=3,
        parallelism=2,
        completionMode="Indexed",
    )
    job["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]
    rest.create(_jobs(namespace), job)

    end = kube_cluster.wait_for(
        lambda: _job_end(rest, namespace, "indexed"), timeout=90, what="Job indexed to end"
    )
    assert end == "Complete"
    assert rest.get(f"{_jobs(namespace)}/indexed")["status"]["succeeded"] == 3

    pods = _pods(rest, namespace, "job-name=indexed")
    index_key = "batch.kubernetes.io/job-completion-index"
    assert sorted(p["metadata"]["annotations"][index_key] for p in pods) == ["0", "1", "2"]
    for pod in pods:
        assert pod["status"]["phase"] == "Succeeded"
        assert _terminated(pod)["exitCode"] == 0
        name = pod["metadata"]["name"]
        index = pod["metadata"]["annotations"][index_key]
        assert f"index={index} pod={name}" in kube_cluster.pod_log(namespace, name)


def test_the_pod_runner_runs_a_bounded_number_of_pods_at_once(
    kube_cluster: KubeCluster, rest: RestClient, namespace: str
) -> None:
    limit = kube_cluster.control_plane.pod_runner_concurrency
    pods = limit + 3
    rest.create(_jobs(namespace), _job(
        "wide", ["sh", "-c", "date +%s.%N; sleep 1; date +%s.%N"],
        completions=pods, parallelism=pods, completionMode="Indexed",
    ))  # fmt: skip
    end = kube_cluster.wait_for(
        lambda: _job_end(rest, namespace, "wide"), timeout=120, what="Job wide to end"
    )
    assert end == "Complete"
    spans = []
    for pod in _pods(rest, namespace, "job-name=wide"):
        started, ended = map(
            float, kube_cluster.pod_log(namespace, pod["metadata"]["name"]).split()
        )
        spans.append((started, ended))
    most = max(sum(1 for s, e in spans if s <= moment < e) for moment, _ in spans)
    assert 1 < most <= limit


def test_failing_job_fails_after_its_backoff_limit(
    kube_cluster: KubeCluster, rest: RestClient, namespace: str
) -> None:
    rest.create(_jobs(namespace), _job("failing", ["sh", "-c", "exit 3"], backoffLimit=1))

    end = kube_cluster.wait_for(
        lambda: _job_end(rest, namespace, "failing"), timeout=120, what="Job failing to end"
    )
    assert end == "Failed"
    job = rest.get(f"{_jobs(namespace)}/failing")
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert job["status"]["failed"] == 2  # the first try and one retry
    pods = _pods(rest, namespace, "job-name=failing")
    assert {p["status"]["phase"] for p in pods} == {"Failed"}
    assert {_terminated(p)["exitCode"] for p in pods} == {3}
    assert {_terminated(p)["reason"] for p in pods} == {"Error"}


def test_deleting_the_owner_garbage_collects_the_job(
    kube_cluster: KubeCluster, rest: RestClient, namespace: str
) -> None:
    owner = rest.create(
        f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": "owner"}}
    )
    job = _job("owned", ["sleep", "300"], parallelism=1)
    job["metadata"]["ownerReferences"] = [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"],
        "controller": True, "blockOwnerDeletion": True,
    }]  # fmt: skip
    rest.create(_jobs(namespace), job)
    kube_cluster.wait_for(
        lambda: any(
            p["status"].get("phase") == "Running" for p in _pods(rest, namespace, "job-name=owned")
        ),
        what="the owned Job's pod to run",
    )

    rest.delete(
        f"/api/v1/namespaces/{namespace}/configmaps/owner", {"propagationPolicy": "Foreground"}
    )

    kube_cluster.wait_for(
        lambda: rest.get_or_none(f"{_jobs(namespace)}/owned") is None,
        timeout=60,
        what="the garbage collector to delete the Job",
    )
    kube_cluster.wait_for(
        lambda: not _pods(rest, namespace, "job-name=owned"),
        timeout=60,
        what="the Job's pod to be stopped and deleted",
    )


def _run_pod(
    kube_cluster: KubeCluster, rest: RestClient, namespace: str, name: str, spec: JsonObject
) -> JsonObject:
    spec = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, **spec}
    rest.create(_pods_path(namespace), {"metadata": {"name": name}, "spec": spec})

    def finished() -> JsonObject | None:
        pod = rest.get(f"{_pods_path(namespace)}/{name}")
        return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None

    return kube_cluster.wait_for(finished, timeout=60, what=f"pod {name} to end")


def _container(command: list[str], **fields: Any) -> JsonObject:
    return {"name": "main", "image": "mcop:test", "command": command, **fields}


def test_rbac_applies_to_the_pods_service_account(
    kube_cluster: KubeCluster, rest: RestClient, namespace: str
) -> None:
    ns = f"/api/v1/namespaces/{namespace}"
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    rest.create(f"{ns}/serviceaccounts", {"metadata": {"name": "reader"}})
    rest.create(f"{ns}/configmaps", {"metadata": {"name": "visible"}})
    spec = {
        "serviceAccountName": "reader",
        "containers": [_container(["kubectl", "get", "configmaps", "-o", "name"])],
    }

    refused = _run_pod(kube_cluster, rest, namespace, "before-grant", spec)
    assert refused["status"]["phase"] == "Failed"
    output = kube_cluster.pod_log(namespace, "before-grant")
    assert "forbidden" in output
    assert f"system:serviceaccount:{namespace}:reader" in output

    rest.create(f"{rbac}/roles", {
        "metadata": {"name": "read-configmaps"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
    })  # fmt: skip
    rest.create(f"{rbac}/rolebindings", {
        "metadata": {"name": "reader-reads"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "read-configmaps"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    })  # fmt: skip
    allowed = _run_pod(kube_cluster, rest, namespace, "after-grant", spec)
    assert allowed["status"]["phase"] == "Succeeded", kube_cluster.pod_log(namespace, "after-grant")
    assert "configmap/visible" in kube_cluster.pod_log(namespace, "after-grant")


def test_pod_environment_resolves_secrets_config_maps_and_fields(
    kube_cluster: KubeCluster, rest: RestClient, namespace: str
) -> None:
    ns = f"/api/v1/namespaces/{namespace}"
    rest.create(f"{ns}/secrets", {"metadata": {"name": "creds"},
                                  "stringData": {"dsn": "postgresql://x"}})  # fmt: skip
    rest.create(f"{ns}/configmaps", {"metadata": {"name": "settings"},
                                     "data": {"LEVEL": "debug", "mode": "fast"}})  # fmt: skip
    script = "import os, json; print(json.dumps(dict(os.environ)))"
    pod = _run_pod(kube_cluster, rest, namespace, "env-check", {"containers": [_container(
        ["python", "-c", script],
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        env=[
            {"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "dsn"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "GREETING", "value": "mode is $(MODE)"},
        ],
    )]})  # fmt: skip
    output = kube_cluster.pod_log(namespace, "env-check")
    assert pod["status"]["phase"] == "Succeeded", output
    env = json.loads(output)
    assert env["DSN"] == "postgresql://x"
    assert env["MODE"] == "fast"
    assert env["CFG_LEVEL"] == "debug"
    assert env["NS"] == namespace
    assert env["UID"] == pod["metadata"]["uid"]
    assert env["GREETING"] == "mode is fast"
    assert env["HOSTNAME"] == "env-check"
    assert Path(env["KUBECONFIG"]).is_file()
    assert str(kube_cluster.kubeconfig) not in env.values(), "pods must not get the admin config"


def test_a_pod_whose_program_cannot_run_fails_with_a_reason(
    kube_cluster: KubeCluster, rest: RestClient, namespace: str
) -> None:
    pod = _run_pod(kube_cluster, rest, namespace, "no-such-program", {
        "containers": [_container(["no-such-program"])],
    })  # fmt: skip
    assert pod["status"]["phase"] == "Failed"
    terminated = _terminated(pod)
    assert terminated["reason"] == "StartError"
    assert 'exec: "no-such-program": executable file not found in $PATH' in terminated["message"]


def test_a_missing_secret_keeps_the_pod_pending_until_it_exists(
    kube_cluster: KubeCluster, rest: RestClient, namespace: str
) -> None:
    rest.create(_pods_path(namespace), {
        "metadata": {"name": "waits"},
        "spec": {"restartPolicy": "Never", "containers": [_container(
            ["sh", "-c", "echo $TOKEN"],
            env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "t"}}}],
        )]},
    })  # fmt: skip

    def waiting_reason() -> str | None:
        pod = rest.get(f"{_pods_path(namespace)}/waits")
        statuses = pod["status"].get("containerStatuses") or [{}]
        reason = statuses[0].get("state", {}).get("waiting", {}).get("reason")
        return str(reason) if reason else None

    reason = kube_cluster.wait_for(waiting_reason, what="the pod to report its missing Secret")
    assert reason == "CreateContainerConfigError"
    assert _phase(rest, namespace, "waits") == "Pending"

    rest.create(f"/api/v1/namespaces/{namespace}/secrets",
                {"metadata": {"name": "late"}, "stringData": {"t": "arrived"}})  # fmt: skip
    kube_cluster.wait_for(
        lambda: _phase(rest, namespace, "waits") == "Succeeded",
        what="the pod to run once its Secret exists",
    )
    assert "arrived" in kube_cluster.pod_log(namespace, "waits")


def test_deleting_a_pod_sends_sigterm_then_lets_it_go(
    kube_cluster: KubeCluster, rest: RestClient, namespace: str
) -> None:
    script = textwrap.dedent(
        """
        import signal, sys, time
        def stop(signum, frame):
            print("got SIGTERM", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        print("running", flush=True)
        time.sleep(300)
        """
    )
    rest.create(_pods_path(namespace), {
        "metadata": {"name": "stoppable"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 20,
                 "containers": [_container(["python", "-c", script])]},
    })  # fmt: skip
    kube_cluster.wait_for(
        lambda: "running" in kube_cluster.pod_log(namespace, "stoppable"),
        what="the pod's process to start",
    )
    pid_file = next((kube_cluster.base_dir / "pods").glob(f"{namespace}_stoppable_*/main.pid"))
    pid = int(pid_file.read_text().split()[0])

    rest.delete(f"{_pods_path(namespace)}/stoppable")

    kube_cluster.wait_for(
        lambda: rest.get_or_none(f"{_pods_path(namespace)}/stoppable") is None,
        timeout=15,
        what="the pod to be let go well before its 20 s grace period ends",
    )
    assert "got SIGTERM" in kube_cluster.pod_log(namespace, "stoppable")
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def test_every_process_listens_and_dials_on_loopback_only(kube_cluster: KubeCluster) -> None:
    listening: dict[str, set[str]] = {}
    for proc in kube_cluster.control_plane.processes:
        assert proc.pid is not None and proc.running, f"{proc.name} is not running"
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for member in tree:
            for conn in member.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.setdefault(proc.name, set()).add(conn.laddr.ip)
                    assert _loopback(conn.laddr.ip), f"{proc.name} listens on {conn.laddr}"
                if conn.raddr:
                    assert _loopback(conn.raddr.ip), f"{proc.name} talks to {conn.raddr}"
    assert listening["etcd"] == {"127.0.0.1"}
    assert listening["kube-apiserver"] == {"127.0.0.1"}
    assert set(listening) == {"etcd", "kube-apiserver"}, "only etcd and the API server listen"


def test_a_stopped_control_plane_leaves_no_process_behind(tmp_path: Path) -> None:
    plane = ControlPlane(base_dir=tmp_path / "cluster")
    plane.start()
    try:
        rest = RestClient(
            plane.server,
            ca_file=plane.pki.serving_ca,
            cert_file=plane.pki.admin_cert,
            key_file=plane.pki.admin_key,
        )
        KubeCluster.wait_for(
            lambda: rest.get_or_none("/api/v1/namespaces/default/serviceaccounts/default"),
            what="the default ServiceAccount",
        )
        rest.create(_pods_path("default"), {
            "metadata": {"name": "sleeper"},
            "spec": {"restartPolicy": "Never", "containers": [_container(["sleep", "300"])]},
        })  # fmt: skip
        pods = plane.base_dir / "pods"
        pid_file = KubeCluster.wait_for(
            lambda: next(pods.glob("default_sleeper_*/main.pid"), None),
            what="the sleeper pod's process to start",
        )
        pod_pid = int(pid_file.read_text().split()[0])
        pids = [proc.pid for proc in plane.processes if proc.pid is not None] + [pod_pid]
        # The runner dies without cleaning up: stop() must still end the pod's process.
        runner = next(proc for proc in plane.processes if proc.name == "pod-runner")
        assert runner.pid is not None
        os.kill(runner.pid, signal.SIGKILL)
    finally:
        plane.stop()
    assert [pid for pid in pids if _alive(pid)] == []
