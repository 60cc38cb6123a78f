"""The node agent: a stand-in for kubelet and a container runtime on a machine without one.

It registers a Node, renews its Lease, watches the Pods bound to it and runs each in a sandbox
(see runtime.py), reporting phases, container states, exit codes, restarts and termination
messages as a kubelet does; it serves container logs on the kubelet port so `kubectl logs`
works through the API server. Unsupported Pod features are refused with an Event (podspec.py).

This module is the node: its registration, Lease, watches and DNS records. Each pod is run by a
PodWorker (pod_worker.py); the kubelet port is served by kubelet_server.py, which reads logs
through this agent's `log_file`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tailor_devstack import netns
from tailor_devstack.nodeagent import hosts
from tailor_devstack.nodeagent.api import JSON, ApiError, KubeClient, micro_now, now
from tailor_devstack.nodeagent.config import IPAM, Config
from tailor_devstack.nodeagent.kubelet_server import serve_kubelet_api
from tailor_devstack.nodeagent.pod_worker import NodeContext, PodWorker, Records
from tailor_devstack.nodeagent.runtime import MEMORY_CGROUP_ROOT

log = logging.getLogger("tailor.nodeagent")
KUBERNETES_VERSION = "v1.36.3"
LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 10
NODE_STATUS_SECONDS = 60


class NodeAgent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.api = KubeClient(Path(config.kubeconfig))
        self.state_dir = Path(config.state_dir)
        self.ipam = IPAM(config.pod_cidr, config.gateway)
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.workers_lock = threading.Lock()
        self.pods: dict[str, JSON] = {}  # the node's pods by uid, for DNS
        self.services: dict[str, JSON] = {}
        self.dns_lock = threading.Lock()
        self.netns_prefix = netns.namespace_prefix(self.state_dir.parent)
        self.cgroup_parent = (MEMORY_CGROUP_ROOT / f"tailor-{self.netns_prefix.strip('-')}"
                              if MEMORY_CGROUP_ROOT.is_dir() else None)
        self.context = NodeContext(
            config=config, api=self.api, ipam=self.ipam, state_dir=self.state_dir,
            netns_prefix=self.netns_prefix, cgroup_parent=self.cgroup_parent,
            dns_records=self.dns_records, forget=self.forget)

    # ------------------------------------------------------------------ node and lease
    def node_status(self) -> JSON:
        mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                       .splitlines() if line.startswith("MemTotal:"))
        capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki", "pods": "250",
                    "ephemeral-storage": "100Gi", "nvidia.com/gpu": str(self.config.gpus)}
        conditions = [
            {"type": t, "status": "False", "reason": f"KubeletHasSufficient{t[:-8]}" if
             t.endswith("Pressure") else "", "message": "", "lastHeartbeatTime": now(),
             "lastTransitionTime": now()}
            for t in ("MemoryPressure", "DiskPressure", "PIDPressure")]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": "tailor node agent is posting ready status",
                           "lastHeartbeatTime": now(), "lastTransitionTime": now()})
        uname = platform.uname()
        return {
            "capacity": capacity, "allocatable": capacity, "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": self.config.gateway},
                          {"type": "Hostname", "address": self.config.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.config.port}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": uname.release,
                "osImage": "tailor local stack", "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "tailor-node-agent://0.1.0",
                "kubeletVersion": KUBERNETES_VERSION, "kubeProxyVersion": "",
            },
        }

    def register(self) -> None:
        name = self.config.node_name
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64"}}, "spec": {"podCIDR": self.config.pod_cidr}}
        try:
            self.api.create("/api/v1/nodes", node)
        except ApiError as error:
            if error.status != 409:
                raise
        self.api.merge_patch(f"/api/v1/nodes/{name}/status", {"status": self.node_status()})

    def heartbeat_loop(self) -> None:
        lease_path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        name = self.config.node_name
        last_status = time.monotonic()
        while not self.stopping.wait(0 if last_status == 0 else LEASE_RENEW_SECONDS):
            try:
                spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS,
                        "renewTime": micro_now()}
                try:
                    self.api.merge_patch(f"{lease_path}/{name}", {"spec": spec})
                except ApiError as error:
                    if error.status != 404:
                        raise
                    self.api.create(lease_path, {"metadata": {"name": name}, "spec": spec})
                if time.monotonic() - last_status > NODE_STATUS_SECONDS:
                    self.api.merge_patch(f"/api/v1/nodes/{name}/status",
                                         {"status": self.node_status()})
                    last_status = time.monotonic()
            except Exception:
                log.exception("heartbeat failed")

    # ------------------------------------------------------------------ watches
    def watch_forever(self, path: str, handle: Callable[[str, JSON], None],
                      **params: Any) -> None:
        while not self.stopping.is_set():
            try:
                for event in self.api.watch(path, **params):
                    if self.stopping.is_set():
                        return
                    handle(event["type"], event["object"])
            except Exception as error:
                log.warning("watch of %s restarts after: %s", path, error)
                self.stopping.wait(1)

    def on_pod(self, kind: str, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        with self.dns_lock:
            if kind == "DELETED":
                self.pods.pop(uid, None)
            else:
                self.pods[uid] = pod
        if pod.get("spec", {}).get("nodeName") == self.config.node_name:
            with self.workers_lock:
                worker = self.workers.get(uid)
                if worker is None and kind != "DELETED" and not self.stopping.is_set() \
                        and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                    worker = PodWorker(self.context, pod)
                    self.workers[uid] = worker
                    worker.start()
                elif worker is not None:
                    worker.update(pod, deleted=kind == "DELETED")
        self.refresh_dns()

    def on_service(self, kind: str, svc: JSON) -> None:
        with self.dns_lock:
            if kind == "DELETED":
                self.services.pop(svc["metadata"]["uid"], None)
            else:
                self.services[svc["metadata"]["uid"]] = svc
        self.refresh_dns()

    def refresh_dns(self) -> None:
        with self.dns_lock:
            records = hosts.cluster_records(list(self.pods.values()),
                                            list(self.services.values()), self.config.gateway)
        with self.workers_lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.write_hosts(records)

    def dns_records(self) -> Records:
        with self.dns_lock:
            return hosts.cluster_records(list(self.pods.values()), list(self.services.values()),
                                         self.config.gateway)

    def forget(self, uid: str) -> None:
        with self.workers_lock:
            self.workers.pop(uid, None)

    # ------------------------------------------------------------------ logs
    def log_file(self, namespace: str, name: str, container: str, previous: bool) -> tuple[
            Path | None, Callable[[], bool]]:
        """The log of a container and a function telling whether it may still grow."""
        with self.workers_lock:
            worker = next((w for w in self.workers.values() if w.namespace == namespace
                           and w.name == name), None)
        uid = worker.uid if worker else None
        if uid is None:
            with self.dns_lock:
                uid = next((u for u, p in self.pods.items() if p["metadata"]["namespace"]
                            == namespace and p["metadata"]["name"] == name), None)
        if uid is None:
            return None, lambda: False
        directory = self.state_dir / "pods" / uid / "logs" / container
        runs = sorted(directory.glob("*.log"), key=lambda p: int(p.stem)) if directory.exists() \
            else []
        if previous:
            runs = runs[:-1]
        if not runs:
            return None, lambda: False
        path = runs[-1]

        def running() -> bool:
            return (not previous and worker is not None
                    and worker.is_running(container, int(path.stem)))
        return path, running

    # ------------------------------------------------------------------ lifecycle
    def cleanup_stale(self) -> None:
        """Processes and namespaces left by an agent that died: pods start afresh."""
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != os.getpid():
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"nodeagent.shim" in cmdline and str(self.state_dir).encode() in cmdline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(proc.name), signal.SIGKILL)
        netns.cleanup(prefix=self.netns_prefix, bridge=None, mounts_under=self.state_dir)

    def run(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.cleanup_stale()
        self.register()
        threads = [
            threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True),
            # A node may list only its own pods; with one node that is every running pod.
            threading.Thread(target=self.watch_forever, args=("/api/v1/pods", self.on_pod),
                             kwargs={"fieldSelector": f"spec.nodeName={self.config.node_name}"},
                             name="watch-pods", daemon=True),
            threading.Thread(target=self.watch_forever,
                             args=("/api/v1/services", self.on_service),
                             name="watch-services", daemon=True),
        ]
        config = self.config
        server = serve_kubelet_api(self, host=config.gateway, port=config.port,
                                   ca_file=config.ca_file, cert_file=config.cert_file,
                                   key_file=config.key_file)
        threads.append(threading.Thread(target=server.serve_forever, name="kubelet-api",
                                        daemon=True))
        for thread in threads:
            thread.start()
        log.info("node %s registered; serving the kubelet API on %s:%d", self.config.node_name,
                 self.config.gateway, self.config.port)
        self.stopping.wait()
        server.shutdown()
        with self.workers_lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.update(worker.pod, deleted=False, shutdown=True)
        for worker in workers:
            worker.join(timeout=15)


def main(config_path: Path) -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    agent = NodeAgent(Config.load(config_path))

    def stop(_signum: int, _frame: object) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
