"""Manual approval's trainer half on the stack: a Manual-policy run waits as AwaitingApproval,
`python -m tailor_trainer.promote` with the same environment promotes it exactly as the
automatic path would (production.json, the MLflow alias) and records the approval; for a run
that is not awaiting approval it is refused, with nothing changed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import REPO, S3, Result, Trainer, to_csv
from mlflow.tracking import MlflowClient
from tailor_contract import constants, trainer_api

MODEL = "approval-it"
WORDS = {"business": "market shares profit bank", "sport": "match goal team league",
         "tech": "software chip phone internet"}


def rows() -> list[dict[str, Any]]:
    return [{"id": f"{c}-{i}", "text": f"{WORDS[c]} story {i} {c}", "label": c}
            for c in WORDS for i in range(12)]


def promote(worker_env: dict[str, str]) -> Result:
    """The promotion Job's container: the trainer image's entry point, a worker's env (its own
    scratch folder and termination log)."""
    work = Path(worker_env["TAILOR_WORK_DIR"]) / "promote"
    work.mkdir()
    term = work / "termination-log"
    env = {**worker_env, "TAILOR_WORK_DIR": str(work), "TAILOR_TERMINATION_LOG": str(term)}
    done = subprocess.run([sys.executable, "-m", "tailor_trainer.promote"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=180)
    return Result(done.returncode, trainer_api.TerminationSummary.parse(
        term.read_text() if term.exists() else ""), done.stdout + done.stderr)


def test_a_manual_verdict_is_promoted_on_approval_and_only_then(trainer: Trainer, s3: S3,
                                                                tiny_model: Path) -> None:
    data = s3.put(f"data/{MODEL}/curated.csv", to_csv(rows()))
    # No generic baseline and no production model: nothing to lose to, so the rule clears the
    # first run, and the Manual policy makes it wait.
    spec = trainer.spec(MODEL, data, str(tiny_model),
                        model={"name": MODEL, "base": str(tiny_model),
                               "baseline": {"generic": False}},
                        promotion={"policy": "Manual", "alias": "production"})
    env = trainer.env(spec, "run-1", name="approval")
    result = trainer.run(env, timeout=240)
    assert result.code == 0, result.log[-4000:]
    assert result.summary is not None and result.summary.promoted is False
    assert result.summary.reason == constants.REASON_AWAITING_APPROVAL
    assert result.summary.promotion["verdict"] == trainer_api.VERDICT_AWAITING_APPROVAL
    assert not s3.keys(f"models/{MODEL}/production")
    run1 = f"models/{MODEL}/runs/run-1/"

    # Approved: promoted through the same code as the automatic path.
    approved = promote(env)
    assert approved.code == 0, approved.log[-4000:]
    assert approved.summary is not None and approved.summary.promoted is True
    assert approved.summary.promotion["verdict"] == trainer_api.VERDICT_PROMOTED
    pointer = s3.json(f"models/{MODEL}/production.json")
    assert pointer["runId"] == "run-1"
    assert s3.keys(f"models/{MODEL}/production/run-1/model/model.safetensors")
    metrics = s3.json(run1 + "metrics.json")
    assert metrics["approval"]["decision"] == constants.REASON_APPROVED
    assert metrics["approval"]["runId"] == "run-1"
    assert metrics["verdict"]["reason"] == constants.REASON_AWAITING_APPROVAL
    manifest = s3.json(run1 + "manifest.json")
    assert manifest["files"]["metrics.json"]["sha256"] == hashlib.sha256(
        s3.get(run1 + "metrics.json")).hexdigest()
    client = MlflowClient(tracking_uri=trainer.mlflow_uri)
    version = client.get_model_version_by_alias(MODEL, "production")
    assert version.run_id == result.summary.mlflow_run_id
    assert client.get_run(str(version.run_id)).data.tags["tailor.approval"] == "Approved"

    # A run that is not awaiting approval (the rule rejected it) is refused: nothing changes.
    spec2 = {**spec, "promotion": {"policy": "Automatic", "alias": "production"}}
    env2 = trainer.env(spec2, "run-2", name="approval-2")
    result2 = trainer.run(env2, timeout=240)
    assert result2.code == 0, result2.log[-4000:]
    assert result2.summary is not None and result2.summary.reason in (
        constants.REASON_NOT_BETTER, constants.REASON_NOT_SIGNIFICANT)
    run2 = f"models/{MODEL}/runs/run-2/"
    before = {key: s3.get(key) for key in (f"models/{MODEL}/production.json",
                                          run2 + "metrics.json", run2 + "manifest.json")}
    refused = promote(env2)
    assert refused.code == trainer_api.EXIT_PERMANENT, refused.log[-4000:]
    assert refused.summary is not None
    assert refused.summary.reason == constants.REASON_APPROVAL_REFUSED
    assert "run run-2 is not awaiting approval" in refused.summary.message
    assert {key: s3.get(key) for key in before} == before
    assert not s3.keys(f"models/{MODEL}/production/run-2/")
    assert client.get_model_version_by_alias(MODEL, "production").version == version.version
