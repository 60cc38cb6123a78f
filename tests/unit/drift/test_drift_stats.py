"""Every drift statistic against scipy (or a published value)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial import distance
from tailor.drift import stats
from tailor.drift.window import NumericCounts
from tailor_contract.profile import numeric_profile


def _hist(values, profile):
    counts = NumericCounts.empty(profile)
    counts.update(np.asarray(values, dtype=np.float64))
    return counts


def test_psi_is_the_symmetric_kl_divergence():
    p = np.array([10, 20, 30, 40])
    q = np.array([25, 25, 25, 25])
    expected = sps.entropy(p, q) + sps.entropy(q, p)
    assert stats.psi(p, q) == pytest.approx(expected, rel=1e-12)


def test_psi_worked_example():
    # Deciles of 0.1 against a profile that moved 5 points from the two lowest to the two
    # highest bins: 2 * 0.05 * ln 2 + 2 * 0.05 * ln 1.5 = 0.1 * ln 3.
    expected = [0.1] * 10
    actual = [0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15, 0.15]
    assert stats.psi(expected, actual) == pytest.approx(0.1 * np.log(3), rel=1e-12)


def test_psi_floors_empty_bins():
    assert np.isfinite(stats.psi([50, 50, 0], [0, 50, 50]))


def test_jensen_shannon_matches_scipy_in_bits():
    p = np.array([5, 1, 0, 9])
    q = np.array([1, 3, 4, 2])
    assert stats.jensen_shannon(p, q) == pytest.approx(
        distance.jensenshannon(p / p.sum(), q / q.sum(), base=2), rel=1e-12
    )
    assert stats.jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    assert stats.jensen_shannon([3, 4], [6, 8]) == pytest.approx(0.0, abs=1e-7)


def test_chi_square_matches_contingency_test():
    ref = np.array([120, 80, 40, 10])
    cur = np.array([30, 35, 20, 15])
    statistic, p = stats.chi_square(ref, cur)
    expected = sps.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)


def test_chi_square_drops_bins_empty_in_both():
    with_empty = stats.chi_square([10, 0, 20], [5, 0, 9])
    without = stats.chi_square([10, 20], [5, 9])
    assert with_empty == pytest.approx(without)


def test_ks_is_exact_for_values_on_the_bin_edges():
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 20, 4000).astype(float)
    cur = rng.choice(20, 700, p=np.linspace(1, 2, 20) / np.linspace(1, 2, 20).sum()).astype(float)
    profile = numeric_profile(ref, bins=100)
    assert profile.edges.size == 21  # one bin per value, the maximum included
    counts = _hist(cur, profile)
    d, p = stats.ks_binned(np.concatenate([[0], profile.counts, [0]]), counts.counts)
    expected = sps.ks_2samp(ref, cur, method="asymp")
    assert d == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)


def test_ks_on_continuous_data_is_within_one_bin_of_scipy():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=20000)
    cur = rng.normal(0.1, 1.1, size=3000)
    profile = numeric_profile(ref)
    counts = _hist(cur, profile)
    d, _ = stats.ks_binned(np.concatenate([[0], profile.counts, [0]]), counts.counts)
    exact = sps.ks_2samp(ref, cur).statistic
    assert exact - 0.011 <= d <= exact + 1e-12  # a lower bound, off by at most a bin's share


@pytest.mark.parametrize(
    ("shift", "scale", "rel"),
    # Shifts are within a few percent; a wider spread puts much of the window in the wide outer
    # reference bins, where mass is assumed uniform, and costs up to about 10%.
    [(0.0, 1.0, 0.05), (0.3, 1.0, 0.05), (-1.0, 0.7, 0.05), (4.0, 1.0, 0.05), (0.0, 1.5, 0.1)],
)
def test_wasserstein_matches_scipy(shift, scale, rel):
    rng = np.random.default_rng(3)
    ref = rng.normal(size=50000)
    cur = rng.normal(shift, scale, size=20000)
    profile = numeric_profile(ref)
    counts = _hist(cur, profile)
    w = stats.wasserstein_binned(
        profile.edges,
        profile.counts,
        counts.counts[1:-1],
        below=(int(counts.counts[0]), counts.below_sum),
        above=(int(counts.counts[-1]), counts.above_sum),
    )
    exact = sps.wasserstein_distance(ref, cur)
    assert w == pytest.approx(exact, rel=rel, abs=0.01)


def test_wasserstein_outside_the_reference_is_exact():
    # Everything beyond the reference's range: exact up to the half grid step by which uniform
    # bins misplace the evenly spaced reference points.
    ref = np.linspace(0.0, 1.0, 1001)
    cur = np.array([5.0, 7.0, 9.0])
    profile = numeric_profile(ref)
    counts = _hist(cur, profile)
    w = stats.wasserstein_binned(
        profile.edges,
        profile.counts,
        counts.counts[1:-1],
        above=(int(counts.counts[-1]), counts.above_sum),
    )
    assert w == pytest.approx(sps.wasserstein_distance(ref, cur), abs=0.001)


def test_coarse_groups_make_deciles_of_fine_percentiles():
    groups = stats.coarse_groups(np.full(100, 10), 10)
    assert groups.tolist() == [i // 10 for i in range(100)]
    # A heavy atom becomes one group instead of leaving empty ones behind.
    atom = stats.coarse_groups(np.array([700, 100, 100, 100]), 10)
    assert atom.tolist() == [0, 1, 2, 3]
