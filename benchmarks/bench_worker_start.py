"""Worker start-up on the real node: the numba kernels shipped in the image, before and after.

Measures, in one run, on a real node (kubelet, containerd; mcop_devcluster.realnode) with the
chart installed with its defaults: for a small job (European call, 200 000 paths, 2 shards, a new
seed each time so the results cache never answers), the time from `kubectl apply` to the first
progress (status.pathsDone > 0) and to Succeeded, read by polling the MonteCarloJob every 0.1 s.

- before: the image without its compiled kernels (`montecarlo-operator:0.1.0-without-kernels`,
  MCOP_NUMBA_SHIPPED_CACHE emptied: each worker compiles them at start, as every worker did);
- after: the image as built (`montecarlo-operator:0.1.0`: kernels compiled at image build for a
  generic CPU, copied into the worker's NUMBA_CACHE_DIR at start).

Prints the medians and after/before ratios. Not a timed test: the figures depend on the machine's
load. Run as root: .venv/bin/python benchmarks/bench_worker_start.py [--runs 3] (about 5 min once
the images are built).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from mcop_devcluster.binaries import helm_path
from mcop_devcluster.controlplane import ControlPlane
from mcop_devcluster.pytest_cluster import KubeCluster
from mcop_devcluster.realnode import (
    NODE_ADDRESS,
    RealNode,
    built_images,
    local_storage_manifests,
)

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
SPEC: dict[str, Any] = {
    "model": {"type": "gbm", "spot": 100.0, "volatility": 0.2, "rate": 0.05},
    "instrument": {"type": "european", "optionType": "call", "strike": 100.0, "maturity": 1.0},
    "paths": 200_000,
    "shards": 2,
}


def helm(cluster: KubeCluster, home: Path, *args: str) -> None:
    import subprocess

    env = {**cluster.env, "HELM_CACHE_HOME": str(home), "HELM_CONFIG_HOME": str(home),
           "HELM_DATA_HOME": str(home)}  # fmt: skip
    subprocess.run([str(helm_path()), *args, "--namespace", NAMESPACE], env=env, check=True,
                   capture_output=True, timeout=900)  # fmt: skip


def one_job(cluster: KubeCluster, name: str, seed: int) -> tuple[float, float]:
    manifest = {"apiVersion": "montecarlo.io/v1alpha1", "kind": "MonteCarloJob",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {**SPEC, "seed": seed}}  # fmt: skip
    start = time.monotonic()
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    first = None
    deadline = start + 600
    while time.monotonic() < deadline:
        out = cluster.kubectl("-n", NAMESPACE, "get", "mcj", name, "-o", "json").stdout
        status = json.loads(out).get("status") or {}
        now = time.monotonic()
        if first is None and int(status.get("pathsDone") or 0) > 0:
            first = now - start
        if status.get("phase") in ("Succeeded", "Failed"):
            if status["phase"] != "Succeeded":
                raise RuntimeError(f"{name} failed: {status}")
            _print_workers(cluster, name)
            return (first if first is not None else now - start), now - start
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not finish in 600 s")


def _pods(cluster: KubeCluster, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("-n", NAMESPACE, "get", "pods", "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _print_workers(cluster: KubeCluster, name: str) -> None:
    """Each worker container's own run time (started -> finished, from the kubelet) and what it
    logged about its kernels: the part of apply -> Succeeded that the shipped kernels change."""
    for pod in _pods(cluster, f"montecarlo.io/job={name}"):
        for cs in pod["status"].get("containerStatuses", []):
            done = cs.get("state", {}).get("terminated") or {}
            log = cluster.kubectl("-n", NAMESPACE, "logs", pod["metadata"]["name"], check=False)
            kernels = next((line.split(": ", 2)[-1] for line in log.stdout.splitlines()
                            if "numba kernels" in line), "no shipped kernels")  # fmt: skip
            print(f"    {pod['metadata']['name']}: container {done.get('startedAt')} -> "
                  f"{done.get('finishedAt')}; {kernels}", flush=True)  # fmt: skip


def wait_for_operator_image(cluster: KubeCluster, tag: str) -> None:
    """Until every operator pod runs `tag` (helm --wait returns while an old replica may still
    be terminating, and lead: its workers would run the old image)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        pods = _pods(cluster, "app.kubernetes.io/component=operator")
        images = {c["image"] for p in pods for c in p["spec"]["containers"]}
        if images and all(image.endswith(f":{tag}") for image in images):
            return
        time.sleep(1)
    raise RuntimeError(f"operator pods still not all on {tag}")


def measure(cluster: KubeCluster, label: str, runs: int, seed0: int) -> list[tuple[float, float]]:
    # One job first, not counted: the first after a (re)start also pays the operator's first
    # pass and the image's first use on the node.
    one_job(cluster, f"{label}-warmup", seed0 - 1)
    figures = []
    for i in range(runs):
        figures.append(one_job(cluster, f"{label}-{i}", seed0 + i))
        print(f"  {label} run {i + 1}: first progress {figures[-1][0]:.1f} s, "
              f"Succeeded {figures[-1][1]:.1f} s", flush=True)  # fmt: skip
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    images = built_images(ROOT)
    if not any(name.endswith("-without-kernels") for name, _ in images):
        import subprocess

        script = str(ROOT / "scripts" / "build-images")
        out = subprocess.run([script, "--print", "app-without-kernels"],
                             capture_output=True, text=True, check=True)  # fmt: skip
        for line in out.stdout.splitlines():
            name, archive = line.split("\t")
            if name.endswith("-without-kernels"):
                images.append((name, Path(archive)))
    plane = ControlPlane(node_address=NODE_ADDRESS)
    node = RealNode(plane, images=images)
    home = Path(tempfile.mkdtemp(prefix="mcop-bench-helm-"))
    try:
        node.prepare()
        plane.start()
        node.start()
        cluster = KubeCluster(plane)
        storage = local_storage_manifests(node.base_dir / "volumes" / "postgres")
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(storage))
        cluster.kubectl("create", "namespace", NAMESPACE)
        chart = str(ROOT / "charts" / "montecarlo-operator")
        helm(cluster, home, "install", "mcop", chart, "--wait", "--timeout", "600s",
             "--set", "image.tag=0.1.0-without-kernels")  # fmt: skip
        wait_for_operator_image(cluster, "0.1.0-without-kernels")
        before = measure(cluster, "before", args.runs, 1000)
        # --reset-values: without new values helm would reuse the last ones (the old tag).
        helm(cluster, home, "upgrade", "mcop", chart, "--reset-values", "--wait", "--timeout",
             "600s")  # fmt: skip
        wait_for_operator_image(cluster, "0.1.0")
        after = measure(cluster, "after", args.runs, 2000)
    finally:
        node.stop()
        plane.cleanup()
    print()
    print(f"| median of {args.runs} | before (compiled at start) | after (shipped) | ratio |")
    print("| --- | --- | --- | --- |")
    for index, what in enumerate(("apply -> first progress", "apply -> Succeeded")):
        b = statistics.median(f[index] for f in before)
        a = statistics.median(f[index] for f in after)
        print(f"| {what} | {b:.1f} s | {a:.1f} s | {a / b:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
