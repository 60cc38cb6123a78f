"""The termination message: what the operator learns of a run, as a `TerminationSummary`.

A finished run reports its verdict (reason Promoted, NotBetter, NotSignificant or
AwaitingApproval), the main numbers under the contract's SUMMARY_* keys, and the data-quality
gate's outcome (`data_quality`, `data_quality_message`), from which the operator sets the
DataQualityPassed condition. A failed run reports its reason; the gate's outcome too when the
gate got as far as a verdict (Failed for DataQualityFailed, else what it found before the
later failure).
"""

from __future__ import annotations

from typing import Any

from tailor_contract import trainer_api
from tailor_contract.trainer_api import TerminationSummary

from tailor_trainer.data.quality import QualityReport
from tailor_trainer.errors import REASON_CRASHED, DataQualityFailed, TrainerError

MESSAGE_LIMIT = 1024


def succeeded(metrics: dict[str, Any], quality: QualityReport | None, artifact_uri: str,
              mlflow_run_id: str) -> TerminationSummary:
    """A finished run's summary, from its metrics.json and the gate's report."""
    verdict = metrics["verdict"]
    data_quality, checks = quality.outcome() if quality is not None else ("", "")
    return TerminationSummary(
        outcome="Succeeded", reason=verdict["reason"], message=verdict["message"][:MESSAGE_LIMIT],
        artifact_uri=artifact_uri, mlflow_run_id=mlflow_run_id,
        promoted=bool(verdict["promote"]), data_quality=data_quality,
        data_quality_message=checks, metrics=numbers(metrics))


def failed(exc: BaseException, artifact_uri: str,
           quality: QualityReport | None) -> TerminationSummary:
    """A failed run's summary: a TrainerError's reason, or Crashed for anything else.

    `quality` is the gate's report when the gate passed before the failure (None otherwise).
    """
    if isinstance(exc, TrainerError):
        summary = TerminationSummary(outcome="Failed", reason=exc.reason, message=exc.message,
                                     permanent=exc.permanent, artifact_uri=artifact_uri)
    else:
        summary = TerminationSummary(outcome="Failed", reason=REASON_CRASHED,
                                     message=f"{type(exc).__name__}: {exc}"[:MESSAGE_LIMIT],
                                     artifact_uri=artifact_uri)
    if isinstance(exc, DataQualityFailed):
        summary.data_quality, summary.data_quality_message = trainer_api.QUALITY_FAILED, exc.checks
    elif quality is not None:
        summary.data_quality, summary.data_quality_message = quality.outcome()
    return summary


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers the operator puts in status, under the contract's SUMMARY_* keys."""
    metric = metrics["metric"]
    test = metrics["test"]
    short: dict[str, float] = {}
    for key, name in ((trainer_api.SUMMARY_TEST, "candidate"),
                      (trainer_api.SUMMARY_BASELINE, "generic"),
                      (trainer_api.SUMMARY_PRODUCTION, "production")):
        if name in test:
            short[key] = round(float(test[name][metric]), 4)
    validation = metrics.get("validation")
    if isinstance(validation, dict) and metric in validation:
        short[trainer_api.SUMMARY_VALIDATION] = round(float(validation[metric]), 4)
    elif isinstance(validation, int | float):
        short[trainer_api.SUMMARY_VALIDATION] = round(float(validation), 4)
    comparisons = {c["baseline"]: c for c in metrics["comparisons"]}
    decisive = comparisons.get("production") or comparisons.get("generic")
    if decisive is not None:
        short[trainer_api.SUMMARY_IMPROVEMENT] = round(float(decisive["improvement"]), 4)
        short[trainer_api.SUMMARY_P_VALUE] = float(decisive["p_value"])
    short[trainer_api.SUMMARY_TEST_EXAMPLES] = float(metrics["testSet"]["examples"])
    short["steps"] = float(metrics["training"]["steps"])
    return short
