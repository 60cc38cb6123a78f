"""Scenario 3: MinIO stopped for 30 s during checkpoint uploads of a real training run.

A one-worker text-classification run (tiny BERT, a checkpoint every 10 steps); right after the
first complete checkpoint MinIO is SIGKILLed, kept away 30 s, and started again. Proves: the
job survives (it succeeds, retrying its transfers or restarting within its backoff limit); no
checkpoint is ever visible as complete without its whole state (each is verified against its
digest when first seen); a restarted attempt resumes from a complete checkpoint, not from
scratch, and lands on the same loss curve.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.chaoslib import (
    Operator,
    condition,
    figures,
    start_component,
    stop_component,
)
from tests.chaos.chaostrain import (
    EVERY_STEPS,
    STEPS,
    CheckpointAudit,
    LossSampler,
    finished,
    recorded,
    start_training,
    upload_inputs,
)
from tests.support.testing import StackHandle, eventually

JOB = "minio-outage"
OUTAGE_SECONDS = 30.0


@pytest.mark.timeout(1200)
# long: one scenario read top to bottom: run, take MinIO away mid-upload, then the verdicts
def test_minio_down_30s_during_checkpoints_the_job_survives_and_resumes(
        stack: StackHandle, namespace: str, crds: None, bucket: str, storage_secret: str,
        tmp_path: Path) -> None:
    upload_inputs(stack, bucket, tmp_path)
    operator = Operator(stack, tmp_path / "operator.log", "--namespace", namespace)
    audit: CheckpointAudit | None = None
    sampler: LossSampler | None = None
    try:
        run_id, audit, sampler = start_training(stack, namespace, bucket, JOB, 1, backoff_limit=3)
        before = eventually(lambda: (c := audit.complete()) and c[-1], timeout=600,
                            what="the first complete checkpoint")
        stop_component(stack, "minio")
        stopped = time.monotonic()
        at_stop = sampler.last_step
        time.sleep(OUTAGE_SECONDS)  # the outage itself
        back_after = start_component(stack, "minio")
        outage = time.monotonic() - stopped
        done = finished(stack, namespace, JOB)
    finally:
        operator.stop()
        for watcher in (audit, sampler):
            if watcher is not None:
                watcher.stop()
    run = recorded(stack, bucket, run_id, sampler)
    resumed, steps, breaks = run.resumed, run.steps, run.breaks
    status = done["status"]
    restarts = status.get("workers", {}).get("restarts")
    figures("MinIO stopped 30 s during checkpoint uploads", {
        "outcome": status.get("phase"), "group restarts": restarts,
        "failure": {k: v for k, v in status.get("failure", {}).items() if k != "message"},
        "conditions": {c["type"]: c["reason"] for c in status.get("conditions", [])
                       if c["status"] == "True"},
        "MinIO away s": round(outage, 1), "MinIO healthy after restart s": round(back_after, 1),
        "last complete checkpoint at stop": before, "step at stop (live)": at_stop,
        "resumed from step": resumed, "checkpoint interval (steps)": EVERY_STEPS,
        "history steps": f"{steps[0]}..{steps[-1]} ({len(steps)})" if steps else "none",
        "live loss samples compared": len(sampler.seen), "curve breaks": len(breaks),
        "checkpoints verified": len(audit.verified),
        "partial checkpoints seen complete": len(audit.partial),
        "audit polls while MinIO was away": audit.unreachable_polls,
    })
    assert condition(done, "Succeeded").get("status") == "True", status
    assert not audit.partial, audit.partial
    assert steps == list(range(1, STEPS + 1))
    assert not breaks, breaks
    if restarts:  # a restarted group resumes from a complete checkpoint, never from scratch
        assert resumed is not None and resumed >= before
