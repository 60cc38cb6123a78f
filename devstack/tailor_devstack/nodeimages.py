"""The node's images: the OCI archives `make images` builds, imported into containerd.

There is no registry: the kubelet finds the project's images already in containerd's store
(`imagePullPolicy: IfNotPresent` or `Never`), as on a node whose images were preloaded. An
archive is imported again only when it changed since the last import into the same store.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from tailor_devstack.commands import pins
from tailor_devstack.state import StackError

NAMESPACE = "k8s.io"  # the CRI plugin's containerd namespace


def archive_dir() -> Path:
    return Path(pins("TAILOR_CACHE")["TAILOR_CACHE"]) / "images"


def answers(sock: Path) -> bool:
    """Whether containerd accepts connections on its socket."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1)
        s.connect(str(sock))
        return True
    return False


def listed(ctr: Path, sock: Path) -> set[str]:
    """The image references containerd holds for the kubelet."""
    out = subprocess.run([str(ctr), f"--address={sock}", "-n", NAMESPACE, "images", "ls", "-q"],
                         check=True, capture_output=True, text=True).stdout
    return set(out.split())


def load(ctr: Path, sock: Path, marker: Path, progress: Callable[[str], None],
         names: Sequence[str] | None = None, archives: Path | None = None) -> list[str]:
    """Import each archive (`tailor-<name>.oci.tar`; all, or those of `names`) not yet imported
    in its current form; the archives imported.

    `marker` records what was imported; it lives beside containerd's root, which outlives the
    stack, so a restart imports nothing."""
    archives = archives or archive_dir()
    wanted = None if names is None else {f"tailor-{name}.oci.tar" for name in names}
    seen = json.loads(marker.read_text()) if marker.exists() else {}
    imported = []
    for archive in sorted(archives.glob("*.oci.tar")) if archives.exists() else []:
        stamp = f"{archive.stat().st_size}:{archive.stat().st_mtime_ns}"
        if (wanted is not None and archive.name not in wanted) or seen.get(archive.name) == stamp:
            continue
        progress(f"  importing {archive.name} into the node's containerd")
        subprocess.run([str(ctr), f"--address={sock}", "-n", NAMESPACE, "images", "import",
                        # The unpacked snapshots are what runs; the compressed layers would
                        # only double the disk a multi-gigabyte image takes (ctr allows that
                        # only for a local import). Pinned: the kubelet never collects them.
                        "--local", "--discard-unpacked-layers",
                        "--label", "io.cri-containerd.pinned=pinned", str(archive)],
                       check=True, capture_output=True)
        seen[archive.name] = stamp
        imported.append(archive.name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(seen))
    missing = (wanted or set()) - {a.name for a in archives.glob("*.oci.tar")}
    if missing:
        raise StackError(f"no image archive {', '.join(sorted(missing))} in {archives}: "
                                "run `make images`")
    return imported
