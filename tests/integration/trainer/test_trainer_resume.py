"""Exact resume: a run killed after a checkpoint continues from that step, on the same loss
curve as a run that was never interrupted; SIGTERM writes a checkpoint before exiting."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from typing import Any

import pytest
from conftest import S3, Trainer, to_csv
from tailor_contract.trainer_api import EXIT_RETRYABLE

CLASSES = ("business", "sport", "tech")
WORDS = {"business": "market shares profit bank", "sport": "match goal team league",
         "tech": "software chip phone internet"}
STEPS = 100


def data() -> bytes:
    # Long enough inputs and batches that a step takes a noticeable time even on a tiny model.
    rows = [{"id": f"{c}-{i}", "text": " ".join([f"{WORDS[c]} item {i}"] * 20), "label": c}
            for c in CLASSES for i in range(400)]
    return to_csv(rows)


def spec(trainer: Trainer, s3: S3, model: str, base: str) -> dict[str, Any]:
    uri = s3.put(f"data/{model}.csv", data())
    return trainer.spec(model, uri, base, model={"name": model, "base": base,
                                                  "baseline": {"generic": False}},
                        hyperparameters={"epochs": 20, "maxSteps": STEPS, "batchSize": 32,
                                         "maxSequenceLength": 128, "earlyStoppingPatience": 0},
                        checkpoint={"interval": "10m", "everySteps": 10, "keep": 2})


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun puts its workers in sessions of their own)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out.extend(children)
        todo.extend(children)
    return out


def kill_all(pid: int) -> None:
    """SIGKILL a process and all its descendants at once, as losing a node would."""
    for target in [pid, *descendants(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)


def complete_steps(s3: S3, prefix: str) -> list[int]:
    return sorted(int(m.group(1)) for k in s3.keys(prefix)
                  if (m := re.search(r"step-(\d+)/COMPLETE$", k)))


def wait_for_checkpoint(s3: S3, prefix: str, proc: Any, at_least: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = complete_steps(s3, prefix)
        if steps and steps[-1] >= at_least:
            return steps[-1]
        assert proc.poll() is None, "the run ended before the checkpoint"
        time.sleep(0.1)  # poll interval, bounded by the deadline
    raise AssertionError(f"no checkpoint at step >= {at_least} within {timeout}s")


@pytest.fixture
def reference(trainer: Trainer, s3: S3, tiny_model) -> list[dict[str, float]]:
    """The loss curve of a run that is never interrupted."""
    result = trainer.run(trainer.env(spec(trainer, s3, "resume-ref", str(tiny_model)), "ref"),
                         nproc=2, timeout=300)
    assert result.code == 0, result.log[-3000:]
    history: list[dict[str, float]] = s3.json("models/resume-ref/runs/ref/metrics.json")["history"]
    assert len(history) == STEPS
    return history


def test_killed_run_resumes_from_its_last_checkpoint_on_the_same_curve(
        trainer: Trainer, s3: S3, tiny_model, reference: list[dict[str, float]]) -> None:
    model = "resume-kill"
    env = trainer.env(spec(trainer, s3, model, str(tiny_model)), "run-1")
    prefix = f"models/{model}/runs/run-1/checkpoints/"
    proc = trainer.start(env, nproc=2)
    reached = wait_for_checkpoint(s3, prefix, proc, at_least=20, timeout=240)
    workers = descendants(proc.pid)
    kill_all(proc.pid)  # no chance to clean up: a node lost
    proc.wait()
    for pid in workers:  # reap-independent check that nothing is left running
        deadline = time.monotonic() + 30
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.05)  # poll interval, bounded by the deadline
    latest = complete_steps(s3, prefix)[-1]
    assert reached <= latest < STEPS

    result = trainer.run(trainer.env(spec(trainer, s3, model, str(tiny_model)), "run-1"),
                         nproc=2, timeout=300)
    assert result.code == 0, result.log[-3000:]
    metrics = s3.json(f"models/{model}/runs/run-1/metrics.json")
    assert metrics["training"]["resumedFrom"] == latest
    assert f"resumed from checkpoint step {latest}" in result.log
    history = metrics["history"]
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    for ours, theirs in zip(history, reference, strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5, abs=1e-7), ours["step"]
        assert ours["lr"] == pytest.approx(theirs["lr"])
    # Only `keep` complete checkpoints remain.
    assert len(complete_steps(s3, prefix)) <= 2

    # A group restarted after its run finished trains nothing and reports the same outcome.
    again = trainer.run(trainer.env(spec(trainer, s3, model, str(tiny_model)), "run-1"),
                        nproc=2, timeout=300)
    assert again.code == 0, again.log[-3000:]
    assert "run-1 is already complete; nothing to train" in again.log
    assert result.summary is not None and again.summary is not None
    assert result.summary.data_quality != ""
    assert (again.summary.reason, again.summary.promoted, again.summary.data_quality,
            again.summary.data_quality_message, again.summary.metrics) == (
        result.summary.reason, result.summary.promoted, result.summary.data_quality,
        result.summary.data_quality_message, result.summary.metrics)


def test_sigterm_writes_a_checkpoint_and_exits_retryable(trainer: Trainer, s3: S3,
                                                         tiny_model) -> None:
    model = "resume-term"
    env = trainer.env(spec(trainer, s3, model, str(tiny_model)), "run-1")
    prefix = f"models/{model}/runs/run-1/checkpoints/"
    proc = trainer.start(env, nproc=2)
    wait_for_checkpoint(s3, prefix, proc, at_least=10, timeout=240)
    os.kill(proc.pid, signal.SIGTERM)  # the kubelet signals the container's first process
    result = trainer.finish(proc, env, timeout=120)
    assert result.code in (EXIT_RETRYABLE, 128 + signal.SIGTERM), result.log[-3000:]
    match = re.search(r"stopped by SIGTERM at step (\d+); checkpoint written", result.log)
    assert match, result.log[-3000:]
    assert int(match.group(1)) in complete_steps(s3, prefix)
    assert not s3.keys(f"models/{model}/runs/run-1/manifest.json")
