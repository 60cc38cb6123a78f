"""A retrain recorded before an operator restart is created with the same production data.

The controller runs against a fake Kube and a local directory standing in for S3 (pyarrow's
SubTreeFileSystem), so the restart path is exercised without a cluster.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from tailor.api.driftmonitor import DriftMonitorSpec
from tailor.api.names import retrain_job_name
from tailor.drift import logs as drift_logs
from tailor.driftmonitors import DriftMonitorController, Trigger
from tailor.settings import OperatorSettings


class FakeKube:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []

    def get_trainingjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        return next((j for j in self.created if j["metadata"]["name"] == name), None)

    def create_trainingjob(self, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append(body)
        return body

    def event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """s3://bkt/... is tmp_path/b/...; the profile is read from there too."""
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    # The controller imports the drift stack on first use, from tailor.drift.logs.
    monkeypatch.setattr(drift_logs, "s3_filesystem", lambda **_: fs)
    monkeypatch.setattr(DriftMonitorController, "_read_json", staticmethod(
        lambda uri, storage: json.loads((tmp_path / uri.removeprefix("s3://")).read_text())))
    root = tmp_path / "bkt"
    (root / "logs" / "predictions").mkdir(parents=True)
    (root / "logs" / "labels").mkdir(parents=True)
    (root / "profile.json").write_text(json.dumps({
        "formatVersion": 1, "kind": "tailor.dev/reference-profile", "samples": 2,
        "classes": ["a", "b"], "features": {}, "predictions": {"a": 1, "b": 1}}))
    return root


def monitor(template: dict[str, Any], include: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {"model": {"profileUri": "s3://bkt/profile.json"},
                     "production": {"predictionsUri": "s3://bkt/logs/predictions/",
                                    "groundTruthUri": "s3://bkt/logs/labels/", "window": "1h"},
                     "storage": {"endpoint": "http://s3.invalid"},
                     "retrain": {"includeProductionData": include,
                                 "template": {"spec": template}}}}


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


def test_a_recorded_retrain_is_created_with_its_window_of_production_data(bucket: Path) -> None:
    now = time.time()
    write_logs(bucket, now)
    body = monitor(TEXT_JOB)
    identity = f"u-1:{stamp(now)}:AccuracyBelowThreshold"
    name = retrain_job_name("m", identity)
    # What the status says after a restart: recorded (with its window), never created.
    status = {"lastRetrain": {"name": name, "reason": "AccuracyBelowThreshold",
                              "time": stamp(now), "trigger": identity,
                              "windowStart": stamp(now - 3600), "windowEnd": stamp(now)}}
    kube = FakeKube()
    controller = DriftMonitorController(kube, OperatorSettings())  # type: ignore[arg-type]
    spec = DriftMonitorSpec.model_validate(body["spec"])
    controller._ensure_recorded_retrain(body, spec, status)
    [job] = kube.created
    uri = f"s3://bkt/models/news/production-data/{name}.parquet"
    assert job["spec"]["data"]["additionalUris"] == [uri]
    lineage = json.loads(job["metadata"]["annotations"]["tailor.dev/trigger"])
    assert lineage["productionData"] == {"uri": uri, "rows": 4}
    assert lineage["windowEnd"] == stamp(now)
    table = pq.read_table(bucket / "models" / "news" / "production-data" / f"{name}.parquet")
    # The retrain's own columns (id, its text column "body", label); p4 has no label yet and
    # "late" is after the window.
    assert table.to_pylist() == [{"id": f"p{i}", "body": f"text {i}", "label": "ab"[i % 2]}
                                 for i in range(4)]
    assert kube.events[-1][1] == "RetrainCreated" and "folded in 4" in kube.events[-1][2]


def test_nothing_is_folded_when_switched_off_or_the_job_has_no_data(bucket: Path) -> None:
    now = time.time()
    write_logs(bucket, now)
    custom = {"task": "custom", "command": ["true"]}
    for body in (monitor(TEXT_JOB, include=False), monitor(custom)):
        kube = FakeKube()
        controller = DriftMonitorController(kube, OperatorSettings())  # type: ignore[arg-type]
        spec = DriftMonitorSpec.model_validate(body["spec"])
        trigger = Trigger("DriftDetected", "x", "drift", stamp(now - 3600),
                                        stamp(now))
        retrain = controller._retrain_object(body, spec, trigger)
        assert controller._create_retrain(body, spec, retrain, trigger)
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
    kube = FakeKube()
    controller = DriftMonitorController(kube, OperatorSettings())  # type: ignore[arg-type]
    spec = DriftMonitorSpec.model_validate(body["spec"])
    trigger = Trigger("DriftDetected", "x", "drift", stamp(now - 3600), stamp(now))
    assert not controller._create_retrain(body, spec,
                                          controller._retrain_object(body, spec, trigger), trigger)
    assert kube.created == []
    assert kube.events[-1][:2] == ("Warning", "ProductionDataFailed")
