"""status.progress from the trainer's rank-0 metrics page (tailor.io.progress.parse)."""

from __future__ import annotations

from tailor.io import progress
from tailor_contract import clock, trainer_api

PAGE = f"""\
# TYPE {trainer_api.METRIC_STEP} gauge
{trainer_api.METRIC_STEP} 30
{trainer_api.METRIC_TOTAL_STEPS} 120
{trainer_api.METRIC_EPOCH} 0.25
{trainer_api.METRIC_ETA_SECONDS} 90.4
{trainer_api.METRIC_SAMPLES_PER_SECOND} 123.456
"""


def test_a_metrics_page_becomes_status_progress() -> None:
    assert progress.parse(PAGE, "2026-01-01T00:00:00Z") == {
        "step": 30, "totalSteps": 120, "percent": 25.0, "summary": "25%", "epoch": 0.25,
        "etaSeconds": 90, "samplesPerSecond": 123.46, "updateTime": "2026-01-01T00:00:00Z"}


def test_the_update_time_is_the_clock_s_rfc_3339() -> None:
    parsed = progress.parse(f"{trainer_api.METRIC_STEP} 3\n")
    assert parsed is not None and parsed["summary"] == "step 3"
    stamp = parsed["updateTime"]
    assert stamp.endswith("Z") and clock.format(clock.parse(stamp)) == stamp


def test_a_page_without_the_trainer_s_metrics_is_no_progress() -> None:
    assert progress.parse("other_metric 1\n") is None
