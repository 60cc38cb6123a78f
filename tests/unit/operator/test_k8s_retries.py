"""Retries of transient Kubernetes API failures (tailor.io.k8s): which errors are retried, the
backoff schedule, and `Kube._call` against a scripted connection (no server)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY
from tailor.io.k8s import Conflict, Kube, RetryPolicy, retry_delay, transient_reason
from tailor.settings import parse
from urllib3.exceptions import (
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

POLICY = RetryPolicy(attempts=6, base=0.25, cap=8.0, deadline=30.0)


def api_error(status: int, headers: dict[str, str] | None = None) -> ApiException:
    error = ApiException(status=status, reason="x")
    error.headers = headers
    return error


NO_POOL: Any = None  # urllib3's errors name the pool or connection they came from


def refused() -> NewConnectionError:
    return NewConnectionError(NO_POOL, "Failed to establish a new connection: [Errno 111] refused")


def timed_out() -> ReadTimeoutError:
    return ReadTimeoutError(NO_POOL, "/apis", "Read timed out.")


@pytest.mark.parametrize(("error", "reason"), [
    (api_error(429), "429"), (api_error(500), "500"), (api_error(502), "502"),
    (api_error(503), "503"), (api_error(504), "504"),
    (refused(), "connection"),
    (ProtocolError("Connection aborted.", ConnectionResetError(104, "reset")), "connection"),
    (timed_out(), "timeout"),
    (MaxRetryError(NO_POOL, "/apis", refused()), "connection"),
    (ApiException(status=0, reason="SSLError\nEOF occurred in violation of protocol"),
     "connection"),
])
def test_transient_failures_are_retried_with_their_reason(error: BaseException,
                                                          reason: str) -> None:
    assert transient_reason(error) == reason
    assert retry_delay(error, 0, 0.0, POLICY, random.Random(1)) is not None


@pytest.mark.parametrize("error", [
    api_error(400), api_error(401), api_error(403), api_error(404), api_error(409),
    api_error(410), api_error(422), api_error(501),
    ApiException(status=0, reason="Cannot prepare a request message"),
    MaxRetryError(NO_POOL, "/apis", None), ValueError("not an API error"),
])
def test_what_the_server_meant_is_never_retried(error: BaseException) -> None:
    assert transient_reason(error) is None
    assert retry_delay(error, 0, 0.0, POLICY, random.Random(1)) is None


def test_delays_are_full_jitter_under_a_doubling_capped_ceiling() -> None:
    rng = random.Random(7)
    policy = RetryPolicy(attempts=100, base=0.25, cap=8.0, deadline=1e9)
    for retry in range(12):
        ceiling = min(8.0, 0.25 * 2 ** retry)
        delays = []
        for _ in range(200):
            decision = retry_delay(api_error(503), retry, 0.0, policy, rng)
            assert decision is not None
            delays.append(decision[1])
        assert all(0.0 <= d <= ceiling for d in delays)
        # Spread over the whole range, not bunched at the ceiling (full jitter).
        assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling


def test_the_schedule_is_reproducible_with_a_seeded_source() -> None:
    def schedule(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [retry_delay(refused(), k, 0.0, POLICY, rng)[1]  # type: ignore[index]
                for k in range(5)]

    assert schedule(3) == schedule(3)
    assert schedule(3) != schedule(4)


def test_attempts_bound_the_retries() -> None:
    policy = RetryPolicy(attempts=3, deadline=1e9)
    rng = random.Random(0)
    assert retry_delay(api_error(503), 0, 0.0, policy, rng) is not None
    assert retry_delay(api_error(503), 1, 0.0, policy, rng) is not None
    assert retry_delay(api_error(503), 2, 0.0, policy, rng) is None  # the third attempt failed
    assert retry_delay(api_error(503), 0, 0.0, RetryPolicy(attempts=1), rng) is None


def test_no_retry_would_end_past_the_deadline() -> None:
    policy = RetryPolicy(attempts=10, base=1.0, cap=1.0, deadline=10.0)
    assert retry_delay(api_error(503), 0, 8.5, policy, random.Random(0)) is not None
    assert retry_delay(api_error(503), 0, 10.5, policy, random.Random(0)) is None
    many = RetryPolicy(attempts=10, deadline=10.0)
    assert retry_delay(api_error(429, {"Retry-After": "3"}), 0, 8.0, many,
                       random.Random(0)) is None


@pytest.mark.parametrize(("header", "delay"), [("2", 2.0), ("0", 0.0), ("120", 8.0)])
def test_retry_after_is_honoured_up_to_the_cap(header: str, delay: float) -> None:
    decision = retry_delay(api_error(429, {"Retry-After": header}), 0, 0.0, POLICY,
                           random.Random(0))
    assert decision == ("429", delay)


@pytest.mark.parametrize("header", ["soon", "Wed, 21 Oct 2015 07:28:00 GMT", None])
def test_an_unreadable_retry_after_falls_back_to_the_backoff(header: str | None) -> None:
    headers = {"Retry-After": header} if header is not None else None
    decision = retry_delay(api_error(429, headers), 0, 0.0, POLICY, random.Random(0))
    assert decision is not None and 0.0 <= decision[1] <= 0.25


@pytest.mark.parametrize("kwargs", [{"attempts": 0}, {"base": -1.0}, {"cap": -1.0},
                                    {"deadline": -1.0}, {"timeout": 0.0}])
def test_an_invalid_policy_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invalid retry policy"):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(("argv", "message"), [
    (["--resync-interval", "-1"], "at least 0"), (["--resync-interval", "soon"], "not a number"),
    (["--api-retries", "0"], "at least 1"), (["--api-timeout", "0"], "more than 0"),
    (["--api-retry-deadline", "nan"], "at least 0"),
])
def test_bad_settings_are_refused_clearly(argv: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(argv)
    assert message in capsys.readouterr().err


def test_the_settings_reach_their_defaults_and_flags() -> None:
    default = parse([])
    assert (default.resync_interval, default.api_retries, default.api_retry_deadline,
            default.api_timeout) == (300.0, 6, 30.0, 30.0)
    assert parse(["--resync-interval", "0", "--api-retries", "1"]).resync_interval == 0.0


# ----------------------------------------------------------------- Kube._call, scripted
class Response:
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status, self.reason = status, "scripted"
        self.data = json.dumps(body).encode()
        self.headers = urllib3.HTTPHeaderDict(headers or {})

    def read(self) -> bytes:
        return self.data

    def getheaders(self) -> urllib3.HTTPHeaderDict:
        return self.headers


class Scripted:
    """A connection that answers each request with the next scripted outcome."""

    def __init__(self, outcomes: list[Response | Exception]) -> None:
        self.outcomes: Iterator[Response | Exception] = iter(outcomes)
        self.requests: list[tuple[str, str, Any]] = []

    def __call__(self, method: str, url: str, **kwargs: Any) -> Response:
        self.requests.append((method, url, kwargs.get("_request_timeout")))
        outcome = next(self.outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def scripted_kube(outcomes: list[Response | Exception], policy: RetryPolicy = POLICY
                  ) -> tuple[Kube, Scripted, list[float]]:
    api = client.ApiClient(client.Configuration(host="http://api.invalid"))
    connection = Scripted(outcomes)
    api.rest_client.request = connection  # type: ignore[method-assign,assignment]
    sleeps: list[float] = []
    return Kube(api, retry=policy, sleep=sleeps.append, rng=random.Random(5)), connection, sleeps


def retries(reason: str) -> float:
    return REGISTRY.get_sample_value("tailor_api_retries_total", {"reason": reason}) or 0.0


JOB = {"metadata": {"name": "j", "namespace": "ns", "uid": "u", "resourceVersion": "7"}}


def test_a_request_is_retried_through_transient_failures_and_counted() -> None:
    before = (retries("503"), retries("connection"), retries("timeout"))
    kube, connection, sleeps = scripted_kube([
        Response(503, {}), refused(), timed_out(),
        Response(200, JOB)])
    assert kube.get_job("ns", "j") == JOB
    assert len(connection.requests) == 4 and len(sleeps) == 3
    assert all(0 <= s <= min(8.0, 0.25 * 2 ** k) for k, s in enumerate(sleeps))
    assert (retries("503"), retries("connection"), retries("timeout")) == tuple(
        b + 1 for b in before)
    assert connection.requests[0][2] == (5.0, 30.0)  # every request has a timeout


def test_a_guarded_patch_that_conflicts_is_not_retried() -> None:
    kube, connection, sleeps = scripted_kube([Response(409, {"reason": "Conflict"})])
    with pytest.raises(Conflict):
        kube.patch_trainingjob_status(JOB, {"phase": "Running"})
    assert len(connection.requests) == 1 and sleeps == []


def test_a_timed_out_create_that_landed_reads_as_exists() -> None:
    kube, connection, _ = scripted_kube([timed_out(),
                                         Response(409, {"reason": "AlreadyExists"})])
    job = {"kind": "Job", "metadata": {"name": "j-worker", "namespace": "ns"}}
    assert kube.create(job) is None
    assert [r[0] for r in connection.requests] == ["POST", "POST"]


def test_other_client_errors_propagate_at_once() -> None:
    kube, connection, sleeps = scripted_kube([Response(403, {"reason": "Forbidden"})])
    with pytest.raises(ApiException) as raised:
        kube.list_pods("ns", "a=b")
    assert raised.value.status == 403 and len(connection.requests) == 1 and sleeps == []


def test_when_retries_run_out_the_last_error_propagates() -> None:
    kube, connection, sleeps = scripted_kube(
        [Response(503, {})] * 2 + [refused()], RetryPolicy(attempts=3, deadline=1e9))
    with pytest.raises(NewConnectionError):
        kube.get_job("ns", "j")
    assert len(connection.requests) == 3 and len(sleeps) == 2


def test_a_429_waits_as_long_as_the_server_asks() -> None:
    kube, _, sleeps = scripted_kube([Response(429, {}, {"Retry-After": "2"}), Response(200, JOB)])
    assert kube.get_job("ns", "j") == JOB
    assert sleeps == [2.0]
