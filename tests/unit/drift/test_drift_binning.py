"""The window's bin counts: the lookup grid must count exactly as a binary search does."""

from __future__ import annotations

import numpy as np
import pytest
from tailor.drift.profile import numeric_profile
from tailor.drift.window import GRID_MIN_VALUES, EdgeBinner, NumericCounts


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
