"""How each component of the local stack is started: its binary, command line and environment.

One function per component, each from a `Launch` (the stack directory, its state, its PKI and
the binaries); `command(launch, name)` picks one. Some also write the component's config file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tailor_devstack import nodeconf, nodens, services
from tailor_devstack.pki import PKI
from tailor_devstack.state import (
    NODE_NAME,
    REPO_ROOT,
    StackError,
    StackState,
    venv_bin,
)

Command = tuple[list[str], dict[str, str]]  # argv and environment


def pins(*names: str) -> dict[str, str]:
    """Values of hack/versions.sh's variables (and TAILOR_BIN_ROOT)."""
    script = REPO_ROOT / "hack" / "versions.sh"
    echo = " ".join(f'"${name}"' for name in names)
    out = subprocess.run(["bash", "-c", f'source "{script}"; echo {echo}'],
                         check=True, capture_output=True, text=True).stdout.split()
    return dict(zip(names, out, strict=True))


def binary_paths() -> dict[str, Path]:
    """Where hack/build-binaries.sh put each pinned binary (read from hack/versions.sh)."""
    pin = pins("TAILOR_BIN_ROOT", "KUBERNETES_VERSION", "ETCD_VERSION", "MINIO_VERSION")
    root = Path(pin["TAILOR_BIN_ROOT"])
    kube = root / f"kubernetes-{pin['KUBERNETES_VERSION']}"
    paths = {name: kube / name for name in
             ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")}
    paths["etcd"] = root / f"etcd-{pin['ETCD_VERSION']}" / "etcd"
    paths["minio"] = root / f"minio-{pin['MINIO_VERSION']}" / "minio"
    for name, debian_package in (("prometheus", "prometheus"),
                                 ("prometheus-alertmanager", "prometheus-alertmanager")):
        found = shutil.which(name)
        if not found:
            raise StackError(f"{name} is missing: install it with `apt-get install -y "
                             f"{debian_package}` (or run `make prereqs` as root)")
        paths[name] = Path(found)
    _check_built(paths, "make binaries")
    return paths


def node_binary_paths() -> dict[str, Path]:
    """The real node's binaries (hack/build-binaries.sh node containerd runc cni coredns)."""
    pin = pins("TAILOR_BIN_ROOT", "KUBERNETES_VERSION", "CONTAINERD_VERSION", "RUNC_VERSION",
                 "CNI_PLUGINS_VERSION", "COREDNS_VERSION")
    root = Path(pin["TAILOR_BIN_ROOT"])
    node = root / f"kubernetes-node-{pin['KUBERNETES_VERSION']}"
    containerd = root / f"containerd-{pin['CONTAINERD_VERSION']}"
    paths = {"kubelet": node / "kubelet", "kube-proxy": node / "kube-proxy",
             "containerd": containerd / "containerd", "ctr": containerd / "ctr",
             "runc": root / f"runc-{pin['RUNC_VERSION']}" / "runc",
             "cni": root / f"cni-plugins-{pin['CNI_PLUGINS_VERSION']}",
             "coredns": root / f"coredns-{pin['COREDNS_VERSION']}" / "coredns"}
    _check_built(paths, "make binaries")
    paths["node-cache"] = root.parent / "node"  # containerd's images, kept between stacks
    for name in ("nft",):  # kube-proxy's rules (nftables mode)
        if not shutil.which(name):
            raise StackError(f"{name} is missing: run `make prereqs` as root")
    return paths


def _check_built(paths: dict[str, Path], how: str) -> None:
    for name, path in paths.items():
        if not path.exists():
            raise StackError(f"{name} is not built yet ({path}): run `{how}`")


@dataclass(frozen=True)
class Launch:
    """What the components' command lines are made of."""

    dir: Path
    state: StackState
    pki: PKI
    paths: dict[str, Path]

    @property
    def env(self) -> dict[str, str]:
        """The environment every component starts from (a fresh dict each time)."""
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir)}

    def serving_flags(self) -> list[str]:
        return [f"--tls-cert-file={self.pki.cert('serving')}",
                f"--tls-private-key-file={self.pki.key('serving')}"]


