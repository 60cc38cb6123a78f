"""The DriftMonitor controller against a fake Kube and a local directory standing in for S3.

A retrain recorded before an operator restart is created with the same production data; the
object store's failures become conditions; an alert retrains once; after a promotion a check
follows the production pointer to the new run's profile and the predictions made since. pyarrow's SubTreeFileSystem
plays the bucket, so the whole check runs without a cluster.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from tailor.assess.conditions import find
from tailor.controllers.driftmonitor import DriftMonitorController
from tailor.io import objectstore
from tailor.settings import OperatorSettings
from tailor_contract import constants as c
from tailor_contract.driftmonitor import DriftMonitorSpec, RetrainTrigger
from tailor_contract.names import retrain_job_name
from tailor_contract.profile import build_reference_profile


class FakeKube:
    """The calls the controller makes, kept in memory."""

    def __init__(self, monitor: dict[str, Any] | None = None) -> None:
        self.created: list[dict[str, Any]] = []
        self.existing: list[dict[str, Any]] = []
        """TrainingJobs that were there before (a monitored job)."""
        self.events: list[tuple[str, str, str]] = []
        self.monitor = copy.deepcopy(monitor)
        self.secrets: dict[str, str] = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}

    def get_trainingjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return next((j for j in self.existing + self.created if j["metadata"]["name"] == name),
                    None)

    def list_trainingjobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        label, _, value = selector.partition("=")
        return [j for j in self.created if j["metadata"]["labels"].get(label) == value]

    def create_trainingjob(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if self.get_trainingjob("ns", body["metadata"]["name"]) is not None:
            return None
        self.created.append(body)
        return body

    def get_driftmonitor(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.monitor)

    def patch_driftmonitor_status(self, body: dict[str, Any], status: dict[str, Any], *,
                                  precondition: bool = True) -> dict[str, Any] | None:
        assert self.monitor is not None
        self.monitor["status"] = copy.deepcopy(status)
        return self.monitor

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        return self.secrets.get(key)

    def event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """s3://bkt/... is tmp_path/bkt/...; the profile is read from there too."""
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    monkeypatch.setattr(objectstore, "filesystem", lambda store: fs)

    def read_json(uri: str, store: objectstore.Storage) -> dict[str, Any]:
        path = tmp_path / uri.removeprefix("s3://")
        if not path.exists():
            raise objectstore.ObjectNotFound(f"{uri} does not exist")
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    monkeypatch.setattr(objectstore, "read_json", read_json)
    root = tmp_path / "bkt"
    (root / "logs" / "predictions").mkdir(parents=True)
    (root / "logs" / "labels").mkdir(parents=True)
    (root / "profile.json").write_text(json.dumps({
        "formatVersion": 1, "kind": "tailor.dev/reference-profile", "samples": 2,
        "classes": ["a", "b"], "features": {}, "predictions": {"a": 1, "b": 1}}))
    return root


def monitor(template: dict[str, Any], include: bool = True,
            status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {"model": {"profileUri": "s3://bkt/profile.json"},
                     "production": {"predictionsUri": "s3://bkt/logs/predictions/",
                                    "groundTruthUri": "s3://bkt/logs/labels/", "window": "1h"},
                     "storage": {"endpoint": "http://s3.invalid",
                                 "credentialsSecret": {"name": "s3"}},
                     "retrain": {"includeProductionData": include,
                                 "template": {"spec": template}}},
            "status": status or {}}


TEXT_JOB = {"task": "text-classification", "model": {"name": "news", "base": "s3://bkt/base/"},
            "data": {"uri": "s3://bkt/data/curated.csv", "columns": {"text": "body"}},
            "output": {"uri": "s3://bkt/models"}}


