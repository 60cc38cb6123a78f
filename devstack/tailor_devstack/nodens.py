"""The real node's own namespaces: what makes a kubelet, containerd and kube-proxy per stack.

A real node is a machine of its own; here it is a network namespace and a mount namespace, as a
kind node is a container. So two stacks on one machine (the shared one and a test's private
one) never share a kubelet directory, a CNI cache, iptables rules or a forwarding switch:

- network: `tlrnode-<hash>`, joined to the stack's bridge by a veth pair, node address `.2`. The
  CNI bridge `cni0` inside it holds the pods (`.128/25`), and the Service range (`.64/26`) is
  routed there too, where kube-proxy's rules live; CoreDNS listens on the node address. The
  host reaches both through the node (two routes); the node has no default route, so nothing
  a pod sends leaves the machine.
- mount: a persistent namespace (a file under the stack directory) in which the kubelet's and
  containerd's fixed paths (`/var/lib/kubelet`, `/var/log/pods`, `/var/log/containers`,
  `/var/lib/cni`, `/run/containerd`, `/run/netns`) are bind mounts of directories under the
  stack directory; on the machine they are empty mount points, created once.
- cgroups: the kubelet's `cgroupRoot` is `/tailor-<hash>` in every v1 hierarchy; `down` kills
  what is left in it and removes it.

Kernel settings the kubelet changes for the whole machine are saved before the first node starts
and restored when the last one stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tailor_devstack.netns import NETNS_DIR
from tailor_devstack.state import StackState

CGROUP_ROOT = Path("/sys/fs/cgroup")
# The kubelet sets these for the whole machine at start (its "kernel tunables").
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
SYSCTL_SAVE = Path("/run/tailor-node-sysctls.json")
# /run/netns too: containerd pins each pod's network namespace there.
NODE_PATHS = ("/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/var/lib/cni",
              "/run/containerd", "/run/netns")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


@dataclass(frozen=True)
class NodeLayout:
    """Names and addresses of one stack's node, all derived from the stack's /24."""

    stack_dir: Path
    subnet: ipaddress.IPv4Network

    @property
    def tag(self) -> str:
        return hashlib.sha256(str(self.stack_dir).encode()).hexdigest()[:6]

    @property
    def netns(self) -> str:
        return f"tlrnode-{self.tag}"

    @property
    def veth_host(self) -> str:
        return f"tlrn{self.tag}"

    @property
    def root(self) -> Path:
        return self.stack_dir / "node"

    @property
    def mount_ns(self) -> Path:
        return self.root / "ns" / "mnt"

    @property
    def cgroup(self) -> str:
        return f"/tailor-{self.tag}"

    def _host(self, index: int) -> str:
        return str(self.subnet.network_address + index)

    @property
    def gateway(self) -> str:  # the stack's services, on the host side of the bridge
        return self._host(1)

    @property
    def lan(self) -> ipaddress.IPv4Network:  # the host bridge's own range
        return ipaddress.IPv4Network((self.subnet.network_address, 26))

    @property
    def node_ip(self) -> str:
        return self._host(2)

    @property
    def service_cidr(self) -> str:
        return str(ipaddress.IPv4Network((self.subnet.network_address + 64, 26)))

    @property
    def pod_cidr(self) -> str:
        return str(ipaddress.IPv4Network((self.subnet.network_address + 128, 25)))

    @property
    def pod_gateway(self) -> str:  # cni0 in the node (it exists from the first pod on)
        return self._host(129)

    def enter(self) -> list[str]:
        """The argv prefix that runs a command inside the node's namespaces."""
        return ["nsenter", f"--net={NETNS_DIR / self.netns}", f"--mount={self.mount_ns}", "--"]


def layout_of(state: StackState) -> NodeLayout:
    return NodeLayout(Path(state.dir), ipaddress.IPv4Network(f"{state.gateway}/24", strict=False))


