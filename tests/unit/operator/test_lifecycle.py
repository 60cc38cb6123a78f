from __future__ import annotations

import copy
from typing import Any

from tailor.api import contract
from tailor.api.trainingjob import TrainingJobSpec
from tailor.conditions import find
from tailor.lifecycle import assess, diagnose

NOW = "2026-01-01T00:01:00Z"
SPEC = TrainingJobSpec.model_validate({"task": "custom", "command": ["true"], "workers": 2,
                                       "runPolicy": {"backoffLimit": 1}})


def body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "j", "namespace": "ns", "uid": "abcdef0123", "generation": 1,
                         "resourceVersion": "1"}, "status": status or {}}


def job(attempt: int = 0, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "j-worker", "uid": "u1",
                         "annotations": {"tailor.dev/attempt": str(attempt)}},
            "spec": {}, "status": status}


def failed_pod(index: int, code: int, reason: str = "Error", message: str = "",
               finished: str = "2026-01-01T00:00:30Z") -> dict[str, Any]:
    return {"metadata": {"labels": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "status": {"containerStatuses": [{"state": {"terminated": {
                "exitCode": code, "reason": reason, "message": message,
                "finishedAt": finished}}}]}}


def cond(status: dict[str, Any], kind: str) -> tuple[str, str]:
    c = find(status["conditions"], kind)
    assert c is not None
    return c["status"], c["reason"]


def test_a_new_job_creates_its_workers_and_reports_pending() -> None:
    decision = assess(body(), SPEC, None, None, NOW)
    assert decision.action == "create" and decision.attempt == 0
    s = decision.status
    assert s["phase"] == "Pending" and s["startTime"] == NOW and s["runId"] == "run-abcdef01"
    assert cond(s, "Reconciling") == ("True", "Created")
    assert cond(s, "Ready")[0] == "False"
    assert [e.reason for e in decision.events] == ["Created"]


def test_an_unchanged_world_yields_the_same_status_and_no_events() -> None:
    first = assess(body(), SPEC, None, None, NOW).status
    running = job(active=2, ready=2)
    second = assess(body(first), SPEC, running, None, NOW)
    third = assess(body(copy.deepcopy(second.status)), SPEC, running, None,
                   "2026-01-01T00:09:00Z")
    assert third.status == second.status and third.events == [] and third.action == "none"


def test_all_workers_ready_is_running() -> None:
    decision = assess(body(), SPEC, job(active=2, ready=2), None, NOW)
    assert decision.status["phase"] == "Running"
    assert cond(decision.status, "Running") == ("True", "WorkersRunning")
    assert decision.status["workers"]["summary"] == "2/2"


def test_success_reads_the_summary_of_worker_zero() -> None:
    summary = contract.TerminationSummary("Succeeded", "Promoted", promoted=True,
                                          artifact_uri="s3://runs/j/run-1/", mlflow_run_id="r1",
                                          metrics={"test": 0.91, "baseline": 0.8,
                                                   "pValue": 0.001})
    pod = failed_pod(0, 0, "Completed", summary.to_message())
    done = job(succeeded=2, conditions=[{"type": "Complete", "status": "True"}])
    assert assess(body(), SPEC, done, None, NOW).action == "none"  # asks for the pods first
    decision = assess(body(), SPEC, done, [pod], NOW)
    s = decision.status
    assert s["phase"] == "Succeeded" and s["completionTime"] == NOW
    assert cond(s, "Succeeded") == ("True", "Completed") and cond(s, "Ready")[0] == "True"
    assert s["metrics"] == {"metric": "accuracy", "test": 0.91, "baseline": 0.8}
    assert s["promotion"]["verdict"] == "Promoted" and s["promotion"]["pValue"] == 0.001
    assert s["artifacts"]["runUri"] == "s3://runs/j/run-1/" and s["mlflowRunId"] == "r1"


def test_a_retryable_failure_restarts_the_whole_group() -> None:
    failed = job(failed=1, conditions=[{"type": "Failed", "status": "True",
                                        "reason": "BackoffLimitExceeded"}])
    pods = [failed_pod(0, 143), failed_pod(1, 1, message="CUDA error")]
    decision = assess(body(), SPEC, failed, pods, NOW)
    assert decision.action == "delete" and decision.attempt == 1
    s = decision.status
    assert s["workers"]["restarts"] == 1 and s["phase"] == "Restarting"
    assert s["failure"] == {"reason": "WorkerFailed", "message": "CUDA error", "exitCode": 1,
                            "worker": 1, "time": NOW}
    # Once the old group is gone, the next attempt is created.
    gone = assess(body(s), SPEC, None, None, NOW)
    assert gone.action == "create" and gone.attempt == 1
    # A leftover group of an earlier attempt is deleted, never adopted.
    assert assess(body(s), SPEC, job(attempt=0, active=2), None, NOW).action == "delete"


def test_the_backoff_limit_ends_in_failure_with_the_last_reason() -> None:
    failed = job(attempt=1, conditions=[{"type": "Failed", "status": "True"}])
    pods = [failed_pod(0, 137, "OOMKilled")]
    decision = assess(body({"workers": {"restarts": 1}}), SPEC, failed, pods, NOW)
    assert decision.action == "none"
    s = decision.status
    assert cond(s, "Failed") == ("True", "BackoffLimitExceeded")
    assert "OOMKilled" in (find(s["conditions"], "Failed") or {})["message"]
    assert cond(s, "Stalled")[0] == "True" and s["phase"] == "Failed"


def test_the_permanent_exit_code_fails_at_once() -> None:
    failed = job(conditions=[{"type": "Failed", "status": "True"}])
    message = contract.TerminationSummary("Failed", "DataQualityFailed",
                                          "label column 'label' missing",
                                          permanent=True).to_message()
    decision = assess(body(), SPEC, failed, [failed_pod(0, contract.EXIT_PERMANENT,
                                                        message=message)], NOW)
    assert decision.action == "none"
    assert cond(decision.status, "Failed") == ("True", "DataQualityFailed")
    assert decision.status["workers"]["restarts"] == 0
    assert decision.status["failure"]["message"] == "label column 'label' missing"


def test_diagnose_names_the_first_worker_to_fail() -> None:
    evicted = {"metadata": {"labels": {}}, "status": {"reason": "Evicted",
                                                      "message": "node memory pressure"}}
    assert diagnose([failed_pod(0, 143), evicted]).reason == "Evicted"
    early, late = "2026-01-01T00:00:10Z", "2026-01-01T00:00:12Z"
    # A worker killed first; its peer's collective fails after it.
    assert diagnose([failed_pod(0, 1, finished=late), failed_pod(1, 137, finished=early)]
                    ).worker == 1
    # A worker crashes; the group is torn down (SIGTERM) in the same second.
    assert diagnose([failed_pod(0, 143), failed_pod(1, 2)]).worker == 1
    # At the same second, a kill outranks a peer's error.
    assert diagnose([failed_pod(0, 1), failed_pod(1, 137)]).worker == 1


def test_suspend_deletes_the_workers_and_resume_creates_them() -> None:
    suspended = TrainingJobSpec.model_validate({**SPEC.model_dump(by_alias=True),
                                                "runPolicy": {"suspend": True}})
    decision = assess(body(), suspended, job(active=2), None, NOW)
    assert decision.action == "delete"
    assert cond(decision.status, "Suspended") == ("True", "Suspended")
    assert cond(decision.status, "Reconciling")[0] == "False"
    resumed = assess(body(decision.status), SPEC, None, None, NOW)
    assert resumed.action == "create"
    assert cond(resumed.status, "Reconciling") == ("True", "Resumed")


def test_the_deadline_counts_from_the_first_start() -> None:
    spec = TrainingJobSpec.model_validate({**SPEC.model_dump(by_alias=True),
                                           "runPolicy": {"activeDeadlineSeconds": 100}})
    started = {"startTime": "2026-01-01T00:00:00Z"}
    assert assess(body(started), spec, None, None, NOW).deadline_seconds == 40
    late = assess(body(started), spec, None, None, "2026-01-01T00:02:00Z")
    assert late.action == "none" and cond(late.status, "Failed")[1] == "DeadlineExceeded"


def test_finished_jobs_are_left_alone() -> None:
    done = assess(body(), SPEC, job(conditions=[{"type": "Complete", "status": "True"}]),
                  [], NOW).status
    again = assess(body(done), SPEC, None, None, "2026-01-02T00:00:00Z")
    assert again.action == "none" and again.status == done


def test_a_retrain_carries_its_trigger_and_production_data_into_status() -> None:
    import json

    lineage = {"driftMonitor": "m", "reason": "AccuracyBelowThreshold", "message": "0.6 < 0.8",
               "windowStart": "2026-01-01T00:00:00Z", "windowEnd": "2026-01-01T01:00:00Z",
               "time": NOW, "unknown": "dropped",
               "productionData": {"uri": "s3://b/news/production-data/m-retrain-1.parquet",
                                  "rows": 160}}
    retrain = body()
    retrain["metadata"]["annotations"] = {"tailor.dev/trigger": json.dumps(lineage)}
    triggered = assess(retrain, SPEC, None, None, NOW).status["triggeredBy"]
    assert triggered == {k: v for k, v in lineage.items() if k != "unknown"}
    lineage["productionData"] = "not an object"
    retrain["metadata"]["annotations"] = {"tailor.dev/trigger": json.dumps(lineage)}
    assert "productionData" not in assess(retrain, SPEC, None, None, NOW).status["triggeredBy"]
