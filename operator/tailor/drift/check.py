"""One DriftMonitor check: a window of prediction logs (and late labels) against a profile.

``run_check`` is what the controller calls; ``evaluate`` turns an accumulated (possibly merged)
window into a ``CheckResult`` (``tailor.drift.result``), whose numbers the operator maps onto
the DriftMonitor's status (``tailor.assess.drift_status``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import pyarrow as pa
from tailor_contract.profile import ReferenceProfile

from tailor.drift.accuracy import LabelIndex, evaluate_accuracy
from tailor.drift.methods import choose_method, feature_level, prediction_drift, score_column
from tailor.drift.result import (
    TEST_METHODS,
    CheckResult,
    CheckSettings,
    FeatureScore,
    PredictionDrift,
)
from tailor.drift.window import WindowAccumulator


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
        plans.append((name, choose_method(reference[name], settings)))
    tests = sum(1 for _, method in plans if method in TEST_METHODS)
    level = feature_level(settings, len(plans), tests)
    scores = []
    for name, method in plans:
        scores.append(
            score_column(name, method, reference[name], window.columns[name], settings, level)
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
        prediction_drift=prediction_drift(profile, window.predictions, settings),
        accuracy=accuracy,
        min_samples=settings.min_samples,
    )


__all__ = [
    "CheckResult",
    "CheckSettings",
    "FeatureScore",
    "PredictionDrift",
    "evaluate",
    "run_check",
]
