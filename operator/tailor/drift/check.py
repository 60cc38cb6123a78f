"""One DriftMonitor check: a window of prediction logs (and late labels) against a profile.

``run_check`` is what the controller calls; ``evaluate`` turns an accumulated (possibly merged)
window into a ``CheckResult``, whose ``to_status`` has the DriftMonitor status' shape.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tailor.drift import stats
from tailor.drift.accuracy import AccuracyResult, LabelIndex, evaluate_accuracy
from tailor.drift.profile import CategoricalProfile, NumericProfile, ReferenceProfile
from tailor.drift.window import CategoryCounts, NumericCounts, WindowAccumulator

if TYPE_CHECKING:
    from tailor.api.driftmonitor import DriftMonitorSpec

FeatureMethod = Literal["auto", "psi", "wasserstein", "jensen-shannon", "ks", "chi-square"]
PredictionMethod = Literal["auto", "psi", "jensen-shannon", "chi-square"]
AccuracyMetric = Literal["accuracy", "macro-f1"]

TEST_METHODS = frozenset({"ks", "chi-square"})
"""Methods whose score is a p-value: drifted when it falls *below* the threshold."""

DEFAULT_THRESHOLDS: dict[str, float] = {
    "psi": 0.25,
    "wasserstein": 0.1,
    "jensen-shannon": 0.1,
    "ks": 0.05,
    "chi-square": 0.05,
}
"""Customary thresholds: PSI 0.25 (alert; 0.1 warns), normalised Wasserstein and
Jensen-Shannon distance 0.1, tests at a family-wise 0.05 (Bonferroni over the features)."""
PSI_WARNING = 0.1
SMALL_WINDOW = 1000
"""Windows with fewer values than this use tests (KS / chi-square) under ``auto``: distances
are biased upwards on small samples, while tests account for sample size."""
PSI_BINS = 10


@dataclass(frozen=True)
class CheckSettings:
    """What a check compares and how; ``from_spec`` reads a DriftMonitor's spec."""

    feature_method: FeatureMethod = "auto"
    feature_threshold: float | None = None
    drifted_share: float = 0.5
    calibrate: bool = False
    features: tuple[str, ...] | None = None
    prediction_method: PredictionMethod = "auto"
    prediction_threshold: float | None = None
    accuracy_metric: AccuracyMetric | None = None
    """None: no accuracy check (labels are still joined when given, for coverage)."""
    accuracy_threshold: float | None = None
    confidence_level: float = 0.95
    min_samples: int = 500
    min_labeled: int = 200
    id_column: str = "id"
    timestamp_column: str = "timestamp"
    prediction_column: str = "prediction"
    label_column: str = "label"
    label_timestamp_column: str | None = "timestamp"
    cohort_seconds: int = 3600
    small_window: int = SMALL_WINDOW
    psi_bins: int = PSI_BINS
    false_alarm_rate: float = 0.01
    """Per-feature false-alarm rate that calibrated thresholds hold on reference-like data."""
    bootstrap_resamples: int = 500

    @classmethod
    def from_spec(cls, spec: DriftMonitorSpec, **overrides: Any) -> CheckSettings:
        """Settings from a parsed ``DriftMonitorSpec`` (``overrides`` replace any field)."""
        from tailor.api.common import parse_duration

        checks = spec.checks
        production = spec.production
        window_seconds = parse_duration(production.window).total_seconds()
        settings = cls(
            feature_method=checks.feature_drift.method,
            feature_threshold=checks.feature_drift.threshold,
            drifted_share=checks.feature_drift.drifted_share,
            calibrate=checks.feature_drift.calibrate,
            features=(
                tuple(checks.feature_drift.features) if checks.feature_drift.features else None
            ),
            prediction_method=checks.prediction_drift.method,
            prediction_threshold=checks.prediction_drift.threshold,
            accuracy_metric=checks.accuracy.metric if checks.accuracy else None,
            accuracy_threshold=checks.accuracy.threshold if checks.accuracy else None,
            confidence_level=checks.accuracy.confidence_level if checks.accuracy else 0.95,
            min_samples=production.min_samples,
            min_labeled=production.min_labeled,
            id_column=production.columns.id,
            timestamp_column=production.columns.timestamp,
            prediction_column=production.columns.prediction,
            label_column=production.columns.label,
            label_timestamp_column=production.columns.timestamp,
            # About 24 cohorts per window, at least a minute each.
            cohort_seconds=max(60, int(window_seconds // 24)),
        )
        return replace(settings, **overrides)


@dataclass(frozen=True)
class FeatureScore:
    """One compared column's drift (``status.features[]``)."""

    name: str
    kind: Literal["numeric", "categorical"]
    method: str
    score: float
    """The statistic (distances) or the p-value (ks, chi-square)."""
    threshold: float
    drifted: bool
    samples: int
    """Non-missing window values compared."""
    missing: int
    statistic: float
    """The raw statistic: equals score for distances; KS D or chi-square for tests."""
    p_value: float | None = None
    warning: bool = False
    """PSI only: at or above the 0.1 warning level."""
    calibrated: bool = False

    @property
    def higher_is_drift(self) -> bool:
        return self.method not in TEST_METHODS

    def to_status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "score": _json_float(self.score),
            "threshold": _json_float(self.threshold),
            "drifted": self.drifted,
        }


@dataclass(frozen=True)
class PredictionDrift:
    method: str
    score: float
    threshold: float
    drifted: bool
    statistic: float
    p_value: float | None = None

    def to_status(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "score": _json_float(self.score),
            "threshold": _json_float(self.threshold),
            "drifted": self.drifted,
        }


@dataclass(frozen=True)
class CheckResult:
    """Everything a check found; the controller maps it onto conditions, status and metrics."""

    window_start: datetime | None
    window_end: datetime | None
    predictions: int
    """Prediction-log rows in the window."""
    labeled: int
    """Of those, rows with a ground-truth label."""
    features: tuple[FeatureScore, ...]
    skipped_features: tuple[str, ...]
    """Compared columns with no values in the window (not counted in the share)."""
    drifted_share: float
    drifted_share_threshold: float
    prediction_drift: PredictionDrift | None
    accuracy: AccuracyResult | None
    min_samples: int

    @property
    def label_coverage(self) -> float:
        return self.labeled / self.predictions if self.predictions else 0.0

    @property
    def sufficient_samples(self) -> bool:
        return self.predictions >= self.min_samples

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.drifted)

    @property
    def feature_drift(self) -> bool:
        """The share of drifted features reached the threshold (with enough samples)."""
        return (
            self.sufficient_samples
            and bool(self.features)
            and self.drifted_share >= self.drifted_share_threshold
        )

    @property
    def drift_detected(self) -> bool:
        """``DriftDetected``: feature drift or prediction drift, with enough samples."""
        prediction = self.prediction_drift is not None and self.prediction_drift.drifted
        return self.feature_drift or (self.sufficient_samples and prediction)

    @property
    def drift_reason(self) -> str:
        """The DriftDetected condition's reason (constants in tailor.api.constants)."""
        if not self.sufficient_samples:
            return "InsufficientSamples"
        if self.feature_drift:
            return "FeatureDrift"
        if self.prediction_drift is not None and self.prediction_drift.drifted:
            return "PredictionDrift"
        return "NoDrift"

    @property
    def accuracy_alert(self) -> bool:
        """``AccuracyBelowThreshold``: enough labels and the interval wholly below threshold."""
        return self.accuracy is not None and self.accuracy.below_threshold

    def to_status(self) -> dict[str, Any]:
        """The check's part of ``DriftMonitor.status`` (camelCase, JSON-safe)."""
        out: dict[str, Any] = {
            "window": {
                "predictions": self.predictions,
                "labeled": self.labeled,
                "labelCoverage": round(self.label_coverage, 6),
            },
            "features": [f.to_status() for f in self.features],
            "driftedShare": round(self.drifted_share, 6),
            "driftSummary": f"{len(self.drifted_features)}/{len(self.features)}",
        }
        if self.window_start is not None:
            out["window"]["start"] = _rfc3339(self.window_start)
        if self.window_end is not None:
            out["window"]["end"] = _rfc3339(self.window_end)
        if self.prediction_drift is not None:
            out["predictionDrift"] = self.prediction_drift.to_status()
        a = self.accuracy
        if a is not None and a.value is not None:
            out["accuracy"] = {
                "metric": a.metric,
                "value": round(a.value, 6),
                "lower": round(a.lower or 0.0, 6),
                "upper": round(a.upper if a.upper is not None else 1.0, 6),
                "confidenceLevel": a.confidence_level,
                "samples": a.samples,
            }
            if a.threshold is not None:
                out["accuracy"]["threshold"] = a.threshold
        return out


