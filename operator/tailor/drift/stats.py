"""Drift statistics on binned counts.

Every function takes counts over the same ordered bins (a reference profile's bins and a
window's counts on them), so a window never has to be held in memory and two partial windows
merge by adding their counts. The formulas follow their usual definitions; the unit tests hold
each one against scipy.

scipy is imported by the functions that need it (p-values, Jensen-Shannon): ``scipy.stats``
alone takes about half a second and 40 MiB to import, which a PSI-only check never needs.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PSI_EPSILON = 1e-4
"""Floor on a bin's share in PSI, so an empty bin costs a finite amount (common practice)."""


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index, ``sum((q - p) * ln(q / p))`` over bins.

    ``p`` and ``q`` are the reference and current shares, each floored at ``epsilon``: the
    symmetric Kullback-Leibler divergence (Jeffreys divergence) of the two histograms.
    """
    p, q = _shares(reference), _shares(current)
    if p is None or q is None:
        return math.nan
    p = np.maximum(p, epsilon)
    q = np.maximum(q, epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def jensen_shannon(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """Jensen-Shannon distance in bits (the square root of the divergence), in [0, 1]."""
    from scipy.spatial import distance

    p, q = _shares(reference), _shares(current)
    if p is None or q is None:
        return math.nan
    return float(distance.jensenshannon(p, q, base=2.0))


def chi_square(reference: npt.ArrayLike, current: npt.ArrayLike) -> tuple[float, float]:
    """Pearson's chi-square test of homogeneity of two histograms: ``(statistic, p-value)``.

    Both histograms are samples (the reference is not a known distribution), so this is the
    2 x k contingency test, not a goodness-of-fit test. Bins empty in both are dropped.
    """
    table = np.vstack([_counts(reference), _counts(current)])
    table = table[:, table.sum(axis=0) > 0]
    rows = table.sum(axis=1)
    if table.shape[1] < 2 or np.any(rows == 0):
        return 0.0, 1.0
    expected = np.outer(rows, table.sum(axis=0)) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    from scipy import stats as sps

    return statistic, float(sps.chi2.sf(statistic, dof))


def ks_binned(reference: npt.ArrayLike, current: npt.ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test on ordered bins: ``(D, p-value)``.

    ``D`` is the largest gap between the two empirical CDFs at the bin edges. For values that
    sit on the edges (discrete data) it is the exact KS statistic; for continuous data it can
    only miss the gap inside one bin, at most the larger of the two bins' shares. The p-value is
    the asymptotic two-sided one that scipy's ``ks_2samp(method="asymp")`` uses.
    """
    r, c = _counts(reference), _counts(current)
    n, m = float(r.sum()), float(c.sum())
    if n == 0 or m == 0:
        return 0.0, 1.0
    d = float(np.max(np.abs(np.cumsum(r) / n - np.cumsum(c) / m)))
    return d, ks_pvalue(d, n, m)


def ks_pvalue(d: float, n: float, m: float) -> float:
    """Asymptotic two-sided p-value of a two-sample KS statistic (Smirnov's distribution)."""
    from scipy import stats as sps

    big, small = max(n, m), min(n, m)
    en = big * small / (big + small)
    return float(np.clip(sps.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def wasserstein_binned(
    edges: npt.ArrayLike,
    reference: npt.ArrayLike,
    current: npt.ArrayLike,
    *,
    below: tuple[int, float] = (0, 0.0),
    above: tuple[int, float] = (0, 0.0),
) -> float:
    """Wasserstein-1 (earth mover's) distance between a reference and a current histogram.

    ``reference`` and ``current`` count values in the bins between ``edges`` (mass assumed
    uniform inside a bin); ``below`` and ``above`` are the current window's ``(count, sum)`` of
    values outside the edges, whose contribution is exact. The error against the distance of the
    raw samples is bounded by the bin widths times the CDF gap inside them.
    """
    e = np.asarray(edges, dtype=np.float64)
    r, c = _counts(reference).astype(np.float64), _counts(current).astype(np.float64)
    n_below, s_below = below
    n_above, s_above = above
    n = r.sum()
    m = c.sum() + n_below + n_above
    if n == 0 or m == 0:
        return math.nan
    # CDFs at the edges: the reference has no mass outside them, the window may.
    f_ref = np.concatenate([[0.0], np.cumsum(r)]) / n
    f_cur = (n_below + np.concatenate([[0.0], np.cumsum(c)])) / m
    gap = f_ref - f_cur
    widths = np.diff(e)
    a, b = np.abs(gap[:-1]), np.abs(gap[1:])
    same_sign = gap[:-1] * gap[1:] >= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        crossing = np.where(a + b > 0, (a * a + b * b) / (2 * (a + b)), 0.0)
    inside = float(np.sum(widths * np.where(same_sign, (a + b) / 2, crossing)))
    outside = (n_below * e[0] - s_below) / m + (s_above - n_above * e[-1]) / m
    return inside + float(outside)


def coarse_groups(reference: npt.ArrayLike, groups: int = 10) -> IntArray:
    """Map fine reference bins onto about ``groups`` bins of equal reference mass.

    PSI and Jensen-Shannon are biased upwards by about (bins - 1) / window size, so they use
    about ten reference-quantile bins (the customary deciles) rather than the fine ones. A fine
    bin joins the group its reference-mass midpoint falls in; groups left empty disappear, so a
    heavy atom in a discrete feature becomes one group rather than several empty ones.
    """
    r = _counts(reference).astype(np.float64)
    total = r.sum()
    if total == 0 or r.size == 0:
        return np.zeros(r.size, dtype=np.int64)
    mid = (np.cumsum(r) - r / 2) / total
    raw = np.minimum((mid * groups).astype(np.int64), groups - 1)
    _, dense = np.unique(raw, return_inverse=True)
    return dense.astype(np.int64)


def regroup(counts: npt.ArrayLike, groups: IntArray) -> IntArray:
    """Sum fine-bin counts into their groups (see ``coarse_groups``)."""
    size = int(groups.max()) + 1 if groups.size else 0
    return np.bincount(groups, weights=_counts(counts), minlength=size).astype(np.int64)


def _counts(x: npt.ArrayLike) -> IntArray:
    return np.asarray(x, dtype=np.int64).ravel()


def _shares(x: npt.ArrayLike) -> FloatArray | None:
    a = np.asarray(x, dtype=np.float64).ravel()
    total = a.sum()
    if total <= 0:
        return None
    shares: FloatArray = a / total
    return shares
