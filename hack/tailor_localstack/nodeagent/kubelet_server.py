"""The kubelet's HTTPS API, the part `kubectl logs` needs: GET /containerLogs/<ns>/<pod>/<c>.

The API server calls it with its kubelet client certificate (signed by the cluster CA); any
other caller is refused during the TLS handshake.
"""

from __future__ import annotations

import ssl
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

if TYPE_CHECKING:
    from tailor_localstack.nodeagent.agent import Config, NodeAgent

FOLLOW_POLL_SECONDS = 0.2


def _tail(data: bytes, lines: int) -> bytes:
    if lines < 0:
        return data
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:]) if lines else b""


def serve_kubelet_api(agent: NodeAgent, config: Config) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
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
            path, running = agent.log_file(namespace, pod, container, previous)
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

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=config.ca_file)
    context.load_cert_chain(config.cert_file, config.key_file)
    context.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer((config.gateway, config.port), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server
