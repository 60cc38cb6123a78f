"""A storage outage is ridden out for TAILOR_S3_RETRY_SECONDS, and no longer (`outage`)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from tailor_trainer import outage
from tailor_trainer.errors import PermanentError, RetryableError
from tailor_trainer.storage import Store


class Flaky:
    """An S3 client whose put_object is unreachable `failures` times, then works."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures, self.calls = failures, 0
        self.error = error or EndpointConnectionError(endpoint_url="http://minio:9000")

    def put_object(self, **_: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return {}


def store_with(client: Flaky, seconds: float) -> tuple[Store, list[float]]:
    store = Store()
    store._client = client
    store.retry_seconds = seconds
    now = [0.0]
    slept: list[float] = []

    def sleep(delay: float) -> None:
        slept.append(delay)
        now[0] += delay

    store._sleep, store._clock = sleep, lambda: now[0]
    return store, slept


def test_an_outage_shorter_than_the_limit_is_ridden_out_with_backoff() -> None:
    client = Flaky(failures=5)
    store, slept = store_with(client, seconds=120)
    store.put_bytes("s3://bucket/key", b"x")
    assert client.calls == 6 and slept == [1.0, 2.0, 4.0, 8.0, 15.0]


def test_an_outage_longer_than_the_limit_fails_retryably_and_in_time() -> None:
    client = Flaky(failures=100)
    store, slept = store_with(client, seconds=30)
    with pytest.raises(RetryableError, match="cannot reach S3"):
        store.put_bytes("s3://bucket/key", b"x")
    assert sum(slept) <= 30 and slept == [1.0, 2.0, 4.0, 8.0, 15.0]


def test_a_refusal_is_not_retried() -> None:
    denied = ClientError({"Error": {"Code": "AccessDenied"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")
    client = Flaky(failures=100, error=denied)
    store, slept = store_with(client, seconds=120)
    with pytest.raises(PermanentError, match="refused"):
        store.put_bytes("s3://bucket/key", b"x")
    assert client.calls == 1 and slept == []


@pytest.mark.parametrize("text", ["-1", "soon", "4000"])
def test_a_bad_retry_setting_is_a_clear_error(text: str) -> None:
    with pytest.raises(PermanentError, match=outage.ENV_RETRY_SECONDS):
        outage.retry_seconds({outage.ENV_RETRY_SECONDS: text})


def test_the_retry_setting_defaults_and_may_turn_retries_off() -> None:
    assert outage.retry_seconds({}) == outage.DEFAULT_RETRY_SECONDS
    assert outage.retry_seconds({outage.ENV_RETRY_SECONDS: "0"}) == 0
