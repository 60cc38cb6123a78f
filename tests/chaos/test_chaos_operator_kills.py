"""Scenario 1: the operator SIGKILLed every 10 s while 200 TrainingJobs are applied and run.

Proves: reconciles are idempotent across crashes at any point (deterministic child names,
status written before children), and a restarted operator picks up every job where the last
one stopped: 0 duplicate children, 0 lost jobs, every job terminal with a true status.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.chaos.chaoslib import ChildLedger, Operator, figures, scaled
from tests.chaos.chaosload import apply_load, progress, verify, wait_terminal
from tests.support.testing import StackHandle, eventually

KILL_EVERY = 10.0
CHAOS_DEADLINE = 20 * 60  # seconds of killing at most; the suite stays bounded
SETTLE_DEADLINE = 5 * 60  # then one operator left alone must finish what is left


@pytest.mark.timeout(1800)
def test_operator_killed_every_10s_under_load_loses_and_duplicates_nothing(
        stack: StackHandle, namespace: str, crds: None, tmp_path: Path) -> None:
    count = scaled("TAILOR_CHAOS_JOBS", 200)
    names = [f"load-{i:03d}" for i in range(count)]
    ledger = ChildLedger(stack, namespace)
    lives: list[Operator] = []
    started = time.monotonic()

    def start() -> Operator:
        lives.append(Operator(stack, tmp_path / f"operator-{len(lives)}.log",
                              "--namespace", namespace, wait=False))
        return lives[-1]

    stop = threading.Event()

    def killer() -> None:
        current = start()
        while not stop.wait(KILL_EVERY):
            current.kill()
            current = start()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    done_while_killing = 0
    try:
        apply_load(stack, namespace, names)
        applied = time.monotonic() - started
        deadline = started + CHAOS_DEADLINE
        while time.monotonic() < deadline:
            done_while_killing, _ = progress(stack, namespace)
            if done_while_killing >= count:
                break
            time.sleep(2)  # poll interval, bounded by the deadline
        converged_while_killing = time.monotonic() - started
    finally:
        stop.set()
        thread.join(60)
    kills = len(lives) - 1
    last = lives[-1]
    try:
        converged = wait_terminal(stack, namespace, count, SETTLE_DEADLINE)
        total = time.monotonic() - started
        # Leave the last operator a moment more: a late duplicate would show in the ledger.
        eventually(last.alive, timeout=60, what="the last operator to answer")
        outcome = verify(stack, namespace, names, ledger)
    finally:
        last.stop()
        ledger.stop()
    figures("operator SIGKILLed every 10 s", {
        **outcome["figures"], "operator kills": kills,
        "terminal while killing": f"{done_while_killing}/{count}",
        "applied after s": round(applied, 1),
        "all terminal": converged, "after s": round(total, 1),
        "killing phase s": round(converged_while_killing, 1),
    })
    assert converged and not outcome["problems"], outcome["problems"]
    assert kills >= 3, "the load finished before the operator was killed three times"
