"""What a DriftMonitor compares with after a promotion, pure: the production pointer names the
run whose profile a check uses, the window counts only predictions made since the promotion,
AccuracyBelowThreshold clears on the new model's good predictions, and the cooldown runs from
the retrain, not from the promotion."""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from tailor.assess import driftmonitor as assess
from tailor.assess.conditions import find
from tailor.assess.drift_reference import (
    Reference,
    pointer_uri,
    reference,
    reference_profile_uri,
)
from tailor.assess.driftmonitor import Failure, Retrains
from tailor.drift import CheckSettings, build_reference_profile, run_check
from tailor.drift.accuracy import AccuracyResult
from tailor.drift.result import CheckResult
from tailor_contract import constants as c
from tailor_contract.driftmonitor import DriftMonitorSpec

NOW = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)
PROMOTED = NOW - datetime.timedelta(minutes=20)
POINTER_URI = "s3://bkt/models/news/production.json"
RUN_B = "s3://bkt/models/news/runs/run-b/"


def by_job(**retrain: Any) -> DriftMonitorSpec:
    return DriftMonitorSpec.model_validate({
        "model": {"trainingJob": "first"},
        "production": {"predictionsUri": "s3://bkt/logs/", "groundTruthUri": "s3://bkt/labels/",
                       "window": "1h", "minSamples": 100, "minLabeled": 100},
        "checks": {"accuracy": {"threshold": 0.8}},
        "retrain": {"triggers": ["AccuracyBelowThreshold"], "cooldown": "6h", **retrain}})


def source(output: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"task": "text-classification", "model": {"name": "news"}}
    if output:
        spec["output"] = {"uri": "s3://bkt/models/"}
    return {"metadata": {"name": "first"}, "spec": spec,
            "status": {"runId": "run-a",
                       "artifacts": {"runUri": "s3://bkt/models/news/runs/run-a/"}}}


def pointer(**fields: Any) -> dict[str, Any]:
    """As tailor_trainer.artifacts.promote writes it."""
    return {"runId": "run-b", "modelUri": "s3://bkt/models/news/production/run-b/model/",
            "artifactUri": RUN_B, "files": {}, "metric": "accuracy",
            "promotedAt": PROMOTED.timestamp(), **fields}


def test_the_profile_is_the_specs_or_the_monitored_jobs() -> None:
    spec = by_job()
    missing = reference_profile_uri(spec, None)
    assert missing == Failure(c.REASON_TRAININGJOB_NOT_FOUND, "TrainingJob 'first' not found")
    unfinished = reference_profile_uri(spec, {"status": {}})
    assert isinstance(unfinished, Failure) and unfinished.reason == c.REASON_PROFILE_NOT_FOUND
    assert reference_profile_uri(spec, source()) == \
        "s3://bkt/models/news/runs/run-a/reference-profile.json"
    named = DriftMonitorSpec.model_validate({
        "model": {"profileUri": "s3://bkt/profile.json"},
        "production": {"predictionsUri": "s3://bkt/logs/"}, "retrain": {"enabled": False}})
    assert reference_profile_uri(named, None) == "s3://bkt/profile.json"
    # A named profile is used as given: no pointer is read, the whole window counts.
    assert pointer_uri(named, source()) is None
    assert reference(named, source(), pointer()) == Reference("s3://bkt/profile.json",
                                                              "ProfileUri")


def test_the_pointer_is_beside_the_monitored_model() -> None:
    assert pointer_uri(by_job(), source()) == POINTER_URI
    unnamed = source()
    del unnamed["spec"]["model"]
    assert pointer_uri(by_job(), unnamed) == "s3://bkt/models/first/production.json"
    assert pointer_uri(by_job(), source(output=False)) is None
    assert pointer_uri(by_job(), None) is None


def test_without_a_pointer_the_monitored_run_is_the_reference() -> None:
    found = reference(by_job(), source(), None, POINTER_URI)
    assert found == Reference("s3://bkt/models/news/runs/run-a/reference-profile.json",
                              "TrainingJob", run_id="run-a")
    assert found.window_start(NOW, HOUR) == NOW - HOUR
    # None: the merge-patch deletes what a previous (promoted) reference had set.
    assert found.status() == {"source": "TrainingJob", "runId": "run-a", "promotedAt": None}


