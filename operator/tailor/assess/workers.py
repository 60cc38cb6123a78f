"""What the pods of a finished worker group say: why it failed, and what the trainer reported.

Pure functions of pod objects as the API returns them. They are read only once the worker Job
has finished (Complete or Failed), which is why a pod deleted earlier can say nothing: the Job
controller removes its tracking finalizer before it marks the Job finished, and a deleted pod
without finalizers is gone (see `diagnose` on lost nodes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tailor_contract import constants as c
from tailor_contract import trainer_api
from tailor_contract.trainer_api import EXIT_PERMANENT, TerminationSummary

from tailor.assess.conditions import find, is_true
from tailor.builders.trainingjob import INDEX_LABEL

DISRUPTION_TARGET = "DisruptionTarget"
POD_GC_NODE_GONE = "DeletionByPodGC"
"""The DisruptionTarget reason the pod garbage collector writes on a pod whose node no longer
exists ("PodGC: node no longer exists"), marking it Failed just before it force-deletes it."""
EXIT_SIGKILL, EXIT_SIGTERM = 137, 143

# TerminationSummary.data_quality -> the DataQualityPassed condition's status and reason.
QUALITY_CONDITIONS: dict[str, tuple[bool, str, str]] = {
    trainer_api.QUALITY_PASSED: (True, c.REASON_DATA_QUALITY_PASSED,
                                 "the data-quality gate passed"),
    trainer_api.QUALITY_WARNINGS: (True, c.REASON_DATA_QUALITY_WARNINGS,
                                   "the data-quality gate passed with warnings"),
    trainer_api.QUALITY_FAILED: (False, c.REASON_DATA_QUALITY_FAILED,
                                 "the data-quality gate failed"),
}
# A verdict other than promotion, as the trainer's evaluation reports it (Regressed: a retrain
# worse than production on the locked test set beyond the margin; Rejected: by a person).
NOT_PROMOTED_REASONS = (c.REASON_NOT_BETTER, c.REASON_NOT_SIGNIFICANT, c.REASON_REGRESSED,
                        c.REASON_AWAITING_APPROVAL, c.REASON_REJECTED, c.REASON_NOT_APPLICABLE)
MESSAGE_LIMIT = 1024
SHORT_FIELDS, SHORT_TEXT = ("benchmark", "against", "metric"), 64
MAX_PARTS = 8  # recentHoldout, lockedTestSet, generic: room to spare, bounded all the same

ConditionValue = tuple[bool | None, str, str]
"""A condition to set: status (None for Unknown), reason, message."""


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    exit_code: int | None = None
    worker: int | None = None
    permanent: bool = False


def worker_index(pod: dict[str, Any]) -> int:
    return int(pod["metadata"].get("labels", {}).get(INDEX_LABEL, "0"))


def _node_lost(pod: dict[str, Any]) -> bool:
    """The pod's node disappeared: the pod garbage collector's mark on a pod whose node object
    was deleted, or the `NodeLost` reason older node controllers wrote on pods of an
    unreachable node (kubectl still shows those as Unknown)."""
    status = pod.get("status", {})
    if status.get("reason") == c.REASON_NODE_LOST:
        return True
    disruption = find(status.get("conditions"), DISRUPTION_TARGET)
    return disruption is not None and disruption.get("status") == "True" and \
        disruption.get("reason") == POD_GC_NODE_GONE


def _disruption(pod: dict[str, Any]) -> Failure | None:
    """A worker taken away rather than failing by itself: its node lost, or evicted."""
    status, index = pod.get("status", {}), worker_index(pod)
    if _node_lost(pod):
        node = (pod.get("spec") or {}).get("nodeName") or "its node"
        detail = status.get("message") or (find(status.get("conditions"), DISRUPTION_TARGET)
                                           or {}).get("message") or "the node is gone"
        return Failure(c.REASON_NODE_LOST, f"worker {index} lost {node}: {detail}", None, index)
    if status.get("reason") == "Evicted" or is_true(status.get("conditions"), DISRUPTION_TARGET):
        message = status.get("message") or "the worker pod was evicted"
        return Failure(c.REASON_EVICTED, message, None, index)
    return None


def _terminations(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """How each container of the pod last ended, init containers first (one that fails, such
    as the wait for worker 0, fails the pod before the trainer starts): its current state, or
    the last one if it was restarted (kubelet's `lastState`; not with restartPolicy Never)."""
    status, found = pod.get("status") or {}, []
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            terminated = (container.get("state") or {}).get("terminated") or \
                (container.get("lastState") or {}).get("terminated")
            if terminated:
                found.append(terminated)
    return found


def _exits(pod: dict[str, Any]) -> list[tuple[str, Failure]]:
    """Each container of the pod that exited non-zero, with the key that orders failures."""
    index, found = worker_index(pod), []
    for terminated in _terminations(pod):
        if terminated.get("exitCode", 0) == 0:
            continue
        code = int(terminated["exitCode"])
        text = terminated.get("message", "") or ""
        summary = TerminationSummary.parse(text)
        permanent = code == EXIT_PERMANENT or bool(summary and summary.permanent)
        if terminated.get("reason") == "OOMKilled":
            reason = c.REASON_OOM_KILLED
        elif permanent:
            reason = summary.reason if summary and summary.reason else c.REASON_PERMANENT_FAILURE
        else:
            reason = c.REASON_WORKER_FAILED
        message = summary.message if summary and summary.message else text.strip()
        message = message or f"worker {index} exited with code {code}"
        # The first worker to fail is the cause; the others fail after it (a collective
        # that lost a peer, the group torn down). At the same second, a SIGKILL (an OOM or
        # a kill) outranks an error, and SIGTERM (the teardown) comes last.
        severity = 0 if code == EXIT_SIGKILL else 2 if code == EXIT_SIGTERM else 1
        order = f"{terminated.get('finishedAt', '')}:{severity}"
        found.append((order, Failure(reason, message[-1024:], code, index, permanent)))
    return found


def diagnose(pods: list[dict[str, Any]]) -> Failure:
    """The real reason a worker group failed, from its pods, first failure first.

    A lost node is reported only while its pod can still be read. Since Kubernetes 1.31 the Job
    controller marks a Job Failed only after it has removed the tracking finalizer of every
    failed pod, and the pod garbage collector force-deletes the pod of a deleted node, so by
    then that pod is usually gone: the failure is then what the remaining workers saw."""
    candidates: list[tuple[str, Failure]] = []
    for pod in sorted(pods, key=worker_index):
        disrupted = _disruption(pod)
        candidates += [("", disrupted)] if disrupted is not None else _exits(pod)
    if not candidates:
        return Failure(c.REASON_WORKER_FAILED,
                       "no worker pod is left with an exit status: a pod was deleted (its node "
                       "lost, preempted or evicted through the API) before it could be read")
    permanents = [f for _, f in candidates if f.permanent]
    if permanents:
        return permanents[0]
    first: Failure = sorted(candidates, key=lambda item: item[0])[0][1]
    return first


def summaries(pods: list[dict[str, Any]]) -> list[TerminationSummary]:
    """The trainer's termination summaries, worker 0's first (rank 0 writes the run's)."""
    found = []
    for pod in sorted(pods, key=worker_index):
        for container in pod.get("status", {}).get("containerStatuses", []) or []:
            terminated = container.get("state", {}).get("terminated") or {}
            summary = TerminationSummary.parse(terminated.get("message"))
            if summary is not None:
                found.append(summary)
    return found


def data_quality(reports: list[TerminationSummary],
                 failure: Failure | None = None) -> ConditionValue | None:
    """The DataQualityPassed condition the trainer's report implies; None if it reported no
    gate. A run that failed for DataQualityFailed without the field says so too."""
    for summary in reports:
        if summary.data_quality in QUALITY_CONDITIONS:
            passed, reason, default = QUALITY_CONDITIONS[summary.data_quality]
            return passed, reason, summary.data_quality_message or default
    if failure is not None and failure.reason == c.REASON_DATA_QUALITY_FAILED:
        return False, c.REASON_DATA_QUALITY_FAILED, failure.message
    return None


def verdict_report(summary: TerminationSummary | None) -> dict[str, Any] | None:
    """The verdict the trainer reported in `TerminationSummary.promotion` (verdict, reason,
    message, modelVersion, one part per benchmark), cleaned for status: None when the summary
    has none (a custom task, an older trainer), so the flat `promoted`/`reason` fields decide.

    The status patch must pass the API server's schema, or the whole patch is refused and the
    job's outcome never recorded: numbers that are not finite (NaN from a metric of an empty
    set, say) are dropped, a p-value is kept within [0, 1], a count is an integer, texts are
    cut to their limits, and anything of the wrong shape is left out."""
    report = summary.promotion if summary is not None else None
    if not isinstance(report, dict) or report.get("verdict") not in c.PROMOTION_VERDICTS:
        return None
    clean: dict[str, Any] = {"verdict": report["verdict"]}
    for key, limit in (("reason", 128), ("message", MESSAGE_LIMIT), ("modelVersion", 64)):
        if isinstance(report.get(key), str | int) and not isinstance(report[key], bool) \
                and str(report[key]):
            clean[key] = str(report[key])[:limit]
    parts = [_part(p) for p in report.get("parts") or [] if isinstance(p, dict)]
    if parts:
        clean["parts"] = parts[:MAX_PARTS]
    return clean


def _part(part: dict[str, Any]) -> dict[str, Any]:
    """One benchmark's comparison, as the status schema accepts it."""
    clean: dict[str, Any] = {}
    for key, value in part.items():
        if isinstance(value, bool) or value is None:
            clean[key] = value
        elif isinstance(value, int | float) and math.isfinite(value):
            if key == "pValue":
                value = min(1.0, max(0.0, float(value)))
            elif key == "examples":
                value = max(0, int(value))
            clean[key] = value
        elif isinstance(value, str):
            clean[key] = value[:SHORT_TEXT if key in SHORT_FIELDS else MESSAGE_LIMIT]
    return clean


def outcome(status: dict[str, Any], summary: TerminationSummary | None, metric: str,
            now: str) -> None:
    """Copy what the trainer reported on success into status: metrics, the promotion
    verdict (with its parts) and where the artifacts are."""
    if summary is None:
        summary = TerminationSummary("Succeeded")  # a custom command need not write one
    numbers = summary.metrics
    fields = {"validation": trainer_api.SUMMARY_VALIDATION, "test": trainer_api.SUMMARY_TEST,
              "baseline": trainer_api.SUMMARY_BASELINE,
              "production": trainer_api.SUMMARY_PRODUCTION}
    metrics: dict[str, Any] = {field: numbers[key] for field, key in fields.items()
                               if key in numbers}
    if metrics:
        status["metrics"] = {"metric": metric, **metrics}
        if trainer_api.SUMMARY_TEST_EXAMPLES in numbers:
            status["metrics"]["testExamples"] = int(numbers[trainer_api.SUMMARY_TEST_EXAMPLES])
    report = verdict_report(summary)
    if report is not None:
        status["promotion"] = {**report, "time": now}
    elif summary.promoted is None:
        status["promotion"] = {"verdict": c.REASON_NOT_APPLICABLE,
                               "reason": c.REASON_NOT_APPLICABLE, "time": now}
    else:
        verdict = "Promoted" if summary.promoted else (
            "AwaitingApproval" if summary.reason == c.REASON_AWAITING_APPROVAL else "Rejected")
        status["promotion"] = {"verdict": verdict, "reason": summary.reason, "time": now}
        if summary.message:
            status["promotion"]["message"] = summary.message[:MESSAGE_LIMIT]
    if summary.promoted is not None or report is not None:
        for field, key in (("improvement", trainer_api.SUMMARY_IMPROVEMENT),
                           ("pValue", trainer_api.SUMMARY_P_VALUE)):
            if key in numbers and math.isfinite(numbers[key]):
                status["promotion"][field] = numbers[key]
    if summary.artifact_uri:
        status.setdefault("artifacts", {})["runUri"] = summary.artifact_uri
    if summary.mlflow_run_id:
        status["mlflowRunId"] = summary.mlflow_run_id


def promotion(summary: TerminationSummary | None, succeeded: bool) -> ConditionValue:
    """The Promoted condition: the trainer's verdict (its reason and message, from
    `TerminationSummary.promotion` when it reports one), or NotApplicable when there is none
    (a custom task's command reports none, and a failed run never reached one)."""
    if not succeeded:
        return False, c.REASON_NOT_APPLICABLE, "the run failed before a promotion verdict"
    report = verdict_report(summary)
    if report is not None:
        message = report.get("message", "")
        if report["verdict"] == c.REASON_PROMOTED:
            return True, c.REASON_PROMOTED, message or "the candidate was promoted"
        reason = report.get("reason", "")
        if reason in NOT_PROMOTED_REASONS:
            return False, reason, message
        return False, c.REASON_NOT_APPLICABLE, (f"not promoted ({reason or 'no reason'}): "
                                                f"{message}")
    if summary is None or summary.promoted is None:
        return False, c.REASON_NOT_APPLICABLE, "the run reported no promotion verdict"
    if summary.promoted:
        return True, c.REASON_PROMOTED, summary.message or "the candidate was promoted"
    if summary.reason in NOT_PROMOTED_REASONS:
        return False, summary.reason, summary.message
    return False, c.REASON_NOT_APPLICABLE, (f"not promoted ({summary.reason or 'no reason'}): "
                                            f"{summary.message}")
