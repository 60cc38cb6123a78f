"""The alert webhook against hostile callers: a real server on 127.0.0.1 with a fake lookup and
retrain, spoken to with http.client and raw sockets. No token, a wrong token, malformed or
oversized bodies, a missing Content-Length, a flood from one address and slow clients each get
their 4xx (or 503) and never a retrain, while a good request from another address still
succeeds. The token buckets run on an injected clock."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from tailor.handlers import alerts
from tailor.io.webhook_server import HardenedServer, Limits, TokenBuckets

TOKEN = "s3cret-token"
ALERT = {"version": "4", "status": "firing", "alerts": [{
    "status": "firing", "fingerprint": "f1", "startsAt": "2026-01-01T00:00:00Z",
    "labels": {"alertname": "X", "namespace": "ns", "monitor": "m"}}]}
FAST = Limits(max_body_bytes=4096, request_timeout=1.0, max_connections=4, max_in_flight=4,
              max_in_flight_per_source=2, rate=1000.0, burst=1000)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_the_rate_per_source() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(0.5)  # refused, and nothing taken
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0  # another source has its own bucket
    clock.now += 0.25
    assert buckets.take("a") == pytest.approx(0.25)
    clock.now += 0.25
    assert buckets.take("a") == 0 and buckets.take("a") == pytest.approx(0.5)
    clock.now += 60  # refills up to the burst, no further
    assert [buckets.take("a") for _ in range(4)][-1] == pytest.approx(0.5)


def test_token_bucket_forgets_the_least_recently_seen_source() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, clock=clock, max_sources=2)
    assert buckets.take("a") == 0 and buckets.take("b") == 0
    assert buckets.take("a") == pytest.approx(1.0)  # "a" is now the most recent
    assert buckets.take("c") == 0  # "b" forgotten ...
    assert buckets.take("b") == 0  # ... so it starts full again
    assert buckets.take("a") == 0  # and so did "a", evicted by "b"


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_token_bucket_refuses_nonsense(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate > 0 and burst >= 1"):
        TokenBuckets(rate, burst)


@dataclass
class Webhook:
    server: HardenedServer
    retrains: list[dict[str, Any]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def post(self, body: bytes | None = None, token: str | None = TOKEN, path: str = "/alerts",
             source: str = "127.0.0.1") -> tuple[int, dict[str, Any], dict[str, str]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5,
                                                source_address=(source, 0))
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        data = json.dumps(ALERT).encode() if body is None else body
        connection.request("POST", path, body=data, headers=headers)
        response = connection.getresponse()
        result = response.status, json.loads(response.read()), dict(response.getheaders())
        connection.close()
        return result

    def raw(self, data: bytes, source: str = "127.0.0.1") -> socket.socket:
        """A connection that has sent `data` and nothing more."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5,
                                        source_address=(source, 0))
        sock.sendall(data)
        return sock


