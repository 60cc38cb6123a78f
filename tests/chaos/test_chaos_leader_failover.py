"""Scenario 5: the leader operator SIGKILLed while DriftMonitors are due.

Two operators run with `--leader-elect`; the one holding the Lease is killed just after the
first of several due monitors recorded its retrain, while the others are mid-check. Proves:
exactly one retrain per trigger (the standby that takes over re-reads status and does not
retrain again, and nothing is left undone), and failover within a bound (measured).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.chaoslib import Operator, apply, figures, has_flag, items, require_flags
from tests.integration.operator.test_driftmonitor import (
    dm_status,
    monitor,
    retrains,
    write_reference,
    write_window,
)
from tests.support.testing import StackHandle, eventually

MONITORS = 4
FAILOVER_DEADLINE = 120.0


def leases(stack: StackHandle) -> dict[tuple[str, str], dict[str, Any]]:
    """Every Lease but the node heartbeats, by (namespace, name)."""
    found = json.loads(stack.kubectl("get", "leases", "-A", "-o", "json").stdout)["items"]
    return {(x["metadata"]["namespace"], x["metadata"]["name"]): x.get("spec", {})
            for x in found if x["metadata"]["namespace"] != "kube-node-lease"}


def holder(stack: StackHandle, key: tuple[str, str]) -> str:
    return str(leases(stack).get(key, {}).get("holderIdentity") or "")


def election_args(namespace: str) -> list[str]:
    """`--leader-elect`, and the Lease kept in the test's namespace where the flag exists."""
    args = ["--leader-elect"]
    for flag in ("--leader-elect-resource-namespace", "--lease-namespace"):
        if has_flag(flag):
            return [*args, flag, namespace]
    return args


@pytest.mark.timeout(600)
def test_leader_killed_while_monitors_are_due_retrains_once_per_trigger(
        stack: StackHandle, namespace: str, crds: None, bucket: str, storage_secret: str,
        tmp_path: Path) -> None:
    require_flags("--leader-elect", item="2 (operator high availability)")
    before = set(leases(stack))
    serve = ["--namespace", namespace, *election_args(namespace)]
    first = Operator(stack, tmp_path / "operator-a.log", *serve)
    lease = eventually(lambda: next((k for k, spec in leases(stack).items()
                                     if k not in before and spec.get("holderIdentity")), None),
                       timeout=60, what="the first operator to hold a Lease")
    leader_identity = holder(stack, lease)
    second = Operator(stack, tmp_path / "operator-b.log", *serve, wait=False)
    profile = write_reference(stack, bucket)
    write_window(stack, bucket, part="bad", shift=2.0, accuracy=0.55)
    names = [f"due-{i}" for i in range(MONITORS)]
    try:
        apply(stack, namespace, [json.loads(monitor(n, bucket, profile, stack,
                                                    ["AccuracyBelowThreshold"]))
                                 for n in names])
        eventually(lambda: any(dm_status(stack, namespace, n).get("lastRetrain")
                               for n in names), timeout=90,
                   what="the leader to record a first retrain")
        assert second.process.poll() is None, f"the standby exited; see {second.log_path}"
        first.kill()
        killed = time.monotonic()
        retrained_at_kill = sum(1 for n in names if dm_status(stack, namespace, n).get(
            "lastRetrain"))
        new_holder = eventually(lambda: (h := holder(stack, lease)) != leader_identity and h,
                                timeout=FAILOVER_DEADLINE, what="the standby to take the Lease")
        failover = time.monotonic() - killed
        eventually(lambda: all(dm_status(stack, namespace, n).get("lastRetrain")
                               for n in names), timeout=FAILOVER_DEADLINE,
                   what="every due monitor to have retrained")
        all_retrained = time.monotonic() - killed
        # One more check of every monitor by the new leader: still one retrain each.
        checked = {n: dm_status(stack, namespace, n)["lastCheckTime"] for n in names}
        eventually(lambda: all(dm_status(stack, namespace, n).get("lastCheckTime") != checked[n]
                               for n in names), timeout=90,
                   what="the new leader to check every monitor again")
        counts = {n: len(retrains(stack, namespace, n)) for n in names}
        recorded = {n: dm_status(stack, namespace, n).get("retrainCount") for n in names}
        standby_answers = second.alive()
    finally:
        first.stop()
        second.stop()
    figures("leader killed while DriftMonitors are due", {
        "monitors due": MONITORS, "retrained when the leader was killed": retrained_at_kill, "retrain TrainingJobs per monitor": counts,
        "retrainCount per monitor": recorded, "failover s (kill -> Lease taken)":
        round(failover, 1), "kill -> every monitor retrained s": round(all_retrained, 1),
        "new leader": new_holder, "Lease": "/".join(lease),
        "retrain TrainingJobs in namespace": len(items(stack, namespace, "trainingjobs")),
    })
    assert counts == dict.fromkeys(names, 1)
    assert recorded == dict.fromkeys(names, 1)
    assert standby_answers
