"""The statistic of one compared column (or of the predictions) and its drift verdict.

``choose_method`` picks the statistic for a column; ``feature_level`` the per-feature level of
a check; ``score_column`` and ``prediction_drift`` compute the statistic on the window's counts
against the reference profile's, with the configured, corrected or calibrated threshold.

``auto`` is one rule at every window size: a two-sample test (binned KS for numbers,
chi-square for categories) at a level that bounds how often a healthy window raises
DriftDetected, AND an effect-size floor (``EFFECT_FLOORS``) so that huge windows, where every
trivial change is significant, do not alert on it. Power therefore grows with the window, and
the false-alarm rate per check is ``CHECK_FALSE_ALARM_RATE`` at every size.
"""

from __future__ import annotations

import math
import zlib
from typing import Literal

import numpy as np
import numpy.typing as npt
from tailor_contract.profile import CategoricalProfile, NumericProfile, ReferenceProfile

from tailor.drift import stats
from tailor.drift.result import (
    AUTO_FEATURE_RATE,
    AUTO_PREDICTION_RATE,
    DEFAULT_THRESHOLDS,
    EFFECT_FLOORS,
    PSI_WARNING,
    TEST_METHODS,
    CheckSettings,
    FeatureScore,
    PredictionDrift,
)
from tailor.drift.window import CategoryCounts, NumericCounts

MIN_EXPECTED = 5.0
"""``auto``'s chi-square pools categories expected fewer times than this in the window: the
test's chi-square law needs that many, and rare categories would otherwise inflate its rate."""


def choose_method(reference: NumericProfile | CategoricalProfile, settings: CheckSettings) -> str:
    """The statistic for one column: the configured one where it applies to the column's type.

    ``auto`` takes KS (numeric) or chi-square (categorical), with an effect-size floor; with
    ``calibrate`` the floor's own distance (Wasserstein, Jensen-Shannon) with a threshold
    calibrated at the same level. KS and Wasserstein need an order, so categorical columns
    fall back to chi-square and Jensen-Shannon respectively.
    """
    method = settings.feature_method
    numeric = isinstance(reference, NumericProfile)
    if method == "auto":
        if settings.calibrate:
            return "wasserstein" if numeric else "jensen-shannon"
        return "ks" if numeric else "chi-square"
    if not numeric and method == "ks":
        return "chi-square"
    if not numeric and method == "wasserstein":
        return "jensen-shannon"
    return method


def feature_level(settings: CheckSettings, compared: int, tests: int) -> float:
    """The level each feature's test (or calibrated threshold) is held to.

    Explicit tests: the family-wise threshold over the tested features (Bonferroni). ``auto``:
    the drifted share needs ``j = ceil(share * k)`` of the ``k`` compared features, and testing
    each at ``j * rate / k`` keeps the chance of ``j`` or more false flags at most ``rate``
    under any dependence between features (Lehmann and Romano's generalised Bonferroni, 2005):
    the rate holds for the monitor's verdict, not just for one column.
    """
    if settings.feature_method != "auto":
        family = settings.feature_threshold or DEFAULT_THRESHOLDS["ks"]
        return family / max(tests, 1)
    rate = settings.feature_threshold or AUTO_FEATURE_RATE
    k = max(compared, 1)
    needed = min(k, max(1, math.ceil(settings.drifted_share * k - 1e-9)))
    return rate * needed / k