@contextmanager
def serve(tmp_path: Path, limits: Limits, raises: bool = False) -> Iterator[Webhook]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    hook: Webhook

    def retrain(monitor: dict[str, Any], alert: dict[str, Any]) -> str:
        if raises:
            raise RuntimeError("the API server is away")
        hook.retrains.append(alert)
        return "retrain-created"

    def lookup(namespace: str, name: str) -> dict[str, Any] | None:
        return {"metadata": {"namespace": namespace, "name": name}} if name == "m" else None

    hook = Webhook(alerts.make_server("127.0.0.1", 0, token_file, lookup, retrain,
                                      limits=limits))
    thread = threading.Thread(target=hook.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()
    thread.join(5)


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[Webhook]:
    with serve(tmp_path, FAST) as hook:
        yield hook


def count(outcome: str) -> float:
    return REGISTRY.get_sample_value("tailor_alerts_received_total", {"outcome": outcome}) or 0.0


def response_of(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes the connection."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:  # closed with the client's bytes unread: a reset, not a FIN
        pass
    sock.close()
    return b"".join(chunks)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_good_alert_retrains_once(webhook: Webhook) -> None:
    before = count("retrain-created")
    status, body, _ = webhook.post()
    assert (status, body) == (200, {"results": [{"namespace": "ns", "monitor": "m",
                                                 "outcome": "retrain-created"}]})
    assert len(webhook.retrains) == 1 and count("retrain-created") == before + 1


@pytest.mark.parametrize("token", [None, "wrong", "", TOKEN + "x", TOKEN[:-1]])
def test_no_or_wrong_token_is_401(webhook: Webhook, token: str | None) -> None:
    before = count("unauthorized")
    status, body, _ = webhook.post(token=token)
    assert status == 401 and "bearer token" in body["error"]
    assert webhook.retrains == [] and count("unauthorized") == before + 1


@pytest.mark.parametrize("bad", [b"not json", b"[]", b"null", b'{"alerts": "x"}',
                                 b'{"alerts": [{"labels": 3}]}', b"\xff\xfe",
                                 b"[" * 2000 + b"]" * 2000])
def test_a_malformed_payload_is_400(webhook: Webhook, bad: bytes) -> None:
    before = count("malformed")
    status, body, _ = webhook.post(bad)
    assert status == 400 and "malformed payload" in body["error"]
    assert webhook.retrains == [] and count("malformed") == before + 1


def test_labels_that_are_not_strings_name_no_monitor(webhook: Webhook) -> None:
    alert = {"alerts": [{"status": "firing", "labels": {"namespace": ["ns"], "monitor": {}}}]}
    status, body, _ = webhook.post(json.dumps(alert).encode())
    assert status == 200 and body["results"][0]["outcome"] == "no-such-monitor"
    assert webhook.retrains == []


def test_another_path_is_404(webhook: Webhook) -> None:
    status, _, _ = webhook.post(path="/other")
    assert status == 404 and webhook.retrains == []


def head(length: str | None = None, extra: str = "") -> bytes:
    lines = ["POST /alerts HTTP/1.1", "Host: x", f"Authorization: Bearer {TOKEN}"]
    lines += [f"Content-Length: {length}"] if length is not None else []
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def test_a_body_above_the_cap_is_413_before_it_is_read(webhook: Webhook) -> None:
    before = count("too-large")
    # Only the headers are sent: the answer cannot have waited for the 1 GB they announce.
    started = time.monotonic()
    answer = response_of(webhook.raw(head(str(10**9))))
    assert answer.startswith(b"HTTP/1.0 413") and time.monotonic() - started < 0.9
    assert count("too-large") == before + 1 and webhook.retrains == []


@pytest.mark.parametrize(("request_head", "expected"), [
    (head(), b"HTTP/1.0 411"),  # no Content-Length
    (head(extra="Transfer-Encoding: chunked\r\n"), b"HTTP/1.0 411"),
    (head("-1"), b"HTTP/1.0 400"), (head("12abc"), b"HTTP/1.0 400"),
    (head("5", extra="Content-Length: 6\r\n"), b"HTTP/1.0 400"),
])
def test_a_missing_or_bad_content_length_is_refused(webhook: Webhook, request_head: bytes,
                                                    expected: bytes) -> None:
    assert response_of(webhook.raw(request_head + b"{}")).startswith(expected)
    assert webhook.retrains == []


def test_a_body_shorter_than_announced_is_cut_off_at_the_deadline(webhook: Webhook) -> None:
    before = count("timeout")
    started = time.monotonic()
    answer = response_of(webhook.raw(head("100") + b'{"alerts": '))
    assert answer == b"" and 0.9 < time.monotonic() - started < 3
    assert count("timeout") == before + 1 and webhook.retrains == []


def test_a_slow_client_is_cut_off_while_others_are_served(webhook: Webhook) -> None:
    """Slowloris: headers trickle in a byte at a time, each well within any per-read timeout;
    the request's deadline (1 s here) ends it, and another client is served meanwhile."""
    before = count("timeout")
    slow = webhook.raw(b"POST /alerts HTTP/1.1\r\n", source="127.0.0.2")
    started = time.monotonic()
    served = webhook.post()
    cut_off = None
    for byte in b"X-Slow: " + b"a" * 100:
        try:
            slow.sendall(bytes([byte]))
            if slow.recv(1, socket.MSG_DONTWAIT) == b"":
                cut_off = time.monotonic() - started
                break
        except BlockingIOError:
            pass
        except OSError:
            cut_off = time.monotonic() - started
            break
        time.sleep(0.05)  # the slow client's pace, not a wait for the server
    slow.close()
    assert served[0] == 200 and len(webhook.retrains) == 1
    assert cut_off is not None and 0.9 < cut_off < 2.5
    assert count("timeout") == before + 1


def test_connections_beyond_the_cap_get_503_and_one_source_cannot_take_every_slot(
        webhook: Webhook) -> None:
    """FAST: 4 in flight, 2 per source. Two stalled clients from 127.0.0.2 fill that source's
    share: its third connection gets 503, while 127.0.0.1 is still served; with two more stalled
    clients from 127.0.0.3 every slot is taken and 127.0.0.1 gets 503 too."""
    before = count("busy")
    stalled = [webhook.raw(b"POST", source="127.0.0.2") for _ in range(2)]
    # The accept loop serves connections in order: once a request from the same source behind
    # them is answered, both stalled ones hold their slots.
    assert response_of(webhook.raw(head("2") + b"{}", source="127.0.0.2")).startswith(
        b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1")
    assert webhook.post()[0] == 200
    eventually(lambda: webhook.server.in_flight == 2)  # the served request's slot is back
    stalled += [webhook.raw(b"POST", source="127.0.0.3") for _ in range(2)]
    status, _, headers = webhook.post(source="127.0.0.3")
    assert (status, headers["Retry-After"]) == (503, "1")
    status, _, _ = webhook.post()
    assert status == 503 and count("busy") == before + 3
    for sock in stalled:
        assert response_of(sock) == b""  # cut off at the deadline
    eventually(lambda: webhook.server.in_flight == 0)
    assert webhook.post()[0] == 200 and len(webhook.retrains) == 2


def test_unauthenticated_slow_clients_cannot_take_the_work_slots(tmp_path: Path) -> None:
    """Ten stalled clients from five addresses hold connections, not work slots: a caller with
    the token is still served. Only authenticated requests count against max_in_flight: two of
    them stalled in their bodies take both slots, and the next authenticated one gets 503."""
    limits = Limits(max_body_bytes=4096, request_timeout=2.0, header_timeout=2.0,
                    max_connections=64, max_in_flight=2, rate=1000.0, burst=1000)
    with serve(tmp_path, limits) as hook:
        stalled = [hook.raw(b"POST /alerts HTTP/1.1\r\n", source=f"127.0.0.{2 + i % 5}")
                   for i in range(10)]
        assert hook.post()[0] == 200
        authorized = (f"POST /alerts HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                      "Content-Length: 100\r\n\r\n{").encode()
        in_body = [hook.raw(authorized, source=f"127.0.1.{i}") for i in (1, 2)]
        eventually(lambda: hook.server.work_free == 0)  # both slots taken
        before = count("busy")
        status, _, headers = hook.post(source="127.0.2.1")
        assert (status, headers["Retry-After"]) == (503, "1") and count("busy") == before + 1
        for sock in stalled + in_body:
            sock.close()
        eventually(lambda: hook.server.work_free == 2)
        assert hook.post()[0] == 200 and len(hook.retrains) == 2


def test_a_flood_from_one_address_gets_429_with_retry_after(tmp_path: Path) -> None:
    limits = Limits(request_timeout=1.0, rate=0.5, burst=2)
    with serve(tmp_path, limits) as hook:
        before = count("rate-limited")
        assert [hook.post()[0] for _ in range(2)] == [200, 200]
        status, body, headers = hook.post()
        assert status == 429 and "too many requests" in body["error"]
        assert 1 <= int(headers["Retry-After"]) <= 2
        assert hook.post(token="wrong")[0] == 429  # counted before the token is looked at
        assert hook.post(source="127.0.0.2")[0] == 200  # another address has its own bucket
        assert len(hook.retrains) == 3 and count("rate-limited") == before + 2


def test_a_failing_retrain_is_500_so_alertmanager_sends_it_again(tmp_path: Path) -> None:
    with serve(tmp_path, FAST, raises=True) as hook:
        before = count("error")
        status, body, _ = hook.post()
        assert status == 500 and body["results"][0]["outcome"] == "error"
        assert count("error") == before + 1
