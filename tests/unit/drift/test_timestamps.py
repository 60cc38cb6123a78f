from __future__ import annotations

import pyarrow as pa
from tailor.drift.accuracy import epoch_micros


def test_fractional_epoch_seconds_are_read_to_the_microsecond() -> None:
    column = pa.chunked_array([[1795667750.8430065, 1.5], [2.0]])
    assert epoch_micros(column).tolist() == [1795667750843006, 1500000, 2000000]


def test_iso_strings_and_arrow_timestamps_agree() -> None:
    iso = epoch_micros(pa.array(["2026-01-01T00:00:01.5Z"]))
    arrow = epoch_micros(pa.array([1767225601500000], pa.timestamp("us", tz="UTC")))
    assert iso.tolist() == arrow.tolist() == [1767225601500000]
