"""The TrainingJob controller: applies `tailor.assess.trainingjob.assess` to the cluster.

Reconciles of one TrainingJob are serialized. Each creates children first (deterministic
names: creating one twice is harmless), then writes the new status, guarded by the object's
resourceVersion, and only then deletes (a worker Job of a restart): if the operator dies in
between, the next reconcile reads that status and finishes the step, and a stale read can never
roll the status back (the guarded patch conflicts and is redone). A finished job's approval
(tailor.assess.approval) starts the promote Job the same way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import ValidationError
from tailor_contract import clock, names
from tailor_contract import constants as c
from tailor_contract.trainingjob import TrainingJobSpec

from tailor.assess import approval, startup
from tailor.assess import trainingjob as lifecycle
from tailor.assess.conditions import is_true, upsert
from tailor.builders.promote import build_promote_job
from tailor.builders.trainingjob import (
    INDEX_LABEL,
    JobRef,
    build_service,
    build_worker_job,
    with_operator_defaults,
)
from tailor.controllers import trials as search
from tailor.controllers.job_metrics import JobMetrics, outcome
from tailor.controllers.keyed_locks import KeyedLocks
from tailor.io import metrics, progress
from tailor.io.k8s import EVENT_THREADS, POOL_SIZE, Conflict, Kube, Obj, slim
from tailor.settings import OperatorSettings

log = logging.getLogger("tailor.controllers.trainingjob")
MAX_CONFLICT_RETRIES = 5


def _newer(a: Obj | None, b: Obj | None) -> Obj | None:
    """The more recent of two copies of one object (by resourceVersion)."""
    if a is None or b is None:
        return a or b
    try:
        ra, rb = int(a["metadata"]["resourceVersion"]), int(b["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return a
    return a if ra >= rb else b


class TrainingJobController:
    def __init__(self, kube: Kube, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self._locks = KeyedLocks()
        self._metrics = JobMetrics()
        # The newest copy of each TrainingJob this process has seen or written: Kopf's watch
        # may deliver our own status patch after an event of a child.
        self._latest: dict[tuple[str, str], Obj] = {}
        # What the last completed reconcile of each job acted on: the (uid, resourceVersion)
        # its guarded status patch produced, and the essence of the worker Job it saw. Kopf's
        # event filters read them (see handlers/trainingjob.py) to skip events that cannot
        # change a decision: our own patch coming back, a Job update of fields we never read.
        self._written: dict[tuple[str, str], tuple[str, str]] = {}
        self._seen_jobs: dict[tuple[str, str], tuple[Any, ...] | None] = {}
        self._seen_trials: dict[tuple[str, str], dict[str, tuple[Any, ...] | None]] = {}
        self.trials = search.Trials(kube)
        # Events are best-effort and off the reconcile's critical path.
        self._events = ThreadPoolExecutor(max_workers=EVENT_THREADS, thread_name_prefix="events")
        # A new job's Service is created alongside its worker Job, not before it.
        self._services = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="services")

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._latest.pop(key, None)
        self._written.pop(key, None)
        self._seen_jobs.pop(key, None)
        self._seen_trials.pop(key, None)
        search.forget(namespace, name)
        self._metrics.set_phase(key, None)
        self._locks.discard(key)

    # ------------------------------------------------------------------ event filters
    def is_own_write(self, body: Obj) -> bool:
        """Whether this TrainingJob is exactly what our last completed reconcile wrote: that
        reconcile already decided from this spec and status, and any later change of the
        worker Job comes with an event of its own."""
        meta = body.get("metadata", {})
        written = self._written.get((meta.get("namespace"), meta.get("name")))
        return written is not None and written == (meta.get("uid"), meta.get("resourceVersion"))

    def job_seen(self, namespace: str, name: str, job: Obj) -> bool:
        """Whether the last completed reconcile of TrainingJob `name` saw a worker Job with the
        same essence as `job` (so reconciling again would decide the same)."""
        key = (namespace, name)
        return key in self._seen_jobs and self._seen_jobs[key] == lifecycle.job_essence(job)

    def trial_seen(self, namespace: str, name: str, job: Obj) -> bool:
        """Like `job_seen`, for one trial group of TrainingJob `name`'s search."""
        seen = self._seen_trials.get((namespace, name)) or {}
        job_name = job["metadata"]["name"]
        return job_name in seen and seen[job_name] == lifecycle.job_essence(job)

    # ------------------------------------------------------------------ reconcile
    def reconcile(self, body: Obj, job: Obj | None, *, job_known: bool = True,
                  trials: list[Obj] | None = None, curves: dict[int, list[Obj]] | None = None,
                  unless: Callable[[], bool] | None = None) -> None:
        """Bring one TrainingJob a step closer to done. `job` is its worker Job as last seen
        (None if none exists); with `job_known=False` it is read from the API, and so are the
        trial groups of a search unless `trials` gives them. `curves` are trials' validation
        curves just scraped. `unless` is the event filter again, asked once the job's lock is
        held: the step that held it may just have acted on what this event shows."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        started = time.monotonic()
        with self._locks[key]:
            if unless is not None and unless():
                return
            try:
                self._reconcile(key, body, job, job_known, trials, curves)
            except Exception:
                metrics.RECONCILE_ERRORS.labels("TrainingJob").inc()
                raise
            finally:
                metrics.RECONCILE_SECONDS.labels("TrainingJob").observe(
                    time.monotonic() - started)

    def _reconcile(self, key: tuple[str, str], body: Obj, job: Obj | None,
                   job_known: bool, trials: list[Obj] | None,
                   curves: dict[int, list[Obj]] | None) -> None:
        latest = self._latest.get(key)
        if latest is not None and latest["metadata"].get("uid") != body["metadata"].get("uid"):
            latest = None  # a new object with the same name
        body = _newer(body, latest) or body
        if not job_known:
            job = self.kube.get_job(key[0], names.worker_job_name(key[1]))
        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                self._step(key, body, job, trials, curves)
                return
            except Conflict:
                fresh = self.kube.get_trainingjob(*key)
                if fresh is None:
                    return
                body = fresh
                job = self.kube.get_job(key[0], names.worker_job_name(key[1]))
                trials = None
        log.warning("TrainingJob %s/%s kept changing; the next event retries", *key)

    # long: one step is one ordered sequence (read, decide, create, write, delete), kept whole
    def _step(self, key: tuple[str, str], body: Obj, job: Obj | None,
              trials: list[Obj] | None, curves: dict[int, list[Obj]] | None) -> None:
        ref = JobRef(key[1], key[0], body["metadata"]["uid"])
        config = self.settings
        raw_spec = with_operator_defaults(body.get("spec") or {},
                                          s3_endpoint=config.default_s3_endpoint,
                                          s3_region=config.default_s3_region,
                                          tracking_uri=config.default_tracking_uri)
        try:
            spec = TrainingJobSpec.model_validate(raw_spec)
        except ValidationError as error:
            self._stall(body, f"the spec does not parse: {error.errors()[0]['msg']}")
            return
        written: tuple[str, str] | None = None
        now = clock.stamp()
        pods = self._pods(key, body, job, spec, now)
        promote_job, promote_pods = self._promote_job(key, body)
        observed = None
        if search.searching(body, spec):
            if trials is None:
                trials = self.trials.groups(*key)
            observed = self.trials.observe(body, trials, curves)
        decision = lifecycle.assess(body, spec, job, pods, now, promote_job=promote_job,
                                    promote_pods=promote_pods, trials=observed)
        status = decision.status
        if decision.action == "promote":
            # Like the worker Job: created before the status that records it, under a
            # deterministic name, so a crash in between only repeats this step.
            self.kube.create(build_promote_job(spec, raw_spec, ref,
                                               image=spec.image or self.settings.trainer_image))
        if decision.action == "create":
            # Children first: creating them is idempotent (deterministic names), so a crash
            # before the status patch below only repeats this step. Both at once: neither
            # needs the other.
            service = self._services.submit(self.kube.create, build_service(ref))
            image = spec.image or self.settings.trainer_image
            if spec.tuning is not None:
                worker_job = self.trials.final_run(spec, raw_spec, ref, status, image=image,
                                                   attempt=decision.attempt,
                                                   deadline_seconds=decision.deadline_seconds)
            else:
                worker_job = build_worker_job(spec, raw_spec, ref, image=image,
                                              attempt=decision.attempt,
                                              deadline_seconds=decision.deadline_seconds)
            created = self.kube.create(worker_job)
            service.result()
            if created is not None:
                # The status says what is true once the Job exists (workers starting, or
                # queued), as the reconcile of the Job's own ADDED event would have: that
                # event then changes nothing and is skipped, saving a patch per job.
                after = lifecycle.assess({**body, "status": status}, spec, created, None, now)
                if after.action == "none":
                    status, job = after.status, created
        old_status = body.get("status") or {}
        if status != old_status:
            # Before any deletion: a restart is counted in status before the old group goes.
            patched = self.kube.patch_trainingjob_status(body, status)
            if patched is None:
                return
            self._latest[key] = slim(patched)
            written = (patched["metadata"]["uid"], patched["metadata"]["resourceVersion"])
        if decision.action == "delete" and job is not None:
            self.kube.delete_job(key[0], job["metadata"]["name"], job["metadata"]["uid"])
        if decision.trial_starts or decision.trial_deletes:
            self.trials.apply(decision, spec, raw_spec, ref,
                              spec.image or self.settings.trainer_image)
        for event in decision.events:
            self._events.submit(self.kube.event, body, event.type, event.reason, event.message)
        self._metrics.record(key, old_status, status)
        if spec.tuning is not None:
            search.record(*key, old_status, status)
        # Only now is the step complete: an event of what it wrote or saw may be skipped.
        if written is not None:
            self._written[key] = written
        self._seen_jobs[key] = lifecycle.job_essence(job)
        if observed is not None:
            self._seen_trials[key] = {j["metadata"]["name"]: lifecycle.job_essence(j)
                                      for j in observed.jobs.values()}

    def _pods(self, key: tuple[str, str], body: Obj, job: Obj | None, spec: TrainingJobSpec,
              now: str) -> list[Obj] | None:
        """The worker group's pods, read once its Job has finished (and only until the
        TrainingJob has recorded the outcome), or while it has been starting for a while
        (a pod that cannot start changes nothing in its Job)."""
        if job is None or lifecycle.finished(body) or not (
                lifecycle.job_finished(job) or
                startup.wants_pods(job, body.get("status") or {}, spec, now)):
            return None
        return self.kube.list_pods(key[0],
                                   f"{lifecycle.JOB_UID_LABEL}={job['metadata']['uid']}")

    def _promote_job(self, key: tuple[str, str], body: Obj
                     ) -> tuple[Obj | None, list[Obj] | None]:
        """The promote Job, read only while a run awaits approval and a decision was asked
        for (rare: a finished job costs no read), with its pods once it has finished."""
        if not approval.wants_promote_job(body):
            return None, None
        promote_job = self.kube.get_job(key[0], names.promote_job_name(key[1]))
        if approval.job_state(promote_job, body["metadata"]["uid"]) not in ("succeeded",
                                                                            "failed"):
            return promote_job, None
        assert promote_job is not None
        return promote_job, self.kube.list_pods(
            key[0], f"{lifecycle.JOB_UID_LABEL}={promote_job['metadata']['uid']}")

    def promote_job_settled(self, job: Obj) -> bool:
        """Whether a promote Job's event may change a decision: it finished (the Job
        controller's other updates, its pod counts, change nothing the approval reads)."""
        return approval.job_state(job, _owner_uid(job)) in ("succeeded", "failed")

    def _stall(self, body: Obj, message: str) -> None:
        status = dict(body.get("status") or {})
        generation = body["metadata"].get("generation")
        status["observedGeneration"] = generation
        status["conditions"] = upsert(status.get("conditions"), c.CONDITION_STALLED, True,
                                      c.REASON_INVALID_SPEC, message, generation)
        if status != body.get("status"):
            self.kube.patch_trainingjob_status(body, status, precondition=False)
            self.kube.event(body, "Warning", c.REASON_INVALID_SPEC, message)

    # ------------------------------------------------------------------ housekeeping
    def housekeeping(self, trainingjobs: Callable[[], list[Obj]]) -> None:
        """One pass over known jobs: read progress of running ones, delete expired ones."""
        for body in trainingjobs():
            status = body.get("status") or {}
            key = (body["metadata"]["namespace"], body["metadata"]["name"])
            if is_true(status.get("conditions"), c.CONDITION_RUNNING) and \
                    (status.get("tuning") or {}).get("state") != c.SEARCH_SEARCHING:
                self._update_progress(key, body)
            ttl = (body.get("spec") or {}).get("runPolicy", {}).get("ttlSecondsAfterFinished")
            completed = status.get("completionTime")
            if ttl is not None and completed and outcome(status) is not None \
                    and lifecycle.seconds_between(completed, clock.stamp()) >= ttl:
                log.info("deleting %s/%s: ttlSecondsAfterFinished (%ss) passed", *key, ttl)
                self.kube.delete_trainingjob(*key, body["metadata"]["uid"])

    def resync(self, body: Obj) -> bool:
        """Re-assess one job as an event would, its worker Job read from the API (main.py
        paces these over the resync interval): a failed reconcile or a lost event converges.
        A finished job is skipped unless it awaits an approval decision (a promote Job to
        create or read); nothing else can change for it. True when it was reconciled."""
        if body["metadata"].get("deletionTimestamp") or (
                lifecycle.finished(body) and not approval.wants_promote_job(body)):
            return False
        metrics.RESYNCS.labels("TrainingJob").inc()
        self.reconcile(body, None, job_known=False)
        return True

    def check_starting(self, trainingjobs: Callable[[], list[Obj]]) -> None:
        """One pass over jobs whose workers are starting: a worker that cannot start, and the
        pending deadline passing, change nothing in the worker Job, so no event would come."""
        now = clock.stamp()
        for body in trainingjobs():
            if startup.needs_check(body, now):
                self.reconcile(body, None, job_known=False)

    def scrape_trials(self, trainingjobs: Callable[[], list[Obj]]) -> None:
        """One pass over searching jobs: a running trial's grown validation curve is recorded,
        and may stop the trial (pruning), at once."""
        for body in trainingjobs():
            status = body.get("status") or {}
            if (status.get("tuning") or {}).get("state") != c.SEARCH_SEARCHING:
                continue
            curves = self.trials.curves(body)
            if curves:
                self.reconcile(body, None, job_known=False, curves=curves)

    def _update_progress(self, key: tuple[str, str], body: Obj) -> None:
        pods = self.kube.list_pods(key[0], f"{c.LABEL_TRAININGJOB}={key[1]},"
                                           f"{c.LABEL_COMPONENT}={c.COMPONENT_WORKERS},"
                                           f"{INDEX_LABEL}=0")
        ip = next((p["status"].get("podIP") for p in pods
                   if p.get("status", {}).get("phase") == "Running"), None)
        if not ip:
            return
        update = progress.scrape(ip)
        old = (body.get("status") or {}).get("progress") or {}
        if update is None or {k: v for k, v in update.items() if k != "updateTime"} == \
                {k: v for k, v in old.items() if k != "updateTime"}:
            return
        with self._locks[key]:
            latest = self._latest.get(key)
            if latest is not None and not is_true((latest.get("status") or {}).get(
                    "conditions"), c.CONDITION_RUNNING):
                return  # finished or stopped meanwhile: the final status has its progress
            patched = self.kube.patch_trainingjob_status(body, {"progress": update},
                                                         precondition=False)
            if patched is not None:
                self._latest[key] = _newer(self._latest.get(key), slim(patched)) or slim(patched)


def _owner_uid(job: Obj) -> str:
    owners = job.get("metadata", {}).get("ownerReferences") or [{}]
    return str(owners[0].get("uid", ""))


def run_forever(stop: threading.Event, interval: float, step: Callable[[], None]) -> None:
    """Call `step` every `interval` seconds until `stop` is set, surviving its errors."""
    while not stop.wait(interval):
        try:
            step()
        except Exception:
            log.exception("housekeeping failed; retrying in %ss", interval)