def run_check(
    profile: ReferenceProfile,
    predictions: Iterable[pa.RecordBatch | pa.Table],
    ground_truth: Iterable[pa.RecordBatch | pa.Table] | None = None,
    settings: CheckSettings | None = None,
    *,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
) -> CheckResult:
    """Compare one window of prediction logs (and its late labels) with the reference profile.

    ``predictions`` yields batches of prediction-log rows (id, timestamp, features, prediction);
    ``ground_truth`` yields batches of labels (id, label, timestamp), read in full first
    because labels for a window's predictions may sit anywhere in the label log. Rows whose
    timestamp falls outside ``[window_start, window_end)`` are skipped (omit both to take all).
    """
    settings = settings or CheckSettings()
    labels = None
    if ground_truth is not None:
        labels = LabelIndex.from_batches(
            ground_truth,
            id_column=settings.id_column,
            label_column=settings.label_column,
            timestamp_column=settings.label_timestamp_column,
        )
    window = WindowAccumulator.for_profile(
        profile,
        features=settings.features,
        id_column=settings.id_column,
        timestamp_column=settings.timestamp_column,
        prediction_column=settings.prediction_column,
        window_start=window_start,
        window_end=window_end,
        labels=labels,
        cohort_seconds=settings.cohort_seconds,
    )
    window.update_all(predictions)
    return evaluate(profile, window, settings, window_start=window_start, window_end=window_end)


