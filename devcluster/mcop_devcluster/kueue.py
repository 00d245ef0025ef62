"""A real Kueue controller manager (built by scripts/build-kueue) against the test control plane.

Kueue runs as a local process with the admin kubeconfig, its webhook server on 127.0.0.1 with a
certificate of our own (a CA of its own, issued like the API server's in `certs`), and the
API server calls it at ``https://127.0.0.1:PORT/...``: the webhook configurations are Kueue's own
(``config/components/webhook/manifests.yaml`` of its module), with the Service reference replaced
by that URL, only the webhooks of what is enabled here (Kueue's own kinds and ``batch/v1`` Jobs),
and the Job webhooks scoped to the namespaces given, so the rest of a shared control plane never
depends on this process. They are deleted before the process stops.

With its internal certificate management off (it would issue certificates for a Service name the
API server cannot reach here), Kueue v0.17 insists on reading a metrics certificate from the fixed
path /etc/kueue/metrics/certs. The process therefore runs in a mount namespace of its own
(``unshare --mount``) whose /etc is an overlay of the machine's, with that folder added in the
overlay's upper layer in the temporary folder: the machine's /etc is never written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mcop_devcluster.binaries import MissingBinary, cache_dir
from mcop_devcluster.certs import serving_certificate
from mcop_devcluster.ports import LOOPBACK, free_port
from mcop_devcluster.processes import ManagedProcess, claim_folder, reap_abandoned, wait_until

KUEUE_VERSION = "v0.17.0"
KUEUE_PREFIX = "mcop-kueue-"
KUEUE_NAMESPACE = "kueue-system"
WEBHOOK_NAMES = ("mcop-kueue-mutating", "mcop-kueue-validating")
BUILD_HINT = "run scripts/build-kueue (or scripts/setup, which runs it)"


def kueue_dir() -> Path:
    folder = cache_dir() / "bin" / f"kueue-{KUEUE_VERSION}"
    if not (folder / ".complete").is_file() or not os.access(folder / "kueue", os.X_OK):
        raise MissingBinary(f"kueue is not built (looked in {folder}): {BUILD_HINT}")
    return folder


def kueue_crds() -> list[Path]:
    return sorted((kueue_dir() / "crds").glob("*.yaml"))


def _enabled(webhook: dict[str, Any]) -> bool:
    """Kueue's own kinds, and batch/v1 Jobs (the only integration started here)."""
    for rule in webhook.get("rules", []):
        groups, resources = rule.get("apiGroups", []), rule.get("resources", [])
        if "kueue.x-k8s.io" in groups or ("batch" in groups and "jobs" in resources):
            return True
    return False


def webhook_configurations(
    manifests: str, url: str, ca_bundle: bytes, namespaces: Sequence[str]
) -> list[dict[str, Any]]:
    """Kueue's webhook configurations, pointed at ``url`` (pure: tested without Kueue)."""
    import base64

    out = []
    for doc, name in zip(
        [d for d in yaml.safe_load_all(manifests) if d], WEBHOOK_NAMES, strict=True
    ):
        hooks = []
        for hook in doc.get("webhooks", []):
            if not _enabled(hook):
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {
                "url": f"{url}{path}",
                "caBundle": base64.b64encode(ca_bundle).decode(),
            }
            if any("batch" in rule.get("apiGroups", []) for rule in hook.get("rules", [])):
                hook["namespaceSelector"] = {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "In",
                            "values": list(namespaces),
                        }
                    ]
                }
            hooks.append(hook)
        out.append(
            {
                "apiVersion": doc["apiVersion"],
                "kind": doc["kind"],
                "metadata": {"name": name},
                "webhooks": hooks,
            }
        )
    return out


