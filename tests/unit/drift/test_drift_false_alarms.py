"""How often a healthy window raises an alarm: a rate over many seeded windows, not one draw.

The windows are those of tests/integration/operator/test_driftmonitor.py (800 predictions, two
features, two classes, labels for all), checked with that test's monitor settings. ``auto`` tests
(KS per feature at the generalised-Bonferroni level, chi-square on the predictions) and asks for
an effect-size floor besides, so on healthy data each family alarms at most at its rate
(AUTO_FEATURE_RATE, AUTO_PREDICTION_RATE) and DriftDetected at most at their sum,
CHECK_FALSE_ALARM_RATE. Each rate is held to its level plus a binomial margin: a check that is
right fails this test with probability below FAILURE_PROBABILITY per family. Other window sizes
and the power: test_drift_auto_rates.py.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import binom
from tailor.drift import CheckResult, CheckSettings, build_reference_profile, run_check
from tailor.drift.result import (
    AUTO_FEATURE_RATE,
    AUTO_PREDICTION_RATE,
    CHECK_FALSE_ALARM_RATE,
)
from tailor_contract.profile import ReferenceProfile

CLASSES = np.array(["sport", "tech"])
NOW = datetime(2030, 1, 1, tzinfo=UTC)
WINDOWS = 400
FAILURE_PROBABILITY = 1e-3
# The integration test's monitor: minSamples 200, minLabeled 100, accuracy threshold 0.8.
SETTINGS = CheckSettings(min_samples=200, min_labeled=100, accuracy_metric="accuracy",
                         accuracy_threshold=0.8)


def reference(seed: int = 7, shift: float = 0.0) -> ReferenceProfile:
    """The integration test's reference profile (write_reference): the first run's, or with
    `shift` a promoted retrain's, trained where production had moved to."""
    rng = np.random.default_rng(seed)
    n = 3000
    predictions = rng.choice(["sport", "tech"], n)
    return build_reference_profile({"length": rng.normal(300 + 40 * shift, 40, n),
                                    "links": rng.poisson(2, n).astype(float)},
                                   predictions, classes=["sport", "tech"], labels=predictions)


def window(seed: int | list[int], part: str, *, shift: float = 0.0, accuracy: float = 0.95,
           n: int = 800) -> tuple[pa.Table, pa.Table]:
    """Prediction logs and labels, drawn exactly as the integration test's write_window draws
    them (features shifted by `shift` standard deviations, `accuracy` of labels matching)."""
    rng = np.random.default_rng(seed)
    predicted = rng.choice(CLASSES, n)
    correct = rng.random(n) < accuracy
    actual = np.where(correct, predicted, np.where(predicted == "sport", "tech", "sport"))
    length = rng.normal(300 + 40 * shift, 40, n)
    links = rng.poisson(2, n).astype(float)
    ids = [f"{part}-{i}" for i in range(n)]
    times = pa.array([NOW - timedelta(seconds=60)] * n, pa.timestamp("us", tz="UTC"))
    return (pa.table({"id": ids, "timestamp": times, "length": length, "links": links,
                      "prediction": predicted}),
            pa.table({"id": ids, "label": actual}))


def check(profile: ReferenceProfile, *windows: tuple[pa.Table, pa.Table]) -> CheckResult:
    return run_check(profile, [w[0] for w in windows], [w[1] for w in windows], SETTINGS,
                     window_start=NOW - timedelta(hours=1), window_end=NOW)


def named(part: str, *, shift: float = 0.0, accuracy: float = 0.95) -> tuple[pa.Table, pa.Table]:
    """An integration test's window: seeded by its part's name (crc32 is the same in every
    process; hash() of a string is not)."""
    return window(zlib.crc32(part.encode()), part, shift=shift, accuracy=accuracy)


def bound(level: float) -> float:
    """The highest alarm rate that `WINDOWS` windows show with probability 1 -
    FAILURE_PROBABILITY when the true rate is `level`."""
    return float(binom.ppf(1 - FAILURE_PROBABILITY, WINDOWS, level)) / WINDOWS


def test_healthy_windows_alarm_no_more_often_than_the_significance_level():
    profile = reference()
    results = [check(profile, window([2030, i], "w")) for i in range(WINDOWS)]
    assert {f.method for r in results for f in r.features} == {"ks"}
    assert {r.prediction_drift.method for r in results if r.prediction_drift} == {"chi-square"}
    features = sum(r.feature_drift for r in results) / WINDOWS
    predictions = sum(bool(r.prediction_drift and r.prediction_drift.drifted)
                      for r in results) / WINDOWS
    drift = sum(r.drift_detected for r in results) / WINDOWS
    accuracy = sum(r.accuracy_alert for r in results) / WINDOWS
    assert features <= bound(AUTO_FEATURE_RATE)
    assert predictions <= bound(AUTO_PREDICTION_RATE)
    assert drift <= bound(CHECK_FALSE_ALARM_RATE)
    # One-sided at (1 - confidence) / 2 even when the true accuracy sits on the threshold;
    # this one is far above it.
    assert accuracy <= bound((1 - SETTINGS.confidence_level) / 2)


def test_the_integration_tests_seeded_windows_are_what_they_claim():
    profile = reference()
    healthy = check(profile, named("fine"))
    assert not healthy.drift_detected and not healthy.accuracy_alert
    shifted = check(profile, named("shifted", shift=3.0, accuracy=0.6))
    assert shifted.drift_reason == "FeatureDrift" and shifted.accuracy_alert
    assert {f.name: f.drifted for f in shifted.features} == {"length": True, "links": False}
    worse = check(profile, named("shifted", shift=3.0, accuracy=0.6),
                  named("worse", shift=3.0, accuracy=0.55))
    assert worse.accuracy_alert
    for part, shift, accuracy in (("bad", 0.0, 0.6), ("bad", 2.0, 0.55)):
        assert check(profile, named(part, shift=shift, accuracy=accuracy)).accuracy_alert
    assert check(profile, named("bad", shift=2.0, accuracy=0.55),
                 named("worse", shift=2.0, accuracy=0.5)).accuracy_alert
    # After a promotion: the new model's window is healthy against its own run's profile
    # (seed 8, trained on the shifted world) and would be drift against the first run's.
    served = named("served", shift=3.0, accuracy=0.95)
    promoted = check(reference(8, shift=3.0), served)
    assert not promoted.drift_detected and not promoted.accuracy_alert
    assert {f.name: f.drifted for f in check(profile, served).features} == {
        "length": True, "links": False}


@pytest.mark.parametrize("level", [0.01, 0.05, 0.1])
def test_the_margin_is_a_binomial_quantile(level: float):
    assert level < bound(level) < level + 4 * np.sqrt(level * (1 - level) / WINDOWS)
