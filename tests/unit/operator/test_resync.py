"""The periodic resync: a TrainingJob whose event was lost or whose reconcile failed converges
on the next pass, a finished one costs nothing, a DriftMonitor's missed spec change is checked,
and a pass is spread over the interval (main.resync_forever)."""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest
from tailor.assess.conditions import is_true
from tailor.controllers.driftmonitor import DriftMonitorController
from tailor.controllers.trainingjob import TrainingJobController
from tailor.io.k8s import Conflict, Kube, Obj
from tailor.main import resync_forever
from tailor.settings import OperatorSettings

SPEC = {"task": "custom", "command": ["true"], "workers": 1}


class FakeKube(Kube):
    """What the controllers read and write, kept in a dict; every call is recorded, and the
    next `outage` calls fail as an unreachable API server would (after its retries)."""

    def __init__(self) -> None:  # no API client
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.versions = itertools.count(100)
        self.calls: list[str] = []
        self.outage = 0

    def _record(self, call: str) -> None:
        self.calls.append(call)
        if self.outage:
            self.outage -= 1
            raise ConnectionError("the API server is unreachable")

    def add(self, kind: str, name: str, body: Obj) -> Obj:
        body["metadata"] = {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                            "generation": 1, "resourceVersion": str(next(self.versions)),
                            **body.get("metadata", {})}
        self.objects[(kind, "ns", name)] = body
        return copy.deepcopy(body)

    def stored(self, kind: str, name: str) -> Obj:
        return copy.deepcopy(self.objects[(kind, "ns", name)])

    def create(self, obj: Obj) -> Obj | None:
        self._record(f"create {obj['kind']}")
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key in self.objects:
            return None
        self.objects[key] = copy.deepcopy(obj)
        self.objects[key]["metadata"] |= {"uid": f"uid-{key[2]}",
                                          "resourceVersion": str(next(self.versions))}
        return copy.deepcopy(self.objects[key])

    def get_job(self, namespace: str, name: str) -> Obj | None:
        self._record("get Job")
        return copy.deepcopy(self.objects.get(("Job", namespace, name)))

    def get_trainingjob(self, namespace: str, name: str) -> Obj | None:
        self._record("get TrainingJob")
        return copy.deepcopy(self.objects.get(("TrainingJob", namespace, name)))

    def get_driftmonitor(self, namespace: str, name: str) -> Obj | None:
        self._record("get DriftMonitor")
        return copy.deepcopy(self.objects.get(("DriftMonitor", namespace, name)))

    def patch_trainingjob_status(self, body: Obj, status: Obj, *, precondition: bool = True
                                 ) -> Obj | None:
        self._record("patch status")
        current = self.objects.get(("TrainingJob", "ns", body["metadata"]["name"]))
        if current is None:
            return None
        if precondition and current["metadata"]["resourceVersion"] != \
                body["metadata"]["resourceVersion"]:
            raise Conflict(body["metadata"]["name"])
        current["status"] = {**(current.get("status") or {}), **copy.deepcopy(status)}
        current["metadata"]["resourceVersion"] = str(next(self.versions))
        return copy.deepcopy(current)

    def delete_job(self, namespace: str, name: str, uid: str | None = None) -> None:
        self._record("delete Job")
        self.objects.pop(("Job", namespace, name), None)

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        self._record("list pods")
        return []

    def event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        self.calls.append(f"event {reason}")


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def controller(kube: FakeKube) -> TrainingJobController:
    return TrainingJobController(kube, OperatorSettings())


