"""Kopf handlers for TrainingJobs and their worker Jobs.

Level-triggered: every event of a TrainingJob or of its worker Job reconciles that TrainingJob
from what is observed now. Kopf keeps two in-memory indexes (TrainingJobs, worker Jobs by
their TrainingJob), so a reconcile needs no read of either. No handler needs a finalizer:
children are owned, and the garbage collector removes them with the TrainingJob.

Filters, run on Kopf's event loop before a handler thread is taken, drop the updates that
cannot change a decision: our own status patch coming back, a worker Job update that leaves
everything the controller reads unchanged (most of the Job controller's status updates), and a
promote Job update before it has finished. Any other change of a TrainingJob passes, its
annotations included: an approve or reject annotation is what manual approval acts on. The
indexes are async for the same reason: a slim copy is cheaper than a hop to a thread.
"""

from __future__ import annotations

from typing import Any

import kopf
from tailor_contract.constants import (
    COMPONENT_PROMOTE,
    COMPONENT_TRIAL,
    COMPONENT_WORKERS,
    GROUP,
    LABEL_COMPONENT,
    LABEL_TRAININGJOB,
    TRAININGJOB_PLURAL,
    VERSION,
)

from tailor.io.k8s import slim
from tailor.runtime import controller

WORKER_JOBS = {LABEL_COMPONENT: COMPONENT_WORKERS, LABEL_TRAININGJOB: kopf.PRESENT}
PROMOTE_JOBS = {LABEL_COMPONENT: COMPONENT_PROMOTE, LABEL_TRAININGJOB: kopf.PRESENT}
TRIAL_JOBS = {LABEL_COMPONENT: COMPONENT_TRIAL, LABEL_TRAININGJOB: kopf.PRESENT}


@kopf.index(GROUP, VERSION, TRAININGJOB_PLURAL)
async def trainingjob_index(namespace: str, name: str, body: kopf.Body, **_: Any
                      ) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, name): slim(body)}


@kopf.index("batch", "v1", "jobs", labels=WORKER_JOBS)
async def worker_job_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any
                     ) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, labels[LABEL_TRAININGJOB]): slim(body, keep_spec=False)}


@kopf.index("batch", "v1", "jobs", labels=TRIAL_JOBS)
async def trial_job_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any
                          ) -> dict[tuple[str, str], dict[str, Any]]:
    """A search's trial groups (spec.tuning), several per TrainingJob."""
    return {(namespace, labels[LABEL_TRAININGJOB]): slim(body, keep_spec=False)}


def _one(index: kopf.Index[tuple[str, str], dict[str, Any]], key: tuple[str, str]
         ) -> dict[str, Any] | None:
    store = index.get(key)
    return next(iter(store), None) if store else None


def _all(index: kopf.Index[tuple[str, str], dict[str, Any]], key: tuple[str, str]
         ) -> list[dict[str, Any]]:
    store = index.get(key)
    return list(store) if store else []


def _owner(index: kopf.Index[tuple[str, str], dict[str, Any]], key: tuple[str, str],
           child: kopf.Body) -> dict[str, Any] | None:
    """The TrainingJob a child Job belongs to, unless it is being deleted or the child is of
    an earlier TrainingJob with the same name."""
    parent = _one(index, key)
    if parent is None or parent["metadata"].get("deletionTimestamp"):
        return None
    owners = {o.get("uid") for o in child.get("metadata", {}).get("ownerReferences", [])}
    return parent if parent["metadata"]["uid"] in owners else None


def _trainingjob_may_change(type: str | None, body: kopf.Body, **_: Any) -> bool:
    return type != "MODIFIED" or not controller().is_own_write(body)


def _worker_job_may_change(type: str | None, body: kopf.Body, namespace: str,
                           labels: kopf.Labels, **_: Any) -> bool:
    return type != "MODIFIED" or not controller().job_seen(namespace, labels[LABEL_TRAININGJOB],
                                                           body)


@kopf.on.event(GROUP, VERSION, TRAININGJOB_PLURAL, when=_trainingjob_may_change)
def trainingjob_event(event: kopf.RawEvent, body: kopf.Body, namespace: str, name: str,
                      worker_job_index: kopf.Index[tuple[str, str], dict[str, Any]],
                      trial_job_index: kopf.Index[tuple[str, str], dict[str, Any]],
                      **_: Any) -> None:
    if event["type"] == "DELETED":
        controller().forget(namespace, name)
        return
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    body_now = slim(body)
    controller().reconcile(body_now, _one(worker_job_index, (namespace, name)),
                           trials=_all(trial_job_index, (namespace, name)),
                           unless=lambda: controller().is_own_write(body_now))


@kopf.on.event("batch", "v1", "jobs", labels=WORKER_JOBS, when=_worker_job_may_change)
def worker_job_event(event: kopf.RawEvent, body: kopf.Body, namespace: str, labels: kopf.Labels,
                     trainingjob_index: kopf.Index[tuple[str, str], dict[str, Any]],
                     **_: Any) -> None:
    parent_name = labels[LABEL_TRAININGJOB]
    parent = _owner(trainingjob_index, (namespace, parent_name), body)
    if parent is None:
        return
    if event["type"] == "DELETED":
        controller().reconcile(parent, None)
        return
    job = slim(body, keep_spec=False)
    controller().reconcile(parent, job,
                           unless=lambda: controller().job_seen(namespace, parent_name, job))


def _trial_job_may_change(type: str | None, body: kopf.Body, namespace: str,
                          labels: kopf.Labels, **_: Any) -> bool:
    return type != "MODIFIED" or not controller().trial_seen(namespace,
                                                             labels[LABEL_TRAININGJOB], body)


@kopf.on.event("batch", "v1", "jobs", labels=TRIAL_JOBS, when=_trial_job_may_change)
def trial_job_event(event: kopf.RawEvent, body: kopf.Body, namespace: str, labels: kopf.Labels,
                    trainingjob_index: kopf.Index[tuple[str, str], dict[str, Any]],
                    worker_job_index: kopf.Index[tuple[str, str], dict[str, Any]],
                    trial_job_index: kopf.Index[tuple[str, str], dict[str, Any]],
                    **_: Any) -> None:
    """A trial group changed: the search may record its end and start the next trial."""
    key = (namespace, labels[LABEL_TRAININGJOB])
    parent = _owner(trainingjob_index, key, body)
    if parent is None:
        return
    trials = [j for j in _all(trial_job_index, key) if event["type"] != "DELETED"
              or j["metadata"].get("uid") != body["metadata"].get("uid")]
    job = slim(body, keep_spec=False)
    controller().reconcile(parent, _one(worker_job_index, key), trials=trials,
                           unless=lambda: event["type"] == "MODIFIED" and controller().trial_seen(
                               namespace, key[1], job))


def _promote_job_may_change(type: str | None, body: kopf.Body, **_: Any) -> bool:
    return type == "DELETED" or controller().promote_job_settled(body)


@kopf.on.event("batch", "v1", "jobs", labels=PROMOTE_JOBS, when=_promote_job_may_change)
def promote_job_event(body: kopf.Body, namespace: str, labels: kopf.Labels,
                      trainingjob_index: kopf.Index[tuple[str, str], dict[str, Any]],
                      worker_job_index: kopf.Index[tuple[str, str], dict[str, Any]],
                      **_: Any) -> None:
    """A promote Job finished or went away: the approval it carries out may change."""
    key = (namespace, labels[LABEL_TRAININGJOB])
    parent = _one(trainingjob_index, key)
    if parent is None or parent["metadata"].get("deletionTimestamp"):
        return
    controller().reconcile(parent, _one(worker_job_index, key))
