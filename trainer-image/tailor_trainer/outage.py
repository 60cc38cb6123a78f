"""Riding out a storage outage: a Store operation that failed transiently is tried again, with
capped exponential backoff, until TAILOR_S3_RETRY_SECONDS (default 120) have passed.

Why not botocore's own retries alone: they bound attempts, not time (standard mode: 4 attempts
within a few seconds), so an object store that is away for 30 s (a MinIO restart, a failover)
failed the run, and the group restarts that followed failed the same way until the job ran out
of them (measured by the chaos suite: BackoffLimitExceeded within a 30 s outage). Only what
`Store` classified as a transient storage error (RetryableError with reason StorageError:
unreachable, 5xx, throttled, a failed integrity check) is retried; refusals and missing objects
are not.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from tailor_trainer.errors import REASON_INVALID_SPEC, PermanentError, RetryableError

log = logging.getLogger(__name__)
ENV_RETRY_SECONDS = "TAILOR_S3_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 120.0
FIRST_DELAY, MAX_DELAY = 1.0, 15.0
STORAGE_ERROR = "StorageError"
T = TypeVar("T")


def retry_seconds(env: dict[str, str] | None = None) -> float:
    """TAILOR_S3_RETRY_SECONDS (0: fail at the first transient error); a bad value is a
    PermanentError naming the variable."""
    text = (os.environ if env is None else env).get(ENV_RETRY_SECONDS, "").strip()
    if not text:
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise PermanentError(REASON_INVALID_SPEC, f"{ENV_RETRY_SECONDS}={text!r} must be a "
                             "number of seconds from 0 to 3600")
    return value


def outlasting(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorates a Store method: retried while its transient storage errors last less than the
    store's `retry_seconds` (its `_sleep` and `_clock` are injectable for tests)."""

    @functools.wraps(fn)
    def retried(self: Any, *args: Any, **kwargs: Any) -> T:
        deadline = self._clock() + self.retry_seconds
        delay = FIRST_DELAY
        while True:
            try:
                return fn(self, *args, **kwargs)
            except RetryableError as error:
                if error.reason != STORAGE_ERROR or self._clock() + delay > deadline:
                    raise
                log.warning("%s; trying again in %.0fs", error, delay)
                self._sleep(delay)
                delay = min(delay * 2, MAX_DELAY)

    return retried