def evaluate(
    profile: ReferenceProfile,
    window: WindowAccumulator,
    settings: CheckSettings | None = None,
    *,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
) -> CheckResult:
    """Score an accumulated window (see ``run_check``)."""
    settings = settings or CheckSettings()
    reference = profile.compared_columns()
    plans: list[tuple[str, str]] = []
    skipped: list[str] = []
    for name, counts in window.columns.items():
        if counts.count == 0:
            skipped.append(name)
            continue
        plans.append((name, choose_method(reference[name], counts.count, settings)))
    tests = sum(1 for _, method in plans if method in TEST_METHODS)
    scores = []
    for name, method in plans:
        scores.append(
            _score_column(name, method, reference[name], window.columns[name], settings, tests)
        )
    compared = len(scores)
    share = sum(1 for s in scores if s.drifted) / compared if compared else 0.0
    accuracy = None
    labeled = 0
    if window.confusions is not None:
        labeled = int(window.confusions.total().sum())
        if settings.accuracy_metric is not None:
            accuracy = evaluate_accuracy(
                window.confusions,
                metric=settings.accuracy_metric,
                threshold=settings.accuracy_threshold,
                confidence_level=settings.confidence_level,
                min_labeled=settings.min_labeled,
            )
    return CheckResult(
        window_start=window_start,
        window_end=window_end,
        predictions=window.rows,
        labeled=labeled,
        features=tuple(scores),
        skipped_features=tuple(skipped),
        drifted_share=share,
        drifted_share_threshold=settings.drifted_share,
        prediction_drift=_prediction_drift(profile, window.predictions, settings),
        accuracy=accuracy,
        min_samples=settings.min_samples,
    )


