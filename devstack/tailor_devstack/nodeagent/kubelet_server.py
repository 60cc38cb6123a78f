"""The kubelet's HTTPS API, the part `kubectl logs` needs: GET /containerLogs/<ns>/<pod>/<c>.

The API server calls it with its kubelet client certificate (signed by the cluster CA); any
other caller is refused during the TLS handshake.

It knows nothing of the node agent: it is given a `LogSource` (the agent is one), so the agent
imports this module and not the other way round.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

FOLLOW_POLL_SECONDS = 0.2


class LogSource(Protocol):
    def log_file(self, namespace: str, name: str, container: str, previous: bool
                 ) -> tuple[Path | None, Callable[[], bool]]:
        """A container's log (None if it has none) and a function telling whether it may
        still grow."""


class KubeletServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], logs: LogSource) -> None:
        super().__init__(address, _Handler)
        self.logs = logs


def _tail(data: bytes, lines: int) -> bytes:
    if lines < 0:
        return data
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:]) if lines else b""


class _Handler(BaseHTTPRequestHandler):
    server: KubeletServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the API server already logs every proxied request

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        if url.path == "/healthz":
            self._reply(200, b"ok")
            return
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._reply(404, b"not found: the local node agent serves containerLogs only")
            return
        _, namespace, pod, container = parts
        previous = query.get("previous") == "true"
        path, running = self.server.logs.log_file(namespace, pod, container, previous)
        if path is None:
            self._reply(404, f"no logs for container {container!r} of pod "
                             f"{namespace}/{pod}".encode())
            return
        data = _tail(path.read_bytes(), int(query.get("tailLines", "-1")))
        if "limitBytes" in query:
            data = data[: int(query["limitBytes"])]
        if query.get("follow") != "true":
            self._reply(200, data)
            return
        self._follow(path, data, running)

    def _follow(self, path: Path, data: bytes, running: Callable[[], bool]) -> None:
        """`kubectl logs -f`: what there is, then what is appended while the run lasts."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(data)
        offset = path.stat().st_size
        with open(path, "rb") as f:
            f.seek(offset)
            while True:
                chunk = f.read()
                if chunk:
                    self.wfile.write(chunk)
                    self.wfile.flush()
                elif not running():
                    break
                else:
                    time.sleep(FOLLOW_POLL_SECONDS)  # tail -f: wait for the file to grow

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve_kubelet_api(logs: LogSource, *, host: str, port: int, ca_file: str, cert_file: str,
                      key_file: str) -> KubeletServer:
    """A server on host:port (not yet serving: call serve_forever) that accepts only clients
    with a certificate signed by `ca_file`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_file)
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_REQUIRED
    server = KubeletServer((host, port), logs)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server