def test_after_a_promotion_the_promoted_run_is_the_reference_since_its_promotion() -> None:
    found = reference(by_job(), source(), pointer(), POINTER_URI)
    assert isinstance(found, Reference)
    assert found.profile_uri == f"{RUN_B}reference-profile.json"
    assert (found.source, found.run_id, found.promoted_at) == ("ProductionPointer", "run-b",
                                                               PROMOTED)
    assert found.status() == {"source": "ProductionPointer", "runId": "run-b",
                              "promotedAt": "2030-01-01T11:40:00Z"}
    assert found.window_start(NOW, HOUR) == PROMOTED
    # A promotion older than the window changes nothing; one stamped in the future (clocks
    # apart) gives an empty window, never a reversed one.
    assert found.window_start(NOW + 2 * HOUR, HOUR) == NOW + HOUR
    assert found.window_start(PROMOTED - HOUR, HOUR) == PROMOTED - HOUR
    # RFC 3339 is read too, and a profile the pointer names wins over the run's default.
    text = reference(by_job(), source(), pointer(promotedAt="2030-01-01T11:40:00Z",
                                                 referenceProfileUri="s3://bkt/p.json"))
    assert isinstance(text, Reference)
    assert (text.profile_uri, text.promoted_at) == ("s3://bkt/p.json", PROMOTED)
    undated = reference(by_job(), source(), {k: v for k, v in pointer().items()
                                             if k != "promotedAt"})
    assert isinstance(undated, Reference) and undated.window_start(NOW, HOUR) == NOW - HOUR


@pytest.mark.parametrize(("bad", "why"), [
    (["run-b"], "a JSON object was expected, not list"),
    ({**pointer(), "runId": ""}, "it has no runId"),
    ({**pointer(), "artifactUri": "/local/run-b"}, "its artifactUri '/local/run-b' is not an"),
    ({k: v for k, v in pointer().items() if k != "artifactUri"}, "its artifactUri None"),
    ({**pointer(), "promotedAt": "yesterday"}, "its promotedAt 'yesterday' is neither"),
    ({**pointer(), "promotedAt": 1e300}, "its promotedAt 1e+300 is not a time"),
    ({**pointer(), "promotedAt": True}, "its promotedAt True is neither"),
])
def test_a_pointer_that_cannot_be_followed_fails_the_check_clearly(bad: object,
                                                                    why: str) -> None:
    failure = reference(by_job(), source(), bad, POINTER_URI)
    assert isinstance(failure, Failure) and failure.reason == c.REASON_PROFILE_NOT_FOUND
    assert failure.message.startswith(f"the production pointer {POINTER_URI} cannot be "
                                       f"followed: {why}")
    assert not failure.stalled  # retried at the next interval: the trainer may fix it


def window(rng: np.random.Generator, start: datetime.datetime, n: int, accuracy: float
           ) -> tuple[pa.Table, pa.Table]:
    """`n` predictions spread over the 20 minutes after `start`, `accuracy` of them right."""
    stamps = [start + datetime.timedelta(seconds=float(s))
              for s in np.sort(rng.uniform(0, 1199, n))]
    predicted = rng.choice(["sport", "tech"], n)
    right = rng.random(n) < accuracy
    actual = np.where(right, predicted, np.where(predicted == "sport", "tech", "sport"))
    ids = [f"{start.minute}-{i}" for i in range(n)]
    logs = pa.table({"id": ids, "timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
                     "length": rng.normal(300, 40, n), "prediction": predicted})
    return logs, pa.table({"id": ids, "label": actual})


