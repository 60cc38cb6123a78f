"""Start, stop and inspect the local stack: a real control plane and the services around it.

Everything runs as background processes owned by this machine's root user; state lives in one
directory (`.tailor/` in the clone). Services listen on the gateway address of a private bridge
in 198.18.0.0/15 (which pods in their network namespaces reach too) or on loopback.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests
import yaml

from tailor_localstack import netns, services
from tailor_localstack.pki import PKI, Identity, kubeconfig

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_NAME = "tailor-node"
SERVICE_CIDR = "198.19.255.0/24"  # ClusterIPs are never routed (no kube-proxy); see docs.
DEFAULT_GPUS = 2
STOP_GRACE_SECONDS = 10


class StackError(RuntimeError):
    """A failure the user can act on; the CLI prints it as one line."""


@dataclass
class StackState:
    """What `up` decided, saved so `status`, `down` and the test fixtures can find it."""

    dir: str
    bridge: str
    gateway: str
    pod_cidr: str
    ports: dict[str, int]
    s3_access_key: str
    s3_secret_key: str
    gpus: int = DEFAULT_GPUS
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def api_server(self) -> str:
        return f"https://{self.gateway}:{self.ports['apiserver']}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.gateway}:{self.ports['minio']}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.gateway}:{self.ports['mlflow']}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.gateway}:{self.ports['prometheus']}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{self.gateway}:{self.ports['alertmanager']}"


def stack_dir() -> Path:
    return Path(os.environ.get("TAILOR_STACK_DIR", REPO_ROOT / ".tailor")).resolve()


def venv_bin() -> Path:
    return Path(sys.executable).parent


def binary_paths() -> dict[str, Path]:
    """Where hack/build-binaries.sh put each pinned binary (read from hack/versions.sh)."""
    script = REPO_ROOT / "hack" / "versions.sh"
    out = subprocess.run(
        ["bash", "-c", f'source "{script}"; echo "$TAILOR_BIN_ROOT $KUBERNETES_VERSION '
         f'$ETCD_VERSION $MINIO_VERSION"'],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    root, k8s, etcd, minio = Path(out[0]), out[1], out[2], out[3]
    kube = root / f"kubernetes-{k8s}"
    paths = {name: kube / name for name in
             ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")}
    paths["etcd"] = root / f"etcd-{etcd}" / "etcd"
    paths["minio"] = root / f"minio-{minio}" / "minio"
    for name, debian_package in (("prometheus", "prometheus"),
                                 ("prometheus-alertmanager", "prometheus-alertmanager")):
        found = shutil.which(name)
        if not found:
            raise StackError(f"{name} is missing: install it with `apt-get install -y "
                             f"{debian_package}` (or run `make prereqs` as root)")
        paths[name] = Path(found)
    for name, path in paths.items():
        if not path.exists():
            raise StackError(f"{name} is not built yet ({path}): run `make binaries`")
    return paths


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _subnet_for(directory: Path) -> ipaddress.IPv4Network:
    """One /24 of 198.18.0.0/15 per stack directory, so two clones' stacks do not collide.

    The last /24 of the range is the Service CIDR, so it is never a pod network.
    """
    index = int(hashlib.sha256(str(directory).encode()).hexdigest(), 16) % 511
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

    # ----------------------------------------------------------------------------- state
    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def load_state(self) -> StackState | None:
        if not self.state_file.exists():
            return None
        return StackState(**json.loads(self.state_file.read_text()))

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
            "node-agent": lambda: self._node_ready(state),
            "minio": http(f"{state.s3_endpoint}/minio/health/ready"),
            "mlflow": http(f"{state.mlflow_uri}/health"),
            "prometheus": http(f"{state.prometheus_url}/-/ready"),
            "alertmanager": http(f"{state.alertmanager_url}/-/ready"),
        }

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
        return pid is not None and _is_ours(pid, self.dir)

    # ----------------------------------------------------------------------------- up
    def up(self, *, gpus: int = DEFAULT_GPUS, timeout: float = 120.0,
           progress: Callable[[str], None] = print) -> StackState:
        state = self.load_state()
        if state is not None and all(self.health(state).values()):
            progress(f"the local stack is already running (state in {self.dir})")
            self._write_env(state)
            return state
        if state is not None:
            progress("found a stopped or broken stack: cleaning it up first")
        self.down(progress=lambda _msg: None)
        self.ready_after.clear()
        paths = binary_paths()
        started = time.monotonic()

        self.dir.mkdir(parents=True, exist_ok=True)
        for d in (self.logs, self.run):
            d.mkdir(exist_ok=True)
        subnet = _subnet_for(self.dir)
        gateway = str(next(subnet.hosts()))
        bridge = "tlr" + hashlib.sha256(str(self.dir).encode()).hexdigest()[:6]
        netns.ensure_bridge(bridge, f"{gateway}/{subnet.prefixlen}")
        ports = {name: _free_port(gateway if name in _ON_GATEWAY else "127.0.0.1")
                 for name in ("etcd", "etcd-peer", "apiserver", "controller-manager",
                              "scheduler", "kubelet", "minio", "minio-console", "mlflow",
                              "prometheus", "alertmanager", "alertmanager-cluster")}
        state = StackState(
            dir=str(self.dir), bridge=bridge, gateway=gateway, pod_cidr=str(subnet),
            ports=ports, s3_access_key="tailor-" + secrets.token_hex(4),
            s3_secret_key=secrets.token_urlsafe(24), gpus=gpus,
        )
        self._make_pki(state)
        self._save_state(state)

        for name in ("etcd", "minio", "prometheus", "alertmanager"):
            self._start(state, name, paths)
        self._wait(state, ["etcd"], started, timeout, progress)
        self._start(state, "kube-apiserver", paths)
        self._wait(state, ["minio"], started, timeout, progress)
        services.ensure_bucket(state.s3_endpoint, state.s3_access_key, state.s3_secret_key,
                               "mlflow")
        self._start(state, "mlflow", paths)
        self._wait(state, ["kube-apiserver"], started, timeout, progress)
        for name in ("kube-controller-manager", "kube-scheduler", "node-agent"):
            self._start(state, name, paths)
        self._wait(state, list(self._health_checks(state)), started, timeout, progress)
        self._write_env(state)
        progress(f"the local stack is ready in {time.monotonic() - started:.1f}s; "
                 f"`source {self.dir / 'env'}` to use it")
        return state

    def _make_pki(self, state: StackState) -> None:
        clients = [
            Identity("admin", "tailor-admin", ("system:masters",)),
            Identity("controller-manager", "system:kube-controller-manager"),
            Identity("scheduler", "system:kube-scheduler"),
            Identity("node", f"system:node:{NODE_NAME}", ("system:nodes",)),
            Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                     ("system:masters",)),
        ]
        service_ip = str(next(ipaddress.IPv4Network(SERVICE_CIDR).hosts()))
        self.pki.ensure(
            server_ips=[state.gateway, "127.0.0.1", service_ip],
            server_names=["localhost", "kubernetes", "kubernetes.default",
                          "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                          NODE_NAME],
            clients=clients,
        )
        for user in ("admin", "controller-manager", "scheduler", "node"):
            config = kubeconfig(server=state.api_server, ca=self.pki.ca_cert,
                                cert=self.pki.cert(user), key=self.pki.key(user), user=user)
            path = self.pki.dir / f"{user}.kubeconfig"
            path.write_text(yaml.safe_dump(config))
            path.chmod(0o600)
        shutil.copy(self.pki.dir / "admin.kubeconfig", self.dir / "kubeconfig")
        (self.dir / "kubeconfig").chmod(0o600)

    def _argv(self, state: StackState, name: str, paths: dict[str, Path]) -> tuple[
            list[str], dict[str, str]]:
        d, p, pki, gw = self.dir, state.ports, self.pki, state.gateway
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(d)}
        if name == "etcd":
            return [str(paths["etcd"]), "--name", "tailor", "--data-dir", str(d / "etcd"),
                    "--listen-client-urls", f"http://127.0.0.1:{p['etcd']}",
                    "--advertise-client-urls", f"http://127.0.0.1:{p['etcd']}",
                    "--listen-peer-urls", f"http://127.0.0.1:{p['etcd-peer']}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{p['etcd-peer']}",
                    "--initial-cluster", f"tailor=http://127.0.0.1:{p['etcd-peer']}",
                    # A throwaway test cluster: durability is not worth the fsync latency.
                    "--unsafe-no-fsync", "--log-level", "warn"], env
        if name == "kube-apiserver":
            return [str(paths["kube-apiserver"]),
                    f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
                    f"--bind-address={gw}", f"--advertise-address={gw}",
                    f"--secure-port={p['apiserver']}",
                    f"--tls-cert-file={pki.cert('serving')}",
                    f"--tls-private-key-file={pki.key('serving')}",
                    f"--client-ca-file={pki.ca_cert}",
                    "--authorization-mode=Node,RBAC",
                    "--enable-admission-plugins=NodeRestriction",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={pki.sa_pub}",
                    f"--service-account-signing-key-file={pki.sa_key}",
                    f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
                    f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                    f"--kubelet-certificate-authority={pki.ca_cert}",
                    "--kubelet-preferred-address-types=InternalIP",
                    "--allow-privileged=true", "--profiling=false",
                    "--endpoint-reconciler-type=lease", "-v=1"], env
        if name == "kube-controller-manager":
            kc = pki.dir / "controller-manager.kubeconfig"
            return [str(paths["kube-controller-manager"]), f"--kubeconfig={kc}",
                    f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                    "--bind-address=127.0.0.1", f"--secure-port={p['controller-manager']}",
                    f"--service-account-private-key-file={pki.sa_key}",
                    f"--root-ca-file={pki.ca_cert}", "--use-service-account-credentials=true",
                    f"--cluster-signing-cert-file={pki.ca_cert}",
                    f"--cluster-signing-key-file={pki.key('ca')}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    *self._serving_flags(), "--leader-elect=false", "--controllers=*",
                    "-v=1"], env
        if name == "kube-scheduler":
            kc = pki.dir / "scheduler.kubeconfig"
            return [str(paths["kube-scheduler"]), f"--kubeconfig={kc}",
                    f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                    "--bind-address=127.0.0.1", f"--secure-port={p['scheduler']}",
                    *self._serving_flags(), "--leader-elect=false", "-v=1"], env
        if name == "node-agent":
            config = self.dir / "node-agent.json"
            config.write_text(json.dumps({
                "node_name": NODE_NAME, "kubeconfig": str(pki.dir / "node.kubeconfig"),
                "state_dir": str(d / "node"), "bridge": state.bridge, "gateway": gw,
                "pod_cidr": state.pod_cidr, "port": p["kubelet"], "gpus": state.gpus,
                "ca_file": str(pki.ca_cert), "cert_file": str(pki.cert("serving")),
                "key_file": str(pki.key("serving")), "api_server": state.api_server,
                "venv_bin": str(venv_bin()),
                # What pods must still see when it lives under their private /tmp.
                "keep_paths": [str(REPO_ROOT), str(d), sys.prefix],
            }))
            return [str(venv_bin() / "python"), "-m", "tailor_localstack.nodeagent",
                    "--config", str(config)], env
        if name == "minio":
            env |= {"MINIO_ROOT_USER": state.s3_access_key,
                    "MINIO_ROOT_PASSWORD": state.s3_secret_key,
                    "MINIO_BROWSER": "on", "MINIO_UPDATE": "off"}
            return [str(paths["minio"]), "server", "--quiet",
                    "--address", f"{gw}:{p['minio']}",
                    "--console-address", f"{gw}:{p['minio-console']}", str(d / "minio")], env
        if name == "mlflow":
            env |= {"AWS_ACCESS_KEY_ID": state.s3_access_key,
                    "AWS_SECRET_ACCESS_KEY": state.s3_secret_key,
                    "MLFLOW_S3_ENDPOINT_URL": state.s3_endpoint}
            (d / "mlflow").mkdir(exist_ok=True)
            return [str(venv_bin() / "mlflow"), "server",
                    "--backend-store-uri", f"sqlite:///{d / 'mlflow' / 'mlflow.db'}",
                    "--artifacts-destination", "s3://mlflow/artifacts",
                    "--host", gw, "--port", str(p["mlflow"]), "--workers", "1",
                    "--allowed-hosts", f"{gw}:{p['mlflow']},{gw},localhost,127.0.0.1"], env
        if name == "prometheus":
            config = services.write_prometheus_config(d / "prometheus", state.alertmanager_url)
            return [str(paths["prometheus"]), f"--config.file={config}",
                    f"--storage.tsdb.path={d / 'prometheus' / 'data'}",
                    f"--web.listen-address={gw}:{p['prometheus']}", "--web.enable-lifecycle",
                    "--log.level=warn"], env
        if name == "alertmanager":
            config = services.write_alertmanager_config(d / "alertmanager")
            return [str(paths["prometheus-alertmanager"]), f"--config.file={config}",
                    f"--storage.path={d / 'alertmanager' / 'data'}",
                    f"--web.listen-address={gw}:{p['alertmanager']}",
                    "--cluster.listen-address=", "--log.level=warn"], env
        raise ValueError(name)

    def _serving_flags(self) -> list[str]:
        return [f"--tls-cert-file={self.pki.cert('serving')}",
                f"--tls-private-key-file={self.pki.key('serving')}"]

    def _start(self, state: StackState, name: str, paths: dict[str, Path]) -> None:
        argv, env = self._argv(state, name, paths)
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
                if pid > 0 and _is_ours(pid, self.dir):
                    pids.append(pid)
                pidfile.unlink()
        # The node agent first, so it can stop its pods with their grace periods.
        for pid in pids:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS + 5
        while any(_is_ours(pid, self.dir) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)  # poll interval of a shutdown loop bounded by the deadline
        for pid in pids:
            if _is_ours(pid, self.dir):
                _signal_group(pid, signal.SIGKILL)
        # Anything else still running from this stack directory (pods of a crashed agent).
        for pid in _pids_under(self.dir):
            os.kill(pid, signal.SIGKILL)
        state = self.load_state()
        netns.cleanup(prefix=netns.namespace_prefix(self.dir),
                      bridge=state.bridge if state else None, mounts_under=self.dir)
        for transient in ("etcd", "node", "prometheus/data", "alertmanager/data"):
            shutil.rmtree(self.dir / transient, ignore_errors=True)
        if pids:
            progress(f"stopped {len(pids)} processes of the local stack")


_ON_GATEWAY = {"apiserver", "kubelet", "minio", "minio-console", "mlflow", "prometheus",
               "alertmanager"}


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _is_ours(pid: int, directory: Path) -> bool:
    """A live process whose command line names this stack directory (pids get reused)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if status.rsplit(")", 1)[1].split()[0] == "Z":
        return False
    return str(directory) in _cmdline(pid)


def _pids_under(directory: Path) -> list[int]:
    mine = os.getpid()
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and int(p.name) != mine and _is_ours(int(p.name), directory)]


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
