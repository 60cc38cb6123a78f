"""The pod network: one Linux bridge per stack, one network namespace and veth pair per pod.

Pods get only the bridge's connected route, no default route: they reach each other and the
gateway (where the stack's services listen) and nothing else, so nothing a pod does can send
traffic off this machine.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

NETNS_DIR = Path("/run/netns")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def namespace_prefix(stack_dir: Path) -> str:
    return "tlr-" + hashlib.sha256(str(stack_dir).encode()).hexdigest()[:6] + "-"


def ensure_bridge(name: str, address: str) -> None:
    if _ip("link", "show", name, check=False).returncode != 0:
        _ip("link", "add", name, "type", "bridge")
    _ip("addr", "replace", address, "dev", name)
    _ip("link", "set", name, "up")


def create_pod_network(netns: str, veth_host: str, bridge: str, address: str) -> None:
    """Make `netns` with `eth0` at `address` (CIDR form) on `bridge`; idempotent."""
    delete_pod_network(netns, veth_host)
    _ip("netns", "add", netns)
    _ip("link", "add", veth_host, "type", "veth", "peer", "name", "eth0", "netns", netns)
    _ip("link", "set", veth_host, "master", bridge)
    _ip("link", "set", veth_host, "up")
    _ip("-n", netns, "link", "set", "lo", "up")
    _ip("-n", netns, "addr", "add", address, "dev", "eth0")
    _ip("-n", netns, "link", "set", "eth0", "up")


def delete_pod_network(netns: str, veth_host: str) -> None:
    _ip("link", "del", veth_host, check=False)
    if (NETNS_DIR / netns).exists():
        _ip("netns", "del", netns, check=False)


def cleanup(*, prefix: str, bridge: str | None, mounts_under: Path) -> None:
    """Remove what a stack leaves in the kernel: mounts, pod namespaces, veths, the bridge."""
    for mountpoint in sorted(_mounts_under(mounts_under), key=len, reverse=True):
        subprocess.run(["umount", "-l", mountpoint], check=False, capture_output=True)
    if NETNS_DIR.exists():
        for ns in NETNS_DIR.iterdir():
            if ns.name.startswith(prefix):
                _ip("netns", "del", ns.name, check=False)
    if bridge:
        veths = _ip("-o", "link", "show", "master", bridge, check=False).stdout
        for line in veths.splitlines():
            _ip("link", "del", line.split(":")[1].strip().split("@")[0], check=False)
        _ip("link", "del", bridge, check=False)


def _mounts_under(directory: Path) -> list[str]:
    root = str(directory).rstrip("/") + "/"
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(root):
            mounts.append(target)
    return mounts