class KueueController:
    """``start()`` / ``stop()`` a Kueue controller manager; ``kubectl`` is the cluster's."""

    def __init__(self, kubeconfig: Path, kubectl: Any, namespaces: Sequence[str]) -> None:
        self.folder = kueue_dir()
        reap_abandoned(KUEUE_PREFIX)
        self.base_dir = Path(tempfile.mkdtemp(prefix=KUEUE_PREFIX))
        self._registry = claim_folder(self.base_dir)
        self.kubeconfig = kubeconfig
        self.kubectl = kubectl
        self.namespaces = list(namespaces)
        self.webhook_port = free_port()
        self.health_port = free_port()
        self._process: ManagedProcess | None = None

    def _certificates(self) -> bytes:
        ca, cert, key = serving_certificate("mcop-kueue-webhook", ips=(LOOPBACK,))
        for folder in (self.base_dir / "webhook-certs", self.base_dir / "metrics-certs"):
            folder.mkdir()
            (folder / "tls.crt").write_bytes(cert)
            (folder / "tls.key").write_bytes(key)
            os.chmod(folder / "tls.key", 0o600)
        return ca

    def _config(self) -> Path:
        config = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": KUEUE_NAMESPACE,
            "health": {"healthProbeBindAddress": f"{LOOPBACK}:{self.health_port}"},
            "metrics": {"bindAddress": "0"},  # off: nothing here scrapes it
            "webhook": {
                "host": LOOPBACK,
                "port": self.webhook_port,
                "certDir": str(self.base_dir / "webhook-certs"),
            },
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "integrations": {"frameworks": ["batch/job"]},
        }
        path = self.base_dir / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _argv(self, config: Path) -> list[str]:
        upper, work = self.base_dir / "etc-upper", self.base_dir / "etc-work"
        upper.mkdir()
        work.mkdir()
        certs = "/etc/kueue/metrics/certs"
        script = (
            "set -e; "
            f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc; "
            f"mkdir -p {certs}; cp {self.base_dir}/metrics-certs/tls.* {certs}/; "
            'exec "$@"'
        )
        kueue = [
            str(self.folder / "kueue"),
            f"--config={config}",
            # No on-demand visibility API server: it would listen on every address.
            "--feature-gates=VisibilityOnDemand=false",
            "--zap-log-level=info",
        ]
        unshare = shutil.which("unshare")
        if unshare is None:
            raise MissingBinary("unshare (util-linux) is not installed")
        return [unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh", *kueue]

    def _ready(self) -> bool:
        import urllib.request

        with urllib.request.urlopen(
            f"http://{LOOPBACK}:{self.health_port}/readyz", timeout=2
        ) as answer:
            return bool(answer.status == 200)

    def start(self, timeout: float = 120.0) -> None:
        for path in kueue_crds():
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        for path in kueue_crds():
            self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(path))
        self.kubectl("create", "namespace", KUEUE_NAMESPACE, check=False)
        ca = self._certificates()
        self._process = ManagedProcess(
            "kueue",
            self._argv(self._config()),
            log_path=self.base_dir / "kueue.log",
            cwd=self.base_dir,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            registry=self._registry,
        )
        self._process.start()
        wait_until(self._ready, timeout=timeout, what="Kueue ready", alive=self._process)
        manifests = (kueue_dir() / "webhooks.yaml").read_text()
        url = f"https://{LOOPBACK}:{self.webhook_port}"
        for doc in webhook_configurations(manifests, url, ca, self.namespaces):
            self.kubectl("apply", "-f", "-", input=json.dumps(doc))

    def log(self) -> str:
        path = self.base_dir / "kueue.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self._process is not None and self._process.running:
            # Kueue's finalizers on its objects are Kueue's to remove: while it still runs, so a
            # test's namespace can go away after it.
            for namespace in self.namespaces:
                self.kubectl(
                    "delete", "workloads,localqueues", "--all", "-n", namespace,
                    "--timeout=30s", check=False,
                )  # fmt: skip
        for name in WEBHOOK_NAMES:  # first: nothing may call a webhook that is gone
            for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
                self.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        if self._process is not None:
            self._process.stop(10.0)

    def cleanup(self) -> None:
        self.stop()  # the overlay mount lived in Kueue's own mount namespace: gone with it
        shutil.rmtree(self.base_dir, ignore_errors=True)