def test_accuracy_below_threshold_clears_on_the_promoted_models_predictions() -> None:
    rng = np.random.default_rng(11)
    profile = build_reference_profile({"length": rng.normal(300, 40, 4000)},
                                      rng.choice(["sport", "tech"], 4000),
                                      classes=["sport", "tech"])
    # The old model's bad hour before the promotion, the new model's good 20 minutes after.
    old_logs, old_labels = window(rng, NOW - HOUR, 600, accuracy=0.55)
    new_logs, new_labels = window(rng, PROMOTED, 300, accuracy=0.95)
    settings = CheckSettings(accuracy_metric="accuracy", accuracy_threshold=0.8,
                             min_samples=100, min_labeled=100)

    def check(ref: Reference, status: dict[str, Any]) -> assess.Decision:
        result = run_check(profile, [old_logs, new_logs], [old_labels, new_labels], settings,
                           window_start=ref.window_start(NOW, HOUR), window_end=NOW)
        body = {"metadata": {"name": "m", "uid": "u", "generation": 1}, "status": status}
        last = (status.get("lastRetrain") or {}).get("name")  # created, and it succeeded
        return assess.checked(body, by_job(), result, ref,
                              Retrains({last: "Succeeded"} if last else {}), NOW)

    before = reference(by_job(), source(), None)
    assert isinstance(before, Reference)
    first = check(before, {})  # the whole hour: mostly the old model's predictions
    degraded = first.status
    assert cond(degraded, c.CONDITION_ACCURACY_BELOW_THRESHOLD)["status"] == "True"
    assert first.retrain is not None and degraded["retrainCount"] == 1
    followed = reference(by_job(), source(), pointer(), POINTER_URI)
    assert isinstance(followed, Reference)
    decision = check(followed, degraded)
    status = decision.status
    below = cond(status, c.CONDITION_ACCURACY_BELOW_THRESHOLD)
    assert (below["status"], below["reason"]) == ("False", c.REASON_ACCURACY_OK)
    assert status["window"]["predictions"] == 300 and status["window"]["start"] == \
        "2030-01-01T11:40:00Z"
    assert status["accuracy"]["value"] > 0.9 and status["phase"] != "Degraded"
    assert status["profileUri"] == f"{RUN_B}reference-profile.json"
    assert status["reference"]["runId"] == "run-b"
    ready = cond(status, c.CONDITION_READY)
    assert "since run-b was promoted at 2030-01-01T11:40:00Z" in ready["message"]
    events = [(e.type, e.reason) for e in decision.events]
    assert events == [("Normal", c.REASON_PROMOTED),
                      ("Normal", c.REASON_ACCURACY_OK)]
    assert "run-b is in production since 2030-01-01T11:40:00Z" in decision.events[0].message
    assert decision.trigger is None and decision.retrain is None
    assert cond(status, c.CONDITION_RETRAINING)["reason"] == c.REASON_RETRAIN_SUCCEEDED
    # The next check compares with the same run: no second Promoted Event.
    assert [e.reason for e in check(followed, status).events] == []


def test_the_cooldown_runs_from_the_retrain_not_from_the_promotion() -> None:
    retrained = NOW - 5 * HOUR
    record = {"name": "m-retrain-00000000", "reason": "AccuracyBelowThreshold",
              "trigger": "u:x:AccuracyBelowThreshold", "time": "2030-01-01T07:00:00Z"}
    promoted = reference(by_job(), source(), pointer(promotedAt=(NOW - HOUR).timestamp()))
    assert isinstance(promoted, Reference)
    low = result_below_threshold()
    body = {"metadata": {"name": "m", "uid": "u", "generation": 1},
            "status": {"lastRetrain": record, "retrainCount": 1, "profileUri": "s3://old"}}
    retrains = Retrains({record["name"]: "Succeeded"})
    waiting = assess.checked(body, by_job(), low, promoted, retrains,
                             retrained + 6 * HOUR - datetime.timedelta(seconds=1))
    assert waiting.blocked == c.REASON_COOLDOWN and waiting.retrain is None
    assert "until 2030-01-01T13:00:00Z" in cond(waiting.status,
                                                c.CONDITION_RETRAINING)["message"]
    assert waiting.status["lastRetrain"] == record  # a check never moves the retrain's time
    due = assess.checked({**body, "status": waiting.status}, by_job(), low, promoted, retrains,
                         retrained + 6 * HOUR)
    assert due.blocked is None and due.retrain is not None
    assert due.status["retrainCount"] == 2
    assert due.status["lastRetrain"]["time"] == "2030-01-01T13:00:00Z"


def result_below_threshold() -> CheckResult:
    """A check whose labelled predictions are clearly below the threshold."""
    accuracy = AccuracyResult(metric="accuracy", value=0.5, lower=0.45, upper=0.55,
                              confidence_level=0.95, threshold=0.8, samples=400,
                              min_labeled=100, below_threshold=True, cohorts=())
    return CheckResult(window_start=NOW - HOUR, window_end=NOW, predictions=400, labeled=400,
                       features=(), skipped_features=(), drifted_share=0.0,
                       drifted_share_threshold=0.5, prediction_drift=None, accuracy=accuracy,
                       min_samples=100)


def cond(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found = find(status.get("conditions"), kind)
    assert found is not None, kind
    return found
