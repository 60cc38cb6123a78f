"""The node agent's container runtime: pod sandboxes and container processes.

A sandbox is what a pod's containers share: a network namespace with its own IP on the stack's
bridge, a `/dev/shm`, the hosts and resolv.conf files, and the volumes. A container run is one
start of one container: the shim process (see shim.py), its log file, and its exit.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailor_devstack import netns
from tailor_devstack.nodeagent.podspec import DEFAULT_TERMINATION_MESSAGE_PATH, quantity

MEMORY_CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
DEFAULT_SHM_BYTES = 64 * 2**20  # what Docker and containerd give a pod
TERMINATION_MESSAGE_LIMIT = 4096
FALLBACK_LOG_LINES = 80


class VolumeError(RuntimeError):
    """A volume cannot be prepared yet (its Secret or ConfigMap is missing, say)."""


def _mount_tmpfs(path: Path, size_bytes: int | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    options = "mode=1777" + (f",size={size_bytes}" if size_bytes else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True,
                   capture_output=True)


def _write_files(directory: Path, files: dict[str, bytes], mode: int = 0o644) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode)


def _pick(data: dict[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    """The files of a Secret or ConfigMap volume: every key, or the listed `items` paths."""
    if not items:
        return dict(data)
    picked = {}
    for item in items:
        if item["key"] not in data:
            raise VolumeError(f"key {item['key']!r} not found")
        picked[item["path"]] = data[item["key"]]
    return picked


@dataclass
class Sandbox:
    """What one pod's containers share."""

    uid: str
    directory: Path
    ip: str
    netns_name: str | None  # None with hostNetwork
    veth: str
    tmpfs_mounts: list[Path] = field(default_factory=list)
    volumes: dict[str, Path] = field(default_factory=dict)

    @property
    def netns_path(self) -> str | None:
        return str(netns.NETNS_DIR / self.netns_name) if self.netns_name else None

    @property
    def shm(self) -> Path:
        return self.directory / "shm"

    @property
    def hosts(self) -> Path:
        return self.directory / "hosts"

    def create(self, *, bridge: str, prefix_len: int, shm_bytes: int | None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.netns_name:
            netns.create_pod_network(self.netns_name, self.veth, bridge, f"{self.ip}/{prefix_len}")
        _mount_tmpfs(self.shm, shm_bytes or DEFAULT_SHM_BYTES)
        self.tmpfs_mounts.append(self.shm)
        # No name server exists: lookups of unknown names fail at once instead of leaving.
        (self.directory / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1\n")

    def write_hosts(self, text: str) -> None:
        """Rewrite the hosts file in place: containers see it through a bind mount of the inode."""
        fd = os.open(self.hosts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def prepare_volumes(self, pod: dict[str, Any], *, secret: Any, config_map: Any,
                        token: Any, field_ref: Any) -> None:
        """Materialise every volume of the pod under the sandbox directory.

        `secret` and `config_map` map (namespace, name) to the object's data as bytes or None;
        `token` maps a projected serviceAccountToken source to a token; `field_ref` maps a
        downward-API field path to its value.
        """
        namespace = pod["metadata"]["namespace"]
        for volume in pod["spec"].get("volumes", []) or []:
            path = self.directory / "volumes" / volume["name"]
            if "hostPath" in volume:
                self.volumes[volume["name"]] = Path(volume["hostPath"]["path"])
                continue
            if path in self.tmpfs_mounts:
                continue
            if "emptyDir" in volume:
                spec = volume["emptyDir"] or {}
                if spec.get("medium") == "Memory":
                    limit = spec.get("sizeLimit")
                    _mount_tmpfs(path, int(quantity(limit)) if limit else None)
                    self.tmpfs_mounts.append(path)
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    path.chmod(0o777)
            elif "secret" in volume or "configMap" in volume:
                kind = "secret" if "secret" in volume else "configMap"
                source = volume[kind]
                name = source["secretName"] if kind == "secret" else source["name"]
                data = (secret if kind == "secret" else config_map)(namespace, name)
                if data is None:
                    if source.get("optional"):
                        data = {}
                    else:
                        raise VolumeError(f"{kind} {name!r} not found")
                _write_files(path, _pick(data, source.get("items")),
                             source.get("defaultMode", 0o644))
            elif "projected" in volume:
                files: dict[str, bytes] = {}
                for src in volume["projected"].get("sources", []):
                    if "serviceAccountToken" in src:
                        files[src["serviceAccountToken"]["path"]] = token(
                            src["serviceAccountToken"]).encode()
                    elif "configMap" in src or "secret" in src:
                        kind = "secret" if "secret" in src else "configMap"
                        data = (secret if kind == "secret" else config_map)(
                            namespace, src[kind]["name"])
                        if data is None:
                            if src[kind].get("optional"):
                                continue
                            raise VolumeError(f"{kind} {src[kind]['name']!r} not found")
                        files |= _pick(data, src[kind].get("items"))
                    elif "downwardAPI" in src:
                        files |= self._downward(src["downwardAPI"], field_ref)
                _write_files(path, files, volume["projected"].get("defaultMode", 0o644))
            elif "downwardAPI" in volume:
                _write_files(path, self._downward(volume["downwardAPI"], field_ref))
            self.volumes[volume["name"]] = path

    @staticmethod
    def _downward(spec: dict[str, Any], field_ref: Any) -> dict[str, bytes]:
        files = {}
        for item in spec.get("items", []):
            if "fieldRef" not in item:
                raise VolumeError("downwardAPI resourceFieldRef items are not supported")
            files[item["path"]] = field_ref(item["fieldRef"]["fieldPath"]).encode()
        return files

    def teardown(self) -> None:
        for mount in reversed(self.tmpfs_mounts):
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
        self.tmpfs_mounts.clear()
        if self.netns_name:
            netns.delete_pod_network(self.netns_name, self.veth)


def decode_data(obj: dict[str, Any]) -> dict[str, bytes]:
    """The data of a Secret (base64) or ConfigMap (text and binaryData) as bytes."""
    if obj.get("kind") == "Secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    data |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
    return data


class ContainerRun:
    """One start of one container: the shim process and what it leaves behind."""

    def __init__(self, sandbox: Sandbox, container: dict[str, Any], *, restart_count: int,
                 argv: list[str], env: dict[str, str], hostname: str, keep_paths: list[str],
                 cgroup_parent: Path | None) -> None:
        self.name: str = container["name"]
        self.container = container
        self.restart_count = restart_count
        self.dir: Path = sandbox.directory / "containers" / self.name / str(restart_count)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = sandbox.directory / "logs" / self.name / f"{restart_count}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.termination_log = self.dir / "termination-log"
        self.termination_log.touch()
        self.cgroup = self._make_cgroup(cgroup_parent, sandbox.uid)
        self.spec = {
            "netns": sandbox.netns_path, "hostname": hostname, "keep_paths": keep_paths,
            "shm": str(sandbox.shm), "hosts": str(sandbox.hosts),
            "resolv": str(sandbox.directory / "resolv.conf"),
            "hostname_file": str(self._hostname_file(hostname)),
            "termination_log": str(self.termination_log),
            "termination_message_path": container.get("terminationMessagePath")
            or DEFAULT_TERMINATION_MESSAGE_PATH,
            "mounts": self._mounts(sandbox), "cwd": container.get("workingDir") or "/",
            "argv": argv, "env": env, "init_pid_file": str(self.dir / "init.pid"),
            "cgroup": str(self.cgroup) if self.cgroup else None,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.exited = threading.Event()
        self.exit_code: int | None = None

    def _hostname_file(self, hostname: str) -> Path:
        path = self.dir / "hostname"
        path.write_text(hostname + "\n")
        return path

    def _mounts(self, sandbox: Sandbox) -> list[dict[str, Any]]:
        mounts = []
        for mount in self.container.get("volumeMounts", []) or []:
            source = Path(sandbox.volumes[mount["name"]])
            if mount.get("subPath"):
                source = source / mount["subPath"]
                if not source.exists():
                    source.mkdir(parents=True)
            mounts.append({"source": str(source), "target": mount["mountPath"],
                           "readonly": bool(mount.get("readOnly"))})
        return mounts

    def _make_cgroup(self, parent: Path | None, pod_uid: str) -> Path | None:
        """A memory cgroup with the container's limit, where the machine offers cgroup v1."""
        limit = ((self.container.get("resources") or {}).get("limits") or {}).get("memory")
        if parent is None or limit is None:
            return None
        path = parent / f"{pod_uid}-{self.name}-{self.restart_count}"
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / "memory.limit_in_bytes").write_text(str(int(quantity(limit))))
        except OSError:
            return None
        return path

    def start(self, python: str) -> None:
        spec_file = self.dir / "spec.json"
        spec_file.write_text(json.dumps(self.spec))
        spec_file.chmod(0o600)  # it holds the container's environment
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [python, "-m", "tailor_devstack.nodeagent.shim", str(spec_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        threading.Thread(target=self._wait, name=f"wait-{self.name}", daemon=True).start()

    def _wait(self) -> None:
        assert self.process is not None
        self.exit_code = self.process.wait()
        self.exited.set()

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the namespace's init (the kernel then kills all in it) and the shim."""
        pid_file = self.dir / "init.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        self.signal(signal.SIGKILL)

    def oom_killed(self) -> bool:
        if self.cgroup is None:
            return False
        try:
            text = (self.cgroup / "memory.oom_control").read_text()
        except OSError:
            return False
        counts = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
        return int(counts.get("oom_kill", "0")) > 0

    def termination_message(self) -> str:
        message: str = self.termination_log.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(
            errors="replace").strip()
        policy = self.container.get("terminationMessagePolicy", "File")
        if not message and policy == "FallbackToLogsOnError" and self.exit_code != 0:
            lines = self.log_path.read_bytes().decode(errors="replace").splitlines()
            message = "\n".join(lines[-FALLBACK_LOG_LINES:])[-2048:]
        return message

    def cleanup(self) -> None:
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()


def python_executable() -> str:
    return sys.executable
