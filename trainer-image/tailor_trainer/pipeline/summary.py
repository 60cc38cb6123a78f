"""The termination message: what the operator learns of a run, as a `TerminationSummary`.

A finished run reports its verdict (reason Promoted, NotBetter, NotSignificant, Regressed or
AwaitingApproval), the verdict per benchmark (`promotion`: each part's numbers, which the
operator copies into status.promotion), the main numbers under the contract's SUMMARY_* keys,
and the data-quality gate's outcome (`data_quality`, `data_quality_message`), from which the
operator sets the DataQualityPassed condition. A failed run reports its reason; the gate's
outcome too when the gate got as far as a verdict (Failed for DataQualityFailed, else what it
found before the later failure).
"""

from __future__ import annotations

import json
from typing import Any

from tailor_contract import trainer_api
from tailor_contract.constants import REASON_AWAITING_APPROVAL, REASON_PROMOTED
from tailor_contract.trainer_api import TerminationSummary

from tailor_trainer.data.quality import QualityReport
from tailor_trainer.errors import REASON_CRASHED, DataQualityFailed, TrainerError

MESSAGE_LIMIT = 1024
PROMOTION_LIMIT = 1536
"""Bytes of the `promotion` report's JSON: room for the rest of the 4 KiB message."""


def succeeded(metrics: dict[str, Any], quality: QualityReport | None, artifact_uri: str,
              mlflow_run_id: str) -> TerminationSummary:
    """A finished run's summary, from its metrics.json and the gate's report."""
    verdict = metrics["verdict"]
    data_quality, checks = quality.outcome() if quality is not None else ("", "")
    return TerminationSummary(
        outcome="Succeeded", reason=verdict["reason"], message=verdict["message"][:MESSAGE_LIMIT],
        artifact_uri=artifact_uri, mlflow_run_id=mlflow_run_id,
        promoted=bool(verdict["promote"]), data_quality=data_quality,
        data_quality_message=checks, metrics=numbers(metrics), promotion=promotion(metrics))


def approved(metrics: dict[str, Any], artifact_uri: str,
             mlflow_run_id: str) -> TerminationSummary:
    """The summary of a person's approval carried out (`tailor_trainer.promote`): the run is
    promoted; its verdict's parts are the ones the rule reported."""
    report = {**promotion(metrics), "verdict": trainer_api.VERDICT_PROMOTED,
              "reason": REASON_PROMOTED}
    message = f"approved: {metrics['verdict']['message']}"[:MESSAGE_LIMIT]
    return TerminationSummary(
        outcome="Succeeded", reason=REASON_PROMOTED, message=message,
        artifact_uri=artifact_uri, mlflow_run_id=mlflow_run_id, promoted=True,
        metrics=numbers(metrics), promotion=report)


def promotion(metrics: dict[str, Any]) -> dict[str, Any]:
    """The verdict per benchmark for the operator, within PROMOTION_LIMIT: the message and the
    parts' explanations are shortened first, then the explanations dropped; the numbers stay."""
    verdict = metrics["verdict"]
    report = dict(metrics.get("promotion") or {
        "verdict": (trainer_api.VERDICT_PROMOTED if verdict["promote"] else
                    trainer_api.VERDICT_AWAITING_APPROVAL
                    if verdict["reason"] == REASON_AWAITING_APPROVAL
                    else trainer_api.VERDICT_REJECTED),
        "reason": verdict["reason"], "message": verdict["message"]})
    if metrics.get("registeredVersion"):
        report["modelVersion"] = str(metrics["registeredVersion"])
    if metrics.get("approval"):
        report["approval"] = metrics["approval"]
    parts = [dict(p) for p in report.get("parts", [])]
    for message, why in ((MESSAGE_LIMIT, 240), (400, 160), (240, 80), (160, 0)):
        report["message"] = str(report.get("message", ""))[:message]
        report["parts"] = [{**p, "why": str(p.get("why", ""))[:why]} if why else
                           {k: v for k, v in p.items() if k != "why"} for p in parts]
        if len(json.dumps(report, separators=(",", ":")).encode()) <= PROMOTION_LIMIT:
            break
    if not report["parts"]:
        del report["parts"]
    return report


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
    # A retrain is decided on the recent holdout: its comparison is the one to show.
    for part in (metrics.get("promotion") or {}).get("parts", []):
        if (part.get("benchmark") == trainer_api.BENCHMARK_RECENT_HOLDOUT
                and part.get("passed") is not None):
            short[trainer_api.SUMMARY_IMPROVEMENT] = float(part["improvement"])
            short[trainer_api.SUMMARY_P_VALUE] = float(part["pValue"])
    short[trainer_api.SUMMARY_TEST_EXAMPLES] = float(metrics["testSet"]["examples"])
    short["steps"] = float(metrics["training"]["steps"])
    return short