def create(layout: NodeLayout, bridge: str) -> None:
    """The node's network and mount namespaces and its cgroup; idempotent after `destroy`."""
    destroy(layout)
    save_sysctls()
    _run("ip", "netns", "add", layout.netns)
    ns = ("ip", "-n", layout.netns)
    _run("ip", "link", "add", layout.veth_host, "type", "veth", "peer", "name", "eth0",
         "netns", layout.netns)
    _run("ip", "link", "set", layout.veth_host, "master", bridge, "up")
    _run(*ns, "link", "set", "lo", "up")
    _run(*ns, "addr", "add", f"{layout.node_ip}/{layout.lan.prefixlen}", "dev", "eth0")
    _run(*ns, "link", "set", "eth0", "up")
    # Routing between cni0 and eth0 (and kube-proxy's DNAT) happens inside the node only.
    _run("ip", "netns", "exec", layout.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for cidr in (layout.pod_cidr, layout.service_cidr):
        _run("ip", "route", "replace", cidr, "via", layout.node_ip, "dev", bridge)
    _make_mount_namespace(layout)
    _make_cgroups(layout.cgroup)


def _make_mount_namespace(layout: NodeLayout) -> None:
    holder = layout.mount_ns.parent
    holder.mkdir(parents=True, exist_ok=True)
    # A namespace can be kept in a file only on a mount whose propagation is private.
    _run("mount", "--bind", str(holder), str(holder))
    _run("mount", "--make-private", str(holder))
    layout.mount_ns.touch()
    binds = []
    for path in NODE_PATHS:
        Path(path).mkdir(parents=True, exist_ok=True)  # the empty mount point on the machine
        source = layout.root / "fs" / path.strip("/").replace("/", "-")
        source.mkdir(parents=True, exist_ok=True)
        binds.append(f"mount --bind {source} {path}")
    # Private first, so nothing mounted in the node shows on the machine; then shared inside,
    # for the kubelet's mount propagation between pods and the node.
    script = " && ".join(["mount --make-rshared /", *binds])
    _run("unshare", f"--mount={layout.mount_ns}", "--propagation", "private",
         "sh", "-c", script)


def _hierarchies() -> list[Path]:
    # v1 hierarchies, and the hybrid layout's v2 one ("unified"), where runc makes its own.
    return [p for p in CGROUP_ROOT.iterdir() if p.is_dir()] if CGROUP_ROOT.exists() else []


def _make_cgroups(cgroup: str) -> None:
    for hierarchy in _hierarchies():
        path = hierarchy / cgroup.strip("/")
        path.mkdir(exist_ok=True)
        if hierarchy.name == "cpuset":  # a cpuset is empty until told which CPUs and nodes
            for name in ("cpuset.cpus", "cpuset.mems"):
                (path / name).write_text((hierarchy / name).read_text())


def destroy(layout: NodeLayout) -> None:
    """Kill what is left in the node's cgroup; remove its cgroups, namespaces and routes."""
    _kill_cgroup(layout.cgroup)
    for cidr in (layout.pod_cidr, layout.service_cidr):
        _run("ip", "route", "del", cidr, check=False)
    _run("ip", "link", "del", layout.veth_host, check=False)
    if (NETNS_DIR / layout.netns).exists():
        _run("ip", "netns", "del", layout.netns, check=False)
    for target in (layout.mount_ns, layout.mount_ns.parent):
        _run("umount", "-l", str(target), check=False)


def _kill_cgroup(cgroup: str, timeout: float = 10.0) -> None:
    """SIGKILL every process under the cgroup, then remove its directories, deepest first."""
    trees = [h / cgroup.strip("/") for h in _hierarchies() if (h / cgroup.strip("/")).exists()]
    deadline = time.monotonic() + timeout
    while True:
        pids = {int(pid) for tree in trees for procs in tree.rglob("cgroup.procs")
                for pid in _read(procs).split()}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # poll interval of a kill loop bounded by the deadline
    for tree in trees:
        deepest_first = sorted((p for p in tree.rglob("*") if p.is_dir()),
                               key=lambda p: len(p.parts), reverse=True)
        for path in [*deepest_first, tree]:
            with contextlib.suppress(OSError):
                path.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def save_sysctls() -> None:
    """The values before any node of ours ran; kept until `restore_sysctls`."""
    if SYSCTL_SAVE.exists():
        return
    values = {name: (Path("/proc/sys") / name).read_text().strip() for name in KUBELET_SYSCTLS}
    SYSCTL_SAVE.write_text(json.dumps(values))


def restore_sysctls(*, other_nodes_running: bool) -> None:
    if other_nodes_running or not SYSCTL_SAVE.exists():
        return
    for name, value in json.loads(SYSCTL_SAVE.read_text()).items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / name).write_text(value)
    SYSCTL_SAVE.unlink()


def other_nodes_running(layout: NodeLayout) -> bool:
    return any(ns.name.startswith("tlrnode-") and ns.name != layout.netns
               for ns in NETNS_DIR.iterdir()) if NETNS_DIR.exists() else False
