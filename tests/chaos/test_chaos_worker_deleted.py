"""Scenario 4: a worker pod deleted mid-training.

A real two-worker text-classification run (tiny BERT, a checkpoint every 10 steps); once a
checkpoint at step >= 20 is complete, worker 1's pod is deleted. Proves: the whole group
restarts (one restart), resumes from the last complete checkpoint, loses at most one checkpoint
interval of steps, and lands on the same loss curve (each step's loss as the first attempt
showed it live equals the final history's); every checkpoint seen complete matched its digest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.chaoslib import Operator, condition, figures, items
from tests.chaos.chaostrain import (
    EVERY_STEPS,
    STEPS,
    CheckpointAudit,
    finished,
    recorded,
    start_training,
    upload_inputs,
)
from tests.support.testing import StackHandle, eventually

JOB = "deleted-worker"


@pytest.mark.timeout(1200)
# long: one scenario read top to bottom: run, delete a worker mid-run, then the verdicts
def test_deleted_worker_pod_restarts_the_group_from_the_last_checkpoint(
        stack: StackHandle, namespace: str, crds: None, bucket: str, storage_secret: str,
        tmp_path: Path) -> None:
    upload_inputs(stack, bucket, tmp_path)
    operator = Operator(stack, tmp_path / "operator.log", "--namespace", namespace)
    audit: CheckpointAudit | None = None
    try:
        run_id, audit, sampler = start_training(stack, namespace, bucket, JOB, 2, backoff_limit=2)
        before = eventually(lambda: (c := audit.complete()) and c[-1] >= 2 * EVERY_STEPS
                            and c[-1], timeout=600, what="a checkpoint at step >= 20")
        [pod] = [p["metadata"]["name"] for p in items(stack, namespace, "pods",
                                                       f"tailor.dev/trainingjob={JOB}")
                 if p["spec"].get("hostname", "").endswith("-1")]
        stack.kubectl("delete", "pod", pod, "-n", namespace, "--wait=false")
        sampler.stop()
        at_delete = sampler.last_step
        done = finished(stack, namespace, JOB)
    finally:
        operator.stop()
        if audit is not None:
            audit.stop()
    run = recorded(stack, bucket, run_id, sampler)
    resumed, steps, breaks = run.resumed, run.steps, run.breaks
    status = done["status"]
    figures("worker pod deleted mid-training", {
        "outcome": status.get("phase"), "group restarts": status.get("workers", {}).get("restarts"),
        "failure": {k: v for k, v in status.get("failure", {}).items() if k != "message"},
        "last complete checkpoint at delete": before, "step at delete (live)": at_delete,
        "resumed from step": resumed,
        "steps lost": None if resumed is None else max(0, at_delete - resumed),
        "checkpoint interval (steps)": EVERY_STEPS,
        "history steps": f"{steps[0]}..{steps[-1]} ({len(steps)})" if steps else "none",
        "live loss samples compared": len(sampler.seen), "curve breaks": len(breaks),
        "checkpoints verified": len(audit.verified), "partial checkpoints seen complete":
        len(audit.partial),
    })
    assert condition(done, "Succeeded").get("status") == "True", status
    assert status.get("workers", {}).get("restarts") == 1
    assert at_delete < STEPS, "the worker was deleted after training ended"
    assert resumed is not None and resumed >= before
    assert at_delete - resumed <= EVERY_STEPS
    assert steps == list(range(1, STEPS + 1))
    assert sampler.seen and not breaks, breaks
    assert not audit.partial, audit.partial
