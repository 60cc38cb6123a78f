"""The cluster side of a search (spec.tuning): read the trials' worker groups, apply a decision
to them, scrape the running trials' validation curves, and count trials in metrics.

The TrainingJob controller calls it under the job's lock; what to do is decided by
`tailor.assess.tuning`. Unlike the job's own worker group, a trial's group is created only after
the status that records the trial (its number and parameters) has been written: a crash in
between leaves a recorded trial without a group, which the next reconcile creates, never a group
the status does not know.
"""

from __future__ import annotations

import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import Gauge
from tailor_contract import constants as c
from tailor_contract.trainingjob import TrainingJobSpec

from tailor.assess import tuning
from tailor.assess.trainingjob import JOB_UID_LABEL, Decision
from tailor.assess.tuning import Observed
from tailor.builders.trainingjob import INDEX_LABEL, JobRef
from tailor.builders.tuning import build_final_run, build_trial
from tailor.io import metrics, progress
from tailor.io.k8s import POOL_SIZE, Kube, Obj

log = logging.getLogger("tailor.controllers.trials")


def selector(name: str) -> str:
    """Every trial group of TrainingJob `name`."""
    return f"{c.LABEL_TRAININGJOB}={name},{c.LABEL_COMPONENT}={c.COMPONENT_TRIAL}"


def searching(body: Obj, spec: TrainingJobSpec) -> bool:
    """The job has a search that has not ended."""
    return spec.tuning is not None and not tuning.search_done(body.get("status") or {})


class Trials:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._pool = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="trials")

    def groups(self, namespace: str, name: str) -> list[Obj]:
        return self.kube.list_jobs(namespace, selector(name))

    def observe(self, body: Obj, jobs: list[Obj], curves: dict[int, list[Obj]] | None = None
                ) -> Observed:
        """The trial groups by number, with the pods of those that finished unreported."""
        seen = Observed(jobs={tuning.trial_number(j): j for j in jobs}, curves=curves or {})
        status, namespace = body.get("status") or {}, body["metadata"]["namespace"]
        finished = [j for j in jobs if tuning.needs_pods(status, j)]
        pods = self._pool.map(lambda j: self.kube.list_pods(
            namespace, f"{JOB_UID_LABEL}={j['metadata']['uid']}"), finished)
        seen.pods = {tuning.trial_number(j): p for j, p in zip(finished, pods, strict=True)}
        return seen

    def apply(self, decision: Decision, spec: TrainingJobSpec, raw_spec: Obj, ref: JobRef,
              image: str) -> None:
        """Start and stop trial groups as decided (once the status recording them is
        written); both are idempotent, so a repeated step does no harm."""
        def start(trial: tuning.TrialStart) -> None:
            service, job = build_trial(spec, raw_spec, ref, number=trial.number,
                                       parameters=trial.parameters, image=image,
                                       attempt=trial.attempt,
                                       deadline_seconds=decision.deadline_seconds)
            self.kube.create(service)
            self.kube.create(job)

        def stop(job: Obj) -> None:
            self.kube.delete_job(ref.namespace, job["metadata"]["name"], job["metadata"]["uid"])

        work = [self._pool.submit(start, t) for t in decision.trial_starts]
        work += [self._pool.submit(stop, j) for j in decision.trial_deletes]
        for done in work:
            done.result()

    @staticmethod
    def final_run(spec: TrainingJobSpec, raw_spec: Obj, ref: JobRef, status: Obj, *,
                  image: str, attempt: int, deadline_seconds: int | None) -> Obj:
        """The final run's worker Job, from the completed search in `status`."""
        search = status.get("tuning") or {}
        return build_final_run(spec, raw_spec, ref, best=tuning.final_parameters(search),
                               search=tuning.summary_for_final_run(spec, search), image=image,
                               attempt=attempt, deadline_seconds=deadline_seconds)

    def curves(self, body: Obj) -> dict[int, list[Obj]]:
        """The validation curves the running trials' worker 0 serve now, where they grew."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        trials = ((body.get("status") or {}).get("tuning") or {}).get("trials") or []
        running = {int(t["number"]): len(t.get("curve") or []) for t in trials
                   if t.get("state") == c.TRIAL_RUNNING}
        if not running:
            return {}
        pods = [p for p in self.kube.list_pods(namespace, f"{selector(name)},{INDEX_LABEL}=0")
                if (p.get("status") or {}).get("phase") == "Running"
                and (p.get("status") or {}).get("podIP")]
        by_trial = {int(p["metadata"]["labels"][c.LABEL_TRIAL]): p["status"]["podIP"]
                    for p in pods if int(p["metadata"]["labels"][c.LABEL_TRIAL]) in running}
        pages = dict(zip(by_trial, self._pool.map(progress.fetch, by_trial.values()),
                         strict=True))
        grown = {}
        for number, page in pages.items():
            curve = progress.parse_curve(page) if page else []
            if len(curve) > running[number]:
                grown[number] = curve
        return grown


def record(namespace: str, name: str, old: Obj, new: Obj) -> None:
    """Trials that ended in this step, the running count and the best objective."""
    before = {t["number"]: t["state"] for t in (old.get("tuning") or {}).get("trials") or []}
    search = new.get("tuning") or {}
    for trial in search.get("trials") or []:
        state = trial["state"]
        if state in tuning.FINISHED and before.get(trial["number"]) != state:
            metrics.TRIALS.labels(namespace, state).inc()
    if search.get("state") == c.SEARCH_SEARCHING:
        metrics.TRIALS_RUNNING.labels(namespace, name).set(search.get("trialsRunning", 0))
    elif (old.get("tuning") or {}).get("state") == c.SEARCH_SEARCHING:
        metrics.TRIALS_RUNNING.remove(namespace, name)
    best, metric = search.get("bestTrial"), (search.get("objective") or {}).get("metric")
    if best is not None and metric:
        metrics.BEST_OBJECTIVE.labels(namespace, name, metric).set(best["value"])


def forget(namespace: str, name: str) -> None:
    """A deleted job's series go with it."""
    series: list[tuple[Gauge, tuple[str, ...]]] = [(metrics.TRIALS_RUNNING, (namespace, name))]
    series += [(metrics.BEST_OBJECTIVE, (namespace, name, metric))
               for metric in ("accuracy", "macro-f1", "loss")]
    for gauge, labels in series:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)


__all__ = ["Trials", "forget", "record", "searching", "selector"]
