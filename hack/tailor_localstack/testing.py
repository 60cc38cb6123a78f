"""Test support for the local stack: reuse a running stack or start one, run kubectl, poll.

Used by tests/conftest.py; kept here so the demo and benchmarks can use the same pieces.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tailor_localstack.stack import Stack, StackState, binary_paths

T = TypeVar("T")


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


def acquire_stack() -> tuple[StackHandle, bool]:
    """The running stack, or a new one; the flag says whether we started it."""
    stack = Stack()
    state = stack.load_state()
    if state is not None and all(stack.health(state).values()):
        return StackHandle(stack, state), False
    state = stack.up(progress=lambda message: print(message, flush=True))
    return StackHandle(stack, state), True


def keep_stack() -> bool:
    return os.environ.get("TAILOR_KEEP_STACK", "") not in ("", "0")
