"""The real node's components: containerd, the kubelet, kube-proxy and CoreDNS.

Each runs inside the node's namespaces (nodens.py) as a process of the stack. Their config files
are written under `<stack>/node/`; the addresses come from `NodeLayout`. Inside the node's own
network namespace the usual fixed ports are free, so the kubelet listens on 10250 as anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tailor_devstack.nodens import NodeLayout
from tailor_devstack.pki import PKI
from tailor_devstack.state import NODE_NAME, StackState

KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
PROXY_HEALTHZ_PORT = 10256
COREDNS_HEALTH_PORT = 8080
# The sandbox ("pause") image, made by hack/build-images.sh from the pinned Kubernetes module.
SANDBOX_IMAGE = "tailor.local/pause:3.10.2"
CLUSTER_DOMAIN = "cluster.local"


def containerd_root(layout: NodeLayout, node_cache: Path) -> Path:
    """Images and snapshots outlive the stack (a trainer image is gigabytes): one per stack dir."""
    return node_cache / layout.tag / "containerd"


def _write(layout: NodeLayout, name: str, text: str) -> Path:
    path = layout.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def containerd_socket(layout: NodeLayout) -> Path:
    # Under the stack directory, so every containerd shim's command line names the stack.
    return layout.root / "run" / "containerd.sock"


def write_containerd_config(layout: NodeLayout, bins: dict[str, Path], node_cache: Path
                            ) -> Path:
    run = layout.root / "run"
    run.mkdir(parents=True, exist_ok=True)
    runtime = "plugins.'io.containerd.cri.v1.runtime'"
    text = f"""version = 3
root = "{containerd_root(layout, node_cache)}"
state = "{run / 'containerd-state'}"

[grpc]
  address = "{containerd_socket(layout)}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  # Images come only from `make images`; a kubelet's pull of anything else fails as it would
  # on an air-gapped node.
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{SANDBOX_IMAGE}"

[{runtime}]
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below its own.
  restrict_oom_score_adj = true
  [{runtime}.containerd]
    default_runtime_name = "runc"
    [{runtime}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{runtime}.containerd.runtimes.runc.options]
        BinaryName = "{bins['runc']}"
        SystemdCgroup = false
  [{runtime}.cni]
    bin_dirs = ["{bins['cni']}"]
    conf_dir = "{layout.root / 'cni'}"
"""
    return _write(layout, "containerd.toml", text)


def write_cni_config(layout: NodeLayout) -> None:
    """A bridge in the node with host-local addresses from the pod range; the node is the
    pods' gateway, and it routes nowhere but the stack's bridge."""
    conf = {
        "cniVersion": "1.0.0", "name": "tailor",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
                      "ranges": [[{"subnet": layout.pod_cidr,
                                   "gateway": layout.pod_gateway}]]}},
            {"type": "portmap", "backend": "nftables", "capabilities": {"portMappings": True}},
        ],
    }
    _write(layout, "cni/10-tailor.conflist", json.dumps(conf, indent=2))


def write_kubelet_config(layout: NodeLayout, pki: PKI) -> Path:
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": layout.node_ip, "port": KUBELET_PORT, "readOnlyPort": 0,
        "healthzBindAddress": layout.node_ip, "healthzPort": KUBELET_HEALTHZ_PORT,
        # The stack's serving certificate also names the node (its address and name).
        "tlsCertFile": str(pki.cert("serving")), "tlsPrivateKeyFile": str(pki.key("serving")),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki.ca_cert)}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{containerd_socket(layout)}",
        # cgroup v1 here, and no systemd: the kubelet manages cgroupfs under our own root.
        "cgroupDriver": "cgroupfs", "cgroupRoot": layout.cgroup, "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [layout.node_ip], "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",  # pods learn no name server of the machine's
        # A development disk is often fuller than a cluster's: evict only when nearly full, and
        # never garbage-collect the images `make images` loaded (they cannot be pulled again).
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1Gi",
                         "imagefs.available": "1Gi", "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "volumePluginDir": str(layout.root / "volume-plugins"),
        "serializeImagePulls": False, "shutdownGracePeriod": "0s",
        "registerNode": True, "maxPods": 110,
    }
    return _write(layout, "kubelet.yaml", yaml.safe_dump(config))


def write_kube_proxy_config(layout: NodeLayout, pki: PKI) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(pki.dir / "kube-proxy.kubeconfig")},
        "hostnameOverride": NODE_NAME, "mode": "nftables", "clusterCIDR": layout.pod_cidr,
        "bindAddress": layout.node_ip,
        "healthzBindAddress": f"{layout.node_ip}:{PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": "127.0.0.1:10249",
        # Pods share one bridge without br_netfilter: replies must come back through the node.
        "nftables": {"masqueradeAll": True},
        # Conntrack settings are the machine's, not per namespace: leave them alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "nodePortAddresses": [f"{layout.node_ip}/32"],
    }
    return _write(layout, "kube-proxy.yaml", yaml.safe_dump(config))


def write_corefile(layout: NodeLayout, state: StackState, pki: PKI) -> Path:
    """Cluster DNS for Services, headless Services and pods; nothing else resolves."""
    text = f""".:53 {{
    bind {layout.node_ip}
    errors
    health {layout.node_ip}:{COREDNS_HEALTH_PORT}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {pki.dir / 'coredns.kubeconfig'}
        endpoint {state.api_server}
        pods insecure
        fallthrough in-addr.arpa
        ttl 5
    }}
    cache 5
}}
"""
    return _write(layout, "Corefile", text)


# CoreDNS reads Services, EndpointSlices, pods and namespaces (its `kubernetes` plugin).
COREDNS_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}
"""
