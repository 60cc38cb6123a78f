"""The command lines `make up` starts, checked without starting them."""

from __future__ import annotations

from pathlib import Path

import pytest
from tailor_devstack import commands
from tailor_devstack.pki import PKI
from tailor_devstack.stack import ON_GATEWAY
from tailor_devstack.state import StackState

PORTS = {name: 20000 + i for i, name in enumerate(
    ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "minio",
     "minio-console", "mlflow", "prometheus", "alertmanager", "alertmanager-cluster"))}


def launch(tmp_path: Path) -> commands.Launch:
    state = StackState(dir=str(tmp_path), bridge="tlrtest", gateway="198.18.4.1",
                       pod_cidr="198.18.4.128/25", ports=PORTS, s3_access_key="tailor-k",
                       s3_secret_key="secret", gpus=3, service_cidr="198.18.4.64/26")
    paths = {name: Path("/opt/bin") / name for name in
             ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "minio",
              "prometheus", "prometheus-alertmanager", "kubelet", "kube-proxy", "containerd",
              "ctr", "runc", "cni", "coredns")}
    paths["node-cache"] = tmp_path / "cache" / "node"
    return commands.Launch(tmp_path, state, PKI(tmp_path / "pki"), paths)


def test_every_component_has_a_command(tmp_path: Path) -> None:
    for name in commands.COMMANDS:
        argv, env = commands.command(launch(tmp_path), name)
        assert argv and "PATH" in env, name
    apiserver, _ = commands.command(launch(tmp_path), "kube-apiserver")
    assert "--authorization-mode=Node,RBAC" in apiserver
    assert "--service-cluster-ip-range=198.18.4.64/26" in apiserver
    assert "--bind-address=198.18.4.1" in apiserver
    minio, minio_env = commands.command(launch(tmp_path), "minio")
    assert minio_env["MINIO_ROOT_USER"] == "tailor-k"
    assert f"198.18.4.1:{PORTS['minio']}" in minio
    etcd, etcd_env = commands.command(launch(tmp_path), "etcd")
    assert "MINIO_ROOT_USER" not in etcd_env  # each component gets a fresh environment
    assert f"http://127.0.0.1:{PORTS['etcd']}" in etcd


def test_listeners_on_the_gateway_are_known_ports() -> None:
    assert set(PORTS) >= ON_GATEWAY


def test_an_unknown_component_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cloud-controller-manager"):
        commands.command(launch(tmp_path), "cloud-controller-manager")
