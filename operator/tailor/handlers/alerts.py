"""The Alertmanager webhook: `POST /alerts` retrains the monitor an alert names.

Alertmanager posts its webhook payload (`{"version": "4", "status", "alerts": [...]}`); each
firing alert whose labels name a DriftMonitor (`namespace` and `monitor`) asks that monitor to
retrain, deduplicated by the alert's fingerprint and start time and subject to the monitor's
triggers, cooldown and concurrency policy. Callers authenticate with a bearer token read from
a file (a mounted Secret key), re-read on each request so it can be rotated; a missing or wrong
token gets 401, a malformed payload 400, and neither changes anything.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tailor.io import metrics

log = logging.getLogger("tailor.handlers.alerts")
MAX_BODY_BYTES = 1 << 20

Lookup = Callable[[str, str], dict[str, Any] | None]  # (namespace, monitor) -> DriftMonitor
Retrain = Callable[[dict[str, Any], dict[str, Any]], str]  # (monitor, alert) -> outcome


class PayloadError(ValueError):
    pass


def firing_alerts(payload: Any) -> list[dict[str, Any]]:
    """The firing alerts of an Alertmanager webhook payload; PayloadError if malformed."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise PayloadError("expected an Alertmanager webhook payload with an 'alerts' list")
    alerts = []
    for index, alert in enumerate(payload["alerts"]):
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
            raise PayloadError(f"alerts[{index}] has no 'labels' object")
        if alert.get("status", payload.get("status")) == "firing":
            alerts.append(alert)
    return alerts


def make_server(address: str, port: int, token_file: Path, lookup: Lookup,
                retrain: Retrain) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            try:
                expected = token_file.read_text().strip()
            except OSError:
                log.error("the webhook token file %s cannot be read", token_file)
                return False
            given = self.headers.get("Authorization", "")
            return bool(expected) and hmac.compare_digest(given.encode(),
                                                          f"Bearer {expected}".encode())

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/alerts":
                self._reply(404, {"error": "not found; POST /alerts"})
                return
            if not self._authorized():
                metrics.ALERTS.labels("unauthorized").inc()
                self._reply(401, {"error": "a valid bearer token is required"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._reply(413, {"error": "payload too large"})
                return
            try:
                alerts = firing_alerts(json.loads(self.rfile.read(length) or b"null"))
            except (ValueError, PayloadError) as error:
                metrics.ALERTS.labels("malformed").inc()
                self._reply(400, {"error": f"malformed payload: {error}"})
                return
            results = []
            for alert in alerts:
                labels = alert["labels"]
                namespace, name = labels.get("namespace"), labels.get("monitor")
                monitor = lookup(namespace, name) if namespace and name else None
                outcome = "no-such-monitor" if monitor is None else retrain(monitor, alert)
                metrics.ALERTS.labels(outcome).inc()
                results.append({"namespace": namespace, "monitor": name, "outcome": outcome})
            self._reply(200, {"results": results})

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    return server
