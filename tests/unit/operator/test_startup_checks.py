"""The controller's side of workers that cannot start: the periodic check reconciles only jobs
whose workers are starting, pods are read only once a group is slow to start, a stall is
written once, and the pending deadline deletes the group."""

from __future__ import annotations

import copy
import datetime
import itertools
import threading

import kubelet_pods as k
from tailor.assess.conditions import find
from tailor.controllers.trainingjob import TrainingJobController
from tailor.io.k8s import Kube, Obj
from tailor.settings import OperatorSettings
from tailor_contract import clock

SPEC = {"task": "custom", "command": ["true"], "workers": 2}


def ago(seconds: float) -> str:
    return clock.format(clock.now() - datetime.timedelta(seconds=seconds))


class PodsKube(Kube):
    """A TrainingJob, its worker Job and its pods, in memory; every call recorded."""

    def __init__(self, started: str, pods: list[Obj]) -> None:  # no API client
        self.versions = itertools.count(10)
        self.calls: list[str] = []
        self.pods = pods
        self.evented = threading.Event()  # Events are posted from the controller's pool
        self.job: Obj | None = k.worker_job(start=started)
        self.job["metadata"]["creationTimestamp"] = started
        self.body: Obj = {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
                          "metadata": {"name": "j", "namespace": "ns", "uid": "uid-j",
                                       "generation": 1, "resourceVersion": "1"},
                          "spec": SPEC, "status": {}}

    def get_job(self, namespace: str, name: str) -> Obj | None:
        self.calls.append("get Job")
        return copy.deepcopy(self.job)

    def get_trainingjob(self, namespace: str, name: str) -> Obj | None:
        return copy.deepcopy(self.body)

    def patch_trainingjob_status(self, body: Obj, status: Obj, *, precondition: bool = True
                                 ) -> Obj | None:
        self.calls.append("patch status")
        self.body["status"] = {**self.body["status"], **copy.deepcopy(status)}
        self.body["metadata"]["resourceVersion"] = str(next(self.versions))
        return copy.deepcopy(self.body)

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        self.calls.append(f"list pods {selector}")
        return copy.deepcopy(self.pods)

    def delete_job(self, namespace: str, name: str, uid: str | None = None) -> None:
        self.calls.append(f"delete Job {uid}")
        self.job = None

    def event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        self.calls.append(f"event {type_} {reason}")
        self.evented.set()


def starting_status(since: str) -> Obj:
    """What the operator wrote when it created the group at `since`."""
    condition = {"status": "False", "reason": "WorkersStarting", "message": "0 of 2 workers",
                 "lastTransitionTime": since, "observedGeneration": 1}
    return {"observedGeneration": 1, "phase": "Pending", "startTime": since,
            "runId": "run-uid-j", "workers": {"restarts": 0, "desired": 2},
            "conditions": [{**condition, "type": kind} for kind in (
                "Running", "Suspended", "Ready", "Stalled", "Succeeded", "Failed")] +
            [{**condition, "type": "Reconciling", "status": "True"}]}


def controller_for(kube: PodsKube) -> TrainingJobController:
    return TrainingJobController(kube, OperatorSettings())


def reason(kube: PodsKube, kind: str) -> tuple[str, str]:
    found = find(kube.body["status"]["conditions"], kind) or {}
    return found.get("status", ""), found.get("reason", "")


def stuck_pods() -> list[Obj]:
    return [k.pod(0, k.waiting("ImagePullBackOff")), k.pod(1, k.waiting("ImagePullBackOff"))]


def test_a_stuck_group_is_found_by_the_periodic_check_and_stalled_once() -> None:
    since = ago(60)
    kube = PodsKube(since, stuck_pods())
    kube.body["status"] = starting_status(since)
    controller = controller_for(kube)
    controller.check_starting(lambda: [copy.deepcopy(kube.body)])
    assert kube.calls[:2] == ["get Job", f"list pods batch.kubernetes.io/controller-uid={k.JOB_UID}"]
    assert reason(kube, "Stalled") == ("True", "ImagePullBackOff")
    assert reason(kube, "Reconciling")[0] == "False"
    assert kube.evented.wait(10)
    assert kube.calls.count("event Warning ImagePullBackOff") == 1
    kube.calls.clear()
    controller.check_starting(lambda: [copy.deepcopy(kube.body)])  # still stalled
    assert "patch status" not in kube.calls and not any("event" in c for c in kube.calls)


def test_the_periodic_check_fails_the_job_at_the_pending_deadline_and_deletes_the_group(
        ) -> None:
    since = ago(601)
    kube = PodsKube(since, stuck_pods())
    kube.body["status"] = starting_status(since)
    controller_for(kube).check_starting(lambda: [copy.deepcopy(kube.body)])
    assert reason(kube, "Failed") == ("True", "PendingDeadlineExceeded")
    assert kube.body["status"]["failure"]["reason"] == "ImagePullBackOff"
    # The status is written before the group is deleted (as for a restart).
    assert kube.calls.index("patch status") < kube.calls.index(f"delete Job {k.JOB_UID}")


def test_jobs_not_starting_or_just_started_cost_no_request() -> None:
    fresh = ago(2)
    kube = PodsKube(fresh, stuck_pods())
    kube.body["status"] = starting_status(fresh)
    running = copy.deepcopy(kube.body)
    for condition in running["status"]["conditions"]:
        if condition["type"] == "Running":
            condition["status"] = "True"
    controller_for(kube).check_starting(lambda: [copy.deepcopy(kube.body), running])
    assert kube.calls == []


def test_an_event_within_the_grace_reads_no_pods() -> None:
    """A new group's events (its pods becoming active, ready) cost no pod list: most groups
    start within the grace."""
    fresh = ago(2)
    kube = PodsKube(fresh, stuck_pods())
    kube.body["status"] = starting_status(fresh)
    controller_for(kube).reconcile(copy.deepcopy(kube.body), kube.job)
    assert not any(c.startswith("list pods") for c in kube.calls)
    assert reason(kube, "Stalled")[0] == "False"