def write_logs(root: Path, now: float) -> None:
    predictions = [{"id": f"p{i}", "timestamp": now - 600, "body": f"text {i}",
                    "prediction": "a"} for i in range(5)]
    predictions.append({"id": "late", "timestamp": now + 600, "body": "after", "prediction": "a"})
    labels = [{"id": f"p{i}", "label": "ab"[i % 2], "timestamp": now} for i in range(4)]
    labels.append({"id": "late", "label": "a", "timestamp": now})
    (root / "logs" / "predictions" / "1.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in predictions))
    (root / "logs" / "labels" / "1.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in labels))


def controller(kube: FakeKube) -> DriftMonitorController:
    return DriftMonitorController(kube, OperatorSettings())  # type: ignore[arg-type]


def test_a_recorded_retrain_is_created_with_its_window_of_production_data(bucket: Path) -> None:
    now = time.time()
    write_logs(bucket, now)
    identity = f"u-1:{stamp(now)}:AccuracyBelowThreshold"
    name = retrain_job_name("m", identity)
    # What the status says after a restart: recorded (with its window), never created.
    record = {"name": name, "reason": "AccuracyBelowThreshold", "time": stamp(now),
              "trigger": identity, "windowStart": stamp(now - 3600), "windowEnd": stamp(now)}
    body = monitor(TEXT_JOB, status={"lastRetrain": record, "retrainCount": 1})
    kube = FakeKube(body)
    controller(kube).check(body)  # 5 predictions: too few to decide anything new
    [job] = kube.created
    uri = f"s3://bkt/models/news/production-data/{name}.parquet"
    assert job["metadata"]["name"] == name
    assert job["spec"]["data"]["productionUris"] == [uri]
    assert "additionalUris" not in job["spec"]["data"]
    lineage = json.loads(job["metadata"]["annotations"]["tailor.dev/trigger"])
    assert lineage["productionData"] == {"uri": uri, "rows": 4}
    assert lineage["windowEnd"] == stamp(now) and lineage["message"] == \
        "recorded before a restart"
    table = pq.read_table(bucket / "models" / "news" / "production-data" / f"{name}.parquet")
    # The retrain's own columns (id, its text column "body", its timestamp column: the
    # prediction's time, label); p4 has no label yet and "late" is after the window.
    predicted = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now - 600))
    assert [{**r, "timestamp": r["timestamp"][:19]} for r in table.to_pylist()] == [
        {"id": f"p{i}", "body": f"text {i}", "timestamp": predicted, "label": "ab"[i % 2]}
        for i in range(4)]
    assert all(r["timestamp"].endswith("Z") for r in table.to_pylist())
    assert kube.events[-1][1] == c.REASON_RETRAIN_CREATED and "folded in 4" in kube.events[-1][2]
    status = kube.monitor["status"] if kube.monitor else {}
    assert status["retrainCount"] == 1 and status["lastRetrain"] == record
    drift = find(status["conditions"], c.CONDITION_DRIFT_DETECTED)
    assert drift is not None and drift["reason"] == c.REASON_INSUFFICIENT_SAMPLES
    # The next check finds it: nothing is created twice.
    controller(kube).check(kube.get_driftmonitor("ns", "m") or {})
    assert len(kube.created) == 1


def test_nothing_is_folded_when_switched_off_or_the_job_has_no_data(bucket: Path) -> None:
    now = time.time()
    write_logs(bucket, now)
    custom = {"task": "custom", "command": ["true"]}
    for body in (monitor(TEXT_JOB, include=False), monitor(custom)):
        kube = FakeKube(body)
        spec = DriftMonitorSpec.model_validate(body["spec"])
        trigger = RetrainTrigger("DriftDetected", "x", "drift", stamp(now - 3600), stamp(now))
        assert controller(kube)._create_retrain(body, spec, trigger, None)
        [job] = kube.created
        assert "additionalUris" not in (job["spec"].get("data") or {})
        assert "productionData" not in json.loads(
            job["metadata"]["annotations"]["tailor.dev/trigger"])
    assert not (bucket / "models").exists()


def test_a_failed_write_creates_nothing_and_says_so(bucket: Path) -> None:
    now = time.time()
    write_logs(bucket, now)
    (bucket / "logs" / "labels" / "1.jsonl").write_text("{not json\n")
    body = monitor(TEXT_JOB)
    kube = FakeKube(body)
    spec = DriftMonitorSpec.model_validate(body["spec"])
    trigger = RetrainTrigger("DriftDetected", "x", "drift", stamp(now - 3600), stamp(now))
    assert not controller(kube)._create_retrain(body, spec, trigger, None)
    assert kube.created == []
    assert kube.events[-1][:2] == ("Warning", c.REASON_PRODUCTION_DATA_FAILED)


