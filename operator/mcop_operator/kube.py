"""The one module that talks to the Kubernetes API (besides kopf's own watching and events).

The official client is synchronous; each call runs in a worker thread so the event loop stays free.
Responses are read as plain JSON dicts: the rest of the operator works on dicts, like the manifests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from .errors import Conflict, TryAgain
from .leader import Fence
from .naming import GROUP, JOB_PLURAL, TUNING_PLURAL, VERSION

# Tells this module's requests apart in the API server's audit log (kopf's own say kopf/<version>).
USER_AGENT = "mcop-operator"
# Calls in flight at once (threads, and connections of the client's pool). asyncio's default pool
# has only CPU count + 4 threads: with 100 jobs applied at once their admission calls queued for
# seconds behind each other, though each takes a fraction of a second.
CONCURRENT_CALLS = 32
# A PriorityClass seen this recently is taken as still there: 100 jobs applied at once asked the
# API server 100 times in the same second. Absence is never remembered.
PRIORITY_CLASS_SEEN_SECONDS = 10.0


class SecretProblem(Exception):
    """A Secret a PerfTuning names is missing or lacks the key: the message says what to create."""


class OwnedByAnother(Exception):
    """An object with the deterministic name exists but belongs to someone else."""


class Refused(Exception):
    """The API server refused an object as invalid (422): retrying the same object cannot help."""


def load_config() -> None:
    """In a pod: the ServiceAccount; elsewhere: KUBECONFIG or ~/.kube/config."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]


def _json(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(response.data)
    return data


def _api_message(exc: ApiException) -> str:
    """The API server's own words (its Status message), not the client's dump of the response."""
    try:
        return str(json.loads(exc.body or b"{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def import_api_classes() -> None:
    """Load the client's API classes now: kubernetes.client imports each on first use, and
    CoreV1Api alone is seconds of import on a busy node (a standby pays it before leading)."""
    for name in ("CoreV1Api", "BatchV1Api", "SchedulingV1Api", "CustomObjectsApi"):
        getattr(kubernetes.client, name)


class KubeApi:
    def __init__(
        self, api_client: kubernetes.client.ApiClient | None = None, fence: Fence | None = None
    ) -> None:
        if api_client is None:
            configuration = kubernetes.client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = CONCURRENT_CALLS
            api_client = kubernetes.client.ApiClient(configuration)
            api_client.user_agent = USER_AGENT
        self._client = api_client
        self._fence = fence or Fence()
        self._threads = ThreadPoolExecutor(CONCURRENT_CALLS, thread_name_prefix="kube-api")
        self._priority_classes_seen: dict[str, float] = {}
        self._priority_class_lock = asyncio.Lock()  # one question at a time; the rest hear it
        self.core = kubernetes.client.CoreV1Api(self._client)
        self.batch = kubernetes.client.BatchV1Api(self._client)
        self.scheduling = kubernetes.client.SchedulingV1Api(self._client)
        self.custom = kubernetes.client.CustomObjectsApi(self._client)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            # A replica that is no longer the leader ends here, before its request leaves.
            self._fence.check()
            # The body is read in the thread too: `.data` reads the socket (it blocked the loop).
            return _json(fn(*args, _preload_content=False, **kwargs))

        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    async def _get_or_none(self, fn: Any, *args: Any) -> dict[str, Any] | None:
        try:
            return await self._call(fn, *args)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # -- reads ---------------------------------------------------------------------------------
    async def priority_class_exists(self, name: str) -> bool:
        async with self._priority_class_lock:
            seen = self._priority_classes_seen.get(name)
            if seen is not None and time.monotonic() - seen < PRIORITY_CLASS_SEEN_SECONDS:
                return True
            found = await self._get_or_none(self.scheduling.read_priority_class, name)
            if found is None:
                return False
            self._priority_classes_seen[name] = time.monotonic()
            return True

    async def read_secret_value(self, namespace: str, name: str, key: str) -> str:
        secret = await self._get_or_none(self.core.read_namespaced_secret, name, namespace)
        if secret is None:
            raise SecretProblem(f"Secret {namespace}/{name} not found: create it with key {key!r}")
        data = secret.get("data") or {}
        if key not in data:
            raise SecretProblem(f"Secret {namespace}/{name} has no key {key!r}: add it")
        return base64.b64decode(data[key]).decode()

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_or_none(self.batch.read_namespaced_job, name, namespace)

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        pods = await self._call(self.core.list_namespaced_pod, namespace, label_selector=selector)
        items: list[dict[str, Any]] = pods.get("items", [])
        return items

    # -- writes --------------------------------------------------------------------------------
    async def ensure_job(self, body: Mapping[str, Any], owner_uid: str) -> dict[str, Any]:
        """Create the Job; a 409 means it is already there (ours, from an earlier attempt)."""
        namespace = body["metadata"]["namespace"]
        name = body["metadata"]["name"]
        try:
            return await self._call(self.batch.create_namespaced_job, namespace, dict(body))
        except ApiException as exc:
            if exc.status == 422:  # e.g. a worker template the pod validation refuses
                raise Refused(_api_message(exc)) from None
            if exc.status != 409:
                raise
        existing = await self.get_job(namespace, name)
        if existing is None:  # deleted between our create and get: the next reconcile retries
            raise TryAgain(f"Job {namespace}/{name} vanished while being created")
        owners = existing.get("metadata", {}).get("ownerReferences") or []
        if not any(o.get("uid") == owner_uid for o in owners):
            raise OwnedByAnother(
                f"Job {namespace}/{name} exists and is not owned by this MonteCarloJob: "
                "delete or rename it"
            )
        return existing

    async def ensure_secret(self, body: Mapping[str, Any], owner_uid: str) -> None:
        """Create the Secret; a 409 is the copy made earlier, unless someone else owns that name."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            await self._call(self.core.create_namespaced_secret, namespace, dict(body))
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = await self._get_or_none(self.core.read_namespaced_secret, name, namespace)
        owners = ((existing or {}).get("metadata") or {}).get("ownerReferences") or []
        if existing is not None and not any(o.get("uid") == owner_uid for o in owners):
            raise OwnedByAnother(
                f"Secret {namespace}/{name} exists and is not owned by this MonteCarloJob: "
                "delete or rename it"
            )

    async def set_job_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        await self._call(
            self.batch.patch_namespaced_job, name, namespace, {"spec": {"suspend": suspend}}
        )

    async def _delete(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Delete; an object already gone is what we wanted."""
        try:
            await self._call(fn, *args, **kwargs)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def delete_job(self, namespace: str, name: str) -> None:
        await self._delete(
            self.batch.delete_namespaced_job,
            name,
            namespace,
            body={"propagationPolicy": "Background"},
        )

    async def delete_pod(self, namespace: str, name: str) -> None:
        await self._delete(self.core.delete_namespaced_pod, name, namespace)

    async def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch a resource's status subresource (the operator is its only writer). With
        `resource_version`, the API server refuses the patch (Conflict) when the object changed
        since: a late write of a replica that lost its Lease cannot undo the new leader's."""
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            return await self._call(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                body,
            )
        except ApiException as exc:
            if exc.status == 409 and resource_version:
                message = f"{plural} {namespace}/{name} changed since {resource_version}"
                raise Conflict(message) from None
            raise

    async def patch_job_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        return await self.patch_status(JOB_PLURAL, namespace, name, status, resource_version)

    async def patch_tuning_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self.patch_status(TUNING_PLURAL, namespace, name, status)


__all__ = [
    "Conflict",
    "KubeApi",
    "OwnedByAnother",
    "Refused",
    "SecretProblem",
    "import_api_classes",
    "load_config",
]
