"""TrainingJobs and DriftMonitors in every state, with the health Argo CD and kstatus must give.

TrainingJob statuses come from the operator's own pure decision function
(`tailor.assess.trainingjob.assess`) fed with worker Jobs and pods in each state, so these
samples are what the operator writes, not what we imagine it writes. DriftMonitor statuses follow docs/api.md's condition table.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from tailor.assess.conditions import upsert
from tailor.assess.trainingjob import assess
from tailor_contract.trainingjob import TrainingJobSpec

NOW = "2026-01-01T00:01:00Z"
API_VERSION = "tailor.dev/v1alpha1"


@dataclass(frozen=True)
class Sample:
    state: str
    obj: dict[str, Any]
    argocd: str  # Argo CD health status
    kstatus: str  # cli-utils kstatus (what Flux waits on)


def _tj_spec(**extra: Any) -> dict[str, Any]:
    return {"task": "custom", "command": ["python", "-c", "pass"], "workers": 2,
            "runPolicy": {"backoffLimit": 1, **extra}}


def _tj(spec: dict[str, Any], status: dict[str, Any] | None, generation: int = 1
        ) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION, "kind": "TrainingJob",
        "metadata": {"name": "bbc", "namespace": "team-a", "uid": "0a1b2c3d-0000",
                     "generation": generation, "resourceVersion": "7"},
        "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


def _job(attempt: int = 0, suspend: bool = False, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "bbc-worker", "uid": "j1",
                         "annotations": {"tailor.dev/attempt": str(attempt)}},
            "spec": {"suspend": suspend}, "status": status}


def _finished(kind: str) -> dict[str, Any]:
    return {"conditions": [{"type": kind, "status": "True"}]}


def _pod(index: int, code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    return {"metadata": {"labels": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "status": {"containerStatuses": [{"state": {"terminated": {
                "exitCode": code, "reason": reason, "message": message}}}]}}


def _step(obj: dict[str, Any], job: dict[str, Any] | None,
          pods: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec = TrainingJobSpec.model_validate(obj["spec"])
    status: dict[str, Any] = assess(obj, spec, job, pods, NOW).status
    return _tj(obj["spec"], status, obj["metadata"]["generation"])


def trainingjobs() -> list[Sample]:
    spec = _tj_spec()
    new = _tj(spec, None)
    pending = _step(new, None)
    starting = _step(pending, _job(active=2, ready=1))
    running = _step(pending, _job(active=2, ready=2))
    queued = _step(pending, _job(suspend=True))
    failed_once = _job(failed=1, **_finished("Failed"))
    restarting = _step(running, failed_once, [_pod(1, 137, "OOMKilled")])
    succeeded = _step(running, _job(succeeded=2, **_finished("Complete")), [])
    permanent = _step(running, failed_once, [_pod(0, 42, "Error", "bad data")])
    restarted = _step(restarting, None)
    exhausted = _step(_step(restarted, _job(attempt=1, active=2, ready=2)),
                      _job(attempt=1, failed=1, **_finished("Failed")), [_pod(0, 1)])
    suspended_spec = _tj_spec(suspend=True)
    suspended = _step(_tj(suspended_spec, copy.deepcopy(running["status"])), None)
    # A spec change the operator has not seen yet: generation 2, status of generation 1.
    edited = _tj(suspended_spec, copy.deepcopy(running["status"]), generation=2)
    return [
        Sample("new, not reconciled yet", new, "Progressing", "Current"),
        Sample("pending: worker group created", pending, "Progressing", "InProgress"),
        Sample("pending: workers starting", starting, "Progressing", "InProgress"),
        # Waiting for Kueue: Suspended, as Argo CD shows a batch/v1 Job Kueue has not admitted,
        # and still Reconciling, so Flux waits for it to run.
        Sample("queued by Kueue", queued, "Suspended", "InProgress"),
        Sample("running", running, "Progressing", "InProgress"),
        Sample("restarting after OOMKilled", restarting, "Progressing", "InProgress"),
        Sample("restart: new worker group", restarted, "Progressing", "InProgress"),
        Sample("succeeded", succeeded, "Healthy", "Current"),
        Sample("failed permanently", permanent, "Degraded", "Failed"),
        Sample("failed: backoff limit", exhausted, "Degraded", "Failed"),
        # Ready is False while suspended: kstatus (and so Flux) keeps waiting until it resumes.
        Sample("suspended", suspended, "Suspended", "InProgress"),
        Sample("spec changed, not observed yet", edited, "Progressing", "InProgress"),
    ]


# --------------------------------------------------------------------------- DriftMonitor

_DM_SPEC: dict[str, Any] = {
    "model": {"trainingJob": "bbc"},
    "production": {"predictionsUri": "s3://tailor/production/bbc/predictions/",
                   "groundTruthUri": "s3://tailor/production/bbc/labels/"},
}


def _dm(conditions: list[tuple[str, bool | None, str, str]] | None, phase: str = "Healthy",
        generation: int = 1, observed: int = 1, **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "DriftMonitor",
                           "metadata": {"name": "bbc", "namespace": "team-a", "uid": "dm-1",
                                        "generation": generation, "resourceVersion": "9"},
                           "spec": copy.deepcopy(_DM_SPEC)}
    if conditions is None:
        return obj
    current: list[dict[str, Any]] = []
    for kind, value, reason, message in conditions:
        current = upsert(current, kind, value, reason, message, observed, NOW)
    obj["status"] = {"observedGeneration": observed, "phase": phase, "conditions": current,
                     **status}
    return obj


def _settled(ready: tuple[bool | None, str, str], drift: tuple[bool | None, str],
             accuracy: tuple[bool | None, str], retraining: tuple[bool, str],
             stalled: tuple[bool, str, str] = (False, "Reconciled", "")
             ) -> list[tuple[str, bool | None, str, str]]:
    return [("Ready", *ready), ("Reconciling", False, "Reconciled", ""),
            ("Stalled", *stalled), ("DriftDetected", drift[0], drift[1], ""),
            ("AccuracyBelowThreshold", accuracy[0], accuracy[1], ""),
            ("Retraining", retraining[0], retraining[1], "")]


def driftmonitors() -> list[Sample]:
    checked = (True, "Checked", "checked 1200 predictions, 640 labelled")
    first = [("Ready", None, "Reconciling", "waiting for the first check"),
             ("Reconciling", True, "Reconciling", "scheduling the first check"),
             ("Stalled", False, "Reconciling", ""),
             ("DriftDetected", None, "Reconciling", ""),
             ("AccuracyBelowThreshold", None, "Reconciling", ""),
             ("Retraining", False, "RetrainDisabled", "")]
    window = {"predictions": 1200, "labeled": 640, "labelCoverage": 0.53}
    return [
        Sample("new, not reconciled yet", _dm(None), "Progressing", "Current"),
        Sample("waiting for the first check", _dm(first, phase="Pending"),
               "Progressing", "InProgress"),
        Sample("healthy", _dm(_settled(checked, (False, "NoDrift"), (False, "AccuracyOK"),
                                       (False, "RetrainSucceeded")), window=window),
               "Healthy", "Current"),
        Sample("too few samples for a verdict",
               _dm(_settled(checked, (False, "InsufficientSamples"), (None, "InsufficientSamples"),
                            (False, "CooldownActive"))),
               "Healthy", "Current"),
        Sample("drift detected", _dm(_settled(checked, (True, "FeatureDrift"),
                                              (False, "AccuracyOK"), (False, "RetrainDisabled")),
                                     phase="Drifting", driftedShare=0.75),
               "Degraded", "Current"),
        Sample("accuracy below threshold",
               _dm(_settled(checked, (False, "NoDrift"), (True, "AccuracyBelowThreshold"),
                            (False, "CooldownActive")), phase="Degraded"),
               "Degraded", "Current"),
        Sample("retraining", _dm(_settled(checked, (True, "PredictionDrift"),
                                          (True, "AccuracyBelowThreshold"),
                                          (True, "RetrainRunning")), phase="Retraining",
                                 retrainCount=1),
               "Progressing", "Current"),
        Sample("retrain failed", _dm(_settled(checked, (False, "NoDrift"),
                                              (True, "AccuracyBelowThreshold"),
                                              (False, "RetrainFailed")), phase="Degraded"),
               "Degraded", "Current"),
        Sample("profile not found", _dm(_settled(
            (False, "ProfileNotFound", "no reference profile under s3://tailor/models/bbc/"),
            (None, "ProfileNotFound"), (None, "ProfileNotFound"), (False, "RetrainDisabled")),
            phase="Error"), "Degraded", "InProgress"),  # the profile may still appear
        Sample("stalled: TrainingJob not found", _dm(_settled(
            (False, "TrainingJobNotFound", "TrainingJob bbc does not exist"),
            (None, "TrainingJobNotFound"), (None, "TrainingJobNotFound"),
            (False, "RetrainDisabled"),
            stalled=(True, "TrainingJobNotFound", "TrainingJob bbc does not exist")),
            phase="Error"), "Degraded", "Failed"),
        Sample("spec changed, not observed yet",
               _dm(_settled(checked, (False, "NoDrift"), (False, "AccuracyOK"),
                            (False, "RetrainDisabled")), generation=2),
               "Progressing", "InProgress"),
    ]