@pytest.mark.parametrize(("break_it", "reason", "stalled"), [
    ("secret", c.REASON_SECRET_NOT_FOUND, True),
    ("profile", c.REASON_PROFILE_NOT_FOUND, False),
    ("logs", c.REASON_STORAGE_ERROR, False),
])
def test_a_check_that_cannot_read_its_inputs_says_why(bucket: Path, break_it: str, reason: str,
                                                      stalled: bool) -> None:
    write_logs(bucket, time.time())
    body = monitor(TEXT_JOB)
    kube = FakeKube(body)
    if break_it == "secret":
        kube.secrets = {}
    elif break_it == "profile":
        (bucket / "profile.json").unlink()
    else:
        (bucket / "logs" / "predictions" / "1.jsonl").write_text("{not json\n")
    controller(kube).check(body)
    status = kube.monitor["status"] if kube.monitor else {}
    ready = find(status["conditions"], c.CONDITION_READY)
    stall = find(status["conditions"], c.CONDITION_STALLED)
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", reason)
    assert stall is not None and stall["status"] == str(stalled)
    assert kube.events == [("Warning", reason, ready["message"])]
    assert kube.created == []


def test_an_alert_retrains_once(bucket: Path) -> None:
    write_logs(bucket, time.time())
    body = monitor({"task": "custom", "command": ["true"]})
    body["spec"]["retrain"]["triggers"] = ["Alert"]
    kube = FakeKube(body)
    alert = {"fingerprint": "f", "startsAt": "2030-01-01T00:00:00Z",
             "labels": {"alertname": "Low"}}
    assert controller(kube).alert(body, alert) == "retrain-created"
    assert controller(kube).alert(body, alert) == "duplicate"
    [job] = kube.created
    status = kube.monitor["status"] if kube.monitor else {}
    assert status["lastRetrain"]["name"] == job["metadata"]["name"]
    assert status["retrainCount"] == 1 and status["phase"] == "Retraining"
    assert kube.events[-1][1] == c.REASON_RETRAIN_CREATED
    deaf = monitor({"task": "custom", "command": ["true"]})
    deaf["spec"]["retrain"]["triggers"] = ["DriftDetected"]
    assert controller(FakeKube(deaf)).alert(deaf, alert) == "alerts-do-not-retrain"


