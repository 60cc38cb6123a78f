"""The stack's processes as /proc shows them, and free ports for them to listen on.

A process belongs to a stack when its command line names the stack's directory: pids get
reused, so a saved pid alone proves nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def is_ours(pid: int, directory: Path) -> bool:
    """A live process whose command line names this stack directory (pids get reused)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if status.rsplit(")", 1)[1].split()[0] == "Z":
        return False
    return str(directory) in cmdline(pid)


def pids_under(directory: Path) -> list[int]:
    mine = os.getpid()
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and int(p.name) != mine and is_ours(int(p.name), directory)]


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
