"""The node agent: a stand-in for kubelet and a container runtime on a machine without one.

It registers a Node, renews its Lease, watches the Pods bound to it and runs each in a sandbox
(see runtime.py), reporting phases, container states, exit codes, restarts and termination
messages as a kubelet does; it serves container logs on the kubelet port so `kubectl logs`
works through the API server. Unsupported Pod features are refused with an Event (podspec.py).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import logging
import os
import platform
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailor_localstack import netns
from tailor_localstack.nodeagent import hosts, podspec
from tailor_localstack.nodeagent.api import JSON, ApiError, KubeClient
from tailor_localstack.nodeagent.kubelet_server import serve_kubelet_api
from tailor_localstack.nodeagent.quantity import parse_quantity
from tailor_localstack.nodeagent.runtime import (
    MEMORY_CGROUP_ROOT,
    ContainerRun,
    Sandbox,
    VolumeError,
    decode_data,
    python_executable,
)

log = logging.getLogger("tailor.nodeagent")
KUBERNETES_VERSION = "v1.36.3"
LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 10
NODE_STATUS_SECONDS = 60
OWN_CONDITIONS = {"PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready"}
DEFAULT_GRACE_SECONDS = 30
RETRY_SECONDS = 2.0


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Config:
    node_name: str
    kubeconfig: str
    state_dir: str
    bridge: str
    gateway: str
    pod_cidr: str
    port: int
    gpus: int
    ca_file: str
    cert_file: str
    key_file: str
    api_server: str
    venv_bin: str
    keep_paths: list[str]

    @classmethod
    def load(cls, path: Path) -> Config:
        return cls(**json.loads(path.read_text()))


class IPAM:
    """Hands out the pod addresses of the stack's /24 (the gateway excluded)."""

    def __init__(self, cidr: str, gateway: str) -> None:
        self._free = [str(ip) for ip in ipaddress.IPv4Network(cidr).hosts() if str(ip) != gateway]
        self._lock = threading.Lock()

    def allocate(self) -> str:
        with self._lock:
            if not self._free:
                raise VolumeError("no pod addresses left on the node")
            return self._free.pop(0)

    def release(self, ip: str) -> None:
        with self._lock:
            if ip not in self._free:
                self._free.insert(0, ip)


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
                    worker = PodWorker(self, pod)
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

    def dns_records(self) -> dict[str, dict[str, list[str]]]:
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
        server = serve_kubelet_api(self, self.config)
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


