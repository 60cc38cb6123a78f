"""``auto`` as rates over many seeded windows: its false-alarm rate per check holds at every
window size, and its power for a real shift grows with the window.

Before, ``auto`` tested (KS) below 1,000 values and compared PSI with 0.25 above: a 0.25 sd
mean shift was flagged in every window of 800 rows and in none of 5,000 rows, and a healthy
window of 800 rows raised DriftDetected in about 5% of checks. The reference and windows are
the integration test's (tests/integration/operator/test_driftmonitor.py: ``length`` normal,
``links`` Poisson, two balanced classes), with the reference redrawn every REFERENCE_EVERY
windows: the guarantee is over reference samples as well as windows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy.stats import binom
from tailor.drift import CheckSettings, WindowAccumulator, build_reference_profile, evaluate
from tailor.drift.result import CHECK_FALSE_ALARM_RATE
from tailor_contract.profile import ReferenceProfile

CLASSES = ["sport", "tech"]
SETTINGS = CheckSettings(min_samples=1)
REFERENCE_EVERY = 10
FAILURE_PROBABILITY = 1e-3


def reference(seed: int, n: int = 3000) -> ReferenceProfile:
    rng = np.random.default_rng([seed, 0])
    return build_reference_profile(
        {"length": rng.normal(300, 40, n), "links": rng.poisson(2, n).astype(float)},
        rng.choice(CLASSES, n), classes=CLASSES)


def window(seed: int, n: int, shift: float) -> pa.Table:
    """`n` rows, `length` shifted by `shift` standard deviations."""
    rng = np.random.default_rng([seed, 1, n])
    return pa.table({"length": rng.normal(300 + 40 * shift, 40, n),
                     "links": rng.poisson(2, n).astype(float),
                     "prediction": rng.choice(CLASSES, n)})


def alarm_rate(n: int, shift: float, windows: int, settings: CheckSettings = SETTINGS) -> float:
    """Share of `windows` seeded windows of `n` rows that raise DriftDetected."""
    alarms = 0
    for i in range(windows):
        if i % REFERENCE_EVERY == 0:
            profile = reference(1000 * n + i)
        acc = WindowAccumulator.for_profile(profile)
        acc.update(window(i, n, shift))
        alarms += evaluate(profile, acc, settings).drift_detected
    return alarms / windows


def bound(level: float, windows: int) -> float:
    """The highest rate `windows` windows show with probability 1 - FAILURE_PROBABILITY when
    the true rate is `level`."""
    return float(binom.ppf(1 - FAILURE_PROBABILITY, windows, level)) / windows


def test_healthy_windows_alarm_at_most_at_the_stated_rate_at_every_size():
    sizes = {100: 150, 800: 150, 5000: 60, 50000: 20}
    rates = {n: alarm_rate(n, 0.0, windows) for n, windows in sizes.items()}
    for n, windows in sizes.items():
        assert rates[n] <= bound(CHECK_FALSE_ALARM_RATE, windows), (n, rates)
    total = sum(sizes.values())
    alarms = sum(rates[n] * w for n, w in sizes.items())
    assert alarms / total <= bound(CHECK_FALSE_ALARM_RATE, total)


def test_power_for_a_quarter_sd_shift_grows_with_the_window():
    sizes = (100, 800, 5000, 50000)
    power = [alarm_rate(n, 0.25, 30) for n in sizes]
    assert power == sorted(power), power
    assert power[0] < 0.5 and power[1] >= 0.85, power
    # The old cliff: PSI against 0.25 flagged none of these.
    assert power[2] == power[3] == 1.0, power


def test_a_shift_below_the_effect_floor_is_not_drift_in_huge_windows():
    # 0.03 sd on 50,000 rows (a huge reference is in test_drift_check.py's floor test).
    assert alarm_rate(50000, 0.03, 10) == 0.0
    ks = CheckSettings(min_samples=1, feature_method="ks")
    assert alarm_rate(50000, 1.0, 5, ks) == alarm_rate(50000, 1.0, 5) == 1.0
