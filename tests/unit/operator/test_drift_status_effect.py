"""The status shows ``auto``'s effect size next to its test, so a significant but small change
explains its ``drifted: false`` (docs/drift.md, ``auto``)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pyarrow as pa
import yaml
from tailor.assess.drift_status import check_status
from tailor.drift import CheckSettings, build_reference_profile, run_check
from tailor.drift.result import CheckResult, FeatureScore, PredictionDrift

REPO = Path(__file__).resolve().parents[3]
NOW = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
START = NOW - datetime.timedelta(hours=1)


def _status_schema() -> dict[str, Any]:
    crd = yaml.safe_load((REPO / "crds" / "driftmonitors.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["status"]


def _result(features: tuple[FeatureScore, ...], prediction: PredictionDrift | None) -> CheckResult:
    return CheckResult(
        window_start=START, window_end=NOW, predictions=50_000, labeled=0, features=features,
        skipped_features=(), drifted_share=0.0, drifted_share_threshold=0.5,
        prediction_drift=prediction, accuracy=None, min_samples=500,
    )


def test_a_significant_change_under_the_floor_says_why_it_is_not_drift() -> None:
    small = FeatureScore(name="x", kind="numeric", method="ks", score=1e-9, threshold=0.0025,
                         drifted=False, samples=50_000, missing=0, statistic=0.03, p_value=1e-9,
                         effect=0.0412345678, effect_floor=0.1)
    labels = PredictionDrift("chi-square", 1e-7, 0.005, False, 40.0, 1e-7, 0.05, 0.1)
    status = check_status(_result((small,), labels))
    jsonschema.Draft4Validator(_status_schema()).validate(status)
    [entry] = status["features"]
    assert entry["score"] < entry["threshold"] and entry["drifted"] is False
    assert (entry["effect"], entry["effectFloor"]) == (0.041235, 0.1)
    assert (status["predictionDrift"]["effect"], status["predictionDrift"]["effectFloor"]) == (
        0.05, 0.1)


def test_explicit_methods_and_unknown_effects_write_no_effect() -> None:
    psi = FeatureScore(name="x", kind="numeric", method="psi", score=0.3, threshold=0.25,
                       drifted=True, samples=900, missing=0, statistic=0.3)
    broken = FeatureScore(name="y", kind="numeric", method="ks", score=1.0, threshold=0.0025,
                          drifted=False, samples=900, missing=0, statistic=0.0, p_value=1.0,
                          effect=float("nan"), effect_floor=0.1)
    labels = PredictionDrift("jensen-shannon", 0.2, 0.1, True, 0.2)
    status = check_status(_result((psi, broken), labels))
    jsonschema.Draft4Validator(_status_schema()).validate(status)
    assert not any({"effect", "effectFloor"} & set(f) for f in status["features"])
    assert not {"effect", "effectFloor"} & set(status["predictionDrift"])


def test_auto_on_a_huge_window_shows_the_effect_that_kept_a_shift_from_counting() -> None:
    """0.07 sd on 50,000 rows against 50,000: KS rejects, the Wasserstein distance (about 0.07)
    stays under its 0.1 floor, and the status shows both numbers."""
    n = 50_000
    rng = np.random.default_rng(18)
    profile = build_reference_profile({"x": rng.normal(size=n)},
                                      rng.choice(["ham", "spam"], n, p=[0.7, 0.3]),
                                      classes=["ham", "spam"])
    logs_rng = np.random.default_rng(19)
    logs = pa.table({
        "id": [f"p-{i}" for i in range(n)],
        "timestamp": pa.array([START + datetime.timedelta(milliseconds=50 * i) for i in range(n)],
                              pa.timestamp("us", tz="UTC")),
        "x": logs_rng.normal(0.07, 1, n),
        "prediction": logs_rng.choice(["ham", "spam"], n, p=[0.7, 0.3])})
    status = check_status(run_check(profile, [logs], [], CheckSettings(),
                                    window_start=START, window_end=NOW))
    [entry] = status["features"]
    assert entry["method"] == "ks" and entry["score"] < entry["threshold"]
    assert entry["effect"] < entry["effectFloor"] == 0.1 and entry["drifted"] is False
    assert entry["effect"] > 0.04  # the shift is seen, and judged too small to be drift
    jsonschema.Draft4Validator(_status_schema()).validate(status)
