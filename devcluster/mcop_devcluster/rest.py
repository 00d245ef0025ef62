"""A small JSON client of the Kubernetes REST API, for the pod runner and the harness's tests.

Plain dicts in and out (the API's own JSON), TLS with the cluster's CA and a client certificate
or a bearer token, one keep-alive connection per thread. Only what the harness needs: get, list,
create, patch, delete and watch.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

JsonObject = dict[str, Any]


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = dict(body or {})

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", ""))


class RestClient:
    def __init__(
        self,
        server: str,
        *,
        ca_file: Path,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        url = urllib.parse.urlsplit(server)
        if url.scheme != "https" or url.hostname is None:
            raise ValueError(f"the API server must be an https:// URL, not {server!r}")
        self.host = url.hostname
        self.port = url.port or 443
        self.server = server
        self.ca_file = ca_file
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=str(ca_file))
        if cert_file is not None and key_file is not None:
            self._context.load_cert_chain(str(cert_file), str(key_file))
        self._headers = {"Accept": "application/json", "User-Agent": "mcop-devcluster"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._local = threading.local()

    @classmethod
    def from_kubeconfig(cls, path: Path, folder: Path | None = None) -> RestClient:
        """From a kubeconfig with embedded data (as written by ``certs.write_kubeconfig``); the
        CA, certificate and key are written beside it (or in ``folder``) for the TLS library."""
        import base64

        data = yaml.safe_load(path.read_text())
        cluster = data["clusters"][0]["cluster"]
        user = data["users"][0]["user"]
        folder = folder or path.parent
        ca_file = folder / f"{path.stem}.ca.crt"
        ca_file.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        cert_file = key_file = None
        if "client-certificate-data" in user:
            cert_file = folder / f"{path.stem}.client.crt"
            key_file = folder / f"{path.stem}.client.key"
            cert_file.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key_file.touch(mode=0o600)
            key_file.write_bytes(base64.b64decode(user["client-key-data"]))
        return cls(
            cluster["server"],
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            token=user.get("token"),
        )

    def _connection(self, timeout: float | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self.host, self.port, context=self._context, timeout=timeout or self.timeout
        )

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | list[Any] | None = None,
        *,
        params: Mapping[str, str | int | bool] | None = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        """One call; returns the decoded JSON answer or raises :class:`ApiError`."""
        if params:
            path += "?" + urllib.parse.urlencode(
                {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
            )
        headers = dict(self._headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            conn: http.client.HTTPSConnection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connection()
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        answer: JsonObject = json.loads(raw) if raw else {}
        if response.status >= 400:
            raise ApiError(response.status, str(answer.get("message", response.reason)), answer)
        return answer

    def get(self, path: str, **params: str | int | bool) -> JsonObject:
        return self.request("GET", path, params=params)

    def get_or_none(self, path: str) -> JsonObject | None:
        try:
            return self.get(path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def create(self, path: str, body: Mapping[str, Any]) -> JsonObject:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Mapping[str, Any], *, merge: str = "strategic") -> JsonObject:
        kinds = {"strategic": "strategic-merge-patch", "merge": "merge-patch"}
        return self.request("PATCH", path, body, content_type=f"application/{kinds[merge]}+json")

    def delete(self, path: str, body: Mapping[str, Any] | None = None) -> JsonObject:
        return self.request("DELETE", path, body)

    def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int = 30, **params: str
    ) -> Iterator[JsonObject]:
        """Watch events ({type, object}) from ``resource_version`` until the server ends it."""
        query = urllib.parse.urlencode({
            "watch": "true", "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds), "allowWatchBookmarks": "true", **params,
        })  # fmt: skip
        conn = self._connection(timeout=timeout_seconds + 15)
        try:
            conn.request("GET", f"{path}?{query}", headers=self._headers)
            response = conn.getresponse()
            if response.status >= 400:
                answer = json.loads(response.read() or b"{}")
                raise ApiError(response.status, str(answer.get("message", response.reason)), answer)
            while True:
                line = response.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            conn.close()
