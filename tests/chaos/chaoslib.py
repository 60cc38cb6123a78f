"""What the chaos scenarios share: operators to start and kill, stack components to stop and
start again, a ledger of the children the operator made, and the figures each scenario prints.

Everything runs against the suite's PRIVATE stack (tests/chaos/conftest.py), never the shared
one: scenarios kill its API server and MinIO.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

import pytest
from kubernetes import client, config, watch
from tailor_devstack.commands import binary_paths
from tailor_devstack.processes import is_ours, signal_group
from tailor_devstack.state import REPO_ROOT

from tests.support.testing import OperatorProcess, StackHandle, eventually

TAILOR = (sys.executable, "-m", "tailor")


# ------------------------------------------------------------------------------- operators
@functools.cache
def operator_help() -> str:
    return subprocess.run([*TAILOR, "--help"], capture_output=True, text=True, cwd=REPO_ROOT,
                          check=True, timeout=120).stdout


def has_flag(flag: str) -> bool:
    return re.search(rf"(^|[\s,]){re.escape(flag)}\b", operator_help()) is not None


def require_flags(*flags: str, item: str) -> None:
    """Fail (not skip) when the operator lacks a flag the scenario needs: the issue asks for it."""
    missing = [flag for flag in flags if not has_flag(flag)]
    if missing:
        pytest.fail(f"`python -m tailor` has no {', '.join(missing)} flag: issue 16 item {item} "
                    "is not in this checkout, so this scenario cannot run", pytrace=False)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


Operator = OperatorProcess
"""The private stack's operator: tests.support's, which can also start without waiting."""


# ------------------------------------------------------------------------------- components
def stop_component(stack: StackHandle, name: str) -> None:
    """SIGKILL one component of the private stack (its whole process group) and wait for it."""
    state = stack.stack.load_state()
    assert state is not None
    pid = state.pids[name]
    signal_group(pid, signal.SIGKILL)
    eventually(lambda: not is_ours(pid, stack.dir), timeout=30, what=f"{name} to exit")


def start_component(stack: StackHandle, name: str, timeout: float = 120) -> float:
    """Start a stopped component again with Stack's own launcher; seconds until healthy."""
    state = stack.stack.load_state()
    assert state is not None
    started = time.monotonic()
    stack.stack._start(state, name, binary_paths())
    stack.state = state
    check = stack.stack._health_checks(state)[name]
    eventually(check, timeout=timeout, what=f"{name} to be healthy again", interval=0.2)
    return time.monotonic() - started


# ------------------------------------------------------------------------------- API access
def api_client(stack: StackHandle) -> client.ApiClient:
    return config.new_client_from_config(str(stack.kubeconfig))


def apply(stack: StackHandle, namespace: str, objects: Iterable[dict[str, Any]]) -> None:
    """One kubectl apply of a List (fewer processes than one apply per object)."""
    body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body), timeout=300)


def items(stack: StackHandle, namespace: str, kind: str,
          selector: str | None = None) -> list[dict[str, Any]]:
    args = ["get", kind, "-n", namespace, "-o", "json"]
    if selector:
        args += ["-l", selector]
    result = stack.kubectl(*args, check=False, timeout=60)
    if result.returncode != 0:
        return []
    found: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return found


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next((c for c in obj.get("status", {}).get("conditions", [])
                                  if c["type"] == kind), {})
    return found


def terminal(tj: dict[str, Any]) -> bool:
    return any(condition(tj, kind).get("status") == "True" for kind in ("Succeeded", "Failed"))


class ChildLedger:
    """Every worker Job and headless Service ever seen in a namespace, by uid, through a watch
    that resumes after the API server goes away: a child deleted and made again (a duplicate)
    shows as a second uid for the same TrainingJob."""

    KINDS = ("jobs", "services")

    def __init__(self, stack: StackHandle, namespace: str) -> None:
        self.namespace = namespace
        self.uids: dict[tuple[str, str], set[str]] = {}  # (kind, trainingjob) -> uids
        self.watch_errors = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        api = api_client(stack)
        self._lists = {"jobs": client.BatchV1Api(api).list_namespaced_job,
                       "services": client.CoreV1Api(api).list_namespaced_service}
        self._threads = [threading.Thread(target=self._follow, args=(kind,), daemon=True)
                         for kind in self.KINDS]
        for thread in self._threads:
            thread.start()

    def _record(self, kind: str, obj: Any) -> None:
        owner = (obj.metadata.labels or {}).get("tailor.dev/trainingjob")
        if owner:
            with self._lock:
                self.uids.setdefault((kind, owner), set()).add(obj.metadata.uid)

    def _follow(self, kind: str) -> None:
        lister = self._lists[kind]
        while not self._stopped.is_set():
            try:
                listed: Any = lister(self.namespace, _request_timeout=30)
                for obj in listed.items:
                    self._record(kind, obj)
                stream = watch.Watch()
                for event in stream.stream(lister, self.namespace, timeout_seconds=20,
                                           resource_version=listed.metadata.resource_version,
                                           _request_timeout=60):
                    self._record(kind, event["object"])
                    if self._stopped.is_set():
                        stream.stop()
            except Exception:  # the API server is down or the watch expired: list again
                self.watch_errors += 1
                self._stopped.wait(1.0)

    def counts(self, kind: str) -> dict[str, int]:
        with self._lock:
            return {owner: len(uids) for (k, owner), uids in self.uids.items() if k == kind}

    def stop(self) -> None:
        self._stopped.set()


# ------------------------------------------------------------------------------- figures
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figures(scenario: str, values: dict[str, Any]) -> None:
    """Print a scenario's figures (`make chaos` runs pytest with -s) and keep them in the file
    named by TAILOR_CHAOS_FIGURES (one JSON object a line), for bench/RESULTS.md."""
    width = max(len(k) for k in values)
    print(f"\n== chaos: {scenario}", flush=True)
    for key, value in values.items():
        print(f"   {key:<{width}}  {value}", flush=True)
    target = os.environ.get("TAILOR_CHAOS_FIGURES")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps({"scenario": scenario, **values}, default=str) + "\n")


def scaled(name: str, default: int) -> int:
    """A count a developer may lower (TAILOR_CHAOS_JOBS=20): the figures then say so."""
    return int(os.environ.get(name, default))
