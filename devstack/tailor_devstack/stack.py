"""Start, stop and inspect the local stack: a real control plane and the services around it.

Everything runs as background processes owned by this machine's root user; state lives in one
directory (`.tailor/` in the clone). Services listen on the gateway address of a private bridge
in 198.18.0.0/15 (which pods in their network namespaces reach too) or on loopback.

What each component runs is in commands.py; what `up` saves is in state.py.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from pathlib import Path

import requests
import yaml

from tailor_devstack import netns, nodeconf, nodeimages, nodens, services
from tailor_devstack.commands import Launch, binary_paths, command, node_binary_paths
from tailor_devstack.pki import PKI, Identity, kubeconfig
from tailor_devstack.processes import free_port, is_ours, pids_under, signal_group
from tailor_devstack.state import (
    DEFAULT_GPUS,
    NODE_NAME,
    StackError,
    StackState,
    stack_dir,
    venv_bin,
)

STOP_GRACE_SECONDS = 10
# Listen on the bridge's gateway, where pods reach them; the rest listen on loopback.
ON_GATEWAY = {"apiserver", "minio", "minio-console", "mlflow", "prometheus", "alertmanager"}
# The node, after the control plane (containerd starts earlier, beside the API server: the
# kubelet needs it, and the images load into it meanwhile).
NODE_COMPONENTS = ("kubelet", "kube-proxy", "coredns")
# The images a private stack (a test's own) imports unless told otherwise: the trainer image is
# gigabytes, and each private stack has a containerd store of its own, removed at `down`.
PRIVATE_STACK_IMAGES = ("pause", "operator")


def _subnet_for(directory: Path) -> ipaddress.IPv4Network:
    """One /24 of 198.18.0.0/15 per stack directory, so two clones' stacks do not collide
    (nodens.NodeLayout divides it: the bridge, the Service range, the pods)."""
    index = int(hashlib.sha256(str(directory).encode()).hexdigest(), 16) % 512
    base = int(ipaddress.IPv4Address("198.18.0.0")) + index * 256
    return ipaddress.IPv4Network((base, 24))


class Stack:
    """The local stack rooted at one state directory."""

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory or stack_dir()
        self.logs = self.dir / "logs"
        self.run = self.dir / "run"
        self.pki = PKI(self.dir / "pki")
        # Seconds from the start of the last `up` until each component was ready.
        self.ready_after: dict[str, float] = {}
        self.images: Sequence[str] | None = None

    # ----------------------------------------------------------------------------- state
    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def load_state(self) -> StackState | None:
        if not self.state_file.exists():
            return None
        saved = json.loads(self.state_file.read_text())
        known = {f.name for f in fields(StackState)}  # a stack saved by an older version
        return StackState(**{k: v for k, v in saved.items() if k in known})

    def _save_state(self, state: StackState) -> None:
        self.state_file.write_text(json.dumps(asdict(state), indent=2))
        self.state_file.chmod(0o600)

    # ----------------------------------------------------------------------------- status
    def health(self, state: StackState) -> dict[str, bool]:
        """Whether each component's process is alive and its health endpoint answers."""
        return {name: self._alive(state, name) and check() for name, check in
                self._health_checks(state).items()}

    def _health_checks(self, state: StackState) -> dict[str, Callable[[], bool]]:
        admin = (str(self.pki.cert("admin")), str(self.pki.key("admin")))
        ca = str(self.pki.ca_cert)

        def http(url: str, **kwargs: object) -> Callable[[], bool]:
            def check() -> bool:
                try:
                    return requests.get(url, timeout=2, **kwargs).status_code == 200  # type: ignore[arg-type]
                except requests.RequestException:
                    return False
            return check

        return {
            "etcd": http(f"http://127.0.0.1:{state.ports['etcd']}/health"),
            "kube-apiserver": http(f"{state.api_server}/readyz", cert=admin, verify=ca),
            # Ready once its ServiceAccount controller has run: pods are refused until then.
            "kube-controller-manager": lambda: http(
                f"https://127.0.0.1:{state.ports['controller-manager']}/healthz", verify=ca)()
            and http(f"{state.api_server}/api/v1/namespaces/default/serviceaccounts/default",
                     cert=admin, verify=ca)(),
            "kube-scheduler": http(
                f"https://127.0.0.1:{state.ports['scheduler']}/healthz", verify=ca),
            "minio": http(f"{state.s3_endpoint}/minio/health/ready"),
            "mlflow": http(f"{state.mlflow_uri}/health"),
            "prometheus": http(f"{state.prometheus_url}/-/ready"),
            "alertmanager": http(f"{state.alertmanager_url}/-/ready"),
        } | self._node_checks(state, http)

    def _node_checks(self, state: StackState, http: Callable[..., Callable[[], bool]]
                     ) -> dict[str, Callable[[], bool]]:
        layout = nodens.layout_of(state)
        return {
            "containerd": lambda: nodeimages.answers(nodeconf.containerd_socket(layout)),
            "kubelet": lambda: self._node_ready(state),
            "kube-proxy": http(f"http://{layout.node_ip}:{nodeconf.PROXY_HEALTHZ_PORT}/livez"),
            "coredns": http(f"http://{layout.node_ip}:{nodeconf.COREDNS_HEALTH_PORT}/health"),
        }

    def _load_images(self, state: StackState, paths: dict[str, Path],
                     progress: Callable[[str], None]) -> None:
        layout = nodens.layout_of(state)
        nodeimages.load(paths["ctr"], nodeconf.containerd_socket(layout),
                        nodeconf.containerd_root(layout, paths["node-cache"]).parent
                        / "imported.json", progress, self.images)

    def node_images(self, state: StackState) -> set[str]:
        """The images the node has, by reference (what a pod's `image` can name)."""
        return nodeimages.listed(node_binary_paths()["ctr"],
                                 nodeconf.containerd_socket(nodens.layout_of(state)))

    def _node_ready(self, state: StackState) -> bool:
        admin = (str(self.pki.cert("admin")), str(self.pki.key("admin")))
        try:
            node = requests.get(f"{state.api_server}/api/v1/nodes/{NODE_NAME}", cert=admin,
                                verify=str(self.pki.ca_cert), timeout=2)
        except requests.RequestException:
            return False
        if node.status_code != 200:
            return False
        conditions = node.json().get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _alive(self, state: StackState, name: str) -> bool:
        pid = state.pids.get(name)
        return pid is not None and is_ours(pid, self.dir)

    # ----------------------------------------------------------------------------- up
    @property
    def shared(self) -> bool:
        """The clone's own stack (`make up`), as opposed to a test's private one."""
        return self.dir.resolve() == stack_dir()

    def up(self, *, gpus: int = DEFAULT_GPUS, timeout: float = 120.0,
           images: Sequence[str] | None = None,
           progress: Callable[[str], None] = print) -> StackState:
        """Start the stack (or find it running); `images` names the image archives the node
        imports (`tailor-<name>.oci.tar`): all for the shared stack, PRIVATE_STACK_IMAGES for
        another, unless given."""
        self.images = images if images is not None or self.shared else PRIVATE_STACK_IMAGES
        state = self.load_state()
        if state is not None and all(self.health(state).values()):
            progress(f"the local stack is already running (state in {self.dir})")
            self._load_images(state, node_binary_paths(), progress)  # what `make images` changed
            self._write_env(state)
            return state
        if state is not None:
            progress("found a stopped or broken stack: cleaning it up first")
        self.down(progress=lambda _msg: None)
        self.ready_after.clear()
        paths = binary_paths() | node_binary_paths()
        started = time.monotonic()
        state = self._plan(gpus)
        self._start_all(state, paths, lambda names: self._wait(state, names, started, timeout,
                                                               progress), progress)
        self._write_env(state)
        progress(f"the local stack is ready in {time.monotonic() - started:.1f}s; "
                 f"`source {self.dir / 'env'}` to use it")
        return state

    def _plan(self, gpus: int) -> StackState:
        """Directories, the bridge, ports, addresses and certificates of a new stack."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for d in (self.logs, self.run):
            d.mkdir(exist_ok=True)
        subnet = _subnet_for(self.dir)
        gateway = str(next(subnet.hosts()))
        bridge = "tlr" + hashlib.sha256(str(self.dir).encode()).hexdigest()[:6]
        layout = nodens.NodeLayout(self.dir, subnet)
        netns.ensure_bridge(bridge, f"{gateway}/{layout.lan.prefixlen}")
        ports = {name: free_port(gateway if name in ON_GATEWAY else "127.0.0.1")
                 for name in ("etcd", "etcd-peer", "apiserver", "controller-manager",
                              "scheduler", "minio", "minio-console", "mlflow",
                              "prometheus", "alertmanager", "alertmanager-cluster")}
        state = StackState(
            dir=str(self.dir), bridge=bridge, gateway=gateway, pod_cidr=layout.pod_cidr,
            ports=ports, s3_access_key="tailor-" + secrets.token_hex(4),
            s3_secret_key=secrets.token_urlsafe(24), gpus=gpus,
            service_cidr=layout.service_cidr,
        )
        self._make_pki(state)
        self._save_state(state)
        return state

    def _start_all(self, state: StackState, paths: dict[str, Path],
                   wait: Callable[[list[str]], None], progress: Callable[[str], None]) -> None:
        """Every component in dependency order, overlapping the slow starts."""
        layout = nodens.layout_of(state)
        for name in ("etcd", "minio", "prometheus", "alertmanager"):
            self._start(state, name, paths)
        nodens.create(layout, state.bridge)
        self._start(state, "containerd", paths)
        wait(["etcd"])
        self._start(state, "kube-apiserver", paths)
        wait(["minio"])
        services.ensure_bucket(state.s3_endpoint, state.s3_access_key, state.s3_secret_key,
                               "mlflow")
        self._start(state, "mlflow", paths)
        wait(["containerd"])
        self._load_images(state, paths, progress)
        wait(["kube-apiserver"])
        self._apply(nodeconf.COREDNS_RBAC, paths)
        for name in ("kube-controller-manager", "kube-scheduler", *NODE_COMPONENTS):
            self._start(state, name, paths)
        wait(list(self._health_checks(state)))
        if state.gpus:
            self._advertise_gpus(state, paths)

    def _advertise_gpus(self, state: StackState, paths: dict[str, Path]) -> None:
        """`nvidia.com/gpu` in the node's capacity, for scheduling tests: Kubernetes' way of
        advertising a node-level extended resource (no device is attached, none exists)."""
        patch = [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu",
                  "value": str(state.gpus)}]
        subprocess.run([str(paths["kubectl"]), f"--kubeconfig={self.dir / 'kubeconfig'}",
                        "patch", "node", NODE_NAME, "--subresource=status", "--type=json",
                        "-p", json.dumps(patch)], check=True, capture_output=True)

    def _apply(self, manifest: str, paths: dict[str, Path]) -> None:
        subprocess.run([str(paths["kubectl"]), f"--kubeconfig={self.dir / 'kubeconfig'}",
                        "apply", "-f", "-"], input=manifest, text=True, check=True,
                       capture_output=True)

    def _make_pki(self, state: StackState) -> None:
        clients = [
            Identity("admin", "tailor-admin", ("system:masters",)),
            Identity("controller-manager", "system:kube-controller-manager"),
            Identity("scheduler", "system:kube-scheduler"),
            Identity("node", f"system:node:{NODE_NAME}", ("system:nodes",)),
            Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                     ("system:masters",)),
            Identity("kube-proxy", "system:kube-proxy"),
            Identity("coredns", "system:coredns"),
        ]
        service_ip = str(next(ipaddress.IPv4Network(state.service_cidr).hosts()))
        self.pki.ensure(
            server_ips=[state.gateway, "127.0.0.1", service_ip, nodens.layout_of(state).node_ip],
            server_names=["localhost", "kubernetes", "kubernetes.default",
                          "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                          NODE_NAME],
            clients=clients,
        )
        for user in ("admin", "controller-manager", "scheduler", "node", "kube-proxy", "coredns"):
            config = kubeconfig(server=state.api_server, ca=self.pki.ca_cert,
                                cert=self.pki.cert(user), key=self.pki.key(user), user=user)
            path = self.pki.dir / f"{user}.kubeconfig"
            path.write_text(yaml.safe_dump(config))
            path.chmod(0o600)
        shutil.copy(self.pki.dir / "admin.kubeconfig", self.dir / "kubeconfig")
        (self.dir / "kubeconfig").chmod(0o600)

    def _start(self, state: StackState, name: str, paths: dict[str, Path]) -> None:
        argv, env = command(Launch(self.dir, state, self.pki, paths), name)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=self.dir)
        state.pids[name] = proc.pid
        (self.run / f"{name}.pid").write_text(str(proc.pid))
        self._save_state(state)

    def _wait(self, state: StackState, names: list[str], started: float, timeout: float,
              progress: Callable[[str], None]) -> None:
        checks = self._health_checks(state)
        pending = set(names) - set(self.ready_after)

        while pending:
            for name in sorted(pending):
                if not self._alive(state, name):
                    raise StackError(f"{name} exited during start-up; see "
                                     f"{self.logs / (name + '.log')}")
                if checks[name]():
                    pending.discard(name)
                    self.ready_after[name] = time.monotonic() - started
                    progress(f"  {name:<24} ready after {self.ready_after[name]:5.1f}s")
            if pending and time.monotonic() - started > timeout:
                raise StackError(f"not ready after {timeout:.0f}s: {', '.join(sorted(pending))}"
                                 f"; see the logs in {self.logs}")
            if pending:
                time.sleep(0.1)  # poll interval of a start-up loop bounded by the deadline

    def _write_env(self, state: StackState) -> None:
        kube_bin = binary_paths()["kubectl"].parent
        lines = {
            "TAILOR_STACK_DIR": str(self.dir),
            "KUBECONFIG": str(self.dir / "kubeconfig"),
            "AWS_ACCESS_KEY_ID": state.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": state.s3_secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": state.s3_endpoint,
            "S3_ENDPOINT_URL": state.s3_endpoint,
            "MLFLOW_S3_ENDPOINT_URL": state.s3_endpoint,
            "MLFLOW_TRACKING_URI": state.mlflow_uri,
            "PROMETHEUS_URL": state.prometheus_url,
            "ALERTMANAGER_URL": state.alertmanager_url,
            "MINIO_CONSOLE_URL": f"http://{state.gateway}:{state.ports['minio-console']}",
            "TAILOR_LOG_DIR": str(self.logs),
        }
        text = "".join(f"export {k}={_shell_quote(v)}\n" for k, v in lines.items())
        path = f"{_shell_quote(str(kube_bin))}:{_shell_quote(str(venv_bin()))}"
        text += f'export PATH={path}:"$PATH"\n'
        env_file = self.dir / "env"
        env_file.write_text(text)
        env_file.chmod(0o600)

    # ----------------------------------------------------------------------------- down
    def down(self, progress: Callable[[str], None] = print) -> None:
        """Stop every process, then remove pod namespaces, mounts and the bridge."""
        (self.dir / "env").unlink(missing_ok=True)
        pids = []
        if self.run.exists():
            for pidfile in self.run.glob("*.pid"):
                try:
                    pid = int(pidfile.read_text())
                except ValueError:
                    pid = -1
                if pid > 0 and is_ours(pid, self.dir):
                    pids.append(pid)
                pidfile.unlink()
        for pid in pids:
            signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS + 5
        while any(is_ours(pid, self.dir) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)  # poll interval of a shutdown loop bounded by the deadline
        for pid in pids:
            if is_ours(pid, self.dir):
                signal_group(pid, signal.SIGKILL)
        # Anything else still running from this stack directory (pods of a crashed agent).
        for pid in pids_under(self.dir):
            os.kill(pid, signal.SIGKILL)
        state = self.load_state()
        if state is not None:
            layout = nodens.layout_of(state)
            nodens.destroy(layout)
            nodens.restore_sysctls(other_nodes_running=nodens.other_nodes_running(layout))
            if not self.shared:  # a private stack's images go with it
                shutil.rmtree(nodeconf.containerd_root(layout, node_binary_paths()["node-cache"])
                              .parent, ignore_errors=True)
        netns.cleanup(prefix=netns.namespace_prefix(self.dir),
                      bridge=state.bridge if state else None, mounts_under=self.dir)
        for transient in ("etcd", "node", "prometheus/data", "alertmanager/data"):
            shutil.rmtree(self.dir / transient, ignore_errors=True)
        if pids:
            progress(f"stopped {len(pids)} processes of the local stack")


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"