class PodWorker(threading.Thread):
    """Runs one pod from admission to deletion."""

    def __init__(self, agent: NodeAgent, pod: JSON) -> None:
        super().__init__(name=f"pod-{pod['metadata']['name']}", daemon=True)
        self.agent = agent
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.namespace: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.wakeup = threading.Event()
        self.deleted = False
        self.shutdown = False
        self.sandbox: Sandbox | None = None
        self.runs: dict[str, ContainerRun] = {}
        self.statuses: dict[str, JSON] = {}
        self.restart_at: dict[str, float] = {}
        self.last_published: JSON | None = None
        self.hosts_text = ""
        self.lock = threading.Lock()

    # --------------------------------------------------------------- inputs from watches
    def update(self, pod: JSON, *, deleted: bool, shutdown: bool = False) -> None:
        self.pod = pod
        self.deleted = self.deleted or deleted
        self.shutdown = self.shutdown or shutdown
        self.wakeup.set()

    def deletion_requested(self) -> bool:
        return self.deleted or self.shutdown or bool(self.pod["metadata"].get(
            "deletionTimestamp"))

    def is_running(self, container: str, restart: int) -> bool:
        run = self.runs.get(container)
        return run is not None and run.restart_count == restart and not run.exited.is_set()

    def write_hosts(self, records: dict[str, dict[str, list[str]]]) -> None:
        with self.lock:
            if self.sandbox is None:
                return
            text = hosts.hosts_file(self.pod, self.sandbox.ip, records)
            if text != self.hosts_text:
                self.sandbox.write_hosts(text)
                self.hosts_text = text

    # --------------------------------------------------------------- API helpers
    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        stamp = now()
        body = {
            "metadata": {"name": f"{self.name}.{secrets.token_hex(8)}",
                         "namespace": self.namespace},
            "involvedObject": {"kind": "Pod", "namespace": self.namespace, "name": self.name,
                               "uid": self.uid, "apiVersion": "v1"},
            "reason": reason, "message": message, "type": "Warning" if warning else "Normal",
            "source": {"component": "kubelet", "host": self.agent.config.node_name},
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "reportingComponent": "kubelet", "reportingInstance": self.agent.config.node_name,
        }
        try:
            self.agent.api.create(f"/api/v1/namespaces/{self.namespace}/events", body)
        except ApiError as error:
            log.warning("event %s on %s/%s not posted: %s", reason, self.namespace, self.name,
                        error)

    def _data(self, kind: str) -> Callable[[str, str], dict[str, bytes] | None]:
        def lookup(namespace: str, name: str) -> dict[str, bytes] | None:
            try:
                return decode_data(self.agent.api.get(
                    f"/api/v1/namespaces/{namespace}/{kind}/{name}"))
            except ApiError as error:
                if error.status == 404:
                    return None
                raise
        return lookup

    def _text_data(self, kind: str) -> podspec.DataLookup:
        raw = self._data(kind)

        def lookup(namespace: str, name: str) -> dict[str, str] | None:
            data = raw(namespace, name)
            return None if data is None else {k: v.decode(errors="replace")
                                              for k, v in data.items()}
        return lookup

    def _token(self, source: JSON) -> str:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
            "audiences": [source["audience"]] if source.get("audience") else [],
            "expirationSeconds": int(source.get("expirationSeconds", 3607)),
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name,
                               "uid": self.uid}}}
        response = self.agent.api.create(
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token", request)
        token: str = response["status"]["token"]
        return token

    # --------------------------------------------------------------- status
    def publish(self, phase: str, *, reason: str | None = None, message: str | None = None
                ) -> None:
        spec = self.pod["spec"]
        mains = [c["name"] for c in spec["containers"]]
        inits = [c["name"] for c in spec.get("initContainers", []) or []]
        ready = all(self.statuses.get(n, {}).get("ready") for n in mains) and phase == "Running"
        initialized = all("terminated" in self.statuses.get(n, {}).get("state", {})
                          and self.statuses[n]["state"]["terminated"]["exitCode"] == 0
                          for n in inits)
        previous = {c["type"]: c for c in self.pod.get("status", {}).get("conditions", []) or []}

        def condition(kind: str, value: bool, why: str | None = None) -> JSON:
            status = "True" if value else "False"
            old = previous.get(kind)
            since = now() if old is None or old.get("status") != status \
                else old["lastTransitionTime"]
            result = {"type": kind, "status": status, "lastTransitionTime": since,
                      "lastProbeTime": None}
            if why and not value:
                result["reason"] = why
            return result

        conditions = [c for t, c in previous.items() if t not in OWN_CONDITIONS]
        sandbox_ready = self.sandbox is not None and phase in ("Pending", "Running")
        conditions += [
            condition("PodReadyToStartContainers", sandbox_ready),
            condition("Initialized", initialized, "ContainersNotInitialized"),
            condition("ContainersReady", ready, "ContainersNotReady"),
            condition("Ready", ready, "ContainersNotReady" if phase == "Running" else
                      ("PodCompleted" if phase in ("Succeeded", "Failed") else None)),
        ]
        status: JSON = {
            "phase": phase, "conditions": conditions,
            "hostIP": self.agent.config.gateway,
            "hostIPs": [{"ip": self.agent.config.gateway}],
            "startTime": self.pod.get("status", {}).get("startTime") or now(),
            "containerStatuses": [self.statuses[n] for n in mains if n in self.statuses],
            "initContainerStatuses": [self.statuses[n] for n in inits if n in self.statuses],
            "reason": reason, "message": message,
        }
        if self.sandbox is not None:
            status |= {"podIP": self.sandbox.ip, "podIPs": [{"ip": self.sandbox.ip}]}
        comparable = {k: v for k, v in status.items() if k != "conditions"}
        comparable["conditions"] = [(c["type"], c["status"]) for c in conditions]
        if comparable == self.last_published:
            return
        try:
            self.pod = self.agent.api.merge_patch(f"{self.path}/status", {"status": status})
            self.last_published = comparable
        except ApiError as error:
            if error.status != 404:
                log.warning("status of %s/%s not updated: %s", self.namespace, self.name, error)

    def _waiting(self, container: JSON, reason: str, message: str = "") -> None:
        old = self.statuses.get(container["name"], {})
        self.statuses[container["name"]] = {
            "name": container["name"], "image": container.get("image", ""), "imageID": "",
            "ready": False, "started": False, "restartCount": old.get("restartCount", 0),
            "state": {"waiting": {"reason": reason, "message": message}},
            "lastState": old.get("lastState", {}),
        }

    # --------------------------------------------------------------- containers
    def start_container(self, container: JSON) -> bool:
        """Start one container; False (with a waiting reason) when its config is missing."""
        assert self.sandbox is not None
        name = container["name"]
        restarts = self.statuses.get(name, {}).get("restartCount", 0)
        config = self.agent.config
        defaults = {
            "HOSTNAME": self.pod["spec"].get("hostname") or self.name, "HOME": "/tmp",
            "PATH": f"{config.venv_bin}:{podspec.DEFAULT_PATH}",
            "KUBERNETES_SERVICE_HOST": config.gateway,
            "KUBERNETES_SERVICE_PORT": config.api_server.rsplit(":", 1)[1],
            "KUBERNETES_SERVICE_PORT_HTTPS": config.api_server.rsplit(":", 1)[1],
        }
        try:
            env = podspec.container_env(self.pod, container, secrets=self._text_data("secrets"),
                                        config_maps=self._text_data("configmaps"),
                                        defaults=defaults)
        except podspec.EnvError as error:
            self._waiting(container, "CreateContainerConfigError", str(error))
            self.event("Failed", f"Error: {error}", warning=True)
            self.restart_at[name] = time.monotonic() + RETRY_SECONDS
            return False
        run = ContainerRun(self.sandbox, container, restart_count=restarts,
                           argv=podspec.command_line(container, env), env=env,
                           hostname=defaults["HOSTNAME"], keep_paths=config.keep_paths,
                           cgroup_parent=self.agent.cgroup_parent)
        run.start(python_executable())
        run.exited.wait(0)
        self.runs[name] = run
        old = self.statuses.get(name, {})
        self.statuses[name] = {
            "name": name, "image": container.get("image", ""), "imageID": "",
            "containerID": f"tailor://{self.uid}/{name}/{restarts}",
            "ready": True, "started": True, "restartCount": restarts,
            "state": {"running": {"startedAt": now()}},
            "lastState": old.get("lastState", {}),
        }
        self.event("Started", f"Started container {name}")
        return True

    def collect_exit(self, container: JSON) -> int:
        """Record the exit of a container's current run; returns its exit code."""
        run = self.runs[container["name"]]
        code = run.exit_code if run.exit_code is not None else 137
        oom = run.oom_killed()
        reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        terminated: JSON = {"exitCode": code, "reason": reason,
                            "startedAt": self.statuses[run.name]["state"].get("running", {})
                            .get("startedAt", now()), "finishedAt": now(),
                            "containerID": self.statuses[run.name].get("containerID")}
        if code > 128:
            terminated["signal"] = code - 128
        message = run.termination_message()
        if message:
            terminated["message"] = message
        run.cleanup()
        status = self.statuses[run.name]
        status |= {"ready": False, "started": False, "state": {"terminated": terminated}}
        return code

    def kill_all(self, grace: float) -> None:
        running = [r for r in self.runs.values() if not r.exited.is_set()]
        for run in running:
            self.event("Killing", f"Stopping container {run.name}")
            run.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for run in running:
            run.exited.wait(max(0.0, deadline - time.monotonic()))
        for run in running:
            if not run.exited.is_set():
                run.kill()
                run.exited.wait(5)

    # --------------------------------------------------------------- main loop
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s failed in the node agent", self.namespace, self.name)
            self.event("NodeAgentError", "the node agent failed to run this pod; see its log",
                       warning=True)
            self.publish("Failed", reason="NodeAgentError", message="see the node agent's log")
        finally:
            self.teardown()
            if self.deletion_requested() and not self.shutdown:
                self.finalize_deletion()
            self.agent.forget(self.uid)

    def _run(self) -> None:
        problems = podspec.unsupported_features(self.pod)
        if problems:
            message = "not supported by the local node agent: " + "; ".join(problems)
            self.event("UnsupportedPodFeature", message, warning=True)
            self.publish("Failed", reason="UnsupportedPodFeature", message=message)
            self.wait_for_deletion()
            return
        if not self.prepare_sandbox():
            return
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for init in self.pod["spec"].get("initContainers", []) or []:
            self._waiting(init, "PodInitializing")
        for container in self.pod["spec"]["containers"]:
            self._waiting(container, "PodInitializing")
        self.publish("Pending")
        for init in self.pod["spec"].get("initContainers", []) or []:
            outcome = self.run_to_completion(init, policy)
            if outcome != "done":
                if outcome == "failed":
                    self.publish("Failed")
                    self.release_sandbox()
                    self.wait_for_deletion()
                return
        self.run_main_containers(policy)

    def prepare_sandbox(self) -> bool:
        spec = self.pod["spec"]
        host_network = bool(spec.get("hostNetwork"))
        ip = self.agent.config.gateway if host_network else self.agent.ipam.allocate()
        shm_bytes = None
        for volume in spec.get("volumes", []) or []:
            for c in spec["containers"]:
                for m in c.get("volumeMounts", []) or []:
                    if m["name"] == volume["name"] and m["mountPath"] == "/dev/shm" \
                            and (volume.get("emptyDir") or {}).get("sizeLimit"):
                        shm_bytes = int(parse_quantity(volume["emptyDir"]["sizeLimit"]))
        sandbox = Sandbox(
            uid=self.uid, directory=self.agent.state_dir / "pods" / self.uid, ip=ip,
            netns_name=None if host_network else self.agent.netns_prefix + self.uid[:8],
            veth="tv" + self.agent.netns_prefix[4:8] + self.uid[:8])
        sandbox.create(bridge=self.agent.config.bridge,
                       prefix_len=ipaddress.IPv4Network(self.agent.config.pod_cidr).prefixlen,
                       shm_bytes=shm_bytes)
        with self.lock:
            self.sandbox = sandbox
        self.pod.setdefault("status", {})["podIP"] = ip
        self.write_hosts(self.agent.dns_records())
        while True:
            try:
                sandbox.prepare_volumes(
                    self.pod, secret=self._data("secrets"), config_map=self._data("configmaps"),
                    token=self._token, field_ref=lambda p: podspec.field_ref(self.pod, p))
                return True
            except (VolumeError, ApiError) as error:
                self.event("FailedMount", f"MountVolume.SetUp failed: {error}", warning=True)
                self.publish("Pending")
                if self.wakeup.wait(RETRY_SECONDS) and self.deletion_requested():
                    return False
                self.wakeup.clear()
                if self.deletion_requested():
                    return False

    def run_to_completion(self, container: JSON, policy: str) -> str:
        """Run an init container until it succeeds: 'done', 'failed' or 'deleted'."""
        while True:
            if self.deletion_requested():
                return "deleted"
            if not self.start_container(container):
                self.publish("Pending")
                self.wakeup.wait(RETRY_SECONDS)
                self.wakeup.clear()
                continue
            self.publish("Pending")
            run = self.runs[container["name"]]
            while not run.exited.wait(0.5):
                if self.deletion_requested():
                    self.kill_all(self.grace_seconds())
                    return "deleted"
            code = self.collect_exit(container)
            if code == 0:
                return "done"
            if policy == "Never":
                return "failed"
            self.schedule_restart(container)
            self.publish("Pending")
            self.wakeup.wait(self.restart_at[container["name"]] - time.monotonic())
            self.wakeup.clear()

    def schedule_restart(self, container: JSON) -> None:
        status = self.statuses[container["name"]]
        status["lastState"] = status["state"]
        status["restartCount"] = status.get("restartCount", 0) + 1
        delay = podspec.backoff_seconds(status["restartCount"])
        self.restart_at[container["name"]] = time.monotonic() + delay
        status["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message":
                                       f"back-off {delay:.0f}s restarting failed container "
                                       f"{container['name']}"}}
        self.event("BackOff", f"Back-off restarting container {container['name']}",
                   warning=True)

    def grace_seconds(self) -> float:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        return float(min(grace, 10) if self.shutdown else grace)

    def run_main_containers(self, policy: str) -> None:
        containers = {c["name"]: c for c in self.pod["spec"]["containers"]}
        for container in containers.values():
            self.start_container(container)
        started = time.monotonic()
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        phase = "Running"
        while True:
            if self.deletion_requested():
                self.kill_all(self.grace_seconds())
                for name, container in containers.items():
                    if name in self.runs and self.statuses[name]["state"].get("running"):
                        self.collect_exit(container)
                if not self.shutdown:
                    self.publish("Failed" if phase == "Running" else phase)
                return
            if deadline is not None and time.monotonic() - started > deadline:
                self.kill_all(self.grace_seconds())
                for name, container in containers.items():
                    if self.statuses[name]["state"].get("running"):
                        self.collect_exit(container)
                message = f"Pod was active on the node longer than {deadline}s"
                self.event("DeadlineExceeded", message, warning=True)
                self.publish("Failed", reason="DeadlineExceeded", message=message)
                break
            states: list[tuple[str, int | None]] = []
            for name, container in containers.items():
                run = self.runs.get(name)
                status = self.statuses[name]
                if run is not None and run.exited.is_set() and "running" in status["state"]:
                    code = self.collect_exit(container)
                    if podspec.will_restart(policy, code):
                        self.schedule_restart(container)
                if "waiting" in status["state"]:
                    due = self.restart_at.get(name, 0)
                    if time.monotonic() >= due and self.start_container(container):
                        self.restart_at.pop(name, None)
                state = next(iter(self.statuses[name]["state"]))
                code = self.statuses[name]["state"].get("terminated", {}).get("exitCode")
                states.append((state, code))
            phase = podspec.pod_phase(states)
            self.publish(phase)
            if phase in ("Succeeded", "Failed"):
                break
            self.wakeup.wait(0.2)
            self.wakeup.clear()
        self.release_sandbox()
        self.wait_for_deletion()

    def wait_for_deletion(self) -> None:
        while not self.deletion_requested():
            self.wakeup.wait(5)
            self.wakeup.clear()

    def release_sandbox(self) -> None:
        """A finished pod keeps its IP in status and its logs, but its network goes."""
        with self.lock:
            sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            sandbox.teardown()
            if sandbox.netns_name:
                self.agent.ipam.release(sandbox.ip)

    def teardown(self) -> None:
        self.kill_all(0)
        self.release_sandbox()

    def finalize_deletion(self) -> None:
        """Confirm the deletion to the API server, as the kubelet does once containers are gone."""
        try:
            self.agent.api.delete(self.path, {"gracePeriodSeconds": 0,
                                              "preconditions": {"uid": self.uid}})
        except ApiError as error:
            if error.status not in (404, 409):
                log.warning("pod %s/%s not finalized: %s", self.namespace, self.name, error)


def main(config_path: Path) -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    agent = NodeAgent(Config.load(config_path))

    def stop(_signum: int, _frame: object) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
