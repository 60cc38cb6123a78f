"""What a local stack is: where it lives, its fixed names and ranges, and the state `up` saves."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_NAME = "tailor-node"
DEFAULT_GPUS = 2


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
    service_cidr: str = ""

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
