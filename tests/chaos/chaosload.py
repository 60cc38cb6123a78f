"""The load of scenarios 1 and 2: many of the cheapest TrainingJobs there are (one worker
running `true` under the launcher), and the checks that every one of them converged once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.chaos.chaoslib import ChildLedger, apply, condition, items, terminal
from tests.support.testing import StackHandle

# 0.4 CPU each: the node (2 CPUs allocatable here) runs at most 5 at a time (each is a
# torchrun launcher of ~0.5 GB), so the load is bounded however many jobs are applied.
CHEAP_SPEC: dict[str, Any] = {
    "task": "custom", "workers": 1, "procsPerWorker": 1, "command": ["true"],
    "resources": {"requests": {"cpu": "400m", "memory": "64Mi"}},
    "runPolicy": {"backoffLimit": 2},
}
BATCH = 25  # TrainingJobs per kubectl apply


def cheap_job(name: str) -> dict[str, Any]:
    return {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name}, "spec": CHEAP_SPEC}


def apply_load(stack: StackHandle, namespace: str, names: list[str],
               between_batches: Callable[[], None] = lambda: None) -> None:
    """Apply the jobs in batches (kubectl retries nothing: a batch refused while the API server
    is away is applied again, which is a no-op for the ones already there)."""
    for start in range(0, len(names), BATCH):
        batch = [cheap_job(n) for n in names[start:start + BATCH]]
        deadline = time.monotonic() + 180
        while True:
            try:
                apply(stack, namespace, batch)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)  # the API server is being restarted; bounded by the deadline
        between_batches()


def progress(stack: StackHandle, namespace: str) -> tuple[int, list[dict[str, Any]]]:
    """(terminal TrainingJobs, all of them)."""
    jobs = items(stack, namespace, "trainingjobs")
    return sum(1 for tj in jobs if terminal(tj)), jobs


def wait_terminal(stack: StackHandle, namespace: str, count: int, timeout: float) -> bool:
    """Whether all `count` TrainingJobs became terminal before the deadline (the figures are
    printed either way, so a failed run still says how far it got)."""
    deadline = time.monotonic() + timeout
    while progress(stack, namespace)[0] < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(2)  # poll interval, bounded by the deadline
    return True


def verify(stack: StackHandle, namespace: str, names: list[str],
           ledger: ChildLedger) -> dict[str, Any]:
    """The convergence figures; asserts none lost, none duplicated, all terminal and true."""
    jobs = {tj["metadata"]["name"]: tj for tj in items(stack, namespace, "trainingjobs")}
    lost = sorted(set(names) - set(jobs))
    not_terminal = sorted(n for n, tj in jobs.items() if not terminal(tj))
    failed = sorted(n for n, tj in jobs.items()
                    if condition(tj, "Failed").get("status") == "True")
    stale = sorted(n for n, tj in jobs.items() if tj.get("status", {}).get(
        "observedGeneration") != tj["metadata"]["generation"])
    # A phase that contradicts the conditions is a status that is not true.
    untrue = sorted(n for n, tj in jobs.items() if terminal(tj) and tj["status"].get("phase")
                    not in ("Succeeded", "Failed"))
    restarts = {n: tj.get("status", {}).get("workers", {}).get("restarts", 0)
                for n, tj in jobs.items()}
    worker_uids = ledger.counts("jobs")
    service_uids = ledger.counts("services")
    # A group restart replaces the worker Job on purpose; anything beyond that is a duplicate.
    duplicate_jobs = sorted(n for n in names if worker_uids.get(n, 0) > 1 + restarts.get(n, 0))
    duplicate_services = sorted(n for n in names if service_uids.get(n, 0) > 1)
    live = items(stack, namespace, "jobs")
    per_owner: dict[str, int] = {}
    for job in live:
        owner = job["metadata"].get("labels", {}).get("tailor.dev/trainingjob", "")
        per_owner[owner] = per_owner.get(owner, 0) + 1
    crowded = sorted(o for o, count in per_owner.items() if count > 1)
    causes: dict[str, int] = {}
    for tj in jobs.values():
        failure = tj.get("status", {}).get("failure") or {}
        if failure:
            cause = f"{failure.get('reason')}: {str(failure.get('message', ''))[:60]}"
            causes[cause] = causes.get(cause, 0) + 1
    result = {
        "jobs applied": len(names), "jobs found": len(jobs), "lost": len(lost),
        "terminal": len(jobs) - len(not_terminal), "succeeded": len(jobs) - len(failed)
        - len(not_terminal), "failed": len(failed),
        "worker Job uids seen": sum(worker_uids.values()),
        "group restarts": sum(restarts.values()),
        "duplicate worker Jobs": len(duplicate_jobs) + len(crowded),
        "duplicate Services": len(duplicate_services),
        "status behind generation": len(stale), "phase contradicting conditions": len(untrue),
        "watch reconnects": ledger.watch_errors,
        "last failure of each job that had one": causes,
    }
    problems = {"lost": lost, "not terminal": not_terminal, "failed": failed,
                "duplicate worker Jobs": duplicate_jobs + crowded,
                "duplicate Services": duplicate_services, "stale status": stale,
                "untrue phase": untrue}
    return {"figures": result, "problems": {k: v[:10] for k, v in problems.items() if v}}