def _etcd(launch: Launch) -> Command:
    d, p = launch.dir, launch.state.ports
    return [str(launch.paths["etcd"]), "--name", "tailor", "--data-dir", str(d / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{p['etcd']}",
            "--advertise-client-urls", f"http://127.0.0.1:{p['etcd']}",
            "--listen-peer-urls", f"http://127.0.0.1:{p['etcd-peer']}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{p['etcd-peer']}",
            "--initial-cluster", f"tailor=http://127.0.0.1:{p['etcd-peer']}",
            # A throwaway test cluster: durability is not worth the fsync latency.
            "--unsafe-no-fsync", "--log-level", "warn"], launch.env


def _apiserver(launch: Launch) -> Command:
    p, pki, gw = launch.state.ports, launch.pki, launch.state.gateway
    return [str(launch.paths["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
            f"--bind-address={gw}", f"--advertise-address={gw}",
            f"--secure-port={p['apiserver']}",
            f"--tls-cert-file={pki.cert('serving')}",
            f"--tls-private-key-file={pki.key('serving')}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--service-cluster-ip-range={launch.state.service_cidr}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
            f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
            f"--kubelet-certificate-authority={pki.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true", "--profiling=false",
            "--endpoint-reconciler-type=lease", "-v=1"], launch.env


def _controller_manager(launch: Launch) -> Command:
    pki = launch.pki
    kc = pki.dir / "controller-manager.kubeconfig"
    return [str(launch.paths["kube-controller-manager"]), f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={launch.state.ports['controller-manager']}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}", "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.key('ca')}",
            f"--service-cluster-ip-range={launch.state.service_cidr}",
            *launch.serving_flags(), "--leader-elect=false", "--controllers=*",
            "-v=1"], launch.env


def _scheduler(launch: Launch) -> Command:
    kc = launch.pki.dir / "scheduler.kubeconfig"
    return [str(launch.paths["kube-scheduler"]), f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={launch.state.ports['scheduler']}",
            *launch.serving_flags(), "--leader-elect=false", "-v=1"], launch.env


def _minio(launch: Launch) -> Command:
    state, gw, p = launch.state, launch.state.gateway, launch.state.ports
    env = launch.env | {"MINIO_ROOT_USER": state.s3_access_key,
                        "MINIO_ROOT_PASSWORD": state.s3_secret_key,
                        "MINIO_BROWSER": "on", "MINIO_UPDATE": "off"}
    return [str(launch.paths["minio"]), "server", "--quiet",
            "--address", f"{gw}:{p['minio']}",
            "--console-address", f"{gw}:{p['minio-console']}", str(launch.dir / "minio")], env


def _mlflow(launch: Launch) -> Command:
    d, state, gw, p = launch.dir, launch.state, launch.state.gateway, launch.state.ports
    env = launch.env | {"AWS_ACCESS_KEY_ID": state.s3_access_key,
                        "AWS_SECRET_ACCESS_KEY": state.s3_secret_key,
                        "MLFLOW_S3_ENDPOINT_URL": state.s3_endpoint}
    (d / "mlflow").mkdir(exist_ok=True)
    return [str(venv_bin() / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{d / 'mlflow' / 'mlflow.db'}",
            "--artifacts-destination", "s3://mlflow/artifacts",
            "--host", gw, "--port", str(p["mlflow"]), "--workers", "1",
            "--allowed-hosts", f"{gw}:{p['mlflow']},{gw},localhost,127.0.0.1"], env


def _prometheus(launch: Launch) -> Command:
    d, state = launch.dir, launch.state
    config = services.write_prometheus_config(d / "prometheus", state.alertmanager_url)
    return [str(launch.paths["prometheus"]), f"--config.file={config}",
            f"--storage.tsdb.path={d / 'prometheus' / 'data'}",
            f"--web.listen-address={state.gateway}:{state.ports['prometheus']}",
            "--web.enable-lifecycle", "--log.level=warn"], launch.env


def _alertmanager(launch: Launch) -> Command:
    d, state = launch.dir, launch.state
    config = services.write_alertmanager_config(d / "alertmanager")
    return [str(launch.paths["prometheus-alertmanager"]), f"--config.file={config}",
            f"--storage.path={d / 'alertmanager' / 'data'}",
            f"--web.listen-address={state.gateway}:{state.ports['alertmanager']}",
            "--cluster.listen-address=", "--log.level=warn"], launch.env


def _containerd(launch: Launch) -> Command:
    layout, paths = nodens.layout_of(launch.state), launch.paths
    nodeconf.write_cni_config(layout)
    config = nodeconf.write_containerd_config(layout, paths, paths["node-cache"])
    # It finds its shim (containerd-shim-runc-v2) on PATH.
    env = launch.env | {"PATH": f"{paths['containerd'].parent}:{launch.env['PATH']}"}
    return [*layout.enter(), str(paths["containerd"]), "--config", str(config)], env


def _kubelet(launch: Launch) -> Command:
    layout = nodens.layout_of(launch.state)
    config = nodeconf.write_kubelet_config(layout, launch.pki)
    return [*layout.enter(), str(launch.paths["kubelet"]), f"--config={config}",
            f"--kubeconfig={launch.pki.dir / 'node.kubeconfig'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={layout.node_ip}",
            "-v=1"], launch.env


def _kube_proxy(launch: Launch) -> Command:
    layout = nodens.layout_of(launch.state)
    config = nodeconf.write_kube_proxy_config(layout, launch.pki)
    return [*layout.enter(), str(launch.paths["kube-proxy"]), f"--config={config}",
            "-v=1"], launch.env


def _coredns(launch: Launch) -> Command:
    layout = nodens.layout_of(launch.state)
    corefile = nodeconf.write_corefile(layout, launch.state, launch.pki)
    return [*layout.enter(), str(launch.paths["coredns"]), "-conf", str(corefile)], launch.env


COMMANDS: dict[str, Callable[[Launch], Command]] = {
    "etcd": _etcd,
    "kube-apiserver": _apiserver,
    "kube-controller-manager": _controller_manager,
    "kube-scheduler": _scheduler,
    "containerd": _containerd,
    "kubelet": _kubelet,
    "kube-proxy": _kube_proxy,
    "coredns": _coredns,
    "minio": _minio,
    "mlflow": _mlflow,
    "prometheus": _prometheus,
    "alertmanager": _alertmanager,
}


def command(launch: Launch, name: str) -> Command:
    """The argv and environment that start component `name`."""
    if name not in COMMANDS:
        raise ValueError(name)
    return COMMANDS[name](launch)