def score_column(
    name: str,
    method: str,
    reference: NumericProfile | CategoricalProfile,
    counts: NumericCounts | CategoryCounts,
    settings: CheckSettings,
    level: float,
) -> FeatureScore:
    """One column's verdict; ``level`` is ``feature_level``'s."""
    auto = settings.feature_method == "auto"
    kind, statistic, p_value, ref_vec = _column_statistic(name, method, reference, counts,
                                                          settings)
    effect = floor = None
    calibrated = settings.calibrate and method not in TEST_METHODS
    if method in TEST_METHODS:
        threshold = level
        score = p_value if p_value is not None else 1.0
        drifted = score < threshold
        if auto:
            effect_method = "wasserstein" if kind == "numeric" else "jensen-shannon"
            effect = _effect(effect_method, reference, counts, settings)
            floor = EFFECT_FLOORS[effect_method]
            drifted = drifted and effect >= floor
    else:
        score = statistic
        null = None
        if calibrated:
            # auto's level is small (0.0025 at the default share): enough redraws to reach it.
            rate = level if auto else settings.false_alarm_rate
            resamples = settings.bootstrap_resamples
            null = calibrated_threshold(
                method,
                reference,
                ref_vec,
                samples=counts.count,
                false_alarm_rate=rate,
                resamples=max(resamples, math.ceil(10 / rate)) if auto else resamples,
                seed=zlib.crc32(name.encode()),
            )
        threshold, drifted = _distance_verdict(method, score, null, settings)
    return FeatureScore(
        name=name,
        kind=kind,
        method=method,
        score=float(score),
        threshold=float(threshold),
        drifted=bool(drifted),
        samples=counts.count,
        missing=counts.missing,
        statistic=float(statistic),
        p_value=p_value,
        warning=method == "psi" and statistic >= PSI_WARNING,
        calibrated=calibrated,
        effect=effect,
        effect_floor=floor,
    )


def _column_statistic(
    name: str,
    method: str,
    reference: NumericProfile | CategoricalProfile,
    counts: NumericCounts | CategoryCounts,
    settings: CheckSettings,
) -> tuple[Literal["numeric", "categorical"], float, float | None, npt.NDArray[np.int64]]:
    """The column's kind, statistic and p-value, and the reference counts calibration redraws
    (``auto``'s chi-square pools sparse categories first)."""
    if isinstance(reference, NumericProfile) and isinstance(counts, NumericCounts):
        statistic, p_value = _numeric_statistic(method, reference, counts, settings.psi_bins)
        ref_vec, _ = _numeric_vectors(method, reference, counts, settings.psi_bins)
        return "numeric", statistic, p_value, ref_vec
    if isinstance(reference, CategoricalProfile) and isinstance(counts, CategoryCounts):
        ref_vec, cur_vec = category_vectors(reference.categories, reference.other, counts.counts)
        auto = settings.feature_method == "auto"
        tested = _pooled(ref_vec, cur_vec) if auto else (ref_vec, cur_vec)
        statistic, p_value = _distribution_statistic(method, *tested)
        return "categorical", statistic, p_value, ref_vec
    raise TypeError(f"column {name!r} does not match its profile")  # pragma: no cover


def _distance_verdict(
    method: str, score: float, null: float | None, settings: CheckSettings
) -> tuple[float, bool]:
    """Threshold and verdict of a distance: explicit methods compare it with the configured (or
    calibrated, ``null``) threshold; ``auto`` with ``calibrate`` asks for both the calibrated
    threshold and the effect-size floor."""
    if settings.feature_method == "auto":
        floor = EFFECT_FLOORS[method]
        drifted = score >= floor and (null is None or score > null)
        return (floor if null is None else max(floor, null)), drifted
    threshold = null if null is not None else settings.feature_threshold or DEFAULT_THRESHOLDS[
        method]
    return threshold, bool(score > threshold)


def _effect(
    method: str,
    reference: NumericProfile | CategoricalProfile,
    counts: NumericCounts | CategoryCounts,
    settings: CheckSettings,
) -> float:
    """The effect size ``auto`` holds to its floor: normalised Wasserstein (numbers, fine bins)
    or Jensen-Shannon distance (categories)."""
    if isinstance(reference, NumericProfile) and isinstance(counts, NumericCounts):
        return _numeric_statistic(method, reference, counts, settings.psi_bins)[0]
    assert isinstance(reference, CategoricalProfile) and isinstance(counts, CategoryCounts)
    ref, cur = category_vectors(reference.categories, reference.other, counts.counts)
    return _distribution_statistic(method, ref, cur)[0]


