"""The Alertmanager webhook: `POST /alerts` retrains the monitor an alert names.

Alertmanager posts its webhook payload (`{"version": "4", "status", "alerts": [...]}`); each
firing alert whose labels name a DriftMonitor (`namespace` and `monitor`) asks that monitor to
retrain, deduplicated by the alert's fingerprint and start time and subject to the monitor's
triggers, cooldown and concurrency policy. Callers authenticate with a bearer token read from
a file (a mounted Secret key), re-read on each request so it can be rotated, and compared in
constant time. Every refusal is a 4xx (503 when too many requests are in flight) that changes
nothing, counted in `tailor_alerts_received_total{outcome}`, checked in this order: the
caller's rate (429), the path (404), the token (401), the body's declared size (411 without a
Content-Length, 413 above `Limits.max_body_bytes`, refused before reading it), the payload
(400). The server (`tailor.io.webhook_server`) adds TLS, the per-request deadline and the cap on
requests in flight.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailor.io import metrics
from tailor.io.webhook_server import CertificateFiles, HardenedServer, LimitedHandler, Limits

log = logging.getLogger("tailor.handlers.alerts")
MAX_BODY_BYTES = Limits.max_body_bytes

Lookup = Callable[[str, str], dict[str, Any] | None]  # (namespace, monitor) -> DriftMonitor
Retrain = Callable[[dict[str, Any], dict[str, Any]], str]  # (monitor, alert) -> outcome


class PayloadError(ValueError):
    pass


class Refusal(Exception):
    """A request answered with an error: the HTTP code, the metric's outcome, a message."""

    def __init__(self, code: int, outcome: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.outcome, self.headers = code, outcome, headers or {}


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


def declared_length(headers: Any, limit: int) -> int:
    """The body's size from Content-Length, required (no chunked bodies: Alertmanager always
    sends a length) and capped, so that nothing is read before the size is known to be fine."""
    if headers.get("Transfer-Encoding"):
        raise Refusal(411, "length-required", "chunked bodies are not accepted; "
                      "send Content-Length")
    values = headers.get_all("Content-Length") or []
    if not values:
        raise Refusal(411, "length-required", "Content-Length is required")
    if len(set(values)) != 1 or not values[0].strip().isdigit():
        raise Refusal(400, "malformed", "Content-Length must be one non-negative integer")
    length = int(values[0])
    if length > limit:
        raise Refusal(413, "too-large", f"the body exceeds {limit} bytes")
    return length


def parse_body(body: bytes) -> list[dict[str, Any]]:
    try:
        return firing_alerts(json.loads(body or b"null"))
    except (ValueError, RecursionError) as error:  # RecursionError: nesting too deep
        raise Refusal(400, "malformed", f"malformed payload: {error}") from None


@dataclass(frozen=True)
class Routes:
    """What the handler needs from the operator: the token's file, a monitor by name, a
    retrain."""

    token_file: Path
    lookup: Lookup
    retrain: Retrain
    max_body_bytes: int

    def authorized(self, given: str) -> bool:
        """Constant-time comparison (hmac.compare_digest): the time taken says nothing about
        how much of a guess was right. The file is read each time, so a rotation applies."""
        try:
            expected = self.token_file.read_text().strip()
        except OSError:
            log.error("the webhook token file %s cannot be read", self.token_file)
            return False
        return bool(expected) and hmac.compare_digest(given.encode(),
                                                      f"Bearer {expected}".encode())

    def retrain_all(self, firing: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        """Each alert's outcome; 500 if a retrain failed (Alertmanager sends it again, and the
        alert's fingerprint keeps that from retraining twice)."""
        results, failed = [], False
        for alert in firing:
            labels = alert["labels"]
            namespace, name = labels.get("namespace"), labels.get("monitor")
            if not (isinstance(namespace, str) and isinstance(name, str)):
                namespace = name = None
            monitor = self.lookup(namespace, name) if namespace and name else None
            try:
                outcome = "no-such-monitor" if monitor is None else self.retrain(monitor, alert)
            except Exception:
                log.exception("retraining %s/%s for an alert failed", namespace, name)
                outcome, failed = "error", True
            metrics.ALERTS.labels(outcome).inc()
            results.append({"namespace": namespace, "monitor": name, "outcome": outcome})
        return (500 if failed else 200), {"results": results}


class AlertsHandler(LimitedHandler):
    routes: Routes

    def _reply(self, code: int, body: dict[str, Any],
               headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _check(self) -> list[dict[str, Any]]:
        """The request's firing alerts, or the Refusal that answers it (cheapest check first;
        nothing of the body is read before the caller and its size are known to be fine)."""
        wait = self.server.buckets.take(self.client_address[0])
        if wait:
            raise Refusal(429, "rate-limited", "too many requests from this address",
                          {"Retry-After": str(math.ceil(wait))})
        if self.path.rstrip("/") != "/alerts":
            raise Refusal(404, "not-found", "not found; POST /alerts")
        if not self.routes.authorized(self.headers.get("Authorization", "")):
            raise Refusal(401, "unauthorized", "a valid bearer token is required")
        if not self.begin_work():
            raise Refusal(503, "busy", "too many requests in flight; retry",
                          {"Retry-After": "1"})
        length = declared_length(self.headers, self.routes.max_body_bytes)
        body = self.rfile.read(length)  # bounded by the request's deadline
        if len(body) < length:
            raise Refusal(400, "malformed", "the body is shorter than its Content-Length")
        return parse_body(body)

    def do_POST(self) -> None:
        try:
            firing = self._check()
        except Refusal as refusal:
            metrics.ALERTS.labels(refusal.outcome).inc()
            self._reply(refusal.code, {"error": str(refusal)}, refusal.headers)
            return
        self._reply(*self.routes.retrain_all(firing))


def make_server(address: str, port: int, token_file: Path, lookup: Lookup, retrain: Retrain,
                tls: tuple[Path, Path] | None = None,
                limits: Limits | None = None) -> HardenedServer:
    """The webhook's server, not yet serving (call serve_forever in a thread). With `tls`
    (certificate file, key file) it speaks HTTPS only, re-reading the pair when it changes."""
    limits = limits or Limits()
    handler = type("Handler", (AlertsHandler,), {
        "routes": Routes(token_file, lookup, retrain, limits.max_body_bytes)})
    certificates = CertificateFiles(*tls) if tls else None
    return HardenedServer((address, port), handler, limits, certificates,
                          lambda outcome: metrics.ALERTS.labels(outcome).inc())

def start(address: str, port: int, token_file: Path, lookup: Lookup, retrain: Retrain,
          tls: tuple[Path, Path] | None) -> HardenedServer:
    """The webhook serving in a daemon thread. The certificate must load now (a wrong path or
    pair stops the operator at start, not at the first alert)."""
    server = make_server(address, port, token_file, lookup, retrain, tls)
    threading.Thread(target=server.serve_forever, name="webhook", daemon=True).start()
    if tls is None:
        log.warning("alert webhook on http://%s:%d/alerts WITHOUT TLS: the bearer token crosses "
                    "the network in clear; set --webhook-tls-cert-file and "
                    "--webhook-tls-key-file", address, port)
    else:
        log.info("alert webhook on https://%s:%d/alerts (certificate %s)", address, port, tls[0])
    return server
