"""Counting values on a numeric profile's bin edges, fast and exactly.

``EdgeBinner.count`` gives the counts ``bincount(searchsorted(edges, x, "right"))`` would, but
places most values by arithmetic on a lookup grid instead of a binary search; ``window``'s
``NumericCounts`` uses it for every batch of a check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

GRID_CELLS = 1 << 16
"""Cells of the lookup grid that bins most values without a binary search (see EdgeBinner)."""
GRID_MIN_VALUES = 4096
"""Batches smaller than this are binned by binary search: the grid's fixed cost is per call."""


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
