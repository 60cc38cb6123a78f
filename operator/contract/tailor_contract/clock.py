"""Time as the Kubernetes API writes it: RFC 3339 in UTC with a `Z`, whole seconds
(metav1.Time), for conditions, status fields and annotations on both sides of the contract."""

from __future__ import annotations

import datetime
from typing import Final

RFC3339: Final = "%Y-%m-%dT%H:%M:%SZ"


def now() -> datetime.datetime:
    """The current time in UTC, truncated to whole seconds as the API server stores it."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def format(moment: datetime.datetime) -> str:
    """``2026-11-28T09:17:11Z``; a naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime(RFC3339)


def parse(value: str) -> datetime.datetime:
    """The aware UTC time of an RFC 3339 string (``Z`` or an offset, fractions allowed)."""
    moment = datetime.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"time {value!r} has no zone (RFC 3339 needs Z or an offset)")
    return moment.astimezone(datetime.UTC)


def stamp() -> str:
    """``format(now())``: the time to write into a condition or a status field."""
    return format(now())
