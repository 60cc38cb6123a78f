"""The DriftMonitor's decisions, pure: a check's result (or failure, or an alert), the spec, the
previous status and the time in; status, conditions, phase, Events and the retrain out.

Every DriftMonitor condition and reason in tailor_contract.constants is asserted here (the
Events of the controller, ProductionDataFailed and RetrainCreated, in
test_driftmonitor_retrain.py).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from tailor.assess import driftmonitor as assess
from tailor.assess.conditions import find
from tailor.assess.drift_reference import Reference
from tailor.assess.drift_status import check_settings, check_status
from tailor.assess.driftmonitor import Failure, Retrains
from tailor.drift import CheckSettings, build_reference_profile, run_check
from tailor.drift.accuracy import AccuracyResult
from tailor.drift.result import CheckResult, FeatureScore, PredictionDrift
from tailor_contract import constants as c
from tailor_contract import names
from tailor_contract.driftmonitor import DriftMonitorSpec

NOW = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
START = NOW - datetime.timedelta(hours=1)
STAMP = "2030-01-01T12:00:00Z"
TEMPLATE = {"spec": {"task": "custom", "command": ["true"]}}


def spec(**retrain: Any) -> DriftMonitorSpec:
    return DriftMonitorSpec.model_validate({
        "model": {"profileUri": "s3://bkt/profile.json"},
        "production": {"predictionsUri": "s3://bkt/logs/", "groundTruthUri": "s3://bkt/labels/",
                       "window": "1h", "minSamples": 500, "minLabeled": 200},
        "checks": {"accuracy": {"threshold": 0.8}},
        "retrain": {"triggers": ["AccuracyBelowThreshold", "DriftDetected", "Alert"],
                    "cooldown": "6h", "template": TEMPLATE, **retrain}})


def monitor(status: dict[str, Any] | None = None, generation: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": "m", "namespace": "ns", "uid": "uid-1",
                         "generation": generation}, "spec": {}, "status": status or {}}


def feature(name: str, drifted: bool) -> FeatureScore:
    return FeatureScore(name=name, kind="numeric", method="psi", score=0.4 if drifted else 0.01,
                        threshold=0.25, drifted=drifted, samples=1000, missing=0,
                        statistic=0.4 if drifted else 0.01)


def accuracy(value: float | None, samples: int = 1000, threshold: float = 0.8
             ) -> AccuracyResult:
    below = value is not None and samples >= 200 and value + 0.03 < threshold
    return AccuracyResult(metric="accuracy", value=value,
                          lower=None if value is None else value - 0.03,
                          upper=None if value is None else value + 0.03, confidence_level=0.95,
                          threshold=threshold, samples=samples, min_labeled=200,
                          below_threshold=below, cohorts=())


def result(*, predictions: int = 1000, drifted: tuple[str, ...] = (),
           prediction_drifted: bool = False, acc: AccuracyResult | None = None) -> CheckResult:
    features = tuple(feature(n, n in drifted) for n in ("a", "b"))
    return CheckResult(
        window_start=START, window_end=NOW, predictions=predictions,
        labeled=acc.samples if acc else 0, features=features, skipped_features=(),
        drifted_share=len(drifted) / 2, drifted_share_threshold=0.5,
        prediction_drift=PredictionDrift("jensen-shannon", 0.2 if prediction_drifted else 0.01,
                                         0.1, prediction_drifted, 0.2),
        accuracy=acc, min_samples=500)


def condition(status: dict[str, Any], kind: str) -> tuple[str, str]:
    found = find(status.get("conditions"), kind)
    assert found is not None, kind
    return found["status"], found["reason"]


def message(status: dict[str, Any], kind: str) -> str:
    found = find(status.get("conditions"), kind)
    assert found is not None, kind
    return str(found["message"])


def checked(res: CheckResult, *, status: dict[str, Any] | None = None,
            retrains: dict[str, str | None] | None = None, now: datetime.datetime = NOW,
            **retrain: Any) -> assess.Decision:
    return assess.checked(monitor(status), spec(**retrain), res,
                          Reference("s3://bkt/profile.json", "ProfileUri"),
                          Retrains(retrains or {}), now)


def test_a_healthy_check_is_ready_and_asks_for_nothing():
    decision = checked(result(acc=accuracy(0.95)))
    status = decision.status
    assert condition(status, c.CONDITION_READY) == ("True", c.REASON_CHECKED)
    assert condition(status, c.CONDITION_STALLED) == ("False", c.REASON_CHECKED)
    assert condition(status, c.CONDITION_RECONCILING) == ("False", c.REASON_CHECKED)
    assert condition(status, c.CONDITION_DRIFT_DETECTED) == ("False", c.REASON_NO_DRIFT)
    assert condition(status, c.CONDITION_ACCURACY_BELOW_THRESHOLD) == ("False",
                                                                      c.REASON_ACCURACY_OK)
    assert condition(status, c.CONDITION_RETRAINING) == ("False", c.REASON_NOT_APPLICABLE)
    assert status["phase"] == "Healthy" and status["observedGeneration"] == 2
    assert status["lastCheckTime"] == STAMP and status["profileUri"] == "s3://bkt/profile.json"
    assert status["reference"] == {"source": "ProfileUri", "runId": None, "promotedAt": None}
    assert status["window"]["end"] == STAMP and status["driftSummary"] == "0/2"
    assert decision.events == [] and decision.trigger is None and decision.retrain is None
    assert {cond["type"] for cond in status["conditions"]} == set(c.DRIFTMONITOR_CONDITIONS)


def test_feature_drift_records_one_retrain_and_says_so():
    decision = checked(result(drifted=("a",)))
    status = decision.status
    assert condition(status, c.CONDITION_DRIFT_DETECTED) == ("True", c.REASON_FEATURE_DRIFT)
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", c.REASON_FEATURE_DRIFT)]
    trigger = decision.retrain
    assert trigger is not None and trigger == decision.trigger
    assert trigger.reason == c.TRIGGER_DRIFT_DETECTED
    assert trigger.identity == f"uid-1:{STAMP}:DriftDetected"
    assert (trigger.window_start, trigger.window_end) == ("2030-01-01T11:00:00Z", STAMP)
    name = names.retrain_job_name("m", trigger.identity)
    assert status["lastRetrain"] == {"name": name, "reason": "DriftDetected", "time": STAMP,
                                     "trigger": trigger.identity,
                                     "windowStart": "2030-01-01T11:00:00Z", "windowEnd": STAMP}
    assert status["retrainCount"] == 1
    assert condition(status, c.CONDITION_RETRAINING) == ("True", c.REASON_RETRAIN_CREATED)
    assert status["phase"] == "Retraining"


def test_prediction_drift_alone_is_drift():
    status = checked(result(prediction_drifted=True), triggers=["Alert"]).status
    assert condition(status, c.CONDITION_DRIFT_DETECTED) == ("True", c.REASON_PREDICTION_DRIFT)
    assert status["phase"] == "Drifting"


def test_too_few_samples_or_labels_decide_nothing():
    decision = checked(result(predictions=100, drifted=("a", "b"), acc=accuracy(0.5, 150)))
    status = decision.status
    assert condition(status, c.CONDITION_DRIFT_DETECTED) == ("Unknown",
                                                             c.REASON_INSUFFICIENT_SAMPLES)
    assert condition(status, c.CONDITION_ACCURACY_BELOW_THRESHOLD) == (
        "Unknown", c.REASON_INSUFFICIENT_SAMPLES)
    assert "150 labelled predictions in the window; 200 needed" in \
        message(status, c.CONDITION_ACCURACY_BELOW_THRESHOLD)
    assert decision.retrain is None and status["phase"] == "Healthy"


def test_no_accuracy_check_is_not_applicable():
    status = checked(result()).status
    assert condition(status, c.CONDITION_ACCURACY_BELOW_THRESHOLD) == (
        "False", c.REASON_NOT_APPLICABLE)


def test_an_accuracy_drop_comes_first_and_waits_out_the_cooldown():
    last = {"name": "m-retrain-00000000", "reason": "DriftDetected", "trigger": "x",
            "time": "2030-01-01T10:00:00Z"}
    decision = checked(result(drifted=("a", "b"), acc=accuracy(0.6)),
                       status={"lastRetrain": last, "retrainCount": 1},
                       retrains={last["name"]: "Succeeded"})
    status = decision.status
    assert condition(status, c.CONDITION_ACCURACY_BELOW_THRESHOLD) == (
        "True", c.REASON_ACCURACY_BELOW_THRESHOLD)
    assert decision.trigger is not None
    assert decision.trigger.reason == c.TRIGGER_ACCURACY_BELOW_THRESHOLD
    assert "threshold 0.8" in decision.trigger.message
    assert decision.retrain is None and decision.blocked == c.REASON_COOLDOWN
    assert condition(status, c.CONDITION_RETRAINING) == ("False", c.REASON_COOLDOWN)
    assert "2030-01-01T16:00:00Z" in message(status, c.CONDITION_RETRAINING)
    assert status["retrainCount"] == 1 and status["lastRetrain"] == last
    assert status["phase"] == "Degraded"


def test_a_running_retrain_forbids_another_and_shows():
    decision = checked(result(drifted=("a",)), retrains={"m-retrain-1": "Running"})
    assert decision.blocked == c.REASON_RETRAIN_RUNNING and decision.retrain is None
    assert condition(decision.status, c.CONDITION_RETRAINING) == ("True",
                                                                  c.REASON_RETRAIN_RUNNING)
    assert decision.status["phase"] == "Retraining"
    allowed = checked(result(drifted=("a",)), retrains={"m-retrain-1": "Running"},
                      concurrencyPolicy="Allow")
    assert allowed.retrain is not None
    quiet = checked(result(), retrains={"m-retrain-1": None})
    assert condition(quiet.status, c.CONDITION_RETRAINING) == ("True", c.REASON_RETRAIN_RUNNING)


@pytest.mark.parametrize(("phase", "reason"), [("Succeeded", c.REASON_RETRAIN_SUCCEEDED),
                                               ("Failed", c.REASON_RETRAIN_FAILED)])
def test_the_last_retrain_outcome_is_the_retraining_reason(phase: str, reason: str):
    last = {"name": "m-retrain-1", "reason": "Alert", "trigger": "t", "time": STAMP}
    status = checked(result(), status={"lastRetrain": last}, retrains={"m-retrain-1": phase},
                     enabled=True).status
    assert condition(status, c.CONDITION_RETRAINING) == ("False", reason)


def test_a_switched_off_retrain_says_so():
    decision = checked(result(drifted=("a",), acc=accuracy(0.5)), enabled=False)
    assert decision.trigger is None and decision.retrain is None
    assert condition(decision.status, c.CONDITION_RETRAINING) == ("False",
                                                                  c.REASON_RETRAIN_DISABLED)


def test_a_recorded_retrain_that_is_missing_is_created_again():
    identity = f"uid-1:{STAMP}:AccuracyBelowThreshold"
    last = {"name": names.retrain_job_name("m", identity), "reason": "AccuracyBelowThreshold",
            "trigger": identity, "time": STAMP, "windowEnd": STAMP}
    decision = checked(result(), status={"lastRetrain": last},
                       now=NOW + datetime.timedelta(minutes=5))
    assert decision.retrain is not None and decision.retrain.identity == identity
    assert decision.retrain.window_end == STAMP and decision.trigger is None
    assert condition(decision.status, c.CONDITION_RETRAINING) == ("False",
                                                                  c.REASON_RETRAIN_CREATED)
    exists = checked(result(), status={"lastRetrain": last}, retrains={last["name"]: None})
    assert exists.retrain is None
    late = checked(result(), status={"lastRetrain": last}, now=NOW + datetime.timedelta(hours=7))
    assert late.retrain is None
    forged = checked(result(), status={"lastRetrain": {**last, "name": "m-retrain-bad"}})
    assert forged.retrain is None


def test_a_cleared_condition_is_a_normal_event():
    before = checked(result(drifted=("a",)), triggers=["Alert"]).status
    decision = checked(result(), status=before, triggers=["Alert"])
    assert [(e.type, e.reason) for e in decision.events] == [("Normal", c.REASON_NO_DRIFT)]
    again = checked(result(), status=decision.status, triggers=["Alert"])
    assert again.events == []


@pytest.mark.parametrize(("reason", "stalled"), [(c.REASON_INVALID_SPEC, True),
                                                 (c.REASON_SECRET_NOT_FOUND, True),
                                                 (c.REASON_STORAGE_ERROR, False),
                                                 (c.REASON_PROFILE_NOT_FOUND, False),
                                                 (c.REASON_TRAININGJOB_NOT_FOUND, False)])
def test_a_failed_check_says_why(reason: str, stalled: bool):
    decision = assess.failed(monitor(), Failure(reason, "why"), NOW)
    status = decision.status
    assert decision.error == reason
    assert condition(status, c.CONDITION_READY) == ("False", reason)
    assert condition(status, c.CONDITION_STALLED) == (str(stalled), reason)
    assert condition(status, c.CONDITION_RECONCILING) == (str(not stalled), reason)
    for kind in (c.CONDITION_DRIFT_DETECTED, c.CONDITION_ACCURACY_BELOW_THRESHOLD,
                 c.CONDITION_RETRAINING):
        assert condition(status, kind) == ("Unknown", reason)
    assert status["phase"] == ("Error" if stalled else "Pending")
    assert status["lastCheckTime"] == STAMP
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", reason)]
    repeated = assess.failed(monitor(status), Failure(reason, "why"), NOW)
    assert repeated.events == []


def test_a_failure_keeps_the_last_check():
    healthy = checked(result()).status
    status = assess.failed(monitor(healthy), Failure(c.REASON_STORAGE_ERROR, "down"), NOW).status
    assert condition(status, c.CONDITION_DRIFT_DETECTED) == ("False", c.REASON_NO_DRIFT)
    assert status["phase"] == "Healthy" and status["features"] == healthy["features"]


def alert(fingerprint: str = "f1") -> dict[str, Any]:
    return {"fingerprint": fingerprint, "startsAt": "2030-01-01T11:30:00Z",
            "labels": {"alertname": "Low"}, "annotations": {"summary": "model metric low"}}


def test_an_alert_retrains_on_the_last_checks_window_once():
    last_check = checked(result(acc=accuracy(0.95))).status
    body = monitor(last_check, generation=3)  # a spec change not yet checked
    decision = assess.alerted(body, spec(), alert(), Retrains(), NOW)
    trigger = decision.retrain
    assert trigger is not None and trigger.reason == c.TRIGGER_ALERT
    assert trigger.message == "alert: model metric low"
    assert (trigger.window_start, trigger.window_end) == ("2030-01-01T11:00:00Z", STAMP)
    status = decision.status
    assert status["lastRetrain"]["trigger"] == "alert:f1:2030-01-01T11:30:00Z"
    assert status["retrainCount"] == 1 and status["phase"] == "Retraining"
    assert condition(status, c.CONDITION_RETRAINING) == ("True", c.REASON_RETRAIN_CREATED)
    assert status["observedGeneration"] == 2  # the next check still runs on generation 3
    again = assess.alerted(monitor(status), spec(cooldown="0s"), alert(), Retrains(), NOW)
    assert again.outcome == "duplicate" and again.retrain is None
    created = assess.alerted(monitor(last_check), spec(), alert(),
                             Retrains({status["lastRetrain"]["name"]: None}), NOW)
    assert created.outcome == "duplicate"
    cooling = assess.alerted(monitor(status), spec(), alert("f2"), Retrains(), NOW)
    assert cooling.outcome == c.REASON_COOLDOWN and cooling.retrain is None
    deaf = assess.alerted(monitor(), spec(triggers=["DriftDetected"]), alert(), Retrains(), NOW)
    assert deaf.outcome == "alerts-do-not-retrain"


def test_an_alert_without_a_check_takes_the_window_before_now():
    decision = assess.alerted(monitor(), spec(), alert(), Retrains(), NOW)
    assert decision.retrain is not None
    assert (decision.retrain.window_start, decision.retrain.window_end) == (
        "2030-01-01T11:00:00Z", STAMP)


def test_a_check_is_due_on_a_new_spec_or_after_its_interval():
    body = monitor({"observedGeneration": 2, "lastCheckTime": STAMP})
    body["spec"] = {"interval": "5m"}
    assert not assess.due(body, NOW + datetime.timedelta(minutes=4))
    assert assess.due(body, NOW + datetime.timedelta(minutes=5))
    body["metadata"]["generation"] = 3
    assert assess.due(body, NOW)
    assert assess.due(monitor(), NOW)


def test_check_settings_read_the_monitor_spec():
    monitor_spec = DriftMonitorSpec.model_validate(
        {
            "model": {"trainingJob": "news"},
            "production": {
                "predictionsUri": "s3://logs/predictions/",
                "groundTruthUri": "s3://logs/labels/",
                "window": "48h",
                "minSamples": 50,
                "minLabeled": 20,
                "columns": {"id": "request_id"},
            },
            "checks": {
                "accuracy": {"metric": "macro-f1", "threshold": 0.8, "confidenceLevel": 0.9},
                "featureDrift": {"method": "ks", "threshold": 0.01, "calibrate": True},
                "predictionDrift": {"method": "psi"},
            },
        }
    )
    settings = check_settings(monitor_spec)
    assert settings.feature_method == "ks" and settings.feature_threshold == 0.01
    assert settings.calibrate and settings.prediction_method == "psi"
    assert (settings.accuracy_metric, settings.accuracy_threshold) == ("macro-f1", 0.8)
    assert settings.confidence_level == 0.9
    assert (settings.min_samples, settings.min_labeled) == (50, 20)
    assert settings.id_column == "request_id" and settings.cohort_seconds == 7200
    assert check_settings(monitor_spec, min_samples=7).min_samples == 7


def test_check_status_has_the_crd_shape():
    rng = np.random.default_rng(0)
    n = 5000
    profile = build_reference_profile(
        {"x": rng.normal(size=n), "y": rng.exponential(size=n),
         "city": rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])},
        rng.choice(["ham", "spam"], n, p=[0.7, 0.3]), classes=["ham", "spam"])
    logs_rng = np.random.default_rng(1)
    m = 3000
    logs = pa.table({
        "id": [f"p-{i}" for i in range(m)],
        "timestamp": pa.array([START + datetime.timedelta(seconds=i) for i in range(m)],
                              pa.timestamp("us", tz="UTC")),
        "x": logs_rng.normal(1.0, 1, m), "y": logs_rng.exponential(size=m) + 1.0,
        "city": logs_rng.choice(["a", "b", "c"], m, p=[0.5, 0.3, 0.2]),
        "prediction": logs_rng.choice(["ham", "spam"], m, p=[0.7, 0.3])})
    settings = CheckSettings(accuracy_metric="accuracy", accuracy_threshold=0.9)
    ground_truth = pa.table({"id": logs["id"], "label": logs["prediction"]})
    status = check_status(run_check(profile, [logs], [ground_truth], settings,
                                    window_start=START, window_end=NOW))
    json.dumps(status, allow_nan=False)
    assert status["window"] == {"predictions": 3000, "labeled": 3000, "labelCoverage": 1.0,
                                "start": "2030-01-01T11:00:00Z", "end": STAMP}
    assert status["driftSummary"] == "2/3"  # x and y moved, city did not
    assert {frozenset(f) for f in status["features"]} == {frozenset(  # auto: with its effect
        {"name", "method", "score", "threshold", "effect", "effectFloor", "drifted"})}
    assert status["accuracy"]["value"] == 1.0 and status["accuracy"]["samples"] == 3000
    assert status["accuracy"]["threshold"] == 0.9
    assert set(status["predictionDrift"]) == {"method", "score", "threshold", "effect",
                                              "effectFloor", "drifted"}


def test_every_driftmonitor_reason_is_asserted_in_these_tests():
    defined = list(vars(c))
    span = defined[defined.index("REASON_CHECKED"):
                   defined.index("REASON_PRODUCTION_DATA_FAILED") + 1]
    reasons = [name for name in span if name.startswith("REASON_")]
    shared = ["REASON_INVALID_SPEC", "REASON_STORAGE_ERROR", "REASON_SECRET_NOT_FOUND",
              "REASON_NOT_APPLICABLE"]
    here = Path(__file__)
    text = here.read_text() + (here.parent / "test_driftmonitor_retrain.py").read_text()
    assert [name for name in reasons + shared if f"c.{name}" not in text] == []
