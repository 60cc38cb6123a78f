"""Two operator replicas with leader election on the local stack: only the Lease's holder
reconciles; after the leader is SIGKILLed the standby takes the Lease and reconciles within the
documented bound (lease duration + retry period + the operator's start); after a SIGTERM the
leader releases the Lease and a standby takes over within a retry period or so.

The replicas serve only this test's namespace and keep their Lease there (POD_NAMESPACE), so the
session's operator and other tests are untouched. Each failover's figures are printed."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.support.testing import OperatorProcess, StackHandle, eventually

LEASE = "tailor-operator"
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15, 10.0, 2.0
# The standby waits out the lease duration from the last renewal it saw, tries every retry
# period, then starts Kopf (imports done, watches up) before it reconciles.
TAKEOVER_BOUND = LEASE_DURATION + RETRY_PERIOD + 1.0
RECONCILE_BOUND = TAKEOVER_BOUND + 20.0


def replica(stack: StackHandle, namespace: str, name: str) -> OperatorProcess:
    return OperatorProcess(
        stack, stack.dir / "logs" / f"operator-{namespace}-{name}.log",
        "--namespace", namespace, "--leader-elect",
        f"--leader-elect-lease-duration={LEASE_DURATION}",
        f"--leader-elect-renew-deadline={RENEW_DEADLINE}",
        f"--leader-elect-retry-period={RETRY_PERIOD}",
        module="tests.support.elected_operator",
        extra_env={"POD_NAMESPACE": namespace, "POD_NAME": name})


def holder(stack: StackHandle, namespace: str) -> str:
    result = stack.kubectl("get", "lease", LEASE, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return ""
    return str(json.loads(result.stdout)["spec"].get("holderIdentity") or "")


def apply_job(stack: StackHandle, namespace: str, name: str) -> None:
    """A custom-task TrainingJob, suspended: reconciled (status written) without pods."""
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name},
        "spec": {"task": "custom", "workers": 1, "procsPerWorker": 1,
                 "command": ["python", "-c", "print(1)"], "runPolicy": {"suspend": True}}}))


def reconciled(stack: StackHandle, namespace: str, name: str) -> dict[str, Any] | None:
    result = stack.kubectl("get", "tj", name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    status = json.loads(result.stdout).get("status") or {}
    return status if status.get("observedGeneration") == 1 and status.get("conditions") else None


def log_of(process: OperatorProcess) -> str:
    return Path(process.log_path).read_text(errors="replace")


def test_one_replica_leads_and_the_standby_takes_over_when_it_dies(
        stack: StackHandle, namespace: str, crds: None) -> None:
    a = replica(stack, namespace, "op-a")
    leader = eventually(lambda: holder(stack, namespace), timeout=30, what="a Lease holder")
    assert leader.startswith("op-a_")
    b = replica(stack, namespace, "op-b")
    try:
        apply_job(stack, namespace, "first")
        eventually(lambda: reconciled(stack, namespace, "first"), timeout=60,
                   what="the leader to reconcile the first job")
        assert holder(stack, namespace) == leader
        assert "standby: waiting for Lease" in log_of(b) and "leading" not in log_of(b)

        killed = time.monotonic()
        a.kill()  # SIGKILL: no release, the Lease must expire
        b_holds = eventually(lambda: holder(stack, namespace).startswith("op-b_"),
                             timeout=TAKEOVER_BOUND + 10, what="the standby to take the Lease")
        took_over = time.monotonic() - killed
        assert b_holds
        apply_job(stack, namespace, "second")
        eventually(lambda: reconciled(stack, namespace, "second"), timeout=RECONCILE_BOUND,
                   what="the new leader to reconcile the second job")
        reconciled_after = time.monotonic() - killed
        print(f"\nSIGKILL failover: Lease taken after {took_over:.1f} s, new job reconciled "
              f"{reconciled_after:.1f} s after the kill (bound {TAKEOVER_BOUND:.0f} s)")
        assert took_over <= TAKEOVER_BOUND
        lease = json.loads(stack.kubectl("get", "lease", LEASE, "-n", namespace, "-o",
                                         "json").stdout)["spec"]
        assert lease["leaseTransitions"] == 1 and lease["leaseDurationSeconds"] == LEASE_DURATION

        # A clean stop (SIGTERM) releases the Lease: a standby takes it within a retry period.
        c = replica(stack, namespace, "op-c")
        try:
            stopped = time.monotonic()
            b.stop()
            eventually(lambda: holder(stack, namespace).startswith("op-c_"),
                       timeout=RETRY_PERIOD + 10, what="the standby to take the released Lease")
            handover = time.monotonic() - stopped
            print(f"SIGTERM handover: Lease taken {handover:.1f} s after SIGTERM "
                  "(the old leader's shutdown included)")
            assert "released Lease" in log_of(b)
            apply_job(stack, namespace, "third")
            eventually(lambda: reconciled(stack, namespace, "third"), timeout=60,
                       what="the third replica to reconcile")
        finally:
            c.stop()
    finally:
        a.stop()
        b.stop()
