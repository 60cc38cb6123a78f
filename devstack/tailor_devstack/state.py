"""What a local stack is: where it lives, its fixed names and ranges, and the state `up` saves."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_NAME = "tailor-node"
SERVICE_CIDR = "198.19.255.0/24"  # the node agent's: never routed (no kube-proxy); see docs.
DEFAULT_GPUS = 2
# Which node runs the pods: "agent" (the simulated node) or "kubelet" (kubelet and containerd).
NODES = ("agent", "kubelet")


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
    node: str = "agent"
    service_cidr: str = SERVICE_CIDR

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


def default_node() -> str:
    node = os.environ.get("TAILOR_NODE", "agent")
    if node not in NODES:
        raise StackError(f"TAILOR_NODE={node!r}: choose one of {', '.join(NODES)}")
    return node


def stack_dir() -> Path:
    return Path(os.environ.get("TAILOR_STACK_DIR", REPO_ROOT / ".tailor")).resolve()


def venv_bin() -> Path:
    return Path(sys.executable).parent