def followed(root: Path, now: float, *, pointer: str | None = None) -> dict[str, Any]:
    """A monitor of TrainingJob "first" (model news, run-a), and what was promoted since: run-b,
    10 minutes ago, with its own profile. The old model's predictions came before, right; the
    new model's after, all wrong."""
    for run, feature in (("run-a", "length"), ("run-b", "score")):
        target = root / "models" / "news" / "runs" / run / "reference-profile.json"
        target.parent.mkdir(parents=True)
        profile = build_reference_profile({feature: np.arange(100.0)},
                                          np.array(["a", "b"] * 50), classes=["a", "b"])
        target.write_text(json.dumps(profile.to_json()))
    (root / "models" / "news" / "production.json").write_text(pointer or json.dumps({
        "runId": "run-b", "artifactUri": "s3://bkt/models/news/runs/run-b/",
        "modelUri": "s3://bkt/models/news/production/run-b/model/", "files": {},
        "promotedAt": now - 600}))
    old = [{"id": f"old{i}", "timestamp": now - 1200, "body": "x", "length": 3.0,
            "score": 1.0, "prediction": "a"} for i in range(6)]
    new = [{"id": f"new{i}", "timestamp": now - 60 - i, "body": f"new {i}", "length": 5.0,
            "score": 2.0, "prediction": "b"} for i in range(6)]
    labels = [{"id": r["id"], "label": "a", "timestamp": now} for r in old + new]
    (root / "logs" / "predictions" / "1.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in old + new))
    (root / "logs" / "labels" / "1.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in labels))
    body = monitor({}, status={})
    body["spec"]["model"] = {"trainingJob": "first"}
    body["spec"]["production"] |= {"minSamples": 5, "minLabeled": 5}
    body["spec"]["checks"] = {"accuracy": {"threshold": 0.8}}
    del body["spec"]["retrain"]["template"]  # the retrain clones the monitored job
    return body


def first_job() -> dict[str, Any]:
    return {"metadata": {"name": "first", "namespace": "ns"},
            "spec": copy.deepcopy(TEXT_JOB),
            "status": {"runId": "run-a",
                       "artifacts": {"runUri": "s3://bkt/models/news/runs/run-a/"}}}


def test_after_a_promotion_the_check_follows_the_new_model(bucket: Path) -> None:
    now = time.time()
    body = followed(bucket, now)
    kube = FakeKube(body)
    kube.existing.append(first_job())
    controller(kube).check(body)
    status = kube.monitor["status"] if kube.monitor else {}
    # Compared with run-b's profile (its feature "score", not run-a's "length").
    assert status["profileUri"] == "s3://bkt/models/news/runs/run-b/reference-profile.json"
    assert status["reference"] == {"source": "ProductionPointer", "runId": "run-b",
                                   "promotedAt": stamp(now - 600)}
    assert [f["name"] for f in status["features"]] == ["score"]
    # Only the new model's six predictions count: all wrong, so its accuracy is what falls.
    assert status["window"]["predictions"] == 6 and status["window"]["start"] == \
        stamp(now - 600)
    below = find(status["conditions"], c.CONDITION_ACCURACY_BELOW_THRESHOLD)
    assert below is not None and below["status"] == "True"
    # The retrain it starts learns from the new model's window only, with run-b's columns.
    [job] = kube.created
    table = pq.read_table(bucket / "models" / "news" / "production-data" /
                          f"{job['metadata']['name']}.parquet")
    assert sorted(table["id"].to_pylist()) == [f"new{i}" for i in range(6)]
    assert table.column_names == ["id", "body", "score", "timestamp", "label"]
    assert job["spec"]["data"]["productionUris"] == [
        f"s3://bkt/models/news/production-data/{job['metadata']['name']}.parquet"]


@pytest.mark.parametrize(("pointer", "why"), [
    ("{not json", "not JSON"),
    (json.dumps({"runId": "run-b"}), "its artifactUri None is not an s3:// URI"),
])
def test_a_pointer_that_cannot_be_followed_fails_the_check_and_keeps_the_last(
        bucket: Path, pointer: str, why: str) -> None:
    now = time.time()
    body = followed(bucket, now, pointer=pointer)
    last = {"profileUri": "s3://bkt/models/news/runs/run-a/reference-profile.json",
            "window": {"predictions": 12, "labeled": 12, "labelCoverage": 1.0},
            "lastRetrain": {"name": "m-retrain-1", "reason": "Alert", "time": stamp(now),
                            "trigger": "t"}, "retrainCount": 1}
    body["status"] = last
    kube = FakeKube(body)
    kube.existing.append(first_job())
    controller(kube).check(body)
    status = kube.monitor["status"] if kube.monitor else {}
    ready = find(status["conditions"], c.CONDITION_READY)
    assert ready is not None and (ready["status"], ready["reason"]) == (
        "False", c.REASON_PROFILE_NOT_FOUND)
    assert ready["message"].startswith(
        "the production pointer s3://bkt/models/news/production.json cannot be followed: "
        + why)
    assert kube.events == [("Warning", c.REASON_PROFILE_NOT_FOUND, ready["message"])]
    assert {k: status[k] for k in last} == last and kube.created == []


def test_without_a_pointer_the_monitored_run_is_compared_over_the_whole_window(
        bucket: Path) -> None:
    now = time.time()
    body = followed(bucket, now)
    (bucket / "models" / "news" / "production.json").unlink()
    kube = FakeKube(body)
    kube.existing.append(first_job())
    controller(kube).check(body)
    status = kube.monitor["status"] if kube.monitor else {}
    assert status["profileUri"] == "s3://bkt/models/news/runs/run-a/reference-profile.json"
    assert status["reference"] == {"source": "TrainingJob", "runId": "run-a",
                                   "promotedAt": None}
    assert [f["name"] for f in status["features"]] == ["length"]
    assert status["window"]["predictions"] == 12
