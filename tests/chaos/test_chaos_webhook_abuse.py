"""Scenario 6: 1,000 bad requests at the alert webhook while good ones keep coming.

No token, a wrong token, malformed JSON, oversized bodies and slow clients (a request started
and never finished), all naming a DriftMonitor that an accepted alert would retrain. Proves: 0
retrains from them, each refused with a 4xx (or, for a slow client, the connection closed by
the server within a bound; a 503 while it sheds load is a refusal too), and the webhook
stays responsive (every good request answered 200): p99 of good requests measured
during the barrage. Bad callers come from many loopback addresses (127.0.1.x), as a fleet
would, so each is held to the per-source limits; good requests come from an address of their
own. With the TLS flags present the webhook speaks HTTPS with a self-signed certificate.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.chaos.chaoslib import Operator, figures, free_port, has_flag, percentile
from tests.integration.operator.test_driftmonitor import (
    dm_status,
    monitor,
    retrains,
    write_reference,
)
from tests.support.testing import StackHandle, eventually

KINDS = {"no token": 250, "wrong token": 250, "malformed JSON": 250, "oversized body": 200,
         "slow client": 50}
BAD_SOURCES = 50
GOOD_REQUESTS = 300
SLOW_CLIENT_BOUND = 30.0  # seconds until the server must drop a request that never completes
GOOD_P99_BOUND = 2.0  # seconds


class Webhook:
    def __init__(self, port: int, token: str, context: ssl.SSLContext | None) -> None:
        self.port, self.token, self.context = port, token, context

    def connect(self, source: str, timeout: float = 30) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               source_address=(source, 0),
                                               context=self.context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout,
                                          source_address=(source, 0))

    def post(self, source: str, body: bytes, auth: str | None,
             length: int | None = None) -> int:
        connection = self.connect(source)
        try:
            connection.putrequest("POST", "/alerts")
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(len(body) if length is None else length))
            if auth is not None:
                connection.putheader("Authorization", auth)
            connection.endheaders()
            # Refused before the body was read: the answer is still there to read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.send(body)
            return connection.getresponse().status
        finally:
            connection.close()


def alert_payload(namespace: str, name: str, status: str, fingerprint: str) -> bytes:
    return json.dumps({"version": "4", "status": status, "alerts": [{
        "status": status, "fingerprint": fingerprint, "startsAt": "2026-01-01T00:00:00Z",
        "labels": {"alertname": "ChaosProbe", "namespace": namespace, "monitor": name},
        "annotations": {"summary": "chaos"}}]}).encode()


def tls_context(tmp: Path) -> tuple[list[str], ssl.SSLContext | None]:
    """The operator's TLS flags and the client's context; plain HTTP without the flags."""
    if not (has_flag("--webhook-tls-cert-file") and has_flag("--webhook-tls-key-file")):
        return [], None
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=tailor-webhook", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.create_default_context(cafile=str(cert))
    return ["--webhook-tls-cert-file", str(cert), "--webhook-tls-key-file", str(key)], context


def bad_request(hook: Webhook, kind: str, index: int, payload: bytes) -> str:
    """One hostile request; what came of it ("4xx", "dropped" or a surprise)."""
    source = f"127.0.1.{1 + index % BAD_SOURCES}"
    if kind == "slow client":
        return slow_client(hook, source)
    auth = {"no token": None, "wrong token": "Bearer not-the-token"}.get(kind,
                                                                        f"Bearer {hook.token}")
    if kind == "malformed JSON":
        body = payload[: 10 + index % 40]  # cut off mid-document
    elif kind == "oversized body":
        return answer(hook.post(source, b"{" * 65536, f"Bearer {hook.token}",
                                length=2 * 2**20 + index))
    else:
        body = payload
    return answer(hook.post(source, body, auth))


def answer(status: int) -> str:
    return "4xx" if 400 <= status < 500 else f"status {status}"


def slow_client(hook: Webhook, source: str) -> str:
    """Start a request and stop sending; "dropped" once the server closes the connection."""
    started = time.monotonic()
    raw = socket.create_connection(("127.0.0.1", hook.port), timeout=SLOW_CLIENT_BOUND + 5,
                                   source_address=(source, 0))
    sock: socket.socket = raw
    try:
        if hook.context is not None:
            sock = hook.context.wrap_socket(raw, server_hostname="127.0.0.1")
        sock.sendall(b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n")
        try:
            while sock.recv(4096):  # a 408 (or nothing) and then the close
                pass
        except OSError:
            pass
        waited = time.monotonic() - started
        return "dropped" if waited <= SLOW_CLIENT_BOUND else f"held {waited:.0f}s"
    finally:
        sock.close()


def barrage(hook: Webhook, namespace: str) -> dict[str, dict[str, int]]:
    payload = alert_payload(namespace, "guarded", "firing", "bad")
    plan = [kind for kind, count in KINDS.items() for _ in range(count)]
    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(lambda job: (job[1], bad_request(hook, job[1], job[0],
                                                                  payload)),
                                 enumerate(plan)))
    table: dict[str, dict[str, int]] = {}
    for kind, outcome in outcomes:
        table.setdefault(kind, {}).setdefault(outcome, 0)
        table[kind][outcome] += 1
    return table


def good_requests(hook: Webhook, namespace: str, stop: threading.Event,
                  out: list[tuple[float, int]]) -> None:
    """Authenticated, well-formed requests (a resolved alert: nothing to retrain), one after
    another from their own address, until `stop` or GOOD_REQUESTS: (seconds, status) each."""
    body, auth = alert_payload(namespace, "guarded", "resolved", "good"), f"Bearer {hook.token}"
    while len(out) < GOOD_REQUESTS and not stop.is_set():
        started = time.monotonic()
        try:
            status = hook.post("127.0.0.200", body, auth)
        except OSError:
            status = 0  # refused or reset: not answered
        out.append((time.monotonic() - started, status))
        time.sleep(0.05)  # the good caller's pace (20/s, the per-source rate), not a wait


@pytest.mark.timeout(600)
# long: one scenario read top to bottom: set up, barrage with good traffic alongside, verdicts
def test_a_thousand_bad_webhook_requests_retrain_nothing_and_good_ones_stay_fast(
        stack: StackHandle, namespace: str, crds: None, bucket: str, storage_secret: str,
        tmp_path: Path) -> None:
    token = "chaos-" + "x" * 24
    (tmp_path / "token").write_text(token)
    port = free_port("0.0.0.0")
    tls_args, context = tls_context(tmp_path)
    operator = Operator(stack, tmp_path / "operator.log", "--namespace", namespace,
                        "--webhook-token-file", str(tmp_path / "token"),
                        "--webhook-port", str(port), "--bind-address", "0.0.0.0", *tls_args)
    hook = Webhook(port, token, context)
    try:
        profile = write_reference(stack, bucket)
        stack.kubectl("apply", "-n", namespace, "-f", "-",
                      input=monitor("guarded", bucket, profile, stack, ["Alert"]))
        eventually(lambda: dm_status(stack, namespace, "guarded").get("conditions"),
                   timeout=60, what="the monitor to be reconciled")
        stop = threading.Event()
        answered: list[tuple[float, int]] = []
        prober = threading.Thread(target=good_requests, args=(hook, namespace, stop, answered),
                                  daemon=True)
        started = time.monotonic()
        prober.start()
        table = barrage(hook, namespace)
        took = time.monotonic() - started
        stop.set()
        prober.join(60)
        good = [seconds for seconds, _ in answered]
        good_statuses = {code: sum(1 for _, c in answered if c == code)
                         for code in sorted({c for _, c in answered})}
        retrains_after_barrage = len(retrains(stack, namespace, "guarded"))
        recorded = dm_status(stack, namespace, "guarded").get("retrainCount", 0)
        # The webhook still works: one good firing alert retrains exactly once.
        status = hook.post("127.0.0.201", alert_payload(namespace, "guarded", "firing", "ok"),
                           f"Bearer {token}")
        eventually(lambda: retrains(stack, namespace, "guarded"), timeout=60,
                   what="the good alert's retrain")
        assert operator.process.poll() is None, "the operator exited under the barrage"
    finally:
        operator.stop()
    figures("1,000 bad webhook requests", {
        "scheme": "https" if context else "http (no TLS flags in this checkout)",
        "bad requests": sum(KINDS.values()), "outcomes by kind": table,
        "barrage s": round(took, 1), "retrains from bad requests": retrains_after_barrage,
        "retrainCount after barrage": recorded, "good requests": len(good), "good statuses": good_statuses,
        "good p50 ms": round(1000 * percentile(good, 0.5), 1) if good else None,
        "good p99 ms": round(1000 * percentile(good, 0.99), 1) if good else None,
        "good max ms": round(1000 * max(good), 1) if good else None,
        "good firing alert after": status,
    })
    # Refused: a 4xx, or a 503 while the server sheds load; a slow client: dropped in time.
    surprises = {kind: o for kind, o in table.items()
                 if set(o) - ({"dropped"} if kind == "slow client" else {"4xx", "status 503"})}
    assert not surprises, surprises
    assert retrains_after_barrage == 0 and not recorded
    assert good_statuses == {200: len(good)}, "good requests were not all answered 200"
    assert good and percentile(good, 0.99) <= GOOD_P99_BOUND
    assert status == 200
    assert len(retrains(stack, namespace, "guarded")) == 1
