"""Scenario 2: the API server restarted twice while TrainingJobs are applied and run.

Proves: requests that fail while the API server is away are retried, watches resume, and the
periodic resync (`--resync-interval`) re-assesses every job, so each converges without any
outside event: none lost, none duplicated, every one terminal with a true status.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.chaos.chaoslib import (
    ChildLedger,
    Operator,
    figures,
    require_flags,
    scaled,
    start_component,
    stop_component,
)
from tests.chaos.chaosload import apply_load, verify, wait_terminal
from tests.support.testing import StackHandle

RESYNC_SECONDS = "20"
DOWN_SECONDS = 10.0  # how long the API server stays away each time
FIRST_RESTART_AFTER = 15.0  # seconds after the load starts; the second follows the first's return
SECOND_RESTART_AFTER = 30.0
CONVERGE_DEADLINE = 8 * 60


@pytest.mark.timeout(1200)
def test_apiserver_restarted_twice_under_load_every_job_converges(
        stack: StackHandle, namespace: str, crds: None, tmp_path: Path) -> None:
    require_flags("--resync-interval", item="1 (retries and resync)")
    count = scaled("TAILOR_CHAOS_API_JOBS", 60)
    names = [f"api-{i:03d}" for i in range(count)]
    operator = Operator(stack, tmp_path / "operator.log", "--namespace", namespace,
                        "--resync-interval", RESYNC_SECONDS)
    ledger = ChildLedger(stack, namespace)
    outages: list[float] = []  # seconds from the kill until the API server was healthy again
    failure: list[BaseException] = []

    def restarts() -> None:
        try:
            for wait in (FIRST_RESTART_AFTER, SECOND_RESTART_AFTER):
                time.sleep(wait)  # the scenario's schedule, not a wait for a condition
                killed = time.monotonic()
                stop_component(stack, "kube-apiserver")
                time.sleep(DOWN_SECONDS)  # the outage itself
                start_component(stack, "kube-apiserver")
                outages.append(time.monotonic() - killed)
        except BaseException as error:  # reported by the test thread below
            failure.append(error)

    started = time.monotonic()
    thread = threading.Thread(target=restarts, daemon=True)
    thread.start()
    try:
        apply_load(stack, namespace, names)
        thread.join(FIRST_RESTART_AFTER + SECOND_RESTART_AFTER + 4 * 120)
        assert not failure, f"restarting the API server failed: {failure[0]!r}"
        assert len(outages) == 2, "the API server was not restarted twice"
        converged = wait_terminal(stack, namespace, count, CONVERGE_DEADLINE)
        took = time.monotonic() - started
        assert operator.process.poll() is None, "the operator exited during the outages"
        outcome = verify(stack, namespace, names, ledger)
    finally:
        operator.stop()
        ledger.stop()
    figures("API server restarted twice", {
        **outcome["figures"], "API server outages s": [round(o, 1) for o in outages],
        "all terminal": converged, "after s": round(took, 1), "resync interval s": int(RESYNC_SECONDS),
    })
    assert converged and not outcome["problems"], outcome["problems"]
