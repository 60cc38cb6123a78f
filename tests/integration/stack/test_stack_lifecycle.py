"""`make up` / `make down` on a second, throwaway stack: idempotent, crash-safe, leaves nothing."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tailor_devstack import netns, nodens
from tailor_devstack.commands import binary_paths
from tailor_devstack.stack import Stack
from tailor_devstack.state import StackState

from tests.support.testing import PAUSE_IMAGE, eventually


def leftovers(stack: Stack, state: StackState) -> dict[str, list[str]]:
    """What a stack can leave in the kernel: processes naming its directory, its node's network
    namespace and cgroups, mounts under it, its bridge and the routes to its node."""
    node = nodens.layout_of(state)
    procs = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(stack.dir) in cmdline:
                procs.append(cmdline.replace("\0", " ")[:120])
    # The node's own, and pods' (containerd's `cni-*`, which must stay inside the node).
    namespaces = [n.name for n in netns.NETNS_DIR.iterdir()
                  if n.name == node.netns or n.name.startswith("cni-")] \
        if netns.NETNS_DIR.exists() else []
    cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{node.cgroup.strip('/')}")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "route", "show", node.pod_cidr], capture_output=True,
                            text=True).stdout.split()
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(stack.dir))]
    return {"processes": procs, "namespaces": namespaces, "cgroups": cgroups, "mounts": mounts,
            "routes": routes, "bridges": [state.bridge] if f" {state.bridge}:" in links else []}


def run_pod(stack: Stack, name: str) -> None:
    kubectl = [str(binary_paths()["kubectl"]), f"--kubeconfig={stack.dir / 'kubeconfig'}"]
    subprocess.run([*kubectl, "run", name, f"--image={PAUSE_IMAGE}", "--restart=Never"],
                   check=True, capture_output=True)
    eventually(lambda: subprocess.run(
        [*kubectl, "get", "pod", name, "-o", "jsonpath={.status.phase}"],
        capture_output=True, text=True).stdout == "Running", timeout=60, what=f"{name} to run")


def test_up_twice_is_harmless_a_crash_is_cleaned_and_down_leaves_nothing(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack")
    messages: list[str] = []
    try:
        first = stack.up(progress=messages.append)
        run_pod(stack, "before-crash")
        again = stack.up(progress=messages.append)
        assert "already running" in messages[-1]
        assert again.pids == first.pids

        # A crash: every process of the stack dies at once, pods' namespaces stay behind.
        for pid in first.pids.values():
            os.killpg(pid, signal.SIGKILL)
        assert leftovers(stack, first)["namespaces"], "the crash should leave the node's netns"
        restarted = stack.up(progress=messages.append)
        assert "cleaning it up" in " ".join(messages)
        assert set(restarted.pids.values()).isdisjoint(first.pids.values())
        run_pod(stack, "after-crash")
    finally:
        stack.down(progress=messages.append)
    assert leftovers(stack, first) == {"processes": [], "namespaces": [], "cgroups": [],
                                       "mounts": [], "routes": [], "bridges": []}
    assert not (stack.dir / "env").exists()
