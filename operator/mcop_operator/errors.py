"""Which failures of a reconcile pass are worth retrying.

Transient: a server that does not answer or answers "later" (the Kubernetes API's 5xx, 429,
timeouts and conflicts; PostgreSQL and Redis connection errors; the network). The loop retries
them with exponential backoff. Everything else is deterministic (a bug, a 4xx the same request
will get again): retrying cannot help, so the job ends in Failed with the reason, and the
traceback is logged once. The kind a failure is counted under in
`mcop_reconcile_errors_total{reason}` is `metrics.error_reason`."""

from __future__ import annotations

import asyncio

_RETRYABLE_HTTP = frozenset({0, 408, 409, 425, 429})


class TryAgain(Exception):
    """The world is in a passing state (an object vanished while being created): retry."""


class Conflict(Exception):
    """The object changed since the resourceVersion a write was conditioned on."""


def is_transient(exc: BaseException) -> bool:
    """True for failures a retry can cure; False for a bug or a request the server refuses."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, (Conflict, TryAgain)):
        return True
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        return status in _RETRYABLE_HTTP or status >= 500
    module = type(exc).__module__ or ""
    if module.startswith(("asyncpg", "redis", "urllib3")):
        return True
    return isinstance(exc, (OSError, ConnectionError, TimeoutError, asyncio.TimeoutError))
