"""The window's bin counts: the lookup grid must count exactly as a binary search does."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from tailor.drift import binning, window
from tailor.drift.binning import GRID_MIN_VALUES, EdgeBinner
from tailor.drift.window import NumericCounts, WindowAccumulator
from tailor_contract.profile import ReferenceProfile, build_reference_profile, numeric_profile


def _searchsorted_counts(edges, x):
    """The definition: the old binary-search update, kept here as the oracle."""
    last = edges.size
    idx = np.searchsorted(edges, x, side="right")
    counts = np.bincount(idx, minlength=last + 1)
    low, high = x[idx == 0], x[idx == last]
    missing = int((~np.isfinite(low)).sum() + (~np.isfinite(high)).sum())
    counts[0] -= int((~np.isfinite(low)).sum())
    counts[last] -= int((~np.isfinite(high)).sum())
    return counts, missing, float(low[np.isfinite(low)].sum()), float(high[np.isfinite(high)].sum())


def _nasty(edges, rng, n):
    """Values on the edges, one ulp either side, far outside, non-finite and subnormal."""
    e = edges[rng.integers(0, edges.size, n)]
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -5e-324, 1.7e308, -1.7e308])
    return np.concatenate(
        [e, np.nextafter(e, np.inf), np.nextafter(e, -np.inf), rng.choice(special, n)]
    )


REFERENCES = {
    "normal": lambda rng: rng.normal(size=20_000),
    "lognormal": lambda rng: np.exp(rng.normal(size=20_000)),
    "pareto": lambda rng: rng.pareto(1.0, size=20_000),
    "cauchy": lambda rng: rng.standard_cauchy(size=20_000),
    "outlier": lambda rng: np.append(rng.normal(size=20_000), 1e150),
    "tiny range": lambda rng: 1.0 + rng.normal(size=20_000) * 1e-15,
    "discrete": lambda rng: rng.integers(0, 40, size=20_000).astype(np.float64),
    "few values": lambda rng: rng.integers(0, 3, size=20_000).astype(np.float64),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_grid_counts_equal_a_binary_search(name):
    rng = np.random.default_rng(7)
    edges = numeric_profile(REFERENCES[name](rng)).edges
    current = np.concatenate(
        [REFERENCES[name](rng) * 1.3 + 0.2, _nasty(edges, rng, 5_000), rng.normal(size=5_000)]
    )
    rng.shuffle(current)
    assert current.size >= GRID_MIN_VALUES
    counts = NumericCounts(edges, np.zeros(edges.size + 1, np.int64))
    with np.errstate(over="ignore"):  # sums of the +-1.7e308 values overflow, in both
        expected = _searchsorted_counts(edges, current)
        counts.update(current)
        counts.update(current[:100])  # below the grid's minimum batch: the binary search alone
        small = _searchsorted_counts(edges, current[:100])
    np.testing.assert_array_equal(counts.counts, expected[0] + small[0])
    assert counts.missing == expected[1] + small[1]
    assert counts.below_sum == pytest.approx(expected[2] + small[2], rel=1e-12)
    assert counts.above_sum == pytest.approx(expected[3] + small[3], rel=1e-12)


def test_the_grid_is_used_on_continuous_data_and_dropped_on_discrete():
    rng = np.random.default_rng(1)
    continuous = EdgeBinner(numeric_profile(rng.normal(size=50_000)).edges)
    _, searched, _ = continuous.count(rng.normal(size=50_000))
    assert searched.size < 5_000
    assert continuous._grid is not None
    discrete = EdgeBinner(numeric_profile(rng.integers(0, 200, 50_000).astype(float)).edges)
    discrete.count(rng.integers(0, 200, 50_000).astype(float))
    assert discrete._grid is None


def _window(profile: ReferenceProfile, batch: pa.Table, monkeypatch: pytest.MonkeyPatch,
            threads: int) -> WindowAccumulator:
    monkeypatch.setattr(window, "BIN_THREADS", threads)
    acc = WindowAccumulator.for_profile(profile)
    acc.update(batch)
    return acc


def test_columns_binned_on_threads_count_exactly_as_on_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    n = window.PARALLEL_MIN_VALUES // 4  # 8 columns: well above the parallel threshold
    columns = {f"f{j}": rng.standard_normal(n) * (j + 1) for j in range(8)}
    columns["f3"][::97] = np.nan
    profile = build_reference_profile(columns, ["a"] * n, classes=["a"])
    shifted = pa.table({name: values + 0.3 for name, values in columns.items()})
    serial = _window(profile, shifted, monkeypatch, 1)
    threaded = _window(profile, shifted, monkeypatch, 4)
    for name, counts in serial.columns.items():
        other = threaded.columns[name]
        assert isinstance(counts, NumericCounts) and isinstance(other, NumericCounts)
        assert np.array_equal(counts.counts, other.counts), name
        assert (counts.missing, counts.below_sum, counts.above_sum) == (
            other.missing, other.below_sum, other.above_sum), name
    assert serial.columns["f3"].missing > 0


def test_a_non_numeric_column_fails_the_same_on_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(8)
    n = window.PARALLEL_MIN_VALUES // 2
    columns = {"a": rng.standard_normal(n), "b": rng.standard_normal(n)}
    profile = build_reference_profile(columns, ["x"] * n, classes=["x"])
    bad = pa.table({"a": columns["a"], "b": pa.array(["text"] * n)})
    with pytest.raises(TypeError, match="a numeric feature holds string"):
        _window(profile, bad, monkeypatch, 4)


def test_batches_of_changing_sizes_reuse_the_scratch_and_count_exactly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Thread-local buffers are sliced to each batch; a batch above the cap gets its own.
    monkeypatch.setattr(binning, "SCRATCH_MAX_VALUES", 30_000)
    monkeypatch.setattr(binning, "_PER_THREAD", binning._PerThread())
    rng = np.random.default_rng(11)
    edges = numeric_profile(rng.normal(size=20_000)).edges
    for size in (20_000, 5_000, 40_000, 25_000, 4_096):
        x = np.concatenate([rng.normal(size=size - 300) * 1.2 + 0.1, _nasty(edges, rng, 75)])
        counts = NumericCounts(edges, np.zeros(edges.size + 1, np.int64))
        with np.errstate(over="ignore"):  # sums of the +-1.7e308 values overflow, in both
            counts.update(x)
            expected, missing, below, above = _searchsorted_counts(edges, x)
        assert np.array_equal(counts.counts, expected), size
        assert counts.missing == missing
        assert (counts.below_sum, counts.above_sum) == (below, above)
    assert binning._PER_THREAD.buffers.floats.size == 25_000  # the largest batch under the cap
