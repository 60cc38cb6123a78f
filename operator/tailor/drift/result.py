"""What a drift check compares and what it finds: settings and results, as plain numbers.

The DriftMonitor controller reads a spec into ``CheckSettings`` and maps a ``CheckResult`` onto
its status and conditions (``tailor.assess.drift_status``); nothing here knows that API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from tailor.drift.accuracy import AccuracyResult

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
"""Customary thresholds of the explicit methods: PSI 0.25 (alert; 0.1 warns), normalised
Wasserstein and Jensen-Shannon distance 0.1, tests at a family-wise 0.05 (Bonferroni over the
features)."""
PSI_WARNING = 0.1

AUTO_FEATURE_RATE = 0.005
"""``auto``: the most often a healthy window reaches the drifted share (whatever its size)."""
AUTO_PREDICTION_RATE = 0.005
"""``auto``: the most often a healthy window's predictions count as drifted."""
CHECK_FALSE_ALARM_RATE = AUTO_FEATURE_RATE + AUTO_PREDICTION_RATE
"""``auto``'s stated rate: at most 1% of checks of a healthy window raise DriftDetected."""
EFFECT_FLOORS: dict[str, float] = {"wasserstein": 0.1, "jensen-shannon": 0.1}
"""``auto``'s effect-size floors: a significant change smaller than these is not drift (0.1
reference standard deviations of transport for numbers, 0.1 Jensen-Shannon distance for
categories), so huge windows do not flag trivial shifts."""
PSI_BINS = 10


@dataclass(frozen=True)
class CheckSettings:
    """What a check compares and how (the operator reads a DriftMonitor's spec into it:
    ``tailor.assess.drift_status.check_settings``)."""

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
    psi_bins: int = PSI_BINS
    false_alarm_rate: float = 0.01
    """Per-feature false-alarm rate that calibrated thresholds of explicit distance methods hold
    on reference-like data (``auto`` derives its own from ``AUTO_FEATURE_RATE``)."""
    bootstrap_resamples: int = 500


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
    effect: float | None = None
    """``auto`` with a test: the effect size (normalised Wasserstein or Jensen-Shannon)."""
    effect_floor: float | None = None
    """``auto`` with a test: the least effect that counts as drift (``EFFECT_FLOORS``)."""

    @property
    def higher_is_drift(self) -> bool:
        return self.method not in TEST_METHODS


@dataclass(frozen=True)
class PredictionDrift:
    method: str
    score: float
    threshold: float
    drifted: bool
    statistic: float
    p_value: float | None = None
    effect: float | None = None
    effect_floor: float | None = None


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
        """The DriftDetected condition's reason (constants in tailor_contract.constants)."""
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
