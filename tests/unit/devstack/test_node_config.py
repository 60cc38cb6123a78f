"""The real node's layout and config files, checked without starting anything."""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path

import yaml
from tailor_devstack import commands, nodeconf, nodens
from tailor_devstack.pki import PKI
from tailor_devstack.state import NODE_NAME, StackState

SUBNET = ipaddress.IPv4Network("198.18.7.0/24")


def layout(tmp_path: Path) -> nodens.NodeLayout:
    return nodens.NodeLayout(tmp_path, SUBNET)


def test_the_ranges_of_one_stack_are_disjoint_and_inside_its_own_slash_24(tmp_path: Path) -> None:
    node = layout(tmp_path)
    lan, services, pods = (ipaddress.IPv4Network(c) for c in
                           (str(node.lan), node.service_cidr, node.pod_cidr))
    assert all(net.subnet_of(SUBNET) for net in (lan, services, pods))
    assert not (lan.overlaps(services) or lan.overlaps(pods) or services.overlaps(pods))
    assert {node.gateway, node.node_ip} <= {str(ip) for ip in lan.hosts()}
    assert ipaddress.IPv4Address(node.pod_gateway) in pods
    # The node is found again from what `up` saved (the gateway), with the same names.
    state = StackState(dir=str(tmp_path), bridge="b", gateway=node.gateway,
                       pod_cidr=node.pod_cidr, ports={}, s3_access_key="k", s3_secret_key="s")
    assert nodens.layout_of(state) == node
    assert len(node.netns) <= 15 and len(node.veth_host) <= 15  # kernel name limit
    assert node.enter()[0] == "nsenter" and str(node.mount_ns) in node.enter()[2]


def test_two_stack_directories_get_different_node_names(tmp_path: Path) -> None:
    one, two = layout(tmp_path / "one"), layout(tmp_path / "two")
    assert len({one.netns, two.netns}) == 2 and len({one.cgroup, two.cgroup}) == 2


def test_containerd_keeps_its_socket_under_the_stack_and_images_in_the_cache(tmp_path: Path
                                                                            ) -> None:
    node = layout(tmp_path)
    bins = {"runc": Path("/opt/runc/runc"), "cni": Path("/opt/cni")}
    config = tomllib.loads(nodeconf.write_containerd_config(node, bins, tmp_path / "c").read_text())
    assert config["grpc"]["address"].startswith(str(tmp_path))
    assert config["root"] == str(tmp_path / "c" / node.tag / "containerd")
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["BinaryName"] == "/opt/runc/runc"
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == nodeconf.SANDBOX_IMAGE


def test_pods_get_addresses_from_the_pod_range_with_the_node_as_gateway(tmp_path: Path) -> None:
    node = layout(tmp_path)
    nodeconf.write_cni_config(node)
    conf = json.loads((node.root / "cni" / "10-tailor.conflist").read_text())
    bridge = conf["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": node.pod_cidr,
                                          "gateway": node.pod_gateway}]]


def test_the_kubelet_never_collects_the_preloaded_images_and_uses_cluster_dns(tmp_path: Path
                                                                             ) -> None:
    node = layout(tmp_path)
    config = yaml.safe_load(nodeconf.write_kubelet_config(node, PKI(tmp_path / "pki")).read_text())
    assert config["imageGCHighThresholdPercent"] == 100
    assert config["clusterDNS"] == [node.node_ip] and config["resolvConf"] == ""
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["cgroupRoot"] == node.cgroup and config["address"] == node.node_ip


def test_node_components_start_inside_the_node_namespaces(tmp_path: Path) -> None:
    node = layout(tmp_path)
    state = StackState(dir=str(tmp_path), bridge="b", gateway=node.gateway,
                       pod_cidr=node.pod_cidr, ports={"apiserver": 6443}, s3_access_key="k",
                       s3_secret_key="s", service_cidr=node.service_cidr)
    names = ("kubelet", "kube-proxy", "containerd", "ctr", "runc", "cni", "coredns")
    paths = {name: Path("/opt/bin") / name for name in names} | {"node-cache": tmp_path / "c"}
    launch = commands.Launch(tmp_path, state, PKI(tmp_path / "pki"), paths)
    for name in ("containerd", "kubelet", "kube-proxy", "coredns"):
        argv, _ = commands.command(launch, name)
        assert argv[:4] == node.enter() and str(tmp_path) in " ".join(argv), name
    kubelet, _ = commands.command(launch, "kubelet")
    assert f"--hostname-override={NODE_NAME}" in kubelet
    assert f"--node-ip={node.node_ip}" in kubelet
    corefile = (node.root / "Corefile").read_text()
    assert f"bind {node.node_ip}" in corefile and "https://198.18.7.1:6443" in corefile
