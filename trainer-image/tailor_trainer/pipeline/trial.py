"""Trial mode's end (rank 0): what a trial of a hyper-parameter search leaves behind.

A trial trains and validates like any run (its checkpoints under its own prefix, so a restarted
trial resumes), but it is only a measurement of its hyper-parameters: it has no baseline to beat,
reads no test set, publishes, profiles and promotes nothing. It leaves `ids-read.json` (the
proof that it read the training and validation splits only), its MLflow run, and the
termination message with its objective: the best epoch's value and the curve, which the operator
copies into status.tuning.trials.
"""

from __future__ import annotations

import logging

from tailor_contract import uris
from tailor_contract.constants import REASON_TRIAL_COMPLETED
from tailor_contract.trainer_api import (
    ARTIFACT_IDS_READ,
    SUMMARY_VALIDATION,
    TerminationSummary,
)

from tailor_trainer.objective import trial_report
from tailor_trainer.pipeline.context import RunContext
from tailor_trainer.pipeline.data import LocalData, ids_document
from tailor_trainer.train import TrainResult

log = logging.getLogger("tailor_trainer")


def finish(ctx: RunContext, result: TrainResult, local: LocalData) -> TerminationSummary:
    """Rank 0: ids-read.json, the MLflow run closed, and the trial's summary."""
    cfg, trial = ctx.cfg, ctx.cfg.trial
    assert trial is not None
    ctx.store.put_bytes(uris.join(cfg.artifact_uri, ARTIFACT_IDS_READ), ids_document(local))
    report = trial_report(trial.number, trial.objective, result.validations, result.best_step)
    metric = trial.objective.metric
    value = report["value"]
    if value is not None:
        ctx.tracker.metrics(result.steps, {"objective": value})
    ctx.tracker.tags({"tailor.trial.bestEpoch": str(report["bestEpoch"])})
    ctx.tracker.finish("FINISHED")
    shown = "none" if value is None else f"{value:.4f}"
    message = (f"trial {trial.number}: best validation {metric} {shown} at epoch "
               f"{report['bestEpoch']} of {len(result.validations)} ({result.steps} steps)")
    log.info("%s", message)
    quality, checks = ctx.quality.outcome() if ctx.quality is not None else ("", "")
    return TerminationSummary(
        outcome="Succeeded", reason=REASON_TRIAL_COMPLETED, message=message,
        artifact_uri=cfg.artifact_uri, mlflow_run_id=ctx.tracker.mlflow_run_id,
        data_quality=quality, data_quality_message=checks,
        metrics={SUMMARY_VALIDATION: value} if value is not None else {}, trial=report)

