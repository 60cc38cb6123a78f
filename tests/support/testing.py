"""Test support for the local stack: reuse a running stack or start one, run kubectl, poll.

Imported as `tests.support.testing` (the repository root is on the path: pytest's `pythonpath`,
or `python -m` from the root) by tests/conftest.py, the demo (`python -m tests.support.demo`)
and the benchmarks, so they all use the same pieces.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import requests
import yaml
from tailor_devstack.commands import binary_paths
from tailor_devstack.nodeconf import SANDBOX_IMAGE
from tailor_devstack.stack import Stack
from tailor_devstack.state import REPO_ROOT, StackState

T = TypeVar("T")

# Images the node has (`make images`), named as the chart names them.
_APP_VERSION = yaml.safe_load((REPO_ROOT / "helm" / "tailor" / "Chart.yaml").read_text())[
    "appVersion"]
TRAINER_IMAGE = f"ghcr.io/tailor-dev/tailor-trainer:{_APP_VERSION}"
OPERATOR_IMAGE = f"ghcr.io/tailor-dev/tailor-operator:{_APP_VERSION}"
# The smallest image with python, sh, coreutils and the `kubernetes` client: for test pods.
TOOLS_IMAGE = OPERATOR_IMAGE
PAUSE_IMAGE = SANDBOX_IMAGE  # a pod that waits, doing nothing, until it is stopped


def create_namespace(stack: StackHandle, name: str) -> None:
    stack.kubectl("create", "namespace", name)
    # Pods are refused until the ServiceAccount controller has made the default account.
    eventually(lambda: stack.kubectl("get", "serviceaccount", "default", "-n", name,
                                     check=False).returncode == 0,
               timeout=30, what=f"the default ServiceAccount in {name}")


def require_images(stack: StackHandle, images: Sequence[str]) -> None:
    """Fail at once, not after a pull back-off, when the node lacks an image."""
    if missing := sorted(set(images) - stack.stack.node_images(stack.state)):
        raise AssertionError(f"the node has no {', '.join(missing)}: run `make images`, then "
                             "restart the stack (`make down up`) so that it imports them")


def eventually(probe: Callable[[], T | None], *, timeout: float, what: str,
               interval: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; "
                                 f"last value: {last!r}")
        time.sleep(interval)  # the poll interval of a loop bounded by the deadline above


class StackHandle:
    """A running local stack as tests see it."""

    def __init__(self, stack: Stack, state: StackState) -> None:
        self.stack = stack
        self.state = state
        self.dir = stack.dir
        self.kubeconfig = stack.dir / "kubeconfig"
        self.kubectl_path = binary_paths()["kubectl"]
        self.env = self._read_env(stack.dir / "env")

    @staticmethod
    def _read_env(path: Path) -> dict[str, str]:
        out = subprocess.run(["bash", "-c", f'source "{path}" && env -0'], check=True,
                             capture_output=True, text=True).stdout
        return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}",
                                 *args], input=input, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stderr}{result.stdout}")
        return result


CRD_NAMES = ("trainingjobs.tailor.dev", "driftmonitors.tailor.dev")


def install_crds(stack: StackHandle) -> None:
    """Server-side apply of crds/ (a re-apply is a no-op), then wait until both are served.

    Polls the condition itself: `kubectl wait --for=condition=Established` fails outright when
    it reads a CRD whose status has no conditions yet, just after the apply.
    """
    stack.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    query = 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
    for name in CRD_NAMES:
        eventually(lambda name=name: stack.kubectl("get", "crd", name, "-o", query,
                                                   check=False).stdout.strip() == "True",
                   timeout=60, what=f"CRD {name} to be Established")
    # Established means served; kubectl's discovery must see the new kinds too.
    eventually(lambda: stack.kubectl("get", "trainingjobs,driftmonitors", "-A",
                                     check=False).returncode == 0,
               timeout=60, what="kubectl to discover the tailor.dev kinds")


def acquire_stack() -> tuple[StackHandle, bool]:
    """The running stack, or a new one; the flag says whether we started it."""
    stack = Stack()
    state = stack.load_state()
    if state is not None and all(stack.health(state).values()):
        return StackHandle(stack, state), False
    state = stack.up(progress=lambda message: print(message, flush=True))
    return StackHandle(stack, state), True


@contextlib.contextmanager
def paused(stack: StackHandle, name: str) -> Iterator[None]:
    """One process of a PRIVATE stack (e.g. "kube-apiserver") stopped with SIGSTOP for the
    block and continued with SIGCONT after it, even if the block fails: a server that still
    accepts connections but answers nothing, the outage a client notices last. Refused for the
    shared stack, which others are using."""
    if stack.dir.resolve() == Stack().dir.resolve():
        raise ValueError("pause a process of a private stack (Stack(tmpdir)), never the shared one")
    pid = stack.state.pids[name]
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def keep_stack() -> bool:
    return os.environ.get("TAILOR_KEEP_STACK", "") not in ("", "0")


class OperatorProcess:
    """`python -m tailor` running against the local stack as a separate process."""

    def __init__(self, stack: StackHandle, log_path: Path, *extra_args: str,
                 module: str = "tailor", extra_env: Mapping[str, str] | None = None,
                 wait: bool = True) -> None:
        """Started, and (with `wait`) answering /healthz; a leader-election standby need not be
        waited for."""
        def free_port() -> int:
            with socket.socket() as s:
                s.bind((stack.state.gateway, 0))
                port: int = s.getsockname()[1]
                return port

        self.metrics_port, self.liveness_port = free_port(), free_port()
        self.address = stack.state.gateway
        self.log_path = log_path
        env = {**stack.env, "KUBECONFIG": str(stack.kubeconfig), "PYTHONUNBUFFERED": "1",
               **(extra_env or {})}
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in kill() and stop())
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "--metrics-port", str(self.metrics_port),
             "--liveness-port", str(self.liveness_port), "--bind-address", self.address,
             "--progress-interval", "1", *extra_args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        if wait:
            eventually(self.alive, timeout=90, what=f"the operator to answer (log: {log_path})")

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{self.metrics_port}/metrics"

    def alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited; see {self.log_path}")
        try:
            url = f"http://{self.address}:{self.liveness_port}/healthz"
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def kill(self) -> None:
        """SIGKILL: no chance to release a lease or finish a patch."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._log.close()
