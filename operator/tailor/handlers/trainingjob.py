"""Kopf handlers for TrainingJobs and their worker Jobs.

Level-triggered: every event of a TrainingJob or of its worker Job reconciles that TrainingJob
from what is observed now. Kopf keeps two in-memory indexes (TrainingJobs, worker Jobs by
their TrainingJob), so a reconcile needs no read of either. No handler needs a finalizer:
children are owned, and the garbage collector removes them with the TrainingJob.
"""

from __future__ import annotations

from typing import Any

import kopf

from tailor.api.constants import (
    COMPONENT_WORKERS,
    GROUP,
    LABEL_COMPONENT,
    LABEL_TRAININGJOB,
    TRAININGJOB_PLURAL,
    VERSION,
)
from tailor.k8s import slim
from tailor.runtime import controller

WORKER_JOBS = {LABEL_COMPONENT: COMPONENT_WORKERS, LABEL_TRAININGJOB: kopf.PRESENT}


@kopf.index(GROUP, VERSION, TRAININGJOB_PLURAL)
def trainingjob_index(namespace: str, name: str, body: kopf.Body, **_: Any
                      ) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, name): slim(body)}


@kopf.index("batch", "v1", "jobs", labels=WORKER_JOBS)
def worker_job_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any
                     ) -> dict[tuple[str, str], dict[str, Any]]:
    return {(namespace, labels[LABEL_TRAININGJOB]): slim(body, keep_spec=False)}


def _one(index: kopf.Index[tuple[str, str], dict[str, Any]], key: tuple[str, str]
         ) -> dict[str, Any] | None:
    store = index.get(key)
    return next(iter(store), None) if store else None


@kopf.on.event(GROUP, VERSION, TRAININGJOB_PLURAL)
def trainingjob_event(event: kopf.RawEvent, body: kopf.Body, namespace: str, name: str,
                      worker_job_index: kopf.Index[tuple[str, str], dict[str, Any]],
                      **_: Any) -> None:
    if event["type"] == "DELETED":
        controller().forget(namespace, name)
        return
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    controller().reconcile(slim(body), _one(worker_job_index, (namespace, name)))


@kopf.on.event("batch", "v1", "jobs", labels=WORKER_JOBS)
def worker_job_event(event: kopf.RawEvent, body: kopf.Body, namespace: str, labels: kopf.Labels,
                     trainingjob_index: kopf.Index[tuple[str, str], dict[str, Any]],
                     **_: Any) -> None:
    parent = _one(trainingjob_index, (namespace, labels[LABEL_TRAININGJOB]))
    if parent is None or parent["metadata"].get("deletionTimestamp"):
        return
    owner_uids = {o.get("uid") for o in body.get("metadata", {}).get("ownerReferences", [])}
    if parent["metadata"]["uid"] not in owner_uids:
        return  # a child of an earlier TrainingJob with the same name
    job = None if event["type"] == "DELETED" else slim(body, keep_spec=False)
    controller().reconcile(parent, job)
