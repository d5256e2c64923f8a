"""The CLI's HTTP client for the daemon's API: stdlib only, so the CLI starts fast.

The daemon is found as the docker CLI finds dockerd: `-H`, then `SWARMPY_HOST`,
then the default socket; `unix:///path` or a bare path."""
from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import sys
from urllib.parse import urlencode

from swarmpy import defaults
from swarmpy.tls import CERT_PATH_ENV, TLSFiles, client_context

HOST_ENV = "SWARMPY_HOST"


class DaemonError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NoDaemon(DaemonError):
    pass


def resolve_host(host: str | None) -> str:
    return host or os.environ.get(HOST_ENV) or f"unix://{defaults.DEFAULT_SOCKET}"


def socket_path(host: str | None) -> str:
    host = resolve_host(host)
    if host.startswith("unix://"):
        return host[len("unix://"):]
    if "://" in host:
        raise DaemonError(0, f"{host} is not a unix socket: use unix:///path (or tcp://HOST:PORT "
                             "where a remote daemon will do)")
    return host


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def remove_each(client: "Client", collection: str, refs: list[str]) -> int:
    """docker's `rm A B ...`: each name as it goes, each failure on stderr, 1 if any failed."""
    failed = False
    for ref in refs:
        try:
            client.call("DELETE", f"/{collection}/{ref}")
            print(ref)
        except DaemonError as exc:
            print(f"Error response from daemon: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


class Client:
    """Talks to `unix:///path`, or to `tcp://host:port` with mutual TLS (tls_files required)."""

    tls_files: TLSFiles | None = None     # set once by the CLI from --tlscacert/--tlscert/--tlskey

    def __init__(self, host: str | None = None, timeout: float = 30.0) -> None:
        self.host = resolve_host(host)
        self.timeout = timeout
        self.tcp: tuple[str, int] | None = None
        if self.host.startswith("tcp://"):
            addr, _, port = self.host[len("tcp://"):].rpartition(":")
            self.tcp = (addr, int(port or defaults.API_TCP_PORT))
        else:
            self.path = socket_path(self.host)

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.tcp is None:
            return UnixHTTPConnection(self.path, timeout)
        try:
            context = client_context(self.tls_files or TLSFiles.from_flags(None, None, None))
        except ValueError as exc:
            raise DaemonError(0, f"{self.host}: {exc} (or set {CERT_PATH_ENV})") from None
        return http.client.HTTPSConnection(self.tcp[0], self.tcp[1], timeout=timeout, context=context)

    def _request(self, method: str, url: str, body=None, query: dict | None = None, timeout=None):
        conn = self._connection(timeout or self.timeout)
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        payload = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        try:
            conn.request(method, f"/{defaults.API_VERSION}{url}", body=payload,
                         headers={"Content-Type": "application/json"})
            return conn, conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoDaemon(0, f"Cannot connect to the swarmpy daemon at {self.host}. "
                              "Is the swarmpy daemon running? (start one with: swarmpy init)") from None
        except (ssl.SSLError, http.client.HTTPException, ConnectionError) as exc:
            hint = " (is your certificate signed by the daemon's CA?)" if self.tcp else ""
            raise DaemonError(0, f"the daemon at {self.host} closed the connection: {exc}{hint}") from None

    def call(self, method: str, url: str, body=None, query: dict | None = None):
        conn, resp = self._request(method, url, body, query)
        try:
            data = resp.read()
        finally:
            conn.close()
        if resp.status >= 400:
            try:
                message = json.loads(data)["message"]
            except (ValueError, KeyError, TypeError):
                message = data.decode(errors="replace")
            raise DaemonError(resp.status, message)
        return json.loads(data) if data else None

    def stream(self, url: str, query: dict | None = None):
        """Yield raw chunks of a streaming response (logs)."""
        conn, resp = self._request("GET", url, query=query, timeout=3600 * 24)
        try:
            if resp.status >= 400:
                raise DaemonError(resp.status, json.loads(resp.read()).get("message", ""))
            while chunk := resp.read1(65536):
                yield chunk
        finally:
            conn.close()

    def get(self, url: str, **query):
        return self.call("GET", url, query=query or None)
