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

from tailor.drift.accuracy import ConfusionAccumulator, LabelIndex, epoch_micros
from tailor.drift.profile import (
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    TextProfile,
    text_summaries,
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

GRID_CELLS = 1 << 16
"""Cells of the lookup grid that bins most values without a binary search (see EdgeBinner)."""
GRID_MIN_VALUES = 4096
"""Batches smaller than this are binned by binary search: the grid's fixed cost is per call."""
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


class EdgeBinner:
    """Counts values on sorted edges exactly as ``bincount(searchsorted(edges, x, "right"))``.

    A binary search costs about 40 ns a value on 100 edges. Most values can be placed by
    arithmetic instead: a uniform grid of ``GRID_CELLS`` cells over the inner reference range,
    ``cell(x) = min(max((x - a) * s, 0), cells - 1)``, truncated. That map is monotone in ``x``
    (every step rounds monotonically), so if no edge falls in ``x``'s cell, the edges at or below
    ``x`` are exactly those whose own cell is lower: a table lookup, with no rounding error. Only
    values in cells that hold an edge, plus the two end cells (everything outside the edges, and
    NaN and infinities) go through the binary search; on continuous data a few percent.

    Values piled on the edges (discrete data) all need the search; after a batch where most did,
    the binner uses the search alone. Either way the counts are the same.

    The batch-sized temporaries live in per-thread scratch buffers: allocated afresh for every
    batch, glibc hands blocks this large back to the kernel on free, and the page faults of
    the next batch's allocation cost twice the binning itself.
    """

    def __init__(self, edges: FloatArray) -> None:
        self.edges = edges
        self._grid = _Grid.build(edges)

    def count(self, x: FloatArray) -> tuple[IntArray, FloatArray, IntArray]:
        """Per-bin counts (``len(edges) + 1`` bins), and the values that may lie outside the
        edges or be non-finite with their bin indices: every value in the two outer bins is
        among them."""
        bins = self.edges.size + 1
        grid = self._grid
        if grid is None or x.size < GRID_MIN_VALUES:
            idx = np.searchsorted(self.edges, x, side="right")
            return np.bincount(idx, minlength=bins), x, idx
        work = _scratch(x.size)
        cells = work.cells[: x.size]
        _cells(x, grid.low, grid.scale, work.floats[: x.size], cells)
        per_cell = np.bincount(cells, minlength=GRID_CELLS)
        searched = np.take(grid.ambiguous, cells, out=work.flags[: x.size])
        outer = x[searched]
        idx = np.searchsorted(self.edges, outer, side="right")
        per_cell[grid.ambiguous] = 0
        running = work.running
        np.cumsum(per_cell, out=running[1:])
        counts = np.diff(running[grid.bin_starts]) + np.bincount(idx, minlength=bins)
        if 2 * outer.size > x.size:
            self._grid = None
        return counts, outer, idx


class _Grid:
    """The lookup grid of an EdgeBinner (its tables depend only on the edges)."""

    def __init__(self, low: float, scale: float, edges: FloatArray) -> None:
        self.low = low
        self.scale = scale
        edge_cells = self.cells(edges)
        self.ambiguous = np.zeros(GRID_CELLS, dtype=np.bool_)
        self.ambiguous[edge_cells] = True
        self.ambiguous[: edge_cells[0] + 1] = True
        self.ambiguous[edge_cells[-1] :] = True
        # Bin b (values with b edges at or below them) spans the cells whose lower edge count
        # is b: a contiguous run, since that count never decreases from cell to cell.
        below = np.searchsorted(edge_cells, np.arange(GRID_CELLS), side="left")
        self.bin_starts = np.searchsorted(below, np.arange(edges.size + 2), side="left")

    @classmethod
    def build(cls, edges: FloatArray) -> _Grid | None:
        """A grid over the inner edges; None where a binary search is as cheap or the edges are
        not finite. A few candidate inner ranges are tried (outliers set the outer edges) and the
        one that leaves the least reference mass to search is kept: quantile bins hold about
        equal mass, assumed to spread evenly inside each bin."""
        m = edges.size - 1
        if m < 8 or not bool(np.all(np.isfinite(edges))):
            return None
        best: tuple[float, float, float] | None = None
        for k in (0, 1, 2, 5, 10):
            lo, hi = float(edges[k]), float(edges[m - 1 - k])
            if hi <= lo:
                break
            scale = GRID_CELLS / (hi - lo)
            if not np.isfinite(scale):
                continue
            spans = np.diff(_cells(edges, lo, scale)).astype(np.float64)
            # Share of each bin that falls in a searched cell (its end cells at least).
            searched = np.minimum(1.0, 2.0 / (spans + 1.0))
            cost = float(np.mean(searched))
            if best is None or cost < best[0]:
                best = (cost, lo, scale)
        if best is None:
            return None
        return cls(best[1], best[2], edges)

    def cells(self, x: FloatArray) -> npt.NDArray[np.intp]:
        return _cells(x, self.low, self.scale)


def _cells(
    x: FloatArray,
    low: float,
    scale: float,
    floats: FloatArray | None = None,
    out: npt.NDArray[np.intp] | None = None,
) -> npt.NDArray[np.intp]:
    """``x``'s grid cell; monotone in ``x``. NaN lands in cell 0 (``fmax`` drops it).

    ``floats`` and ``out`` (``x``'s size) are scratch space and the result's storage."""
    with np.errstate(over="ignore", invalid="ignore"):  # far values saturate: still monotone
        t = np.subtract(x, low, out=floats)
        np.multiply(t, scale, out=t)
    np.fmax(t, 0.0, out=t)
    np.fmin(t, GRID_CELLS - 1, out=t)
    if out is None:
        return t.astype(np.intp)
    np.copyto(out, t, casting="unsafe")  # truncation, as astype
    return out


@dataclass
class _Buffers:
    """EdgeBinner.count's temporaries for batches of up to `floats.size` values."""

    floats: FloatArray
    cells: npt.NDArray[np.intp]
    flags: npt.NDArray[np.bool_]
    running: IntArray  # GRID_CELLS + 1 running counts; [0] stays 0

    @classmethod
    def sized(cls, size: int) -> _Buffers:
        return cls(np.empty(size), np.empty(size, np.intp), np.empty(size, np.bool_),
                   np.zeros(GRID_CELLS + 1, np.int64))


class _PerThread(threading.local):
    """Each thread's buffers, grown to the largest batch seen."""

    def __init__(self) -> None:
        self.buffers = _Buffers.sized(0)


_PER_THREAD = _PerThread()


SCRATCH_MAX_VALUES = 1 << 20
"""Larger batches get buffers of their own (freed after use): a thread keeps at most ~17 MiB."""


def _scratch(size: int) -> _Buffers:
    """Buffers for `size` values: this thread's, reused (fresh ones cost page faults)."""
    mine = _PER_THREAD
    if mine.buffers.floats.size >= size:
        return mine.buffers
    grown = _Buffers.sized(size)
    if size <= SCRATCH_MAX_VALUES:
        mine.buffers = grown
    return grown


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