def choose_method(
    reference: NumericProfile | CategoricalProfile, samples: int, settings: CheckSettings
) -> str:
    """The statistic for one column: the configured one where it applies to the column's type.

    ``auto`` takes KS (numeric) or chi-square (categorical) below ``small_window`` values and
    PSI above. KS and Wasserstein need an order, so categorical columns fall back to chi-square
    and Jensen-Shannon respectively.
    """
    method = settings.feature_method
    numeric = isinstance(reference, NumericProfile)
    if method == "auto":
        if samples < settings.small_window:
            return "ks" if numeric else "chi-square"
        return "psi"
    if not numeric and method == "ks":
        return "chi-square"
    if not numeric and method == "wasserstein":
        return "jensen-shannon"
    return method


def _score_column(
    name: str,
    method: str,
    reference: NumericProfile | CategoricalProfile,
    counts: NumericCounts | CategoryCounts,
    settings: CheckSettings,
    tests: int,
) -> FeatureScore:
    if isinstance(reference, NumericProfile) and isinstance(counts, NumericCounts):
        kind: Literal["numeric", "categorical"] = "numeric"
        statistic, p_value = _numeric_statistic(method, reference, counts, settings.psi_bins)
        ref_vec, cur_vec = _numeric_vectors(method, reference, counts, settings.psi_bins)
    elif isinstance(reference, CategoricalProfile) and isinstance(counts, CategoryCounts):
        kind = "categorical"
        ref_vec, cur_vec = category_vectors(reference.categories, reference.other, counts.counts)
        statistic, p_value = _distribution_statistic(method, ref_vec, cur_vec)
    else:  # pragma: no cover - the accumulator is built from the profile
        raise TypeError(f"column {name!r} does not match its profile")
    calibrated = False
    if method in TEST_METHODS:
        family = settings.feature_threshold or DEFAULT_THRESHOLDS[method]
        threshold = family / max(tests, 1)  # Bonferroni over the tested features
        score = p_value if p_value is not None else 1.0
        drifted = score < threshold
    else:
        score = statistic
        threshold = settings.feature_threshold or DEFAULT_THRESHOLDS[method]
        if settings.calibrate:
            threshold = calibrated_threshold(
                method,
                reference,
                ref_vec,
                samples=counts.count,
                false_alarm_rate=settings.false_alarm_rate,
                resamples=settings.bootstrap_resamples,
                seed=zlib.crc32(name.encode()),
            )
            calibrated = True
        drifted = bool(score > threshold)
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
    )


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


def _prediction_drift(
    profile: ReferenceProfile, counts: CategoryCounts, settings: CheckSettings
) -> PredictionDrift | None:
    if counts.count == 0 or not profile.predictions:
        return None
    method = settings.prediction_method
    if method == "auto":
        method = "chi-square" if counts.count < settings.small_window else "jensen-shannon"
    classes = list(profile.classes)
    ref, cur = category_vectors(
        {c: profile.predictions.get(c, 0) for c in classes}, 0, counts.counts
    )
    statistic, p_value = _distribution_statistic(method, ref, cur)
    threshold = settings.prediction_threshold or DEFAULT_THRESHOLDS[method]
    if method in TEST_METHODS:
        score = p_value if p_value is not None else 1.0
        drifted = score < threshold
    else:
        score = statistic
        drifted = score > threshold
    return PredictionDrift(
        method, float(score), float(threshold), bool(drifted), statistic, p_value
    )


def _scale(reference: NumericProfile) -> float:
    """Normaliser of the Wasserstein distance: the reference's standard deviation."""
    std, mean = reference.std, reference.mean
    magnitude = max(1.0, abs(mean)) if math.isfinite(mean) else 1.0
    if math.isfinite(std) and std > 1e-9 * magnitude:
        return std
    # A constant reference has no spread to compare with: use its magnitude (at least 1).
    return magnitude


def _json_float(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def _rfc3339(t: datetime) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = [
    "CheckResult",
    "CheckSettings",
    "FeatureScore",
    "PredictionDrift",
    "evaluate",
    "run_check",
]
