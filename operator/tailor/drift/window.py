"""Streaming, mergeable summaries of a window of prediction logs.

A window is read batch by batch (Parquet row groups, JSONL blocks) and reduced, per compared
column, to counts on the reference profile's bins; nothing proportional to the window's rows is
kept except, for accuracy, the join with the labels one batch at a time. Two accumulators over
disjoint parts of a window merge into exactly the accumulator of the whole window, so checks
can be split across files, processes or time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from tailor_contract.profile import (
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    TextProfile,
    text_summaries,
)

from tailor.drift.accuracy import ConfusionAccumulator, LabelIndex, epoch_micros
from tailor.drift.binning import EdgeBinner

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

BIN_THREADS = min(4, os.cpu_count() or 1)
"""Threads that bin a large batch's numeric columns side by side (numpy releases the GIL)."""
PARALLEL_MIN_VALUES = 1 << 18
"""Batches with fewer numeric values than this are binned on the calling thread."""

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _binning_pool() -> ThreadPoolExecutor:
    """One pool per process, shared by every check (its tasks never wait on each other)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(BIN_THREADS, thread_name_prefix="tailor-drift-bin")
        return _pool


@dataclass
class NumericCounts:
    """Window counts on a numeric profile's bins.

    ``counts[0]`` counts values below the first edge, ``counts[-1]`` values at or above the last
    one, ``counts[1:-1]`` the reference bins; ``below_sum``/``above_sum`` add up the values
    outside the edges (for an exact Wasserstein tail).
    """

    edges: FloatArray
    counts: IntArray
    below_sum: float = 0.0
    above_sum: float = 0.0
    missing: int = 0
    _binner: EdgeBinner | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def empty(cls, profile: NumericProfile) -> NumericCounts:
        return cls(profile.edges, np.zeros(profile.edges.size + 1, np.int64))

    def update(self, x: FloatArray) -> None:
        if x.size == 0:
            return
        if self._binner is None:
            self._binner = EdgeBinner(self.edges)
        last = self.edges.size
        counts, outer, idx = self._binner.count(x)
        # NaN and +inf sort above every edge and -inf below: only the two outer bins can hold
        # them, so only those (usually tiny) slices are inspected.
        if counts[0]:
            low = outer[idx == 0]
            bad = ~np.isfinite(low)
            counts[0] -= int(bad.sum())
            self.missing += int(bad.sum())
            self.below_sum += float(low[~bad].sum())
        if counts[last]:
            high = outer[idx == last]
            bad = ~np.isfinite(high)
            counts[last] -= int(bad.sum())
            self.missing += int(bad.sum())
            self.above_sum += float(high[~bad].sum())
        self.counts += counts

    def add_missing(self, n: int) -> None:
        self.missing += n

    def merge(self, other: NumericCounts) -> None:
        self.counts += other.counts
        self.below_sum += other.below_sum
        self.above_sum += other.above_sum
        self.missing += other.missing

    @property
    def count(self) -> int:
        return int(self.counts.sum())


@dataclass
class CategoryCounts:
    """Window counts of each category value."""

    counts: dict[str, int] = field(default_factory=dict)
    missing: int = 0

    def update(self, arr: pa.Array | pa.ChunkedArray) -> None:
        self.missing += arr.null_count
        if len(arr) == arr.null_count:
            return
        vc = pc.value_counts(arr.cast(pa.string()))
        for value, n in zip(
            vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True
        ):
            if value is not None:
                self.counts[value] = self.counts.get(value, 0) + int(n)

    def add_missing(self, n: int) -> None:
        self.missing += n

    def merge(self, other: CategoryCounts) -> None:
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.missing += other.missing

    @property
    def count(self) -> int:
        return sum(self.counts.values())


ColumnCounts = NumericCounts | CategoryCounts


@dataclass
class WindowAccumulator:
    """Everything a check needs from a window, built one batch at a time.

    Create it with ``WindowAccumulator.for_profile``; feed it ``update(batch)``; combine partial
    windows with ``merge``; hand it to ``tailor.drift.check.evaluate``.
    """

    columns: dict[str, ColumnCounts]
    """Compared column (text features expanded into ``<name>:<summary>``) to its counts."""
    predictions: CategoryCounts
    id_column: str
    timestamp_column: str
    prediction_column: str
    window_start_us: int | None = None
    window_end_us: int | None = None
    rows: int = 0
    """Rows in the window (rows outside it are skipped)."""
    skipped: int = 0
    """Rows read but outside the window."""
    confusions: ConfusionAccumulator | None = None
    labels: LabelIndex | None = None
    text_sources: dict[str, str] = field(default_factory=dict)
    """Text feature name for each ``<name>:<summary>`` column."""

    @classmethod
    def for_profile(
        cls,
        profile: ReferenceProfile,
        *,
        features: Sequence[str] | None = None,
        id_column: str = "id",
        timestamp_column: str = "timestamp",
        prediction_column: str = "prediction",
        window_start: datetime | None = None,
        window_end: datetime | None = None,
        labels: LabelIndex | None = None,
        cohort_seconds: int = 3600,
    ) -> WindowAccumulator:
        """An empty window for ``profile``'s columns (or only ``features``, by feature name)."""
        names = list(profile.features) if features is None else list(features)
        unknown = [n for n in names if n not in profile.features]
        if unknown:
            raise KeyError(f"features not in the reference profile: {unknown}")
        columns: dict[str, ColumnCounts] = {}
        text_sources: dict[str, str] = {}
        for name in names:
            feature = profile.features[name]
            if isinstance(feature, TextProfile):
                for summary, numeric in feature.summaries.items():
                    columns[f"{name}:{summary}"] = NumericCounts.empty(numeric)
                    text_sources[f"{name}:{summary}"] = name
            elif isinstance(feature, NumericProfile):
                columns[name] = NumericCounts.empty(feature)
            elif isinstance(feature, CategoricalProfile):
                columns[name] = CategoryCounts()
        return cls(
            columns=columns,
            predictions=CategoryCounts(),
            id_column=id_column,
            timestamp_column=timestamp_column,
            prediction_column=prediction_column,
            window_start_us=to_micros(window_start),
            window_end_us=to_micros(window_end),
            confusions=(
                ConfusionAccumulator(profile.classes, cohort_seconds)
                if labels is not None
                else None
            ),
            labels=labels,
            text_sources=text_sources,
        )

    def empty_like(self) -> WindowAccumulator:
        """A fresh accumulator with the same columns and settings (for a partial window)."""
        columns: dict[str, ColumnCounts] = {
            name: (
                NumericCounts(c.edges, np.zeros_like(c.counts))
                if isinstance(c, NumericCounts)
                else CategoryCounts()
            )
            for name, c in self.columns.items()
        }
        return WindowAccumulator(
            columns=columns,
            predictions=CategoryCounts(),
            id_column=self.id_column,
            timestamp_column=self.timestamp_column,
            prediction_column=self.prediction_column,
            window_start_us=self.window_start_us,
            window_end_us=self.window_end_us,
            confusions=(
                ConfusionAccumulator(self.confusions.classes, self.confusions.cohort_seconds)
                if self.confusions is not None
                else None
            ),
            labels=self.labels,
            text_sources=dict(self.text_sources),
        )

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add one batch of prediction-log rows; rows outside the window are skipped."""
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        if table.num_rows == 0:
            return
        read = table.num_rows
        table, ts = in_window(table, self.timestamp_column, self.window_start_us,
                              self.window_end_us)
        self.skipped += read - table.num_rows
        if table.num_rows == 0:
            return
        n = table.num_rows
        self.rows += n
        text_cache: dict[str, dict[str, FloatArray]] = {}
        numeric: list[tuple[NumericCounts, pa.ChunkedArray]] = []
        for name, counts in self.columns.items():
            source = self.text_sources.get(name)
            column_name = source if source is not None else name
            if column_name not in table.column_names:
                counts.add_missing(n)
                continue
            column = table[column_name]
            if isinstance(counts, CategoryCounts):
                counts.update(column)
            elif source is not None:
                if source not in text_cache:
                    text_cache[source] = text_summaries(column)
                counts.update(text_cache[source][name.split(":", 1)[1]])
            else:
                numeric.append((counts, column))
        # Each column's counts are its own, so columns can be binned in any order, at once.
        if BIN_THREADS > 1 and len(numeric) > 1 and n * len(numeric) >= PARALLEL_MIN_VALUES:
            list(_binning_pool().map(_bin, numeric))
        else:
            for job in numeric:
                _bin(job)
        if self.prediction_column in table.column_names:
            predicted = table[self.prediction_column]
            self.predictions.update(predicted)
            if (
                self.confusions is not None
                and self.labels is not None
                and self.id_column in table.column_names
            ):
                self.confusions.update(table[self.id_column], predicted, ts, self.labels)
        else:
            self.predictions.add_missing(n)

    def update_all(self, batches: Iterable[pa.RecordBatch | pa.Table]) -> WindowAccumulator:
        for batch in batches:
            self.update(batch)
        return self

    def merge(self, other: WindowAccumulator) -> WindowAccumulator:
        """Add another partial window (same profile and settings) into this one; returns self."""
        if set(other.columns) != set(self.columns):
            raise ValueError("can only merge windows over the same columns")
        for name, counts in self.columns.items():
            theirs = other.columns[name]
            if type(counts) is not type(theirs):
                raise ValueError(f"column {name!r} has different kinds in the two windows")
            counts.merge(theirs)  # type: ignore[arg-type]  # same type, checked above
        self.predictions.merge(other.predictions)
        self.rows += other.rows
        self.skipped += other.skipped
        if self.confusions is not None and other.confusions is not None:
            self.confusions.merge(other.confusions)
        return self


def in_window(
    table: pa.Table, timestamp_column: str, start_us: int | None, end_us: int | None
) -> tuple[pa.Table, IntArray | None]:
    """The rows of ``table`` whose timestamp is in ``[start_us, end_us)`` and their timestamps
    (microseconds since the epoch; None when the table has no timestamp column, in which case
    every row is kept). Checks and a retrain's production data select a window the same way."""
    if timestamp_column not in table.column_names:
        return table, None
    ts = epoch_micros(table[timestamp_column])
    if start_us is None and end_us is None:
        return table, ts
    lo = _or(start_us, np.iinfo(np.int64).min)
    hi = _or(end_us, np.iinfo(np.int64).max)
    inside = (ts >= lo) & (ts < hi)
    if int(inside.sum()) == table.num_rows:
        return table, ts
    return table.filter(pa.array(inside)), ts[inside]


def _bin(job: tuple[NumericCounts, pa.ChunkedArray]) -> None:
    counts, column = job
    counts.update(_floats(column))


def _floats(column: pa.ChunkedArray | pa.Array) -> FloatArray:
    if not pa.types.is_float64(column.type):
        if not (
            pa.types.is_integer(column.type)
            or pa.types.is_floating(column.type)
            or pa.types.is_boolean(column.type)
        ):
            raise TypeError(f"a numeric feature holds {column.type}")
        column = column.cast(pa.float64())
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if not chunks:
        return np.zeros(0)
    parts = [np.asarray(c.to_numpy(zero_copy_only=False), dtype=np.float64) for c in chunks]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def to_micros(t: datetime | None) -> int | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1_000_000)


def _or(value: int | None, default: int) -> int:
    return default if value is None else value
