"""The container shim: turns one container of a Pod into an isolated local process.

The node agent starts `python -m tailor_devstack.nodeagent.shim SPEC.json` for each container
start. The shim (host side) joins the pod's network namespace, unshares mount, UTS and PID
namespaces and forks the namespace's init. Init mounts a fresh `/proc`, a private `/tmp`
(tmpfs), a minimal `/dev` with the pod's `/dev/shm` and the termination-message file, the pod's
hosts and resolv.conf files and its volumes, then runs the container's command as its only
child: it forwards signals, reaps orphans and exits with the command's status. When init exits
the kernel kills everything left in the PID namespace, so nothing outlives its container.

Linux only; needs root (CAP_SYS_ADMIN). Standard library only: it starts on every container
start, so it must start fast.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    def enc(text: str | None) -> bytes | None:
        return text.encode() if text is not None else None

    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {source} on {target}")


def bind(source: str, target: str, *, readonly: bool = False) -> None:
    """Bind-mount `source` on `target`, creating an empty file or directory to mount on."""
    if os.path.isdir(source):  # a /proc/self/fd link is followed to what it names
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            Path(target).touch()
    mount(source, target, None, MS_BIND | MS_REC)
    if readonly:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


class _Sources:
    """O_PATH descriptors of every host path a container mounts, opened before /tmp and /dev
    are covered, so a source under /tmp (a clone in /tmp, say) can still be bound afterwards."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def __call__(self, path: str) -> str:
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_PATH)
        return f"/proc/self/fd/{self._fds[path]}"

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)


def setup_filesystem(spec: dict[str, Any]) -> None:
    mount(None, "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    src = _Sources()
    devices = [f"/dev/{d}" for d in DEVICES] + sorted(
        f"/dev/{n}" for n in os.listdir("/dev") if n.startswith("nvidia"))  # GPUs, if any
    keep = [p for p in spec["keep_paths"] if p.startswith("/tmp/") and os.path.exists(p)]
    for path in [*devices, *keep, spec["shm"], spec["termination_log"], spec["hosts"],
                 spec["resolv"], spec["hostname_file"], *(m["source"] for m in spec["mounts"])]:
        src(path)

    # A minimal /dev, as a container runtime makes it, with the pod's shm and the message file.
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=755")
    for device in devices:
        bind(src(device), device)
    os.makedirs("/dev/pts", exist_ok=True)
    bind(src(spec["shm"]), "/dev/shm")
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"/dev/{link}")
    # A private /tmp that still shows the clone, the stack and the virtualenv if under /tmp.
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for path in keep:
        bind(src(path), path)
    for source, target in (("hosts", "/etc/hosts"), ("resolv", "/etc/resolv.conf"),
                           ("hostname_file", "/etc/hostname"),
                           ("termination_log", spec["termination_message_path"])):
        bind(src(spec[source]), target)
    for m in spec["mounts"]:
        bind(src(m["source"]), m["target"], readonly=m["readonly"])
    # A volume mounted on /tmp (or above a kept path) hides the clone again: show it again.
    targets = [m["target"].rstrip("/") for m in spec["mounts"]]
    for path in keep:
        if any(path == t or path.startswith(t + "/") for t in targets):
            bind(src(path), path)
    src.close()


def run_init(spec: dict[str, Any]) -> int:
    """PID 1 of the container: set up, run the command, forward signals, reap, report."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    hostname = spec["hostname"].encode()
    _check(_libc.sethostname(hostname, len(hostname)), "sethostname")
    try:
        setup_filesystem(spec)
        os.chdir(spec["cwd"])
    except OSError as error:
        print(f"tailor node agent: container set-up failed: {error}", file=sys.stderr)
        return 128
    child = os.fork()
    if child == 0:
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execvpe(spec["argv"][0], spec["argv"], spec["env"])  # noqa: S606
        except OSError as error:
            print(f"tailor node agent: cannot run {spec['argv'][0]!r}: {error.strerror}",
                  file=sys.stderr)
            os._exit(127)
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: os.kill(child, signum))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
        if pid == child:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
                else 128 + os.WTERMSIG(status)


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    if spec.get("cgroup"):
        Path(spec["cgroup"], "cgroup.procs").write_text(str(os.getpid()))
    if spec.get("netns"):
        fd = os.open(spec["netns"], os.O_RDONLY)
        _check(_libc.setns(fd, CLONE_NEWNET), "setns")
        os.close(fd)
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWPID), "unshare")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    init = os.fork()
    if init == 0:
        os._exit(run_init(spec))
    pid_file = Path(spec["init_pid_file"])
    pid_file.parent.mkdir(parents=True, exist_ok=True)  # a teardown may race the start
    pid_file.write_text(str(init))
    for sig in FORWARDED:
        signal.signal(sig, lambda signum, _frame: os.kill(init, signum))
    while True:
        try:
            _, status = os.waitpid(init, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) \
        else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    sys.exit(main())
