"""One pod from admission to deletion, as the kubelet runs it.

A worker thread per pod: it refuses unsupported features, prepares the sandbox and volumes
(retrying while a Secret or ConfigMap is missing), runs init containers in order and then the
main containers with the pod's restart policy and crash-loop back-off, publishes the status
after every change, and on deletion stops the containers within their grace period and confirms
the deletion to the API server.

It gets what it needs from its node as a `NodeContext`, not the agent itself, so the agent
imports this module and nothing here imports the agent.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tailor_devstack.nodeagent import hosts, pod_status, podspec
from tailor_devstack.nodeagent.api import JSON, ApiError, KubeClient
from tailor_devstack.nodeagent.config import IPAM, Config
from tailor_devstack.nodeagent.pod_api import PodApi
from tailor_devstack.nodeagent.runtime import ContainerRun, Sandbox, VolumeError, python_executable

log = logging.getLogger("tailor.nodeagent")
DEFAULT_GRACE_SECONDS = 30
RETRY_SECONDS = 2.0
Records = dict[str, dict[str, list[str]]]


@dataclass(frozen=True)
class NodeContext:
    """What a pod worker uses of its node."""

    config: Config
    api: KubeClient
    ipam: IPAM
    state_dir: Path
    netns_prefix: str
    cgroup_parent: Path | None
    dns_records: Callable[[], Records]  # the cluster's names as the node knows them now
    forget: Callable[[str], None]  # called with the pod's uid when the worker ends


class PodWorker(threading.Thread):
    """Runs one pod from admission to deletion."""

    def __init__(self, node: NodeContext, pod: JSON) -> None:
        super().__init__(name=f"pod-{pod['metadata']['name']}", daemon=True)
        self.node = node
        self.client = PodApi(node.api, node.config.node_name, pod)
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

    def write_hosts(self, records: Records) -> None:
        with self.lock:
            if self.sandbox is None:
                return
            text = hosts.hosts_file(self.pod, self.sandbox.ip, records)
            if text != self.hosts_text:
                self.sandbox.write_hosts(text)
                self.hosts_text = text

    # --------------------------------------------------------------- status
    def publish(self, phase: str, *, reason: str | None = None, message: str | None = None
                ) -> None:
        """Patch the pod's status, unless it is what was last published."""
        sandbox = self.sandbox
        status = pod_status.pod_status(
            self.pod, self.statuses, phase, sandbox_ip=sandbox.ip if sandbox else None,
            host_ip=self.node.config.gateway, reason=reason, message=message)
        comparable = pod_status.comparable(status)
        if comparable == self.last_published:
            return
        updated = self.client.patch_status(status)
        if updated is not None:
            self.pod = updated
            self.last_published = comparable

    def _waiting(self, container: JSON, reason: str, message: str = "") -> None:
        old = self.statuses.get(container["name"], {})
        self.statuses[container["name"]] = pod_status.waiting(container, old, reason, message)

    # --------------------------------------------------------------- containers
    def _env_defaults(self) -> dict[str, str]:
        config = self.node.config
        api_port = config.api_server.rsplit(":", 1)[1]
        return {
            "HOSTNAME": self.pod["spec"].get("hostname") or self.name, "HOME": "/tmp",
            "PATH": f"{config.venv_bin}:{podspec.DEFAULT_PATH}",
            "KUBERNETES_SERVICE_HOST": config.gateway,
            "KUBERNETES_SERVICE_PORT": api_port,
            "KUBERNETES_SERVICE_PORT_HTTPS": api_port,
        }

    def start_container(self, container: JSON) -> bool:
        """Start one container; False (with a waiting reason) when its config is missing."""
        assert self.sandbox is not None
        name = container["name"]
        restarts = self.statuses.get(name, {}).get("restartCount", 0)
        defaults = self._env_defaults()
        try:
            env = podspec.container_env(self.pod, container,
                                        secrets=self.client.text_data("secrets"),
                                        config_maps=self.client.text_data("configmaps"),
                                        defaults=defaults)
        except podspec.EnvError as error:
            self._waiting(container, "CreateContainerConfigError", str(error))
            self.client.event("Failed", f"Error: {error}", warning=True)
            self.restart_at[name] = time.monotonic() + RETRY_SECONDS
            return False
        run = ContainerRun(self.sandbox, container, restart_count=restarts,
                           argv=podspec.command_line(container, env), env=env,
                           hostname=defaults["HOSTNAME"], keep_paths=self.node.config.keep_paths,
                           cgroup_parent=self.node.cgroup_parent)
        run.start(python_executable())
        run.exited.wait(0)
        self.runs[name] = run
        self.statuses[name] = pod_status.running(container, self.statuses.get(name, {}),
                                                 pod_uid=self.uid, restarts=restarts)
        self.client.event("Started", f"Started container {name}")
        return True

    def collect_exit(self, container: JSON) -> int:
        """Record the exit of a container's current run; returns its exit code."""
        run = self.runs[container["name"]]
        code = run.exit_code if run.exit_code is not None else 137
        oom = run.oom_killed()
        message = run.termination_message()
        run.cleanup()
        # In place: the main loop holds this status dict across the call.
        self.statuses[run.name] |= pod_status.terminated(self.statuses[run.name], code,
                                                         oom_killed=oom, message=message)
        return code

    def kill_all(self, grace: float) -> None:
        running = [r for r in self.runs.values() if not r.exited.is_set()]
        for run in running:
            self.client.event("Killing", f"Stopping container {run.name}")
            run.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for run in running:
            run.exited.wait(max(0.0, deadline - time.monotonic()))
        for run in running:
            if not run.exited.is_set():
                run.kill()
                run.exited.wait(5)

    def schedule_restart(self, container: JSON) -> None:
        name = container["name"]
        status = self.statuses[name]
        delay = podspec.backoff_seconds(status.get("restartCount", 0) + 1)
        self.restart_at[name] = time.monotonic() + delay
        status |= pod_status.restarting(status, name, delay)  # in place, as collect_exit
        self.client.event("BackOff", f"Back-off restarting container {name}", warning=True)

    def grace_seconds(self) -> float:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        return float(min(grace, 10) if self.shutdown else grace)

    # --------------------------------------------------------------- main loop
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s failed in the node agent", self.namespace, self.name)
            try:  # telling the API server may fail too (it may be what failed): never let it
                # end this thread before the teardown below
                self.client.event("NodeAgentError",
                                  "the node agent failed to run this pod; see its log",
                                  warning=True)
                self.publish("Failed", reason="NodeAgentError",
                             message="see the node agent's log")
            except Exception:
                log.exception("could not report pod %s/%s as failed", self.namespace, self.name)
        finally:
            self.teardown()
            if self.deletion_requested() and not self.shutdown:
                self.client.finalize_deletion()
            self.node.forget(self.uid)

    def _run(self) -> None:
        problems = podspec.unsupported_features(self.pod)
        if problems:
            message = "not supported by the local node agent: " + "; ".join(problems)
            self.client.event("UnsupportedPodFeature", message, warning=True)
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
        """The pod's network, /dev/shm and volumes; False when it is deleted meanwhile."""
        spec = self.pod["spec"]
        host_network = bool(spec.get("hostNetwork"))
        node = self.node
        ip = node.config.gateway if host_network else node.ipam.allocate()
        sandbox = Sandbox(
            uid=self.uid, directory=node.state_dir / "pods" / self.uid, ip=ip,
            netns_name=None if host_network else node.netns_prefix + self.uid[:8],
            veth="tv" + node.netns_prefix[4:8] + self.uid[:8])
        sandbox.create(bridge=node.config.bridge,
                       prefix_len=ipaddress.IPv4Network(node.config.pod_cidr).prefixlen,
                       shm_bytes=podspec.shm_size_limit(self.pod))
        with self.lock:
            self.sandbox = sandbox
        self.pod.setdefault("status", {})["podIP"] = ip
        self.write_hosts(node.dns_records())
        while True:
            try:
                sandbox.prepare_volumes(
                    self.pod, secret=self.client.data("secrets"),
                    config_map=self.client.data("configmaps"), token=self._token,
                    field_ref=lambda p: podspec.field_ref(self.pod, p))
                return True
            except (VolumeError, ApiError) as error:
                self.client.event("FailedMount", f"MountVolume.SetUp failed: {error}",
                                  warning=True)
                self.publish("Pending")
                if self.wakeup.wait(RETRY_SECONDS) and self.deletion_requested():
                    return False
                self.wakeup.clear()
                if self.deletion_requested():
                    return False

    def _token(self, source: JSON) -> str:
        service_account = self.pod["spec"].get("serviceAccountName") or "default"
        return self.client.token(service_account, source)

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
                self._deadline_exceeded(containers, deadline)
                break
            phase = podspec.pod_phase([self._step(c, policy) for c in containers.values()])
            self.publish(phase)
            if phase in ("Succeeded", "Failed"):
                break
            self.wakeup.wait(0.2)
            self.wakeup.clear()
        self.release_sandbox()
        self.wait_for_deletion()

    def _step(self, container: JSON, policy: str) -> tuple[str, int | None]:
        """Collect an exit, schedule or make a due restart; the container's (state, exit code)."""
        name = container["name"]
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
        return state, self.statuses[name]["state"].get("terminated", {}).get("exitCode")

    def _deadline_exceeded(self, containers: dict[str, JSON], deadline: float) -> None:
        self.kill_all(self.grace_seconds())
        for name, container in containers.items():
            if self.statuses[name]["state"].get("running"):
                self.collect_exit(container)
        message = f"Pod was active on the node longer than {deadline}s"
        self.client.event("DeadlineExceeded", message, warning=True)
        self.publish("Failed", reason="DeadlineExceeded", message=message)

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
                self.node.ipam.release(sandbox.ip)

    def teardown(self) -> None:
        self.kill_all(0)
        self.release_sandbox()
