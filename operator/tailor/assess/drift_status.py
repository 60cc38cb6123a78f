"""A drift check in the DriftMonitor's terms: its settings from the spec, its numbers as status.

``tailor.drift`` computes numbers and knows nothing of the API; this module is the translation
both ways. ``check_settings`` reads a parsed spec into ``CheckSettings`` (the only place the
spec's thresholds and minimum counts are read), and ``check_status`` renders a ``CheckResult``
as the status fields the CRD declares (camelCase, JSON-safe: no NaN or infinity).

The drift stack (numpy, scipy, pyarrow) is imported only when a check runs, so importing this
module, as the controller does at start-up, costs nothing.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tailor_contract import clock
from tailor_contract.common import parse_duration
from tailor_contract.driftmonitor import DriftMonitorSpec

if TYPE_CHECKING:
    from tailor.drift.accuracy import AccuracyResult
    from tailor.drift.result import CheckResult, CheckSettings, FeatureScore, PredictionDrift

COHORTS_PER_WINDOW = 24
MIN_COHORT_SECONDS = 60


def check_settings(spec: DriftMonitorSpec, **overrides: Any) -> CheckSettings:
    """What a monitor's check compares and how (``overrides`` replace any field)."""
    from dataclasses import replace

    from tailor.drift.result import CheckSettings

    checks, production = spec.checks, spec.production
    accuracy, features = checks.accuracy, checks.feature_drift
    window_seconds = parse_duration(production.window).total_seconds()
    settings = CheckSettings(
        feature_method=features.method,
        feature_threshold=features.threshold,
        drifted_share=features.drifted_share,
        calibrate=features.calibrate,
        features=tuple(features.features) if features.features else None,
        prediction_method=checks.prediction_drift.method,
        prediction_threshold=checks.prediction_drift.threshold,
        accuracy_metric=accuracy.metric if accuracy else None,
        accuracy_threshold=accuracy.threshold if accuracy else None,
        confidence_level=accuracy.confidence_level if accuracy else 0.95,
        min_samples=production.min_samples,
        min_labeled=production.min_labeled,
        id_column=production.columns.id,
        timestamp_column=production.columns.timestamp,
        prediction_column=production.columns.prediction,
        label_column=production.columns.label,
        label_timestamp_column=production.columns.timestamp,
        # About 24 cohorts per window, at least a minute each.
        cohort_seconds=max(MIN_COHORT_SECONDS, int(window_seconds // COHORTS_PER_WINDOW)),
    )
    return replace(settings, **overrides)


def check_status(result: CheckResult) -> dict[str, Any]:
    """The check's part of ``DriftMonitor.status``: window, features, drifted share and
    summary, prediction drift and accuracy."""
    window: dict[str, Any] = {
        "predictions": result.predictions,
        "labeled": result.labeled,
        "labelCoverage": round(result.label_coverage, 6),
    }
    if result.window_start is not None:
        window["start"] = clock.format(result.window_start)
    if result.window_end is not None:
        window["end"] = clock.format(result.window_end)
    out: dict[str, Any] = {
        "window": window,
        "features": [_feature(f) for f in result.features],
        "driftedShare": round(result.drifted_share, 6),
        "driftSummary": f"{len(result.drifted_features)}/{len(result.features)}",
    }
    if result.prediction_drift is not None:
        out["predictionDrift"] = _prediction(result.prediction_drift)
    if result.accuracy is not None and result.accuracy.value is not None:
        out["accuracy"] = _accuracy(result.accuracy)
    return out


def _feature(score: FeatureScore) -> dict[str, Any]:
    """One ``status.features[]`` entry."""
    out = {"name": score.name, "method": score.method, "score": _json_float(score.score),
           "threshold": _json_float(score.threshold), "drifted": score.drifted}
    return out | _effect(score.effect, score.effect_floor)


def _prediction(drift: PredictionDrift) -> dict[str, Any]:
    out = {"method": drift.method, "score": _json_float(drift.score),
           "threshold": _json_float(drift.threshold), "drifted": drift.drifted}
    return out | _effect(drift.effect, drift.effect_floor)


def _effect(effect: float | None, floor: float | None) -> dict[str, Any]:
    """``effect`` and ``effectFloor`` where ``auto`` held a test to its effect-size floor: with
    them a p-value under its threshold next to ``drifted: false`` explains itself (the change
    is significant but smaller than the floor)."""
    if effect is None or floor is None or not math.isfinite(effect):
        return {}
    return {"effect": _json_float(effect), "effectFloor": _json_float(floor)}


def _accuracy(a: AccuracyResult) -> dict[str, Any]:
    assert a.value is not None
    out: dict[str, Any] = {
        "metric": a.metric,
        "value": round(a.value, 6),
        "lower": round(a.lower or 0.0, 6),
        "upper": round(a.upper if a.upper is not None else 1.0, 6),
        "confidenceLevel": a.confidence_level,
        "samples": a.samples,
    }
    if a.threshold is not None:
        out["threshold"] = a.threshold
    return out


def _json_float(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None
