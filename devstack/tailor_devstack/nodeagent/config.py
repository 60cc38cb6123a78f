"""What the node agent is told (`make up` writes it as JSON) and the node's pod addresses."""

from __future__ import annotations

import ipaddress
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from tailor_devstack.nodeagent.runtime import VolumeError


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
