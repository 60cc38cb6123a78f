"""The TrainingJob controller against an in-memory API: what it records for Kopf's event
filters, its phase gauge, and the handlers it registers with Kopf."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import kopf
import pytest
from prometheus_client import REGISTRY
from tailor.assess import trainingjob as lifecycle
from tailor.assess.conditions import find
from tailor.controllers.trainingjob import TrainingJobController
from tailor.io.k8s import Conflict, Kube, Obj
from tailor.settings import OperatorSettings

SPEC = {"task": "custom", "command": ["true"], "workers": 1}


class FakeKube(Kube):
    """The few calls the controller makes, kept in dicts; resourceVersions count up."""

    def __init__(self) -> None:  # no API client
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.versions = itertools.count(100)
        self.calls: list[str] = []
        self.fail_delete = False

    def add_trainingjob(self, name: str, spec: Obj | None = None) -> Obj:
        body = {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
                "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                             "generation": 1, "resourceVersion": str(next(self.versions))},
                "spec": spec or SPEC}
        self.objects[("TrainingJob", "ns", name)] = body
        return copy.deepcopy(body)

    def create(self, obj: Obj) -> Obj | None:
        self.calls.append(f"create {obj['kind']}")
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        if key in self.objects:
            return None
        created = copy.deepcopy(obj)
        created["metadata"] |= {"uid": f"uid-{key[2]}",
                                "resourceVersion": str(next(self.versions))}
        self.objects[key] = created
        return copy.deepcopy(created)

    def get_job(self, namespace: str, name: str) -> Obj | None:
        return copy.deepcopy(self.objects.get(("Job", namespace, name)))

    def get_trainingjob(self, namespace: str, name: str) -> Obj | None:
        return copy.deepcopy(self.objects.get(("TrainingJob", namespace, name)))

    def patch_trainingjob_status(self, body: Obj, status: Obj, *, precondition: bool = True
                                 ) -> Obj | None:
        self.calls.append("patch status")
        meta = body["metadata"]
        current = self.objects.get(("TrainingJob", meta["namespace"], meta["name"]))
        if current is None:
            return None
        if precondition and current["metadata"]["resourceVersion"] != meta["resourceVersion"]:
            raise Conflict(meta["name"])
        current["status"] = {**(current.get("status") or {}), **copy.deepcopy(status)}
        current["metadata"]["resourceVersion"] = str(next(self.versions))
        return copy.deepcopy(current)

    def delete_job(self, namespace: str, name: str, uid: str | None = None) -> None:
        self.calls.append("delete Job")
        if self.fail_delete:
            raise RuntimeError("the API server is unreachable")
        self.objects.pop(("Job", namespace, name), None)

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        return []

    def event(self, involved: Obj, type_: str, reason: str, message: str) -> None:
        self.calls.append(f"event {reason}")


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def controller(kube: FakeKube) -> TrainingJobController:
    return TrainingJobController(kube, OperatorSettings())


def reason(body: Obj | None, kind: str) -> str:
    assert body is not None
    found = find(body["status"]["conditions"], kind)
    assert found is not None
    return str(found["reason"])


def test_the_first_reconcile_creates_both_children_then_patches_what_is_true_after(
        kube: FakeKube, controller: TrainingJobController) -> None:
    controller.reconcile(kube.add_trainingjob("a"), None)
    assert sorted(kube.calls[:2]) == ["create Job", "create Service"]
    assert kube.calls[2:] == ["patch status", "event Created"] or \
        kube.calls[2:] == ["event Created", "patch status"]
    assert ("Service", "ns", "a") in kube.objects and ("Job", "ns", "a-worker") in kube.objects
    # One patch: the Job exists, so its workers are starting (what the reconcile of the
    # Job's ADDED event would have said), and that event is already seen.
    body = kube.get_trainingjob("ns", "a")
    assert reason(body, "Reconciling") == "WorkersStarting"
    assert body is not None and body["status"]["phase"] == "Pending"
    assert body["status"]["startTime"] and body["status"]["workers"]["active"] == 0
    job = kube.get_job("ns", "a-worker")
    assert job is not None and controller.job_seen("ns", "a", job)


def test_a_queued_job_is_reported_queued_by_the_reconcile_that_creates_it(
        kube: FakeKube, controller: TrainingJobController) -> None:
    controller.reconcile(kube.add_trainingjob("q", {**SPEC, "scheduling": {"queueName": "team"}}), None)
    job = kube.get_job("ns", "q-worker")
    assert job is not None and job["spec"]["suspend"] is True
    body = kube.get_trainingjob("ns", "q")
    assert reason(body, "Reconciling") == "Queued" and reason(body, "Suspended") == "Queued"
    assert body is not None and body["status"]["phase"] == "Suspended"
    assert (find(body["status"]["conditions"], "Suspended") or {}).get("status") == "True"


def test_our_own_status_patch_is_recognised_and_nothing_else(
        kube: FakeKube, controller: TrainingJobController) -> None:
    body = kube.add_trainingjob("a")
    assert not controller.is_own_write(body)
    controller.reconcile(body, None)
    echo = kube.get_trainingjob("ns", "a")
    assert echo is not None and controller.is_own_write(echo)
    # Someone else's change (a new resourceVersion) is never mistaken for ours.
    edited = copy.deepcopy(echo)
    edited["metadata"]["resourceVersion"] = "999"
    assert not controller.is_own_write(edited)
    # Nor is a new object of the same name that happens to carry the same version.
    replaced = copy.deepcopy(echo)
    replaced["metadata"]["uid"] = "another"
    assert not controller.is_own_write(replaced)


def test_a_worker_job_update_of_fields_the_controller_never_reads_is_already_seen(
        kube: FakeKube, controller: TrainingJobController) -> None:
    controller.reconcile(kube.add_trainingjob("a"), None)
    job = kube.get_job("ns", "a-worker")
    assert job is not None and controller.job_seen("ns", "a", job)
    assert not controller.job_seen("ns", "b", job)  # no reconcile of b yet
    noise = copy.deepcopy(job)
    noise["metadata"]["resourceVersion"] = "555"
    noise["status"] = {"startTime": "2026-01-01T00:00:00Z", "terminating": 0,
                       "uncountedTerminatedPods": {}}
    assert controller.job_seen("ns", "a", noise)
    for change in ({"active": 1}, {"ready": 1}, {"failed": 1},
                   {"conditions": [{"type": "Failed", "status": "True", "reason": "x"}]}):
        changed = copy.deepcopy(job)
        changed["status"] = change
        assert not controller.job_seen("ns", "a", changed), change
    deleting = copy.deepcopy(job)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert not controller.job_seen("ns", "a", deleting)


def test_a_step_that_fails_after_its_patch_records_nothing_so_the_echo_retries_it(
        kube: FakeKube, controller: TrainingJobController) -> None:
    body = kube.add_trainingjob("a")
    controller.reconcile(body, None)
    job = kube.get_job("ns", "a-worker")
    assert job is not None
    # A failed worker group: the controller counts a restart in status, then deletes the Job.
    failed = copy.deepcopy(job)
    failed["status"] = {"failed": 1, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    kube.objects[("TrainingJob", "ns", "a")]["spec"] = {**SPEC,
                                                        "runPolicy": {"backoffLimit": 2}}
    kube.fail_delete = True
    with pytest.raises(RuntimeError):
        controller.reconcile(kube.get_trainingjob("ns", "a") or {}, failed)
    patched = kube.get_trainingjob("ns", "a")
    assert patched is not None and patched["status"]["workers"]["restarts"] == 1
    assert not controller.is_own_write(patched)
    assert not controller.job_seen("ns", "a", failed)
    # The echo of that patch reconciles again and finishes the step.
    kube.fail_delete = False
    controller.reconcile(patched, failed)
    assert ("Job", "ns", "a-worker") not in kube.objects


def gauge(namespace: str, phase: str) -> float | None:
    return REGISTRY.get_sample_value("tailor_trainingjobs",
                                     {"namespace": namespace, "phase": phase})


def test_the_phase_gauge_counts_transitions(kube: FakeKube,
                                            controller: TrainingJobController) -> None:
    for name in ("g1", "g2", "g3"):
        body = kube.add_trainingjob(name)
        body["metadata"]["namespace"] = "gauge-ns"
        kube.objects[("TrainingJob", "gauge-ns", name)] = copy.deepcopy(body)
        controller.reconcile(body, None)
    assert gauge("gauge-ns", "Pending") == 3
    suspended = kube.get_trainingjob("gauge-ns", "g1")
    assert suspended is not None
    suspended["spec"] = {**SPEC, "runPolicy": {"suspend": True}}
    kube.objects[("TrainingJob", "gauge-ns", "g1")] = copy.deepcopy(suspended)
    controller.reconcile(suspended, None)
    assert (gauge("gauge-ns", "Pending"), gauge("gauge-ns", "Suspended")) == (2, 1)
    controller.forget("gauge-ns", "g1")
    assert gauge("gauge-ns", "Suspended") is None and gauge("gauge-ns", "Pending") == 2


def test_the_job_essence_ignores_what_assess_never_reads() -> None:
    job: Obj = {"metadata": {"name": "a-worker", "uid": "u", "resourceVersion": "1",
                             "annotations": {"tailor.dev/attempt": "0"}},
                "spec": {"template": {"spec": {}}}, "status": {"active": 1}}
    other: Any = copy.deepcopy(job)
    other["metadata"]["resourceVersion"] = "2"
    other["status"]["startTime"] = "2026-01-01T00:00:00Z"
    other["status"]["conditions"] = [{"type": "SuccessCriteriaMet", "status": "True"}]
    assert lifecycle.job_essence(job) == lifecycle.job_essence(other)
    other["metadata"]["annotations"]["tailor.dev/attempt"] = "1"
    assert lifecycle.job_essence(job) != lifecycle.job_essence(other)
    assert lifecycle.job_essence(None) is None


def test_the_operator_registers_no_handlers_that_need_kopfs_diff_base() -> None:
    """main.NoDiffBase stores no "last handled" state: that is only right while every
    handler is an event handler or an index."""
    import tailor.main  # noqa: F401 (registers the handlers)

    registry = kopf.get_default_registry()
    assert registry._changing.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() == []
    assert len(registry._watching.get_all_handlers()) == 4  # TrainingJobs, worker, trial and promote Jobs


def test_a_spec_the_operator_cannot_parse_stalls_with_invalid_spec(
        kube: FakeKube, controller: TrainingJobController) -> None:
    body = kube.add_trainingjob("bad", {"task": "custom"})  # no command
    controller.reconcile(body, None)
    assert reason(kube.get_trainingjob("ns", "bad"), "Stalled") == "InvalidSpec"
    assert "event InvalidSpec" in kube.calls and "create Job" not in kube.calls


class HousekeepingKube(FakeKube):
    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[str] = []

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        return [{"status": {"phase": "Running", "podIP": "10.0.0.7"}}]

    def delete_trainingjob(self, namespace: str, name: str, uid: str) -> None:
        self.deleted.append(name)


def test_housekeeping_decides_from_conditions_not_phases(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """Progress is read while Running is True; the TTL counts once Succeeded or Failed is
    True. The phase is for people: a phase without its condition changes nothing."""
    from tailor.io import progress

    scraped: list[str] = []

    def scrape(ip: str) -> dict[str, Any]:
        scraped.append(ip)
        return {"step": 3}

    monkeypatch.setattr(progress, "scrape", scrape)
    kube = HousekeepingKube()
    controller = TrainingJobController(kube, OperatorSettings())
    since = "2026-01-01T00:00:00Z"

    def job(name: str, phase: str, condition: str | None, ttl: int | None = None) -> Obj:
        body = kube.add_trainingjob(name, {**SPEC, "runPolicy": {"ttlSecondsAfterFinished": ttl}}
                                    if ttl is not None else None)
        body["status"] = {"phase": phase, "completionTime": since, "conditions": [
            {"type": condition, "status": "True", "reason": "x", "message": "",
             "lastTransitionTime": since}] if condition else []}
        kube.objects[("TrainingJob", "ns", name)] = copy.deepcopy(body)
        return body

    bodies = [job("running", "Running", "Running"), job("phase-only", "Running", None),
              job("done", "Succeeded", "Succeeded", ttl=0),
              job("failed", "Failed", "Failed", ttl=0),
              job("said-done", "Succeeded", None, ttl=0)]
    controller.housekeeping(lambda: bodies)
    assert scraped == ["10.0.0.7"]
    assert (kube.get_trainingjob("ns", "running") or {})["status"]["progress"] == {"step": 3}
    assert kube.deleted == ["done", "failed"]


# ------------------------------------------------------------------ manual approval

def awaiting(kube: FakeKube, name: str = "m") -> Obj:
    """A finished TrainingJob whose verdict awaits approval, as the API holds it."""
    body = kube.add_trainingjob(name)
    body["status"] = {"runId": "run-uid-m", "phase": "Succeeded", "observedGeneration": 1,
                      "workers": {"restarts": 0, "desired": 1}, "conditions": [
        {"type": kind, "status": value, "reason": reason, "message": "",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}
        for kind, value, reason in (("Succeeded", "True", "Completed"),
                                    ("Failed", "False", "Completed"),
                                    ("Promoted", "False", "AwaitingApproval"))],
        "promotion": {"verdict": "AwaitingApproval", "reason": "AwaitingApproval"}}
    kube.objects[("TrainingJob", "ns", name)] = copy.deepcopy(body)
    return body


def annotate(kube: FakeKube, name: str, annotations: dict[str, str]) -> Obj:
    stored = kube.objects[("TrainingJob", "ns", name)]
    stored["metadata"]["annotations"] = annotations
    stored["metadata"]["resourceVersion"] = str(next(kube.versions))
    return copy.deepcopy(stored)


def test_an_approval_creates_one_promote_job_and_its_success_promotes(
        kube: FakeKube, controller: TrainingJobController) -> None:
    awaiting(kube)
    controller.reconcile(annotate(kube, "m", {"tailor.dev/approve": "run-uid-m"}), None)
    job = kube.get_job("ns", "m-promote")
    assert job is not None and kube.calls.count("create Job") == 1
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-1] == \
        "tailor_trainer.promote"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-m"
    body = kube.get_trainingjob("ns", "m")
    assert body is not None and body["status"]["promotion"]["approval"]["decision"] == "Approved"
    # Its echo, an operator restart (a fresh controller), and a running Job: nothing new.
    controller.reconcile(body, None)
    TrainingJobController(kube, OperatorSettings()).reconcile(
        kube.get_trainingjob("ns", "m") or {}, None)
    assert kube.calls.count("create Job") == 1
    # The Job completes: its event reconciles the TrainingJob, now Promoted.
    done = kube.objects[("Job", "ns", "m-promote")]
    done["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    assert controller.promote_job_settled(done)
    controller.reconcile(kube.get_trainingjob("ns", "m") or {}, None)
    body = kube.get_trainingjob("ns", "m")
    assert body is not None and body["status"]["promotion"]["verdict"] == "Promoted"
    assert reason(body, "Promoted") == "Promoted"
    controller._events.shutdown(wait=True)  # Events are posted off the reconcile's path
    assert [call for call in kube.calls if call.startswith("event")] == [
        "event Promoting", "event Approved"]


def test_an_approval_naming_another_run_creates_nothing(
        kube: FakeKube, controller: TrainingJobController) -> None:
    awaiting(kube)
    before = kube.get_trainingjob("ns", "m")
    controller.reconcile(annotate(kube, "m", {"tailor.dev/approve": "run-other"}), None)
    controller._events.shutdown(wait=True)
    assert kube.calls == ["event ApprovalRefused"]  # no Job, no status patch
    after = kube.get_trainingjob("ns", "m")
    assert before is not None and after is not None and after["status"] == before["status"]


def test_a_running_promote_jobs_updates_need_no_reconcile(
        controller: TrainingJobController) -> None:
    job: Obj = {"metadata": {"name": "m-promote", "ownerReferences": [{"uid": "u"}]},
                "status": {"active": 1}}
    assert not controller.promote_job_settled(job)
    job["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    assert controller.promote_job_settled(job)
