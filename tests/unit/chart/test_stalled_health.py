"""A TrainingJob whose worker cannot start, as Flux's kstatus and Argo CD's health script read it:
Failed / Degraded with the kubelet's reason while it waits for someone's help, back to
InProgress / Progressing when the workers start, Failed / Degraded for good at the deadline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tailor.assess.trainingjob import assess
from tailor_contract.trainingjob import TrainingJobSpec
from test_health import kstatus_of, lua_health

SPEC_RAW: dict[str, Any] = {"task": "custom", "command": ["python", "-c", "pass"], "workers": 1}
SPEC = TrainingJobSpec.model_validate(SPEC_RAW)
START = "2026-01-01T00:00:00Z"
MESSAGE = 'secret "s3-credentials" not found'


def _tj(status: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "bbc", "namespace": "team-a", "uid": "0a1b2c3d-0000",
                         "generation": 1, "resourceVersion": "7"},
            "spec": SPEC_RAW, "status": status}


def _job(ready: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": "bbc-worker", "uid": "j1", "creationTimestamp": START,
                         "annotations": {"tailor.dev/attempt": "0"}},
            "spec": {}, "status": {"active": 1, "ready": ready, "startTime": START}}


def _stuck_pod() -> dict[str, Any]:
    return {"metadata": {"name": "bbc-worker-0-x7k2q",
                         "labels": {"batch.kubernetes.io/job-completion-index": "0"}},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "trainer", "ready": False, "restartCount": 0, "started": False,
                "state": {"waiting": {"reason": "CreateContainerConfigError",
                                      "message": MESSAGE}}}]}}


def _states() -> dict[str, dict[str, Any]]:
    created = assess(_tj({}), SPEC, None, None, START).status
    stalled = assess(_tj(created), SPEC, _job(), [_stuck_pod()], "2026-01-01T00:01:00Z").status
    started = assess(_tj(stalled), SPEC, _job(ready=1), None, "2026-01-01T00:02:00Z").status
    expired = assess(_tj(stalled), SPEC, _job(), [_stuck_pod()], "2026-01-01T00:10:00Z").status
    return {"stalled": _tj(stalled), "started": _tj(started), "expired": _tj(expired)}


def test_kstatus_fails_a_stalled_job_and_takes_it_back_when_it_starts(kstatus: Path) -> None:
    states = _states()
    stalled, started, expired = kstatus_of(kstatus, list(states.values()))
    assert stalled["status"] == "Failed" and MESSAGE in stalled["message"]
    assert started["status"] == "InProgress"
    assert expired["status"] == "Failed" and "pendingDeadlineSeconds" in expired["message"]


def test_argocd_shows_a_stalled_job_degraded_with_the_kubelets_reason(lua: Path,
                                                                      tmp_path: Path) -> None:
    got = lua_health(lua, "TrainingJob", list(_states().values()), tmp_path)
    (stalled, why), (started, _), (expired, expired_why) = got
    assert stalled == "Degraded" and why.startswith("CreateContainerConfigError: worker 0")
    assert started == "Progressing"
    assert expired == "Degraded" and expired_why.startswith("PendingDeadlineExceeded: ")