def _pooled(
    ref: npt.NDArray[np.int64], cur: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Categories expected fewer than ``MIN_EXPECTED`` times in the window, merged into one."""
    total = ref.sum()
    if total == 0:
        return ref, cur
    sparse = ref / total * cur.sum() < MIN_EXPECTED
    if sparse.sum() < 2:
        return ref, cur
    return (np.append(ref[~sparse], ref[sparse].sum()), np.append(cur[~sparse], cur[sparse].sum()))


def _numeric_statistic(
    method: str, reference: NumericProfile, counts: NumericCounts, psi_bins: int
) -> tuple[float, float | None]:
    if method == "wasserstein":
        w = stats.wasserstein_binned(
            reference.edges,
            reference.counts,
            counts.counts[1:-1],
            below=(int(counts.counts[0]), counts.below_sum),
            above=(int(counts.counts[-1]), counts.above_sum),
        )
        return w / _scale(reference), None
    ref_vec, cur_vec = _numeric_vectors(method, reference, counts, psi_bins)
    return _distribution_statistic(method, ref_vec, cur_vec)


def _numeric_vectors(
    method: str, reference: NumericProfile, counts: NumericCounts, psi_bins: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Reference and window counts on the bins ``method`` uses, tails included."""
    ref = np.concatenate([[0], reference.counts, [0]]).astype(np.int64)
    cur = counts.counts.astype(np.int64)
    if method in ("ks", "wasserstein"):
        return ref, cur
    # PSI, Jensen-Shannon and chi-square: about ten reference-quantile bins, open-ended.
    groups = stats.coarse_groups(reference.counts, psi_bins)
    if groups.size == 0:
        return ref[:1], np.array([cur.sum()], np.int64)
    if groups[-1] == 0:
        # A single reference bin (a constant): values on either side are bins of their own.
        groups = np.concatenate([[0], groups + 1, [2]])
    else:
        groups = np.concatenate([[groups[0]], groups, [groups[-1]]])
    return stats.regroup(ref, groups), stats.regroup(cur, groups)


def _distribution_statistic(
    method: str, ref: npt.NDArray[np.int64], cur: npt.NDArray[np.int64]
) -> tuple[float, float | None]:
    if method == "psi":
        return stats.psi(ref, cur), None
    if method == "jensen-shannon":
        return stats.jensen_shannon(ref, cur), None
    if method == "chi-square":
        return stats.chi_square(ref, cur)
    if method == "ks":
        return stats.ks_binned(ref, cur)
    raise ValueError(f"method {method!r} does not apply to these bins")


def category_vectors(
    reference: dict[str, int], reference_other: int, current: dict[str, int]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Counts aligned on the reference's categories plus one bin for everything else."""
    names = list(reference)
    ref = np.array([*(reference[n] for n in names), reference_other], np.int64)
    cur = np.array([*(current.get(n, 0) for n in names), 0], np.int64)
    known = set(names)
    cur[-1] = sum(v for k, v in current.items() if k not in known)
    return ref, cur


def calibrated_threshold(
    method: str,
    reference: NumericProfile | CategoricalProfile,
    ref_vec: npt.NDArray[np.int64],
    *,
    samples: int,
    false_alarm_rate: float = 0.01,
    resamples: int = 500,
    seed: int = 0,
) -> float:
    """The statistic's ``1 - false_alarm_rate`` quantile when nothing has drifted.

    The profile stays as it is (the check compares with it, after all); what is redrawn is the
    truth it was sampled from — a Dirichlet on the reference's bin counts, the Bayesian
    bootstrap, which is also the exact law of the true mass between sample quantiles — and a
    window of ``samples`` values from that truth. The threshold therefore reflects both the
    reference's and the window's noise at exactly this window size: higher than the customary
    value for small windows (which would over-alert) and lower for huge ones (which would
    under-alert). Seeded per feature, so repeated checks on one window agree.
    """
    rng = np.random.default_rng([seed, samples])
    total = int(ref_vec.sum())
    rp = np.broadcast_to(ref_vec / total, (resamples, ref_vec.size))
    occupied = ref_vec > 0
    truth = np.zeros((resamples, ref_vec.size))
    truth[:, occupied] = rng.dirichlet(ref_vec[occupied].astype(np.float64), size=resamples)
    cur_draws = rng.multinomial(samples, truth).astype(np.float64)
    cp = cur_draws / samples
    if method == "psi":
        a = np.maximum(rp, stats.PSI_EPSILON)
        b = np.maximum(cp, stats.PSI_EPSILON)
        null = np.sum((b - a) * np.log(b / a), axis=1)
    elif method == "jensen-shannon":
        m = (rp + cp) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            kl_a = np.where(rp > 0, rp * np.log2(rp / m), 0.0).sum(axis=1)
            kl_b = np.where(cp > 0, cp * np.log2(cp / m), 0.0).sum(axis=1)
        null = np.sqrt(np.maximum((kl_a + kl_b) / 2, 0.0))
    elif method == "wasserstein" and isinstance(reference, NumericProfile):
        # ref_vec holds [below, bins..., above]; the reference has no mass outside the edges.
        widths = np.diff(reference.edges)
        gap = np.cumsum(rp[:, 1:-1], axis=1) - np.cumsum(cp[:, 1:-1], axis=1)
        gap = np.concatenate([np.zeros((resamples, 1)), gap], axis=1)
        a, b = np.abs(gap[:, :-1]), np.abs(gap[:, 1:])
        with np.errstate(divide="ignore", invalid="ignore"):
            crossing = np.where(a + b > 0, (a * a + b * b) / (2 * (a + b)), 0.0)
        area = np.where(gap[:, :-1] * gap[:, 1:] >= 0, (a + b) / 2, crossing)
        null = (area * widths).sum(axis=1) / _scale(reference)
    else:
        raise ValueError(f"cannot calibrate {method!r}")
    return float(np.quantile(null, 1 - false_alarm_rate, method="higher"))


def prediction_drift(
    profile: ReferenceProfile, counts: CategoryCounts, settings: CheckSettings
) -> PredictionDrift | None:
    """Drift of the predicted-label counts. ``auto``: chi-square at ``AUTO_PREDICTION_RATE``
    (or the configured threshold) AND Jensen-Shannon distance at least its floor."""
    if counts.count == 0 or not profile.predictions:
        return None
    auto = settings.prediction_method == "auto"
    method = "chi-square" if auto else settings.prediction_method
    classes = list(profile.classes)
    ref, cur = category_vectors(
        {c: profile.predictions.get(c, 0) for c in classes}, 0, counts.counts
    )
    tested = _pooled(ref, cur) if auto else (ref, cur)
    statistic, p_value = _distribution_statistic(method, *tested)
    default = AUTO_PREDICTION_RATE if auto else DEFAULT_THRESHOLDS[method]
    threshold = settings.prediction_threshold or default
    effect = floor = None
    if method in TEST_METHODS:
        score = p_value if p_value is not None else 1.0
        drifted = score < threshold
    else:
        score = statistic
        drifted = score > threshold
    if auto:
        effect = _distribution_statistic("jensen-shannon", ref, cur)[0]
        floor = EFFECT_FLOORS["jensen-shannon"]
        drifted = drifted and effect >= floor
    return PredictionDrift(
        method, float(score), float(threshold), bool(drifted), statistic, p_value, effect, floor
    )


def _scale(reference: NumericProfile) -> float:
    """Normaliser of the Wasserstein distance: the reference's standard deviation."""
    std, mean = reference.std, reference.mean
    magnitude = max(1.0, abs(mean)) if math.isfinite(mean) else 1.0
    if math.isfinite(std) and std > 1e-9 * magnitude:
        return std
    # A constant reference has no spread to compare with: use its magnitude (at least 1).
    return magnitude