def succeed(kube: FakeKube, name: str) -> None:
    """The worker Job completes (as the Job controller would record it)."""
    job = kube.objects[("Job", "ns", f"{name}-worker")]
    job["status"] = {"succeeded": 1, "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}
    job["metadata"]["resourceVersion"] = str(next(kube.versions))


def condition(kube: FakeKube, name: str, kind: str) -> bool:
    return is_true((kube.stored("TrainingJob", name).get("status") or {}).get("conditions"), kind)


def test_a_job_whose_worker_event_was_lost_converges_on_resync(
        kube: FakeKube, controller: TrainingJobController) -> None:
    controller.reconcile(kube.add("TrainingJob", "a", {"spec": SPEC}), None)
    succeed(kube, "a")  # ... and its event never reaches the operator
    index_copy = kube.stored("TrainingJob", "a")
    assert controller.resync(index_copy)
    assert condition(kube, "a", "Succeeded")
    assert kube.calls.count("create Job") == 1  # read from the API, not created again


def test_a_reconcile_that_failed_on_an_outage_converges_on_resync(
        kube: FakeKube, controller: TrainingJobController) -> None:
    controller.reconcile(kube.add("TrainingJob", "b", {"spec": SPEC}), None)
    succeed(kube, "b")
    body = kube.stored("TrainingJob", "b")
    kube.outage = 1  # the Job event's reconcile: its read fails, it raises and is not retried
    with pytest.raises(ConnectionError):
        controller.reconcile(body, kube.stored("Job", "b-worker"))
    assert not condition(kube, "b", "Succeeded") and kube.outage == 0  # the API is back
    assert controller.resync(kube.stored("TrainingJob", "b"))
    assert condition(kube, "b", "Succeeded")
    assert kube.calls.count("create Job") == 1


def finished(kube: FakeKube, name: str, *, verdict: str | None = None) -> Obj:
    conditions = [{"type": "Succeeded", "status": "True", "reason": "Completed"},
                  {"type": "Failed", "status": "False", "reason": "Completed"}]
    status: Obj = {"phase": "Succeeded", "runId": f"run-{name}", "observedGeneration": 1,
                   "conditions": conditions, "workers": {"restarts": 0, "desired": 1}}
    if verdict:
        status["promotion"] = {"verdict": verdict, "reason": verdict}
        conditions.append({"type": "Promoted", "status": "False", "reason": verdict})
    return kube.add("TrainingJob", name, {"spec": SPEC, "status": status})


def test_a_finished_job_that_needs_nothing_costs_no_request(
        kube: FakeKube, controller: TrainingJobController) -> None:
    assert not controller.resync(finished(kube, "done"))
    assert not controller.resync(finished(kube, "waits", verdict="AwaitingApproval"))
    deleting = kube.add("TrainingJob", "gone", {"spec": SPEC,
                                                "metadata": {"deletionTimestamp": "now"}})
    assert not controller.resync(deleting)
    assert kube.calls == []


def test_a_lost_approval_event_is_acted_on_by_the_resync(
        kube: FakeKube, controller: TrainingJobController) -> None:
    finished(kube, "m", verdict="AwaitingApproval")
    stored = kube.objects[("TrainingJob", "ns", "m")]
    stored["metadata"]["annotations"] = {"tailor.dev/approve": "run-m"}
    assert controller.resync(kube.stored("TrainingJob", "m"))
    promote = kube.objects.get(("Job", "ns", "m-promote"))
    assert promote is not None and kube.calls.count("create Job") == 1
    assert controller.resync(kube.stored("TrainingJob", "m"))  # again: nothing new
    assert kube.calls.count("create Job") == 1


# ------------------------------------------------------------------ DriftMonitors
MONITOR_SPEC = {"interval": "1h", "model": {"trainingJob": "a"},
                "production": {"predictionsUri": "s3://b/p/"}}


@pytest.fixture
def monitors(kube: FakeKube, monkeypatch: pytest.MonkeyPatch
             ) -> tuple[DriftMonitorController, list[str]]:
    checked: list[str] = []
    controller = DriftMonitorController(kube, OperatorSettings())
    monkeypatch.setattr(controller, "check", lambda body: checked.append(body["metadata"]["name"]))
    return controller, checked


def monitor(kube: FakeKube, name: str, *, generation: int, checked: str) -> Obj:
    return kube.add("DriftMonitor", name, {
        "spec": MONITOR_SPEC, "metadata": {"generation": generation},
        "status": {"observedGeneration": 1, "lastCheckTime": checked}})


def test_a_monitor_whose_spec_change_the_index_missed_is_checked_now(
        kube: FakeKube, monitors: tuple[DriftMonitorController, list[str]]) -> None:
    controller, checked = monitors
    recent = "2999-01-01T00:00:00Z"  # checked "in the future": not due by its interval
    index_copy = monitor(kube, "changed", generation=1, checked=recent)
    kube.objects[("DriftMonitor", "ns", "changed")]["metadata"]["generation"] = 2
    monitor(kube, "same", generation=1, checked=recent)
    assert controller.resync(index_copy)
    assert controller.resync(kube.stored("DriftMonitor", "same"))
    controller._pool.shutdown(wait=True)
    assert checked == ["changed"]


def test_a_monitor_deleted_meanwhile_is_left_alone(
        kube: FakeKube, monitors: tuple[DriftMonitorController, list[str]]) -> None:
    controller, checked = monitors
    body = monitor(kube, "gone", generation=2, checked="2999-01-01T00:00:00Z")
    del kube.objects[("DriftMonitor", "ns", "gone")]
    assert not controller.resync(body)
    controller._pool.shutdown(wait=True)
    assert checked == []


# ------------------------------------------------------------------ pacing
class Stop(threading.Event):
    """A stop event whose waits return at once, recorded, and advance a fake clock (each
    step takes `step_seconds` of it); set after `passes` passes."""

    def __init__(self, passes: int, step_seconds: float = 0.0) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.passes = passes
        self.now = 0.0
        self.step_seconds = step_seconds

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        self.now += timeout or 0.0
        return self.is_set()

    def clock(self) -> float:
        return self.now


def steps_of(stop: Stop, count: int, done: list[int],
             failing: int | None = None) -> Callable[[], list[Callable[[], Any]]]:
    def step(number: int) -> None:
        done.append(number)
        stop.now += stop.step_seconds
        if number == failing:
            raise RuntimeError("the API server is unreachable")

    def steps() -> list[Callable[[], Any]]:
        stop.passes -= 1
        if stop.passes < 0:
            stop.set()
        return [lambda n=n: step(n) for n in range(count)]
    return steps


def test_a_pass_is_spread_over_the_interval() -> None:
    stop, done = Stop(passes=2, step_seconds=0.1), list[int]()
    resync_forever(stop, 300.0, steps_of(stop, 1000, done), clock=stop.clock)
    assert done == list(range(1000)) * 2
    # One step every 0.3 s: each wait is the rest of its 0.3 s slot after the step before.
    assert stop.waits[0] == pytest.approx(0.3)
    assert stop.waits[1:1000] == pytest.approx([0.2] * 999)
    assert stop.now == pytest.approx(600.0, abs=0.5)  # two passes, two intervals


def test_a_slow_pass_runs_late_steps_at_once_and_is_not_made_longer() -> None:
    stop, done = Stop(passes=1, step_seconds=1.0), list[int]()
    resync_forever(stop, 10.0, steps_of(stop, 20, done), clock=stop.clock)
    assert done == list(range(20)) and stop.now == pytest.approx(20.0 + 1.0)


def test_a_failing_step_does_not_end_the_pass() -> None:
    stop, done = Stop(passes=1), list[int]()
    resync_forever(stop, 10.0, steps_of(stop, 5, done, failing=2), clock=stop.clock)
    assert done == [0, 1, 2, 3, 4]


def test_with_nothing_known_a_pass_waits_the_whole_interval() -> None:
    stop, done = Stop(passes=2), list[int]()
    resync_forever(stop, 60.0, steps_of(stop, 0, done), clock=stop.clock)
    assert done == [] and stop.waits[:2] == [60.0, 60.0]
