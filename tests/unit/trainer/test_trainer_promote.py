"""Manual approval's trainer half on a local store: a run awaiting approval is promoted through
the automatic path's code and the approval recorded; any other run is refused with nothing
changed; a retried promotion changes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from tailor_contract import constants, trainer_api
from tailor_trainer import artifacts, promote
from tailor_trainer.config import ENV_TERMINATION_LOG, ENV_WORK_DIR, RunConfig, load_config
from tailor_trainer.errors import PermanentError
from tailor_trainer.storage import Store

PART = {"benchmark": "lockedTestSet", "against": "generic", "metric": "accuracy",
        "candidate": 0.9, "other": 0.8, "improvement": 0.1, "pValue": 0.001, "examples": 120,
        "passed": True, "why": "accuracy 0.9000 vs generic 0.8000: +0.1000, p=0.001"}


def env_for(tmp_path: Path, run_id: str) -> dict[str, str]:
    spec = {"task": "text-classification", "model": {"name": "news", "base": "/models/m"},
            "data": {"uri": "/data/news.csv", "columns": {"text": "text"}},
            "promotion": {"policy": "Manual"}, "output": {"uri": "s3://unused/models"}}
    obj = {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
           "metadata": {"name": "news", "namespace": "ml", "uid": "u"}, "spec": spec}
    model_uri = str(tmp_path / "models" / "news") + "/"
    return {trainer_api.ENV_TRAININGJOB: json.dumps(obj), trainer_api.ENV_RUN_ID: run_id,
            trainer_api.ENV_ARTIFACT_URI: f"{model_uri}runs/{run_id}/",
            trainer_api.ENV_MODEL_URI: model_uri,
            ENV_TERMINATION_LOG: str(tmp_path / f"termination-{run_id}")}


def finished_run(tmp_path: Path, run_id: str, reason: str) -> RunConfig:
    """A complete run (model, metrics.json, manifest last) with this verdict."""
    cfg = load_config(env_for(tmp_path, run_id))
    store = Store()
    model_dir = tmp_path / f"saved-{run_id}"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"weights of " + run_id.encode())
    (model_dir / "config.json").write_text("{}")
    files = {f"model/{k}": v for k, v in artifacts.upload_dir(
        store, model_dir, cfg.artifact_uri + "model").items()}
    metrics = {"runId": run_id, "metric": "accuracy", "validation": {"accuracy": 0.9},
               "test": {"candidate": {"accuracy": 0.9, "macro-f1": 0.9, "examples": 120}},
               "comparisons": [], "testSet": {"examples": 120}, "training": {"steps": 30},
               "verdict": {"promote": reason == constants.REASON_PROMOTED, "reason": reason,
                           "message": f"{reason}: accuracy 0.9000 vs generic 0.8000"},
               "promotion": {"verdict": "AwaitingApproval" if reason == "AwaitingApproval"
                             else "Rejected", "reason": reason, "message": "m", "parts": [PART]}}
    data = json.dumps(metrics).encode()
    store.put_bytes(cfg.artifact_uri + trainer_api.ARTIFACT_METRICS, data)
    files[trainer_api.ARTIFACT_METRICS] = {"sha256": artifacts.sha256_bytes(data),
                                           "size": len(data)}
    artifacts.write_manifest(store, cfg.artifact_uri, files, {"runId": run_id,
                                                              "mlflowRunId": "ml-1"})
    return cfg


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(autouse=True)
def work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_WORK_DIR, str(tmp_path / "work"))


def test_an_approved_run_is_promoted_and_the_approval_recorded(tmp_path: Path) -> None:
    cfg = finished_run(tmp_path, "run-1", constants.REASON_AWAITING_APPROVAL)
    outcome = promote.approve(cfg)
    pointer = json.loads((tmp_path / "models/news/production.json").read_text())
    assert pointer["runId"] == "run-1"
    assert pointer["modelUri"] == cfg.model_uri + "production/run-1/model/"
    copied = tmp_path / "models/news/production/run-1/model/model.safetensors"
    assert copied.read_bytes() == b"weights of run-1"
    metrics = json.loads(Path(cfg.artifact_uri, "metrics.json").read_text())
    assert metrics["approval"]["decision"] == constants.REASON_APPROVED
    assert metrics["approval"]["runId"] == "run-1" and metrics["approval"]["approvedAt"]
    assert metrics["verdict"]["reason"] == constants.REASON_AWAITING_APPROVAL  # the rule's
    assert metrics["promotedModelUri"] == pointer["modelUri"]
    # The manifest still describes every file, metrics.json's new digest included.
    manifest = json.loads(Path(cfg.artifact_uri, "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        assert hashlib.sha256(Path(cfg.artifact_uri, name).read_bytes()).hexdigest() == (
            entry["sha256"]), name
    assert (outcome.outcome, outcome.reason, outcome.promoted) == ("Succeeded", "Promoted", True)
    assert outcome.promotion["verdict"] == "Promoted"
    assert outcome.promotion["approval"]["runId"] == "run-1"
    assert outcome.promotion["parts"] == [PART]

    # A retried Job finds the approval recorded and changes nothing.
    before = snapshot(tmp_path / "models")
    again = promote.approve(cfg)
    assert again.promoted and snapshot(tmp_path / "models") == before


@pytest.mark.parametrize("reason", [constants.REASON_NOT_BETTER, constants.REASON_REGRESSED,
                                    constants.REASON_PROMOTED])
def test_a_run_not_awaiting_approval_is_refused_with_nothing_changed(tmp_path: Path,
                                                                      reason: str) -> None:
    cfg = finished_run(tmp_path, "run-2", reason)
    before = snapshot(tmp_path / "models")
    with pytest.raises(PermanentError, match=f"run run-2 is not awaiting approval: its verdict "
                       f"is {reason}") as info:
        promote.approve(cfg)
    assert info.value.reason == constants.REASON_APPROVAL_REFUSED
    assert snapshot(tmp_path / "models") == before
    assert not (tmp_path / "models/news/production.json").exists()


def test_an_unfinished_run_is_refused(tmp_path: Path) -> None:
    cfg = load_config(env_for(tmp_path, "run-3"))
    with pytest.raises(PermanentError, match="it has not finished"):
        promote.approve(cfg)
    assert not (tmp_path / "models").exists()


def test_the_entry_point_exits_permanent_with_the_reason(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    finished_run(tmp_path, "run-4", constants.REASON_NOT_SIGNIFICANT)
    for key, value in env_for(tmp_path, "run-4").items():
        monkeypatch.setenv(key, value)
    assert promote.main() == trainer_api.EXIT_PERMANENT
    summary = trainer_api.TerminationSummary.parse(
        (tmp_path / "termination-run-4").read_text())
    assert summary is not None
    assert (summary.outcome, summary.reason, summary.permanent) == (
        "Failed", constants.REASON_APPROVAL_REFUSED, True)
    assert "NotSignificant" in summary.message

    finished_run(tmp_path, "run-5", constants.REASON_AWAITING_APPROVAL)
    for key, value in env_for(tmp_path, "run-5").items():
        monkeypatch.setenv(key, value)
    assert promote.main() == trainer_api.EXIT_SUCCESS
    done: Any = trainer_api.TerminationSummary.parse((tmp_path / "termination-run-5").read_text())
    assert done.promoted and done.promotion["verdict"] == "Promoted"
