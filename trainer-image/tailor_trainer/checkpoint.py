"""Checkpoints in S3: written in the background, found by their completion marker.

A checkpoint is `checkpoints/step-<n>/state.pt` plus a `COMPLETE` marker holding its sha256,
uploaded after the state. A reader takes the newest step with a marker and checks the digest,
so a checkpoint cut off by a crash is never resumed from. Training pauses only to queue a copy
of the state into reused host buffers (`HostCopies`); serialization and upload run on a thread,
one at a time, and the oldest complete checkpoints beyond `keep` are deleted after each upload.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import torch

from tailor_trainer.errors import TrainerError
from tailor_trainer.storage import NotFound, Store

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
MARKER_FILE = "COMPLETE"
_STEP_DIR = re.compile(r"step-(\d+)/" + MARKER_FILE + "$")


class HostCopies:
    """Host buffers reused by every snapshot of the same state.

    Each tensor is copied into the buffer kept for its place in the state (pinned memory for a
    GPU tensor, copied without blocking), so a snapshot costs the training thread only the
    queueing of the copies. Fresh host allocations would cost page faults, and a copy into
    pageable memory waits for the GPU. The copies are ordered on the training stream, so they
    read the values of this step even though training goes on; whoever reads the buffers first
    waits for the event `copy` returns.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[Any, ...], torch.Tensor] = {}
        self._on_gpu = False

    def copy(self, obj: Any) -> tuple[Any, torch.cuda.Event | None]:
        """The snapshot, and the event its GPU transfers complete at (None: none were queued)."""
        self._on_gpu = False
        snapshot = self._copy(obj, ())
        if not self._on_gpu:
            return snapshot, None
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record()
        return snapshot, event

    def _copy(self, obj: Any, place: tuple[Any, ...]) -> Any:
        if isinstance(obj, torch.Tensor):
            source = obj.detach()
            buffer = self._buffers.get(place)
            if buffer is None or buffer.shape != source.shape or buffer.dtype != source.dtype:
                buffer = torch.empty(source.shape, dtype=source.dtype,
                                     pin_memory=source.is_cuda)
                self._buffers[place] = buffer
            on_gpu = source.is_cuda
            self._on_gpu |= on_gpu
            return buffer.copy_(source, non_blocking=on_gpu)
        if isinstance(obj, dict):
            return {k: self._copy(v, (*place, k)) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(self._copy(v, (*place, i)) for i, v in enumerate(obj))
        return obj


def cpu_clone(obj: Any) -> Any:
    """A deep copy with every tensor detached onto the CPU (a consistent snapshot), complete."""
    snapshot, copied = HostCopies().copy(obj)
    if copied is not None:
        copied.synchronize()
    return snapshot


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Checkpointer:
    """Saves and finds checkpoints under one prefix (the run's `checkpoints/`)."""

    def __init__(self, store: Store, prefix: str, work_dir: Path, keep: int) -> None:
        self.store = store
        self.prefix = prefix.rstrip("/") + "/"
        self.work_dir = work_dir / "checkpoints"
        self.keep = keep
        self._thread: threading.Thread | None = None
        self._error: TrainerError | None = None
        self._host = HostCopies()
        self.last_saved_step = -1

    def _step_uri(self, step: int) -> str:
        return f"{self.prefix}step-{step:08d}/"

    def complete_steps(self) -> list[int]:
        steps = []
        for obj in self.store.list(self.prefix):
            match = _STEP_DIR.search(obj.uri[len(self.prefix):])
            if match:
                steps.append(int(match.group(1)))
        return sorted(steps)

    def latest(self) -> int | None:
        steps = self.complete_steps()
        return steps[-1] if steps else None

    def load(self, step: int) -> dict[str, Any]:
        """The state of a complete checkpoint, its digest verified."""
        uri = self._step_uri(step)
        marker = json.loads(self.store.get_bytes(uri + MARKER_FILE))
        local = self.work_dir / f"resume-{step:08d}.pt"
        self.store.download(uri + STATE_FILE, local)
        if sha256_file(local) != marker["sha256"]:
            raise RuntimeError(f"checkpoint {uri} does not match its digest")
        state: dict[str, Any] = torch.load(local, map_location="cpu", weights_only=True)
        local.unlink(missing_ok=True)
        return state

    def save_async(self, step: int, state: dict[str, Any]) -> None:
        """Snapshot `state` (live tensors are fine) and upload it in the background.

        Blocks while the previous upload is still running (its buffers are reused), then only
        to queue the copies."""
        self.wait()
        snapshot, copied = self._host.copy(state)
        self._thread = threading.Thread(target=self._write, args=(step, snapshot, copied),
                                        name=f"checkpoint-{step}", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Block until the upload in flight (if any) is complete; re-raise its failure."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _write(self, step: int, state: dict[str, Any],
               copied: torch.cuda.Event | None) -> None:
        try:
            if copied is not None:
                copied.synchronize()
            self.work_dir.mkdir(parents=True, exist_ok=True)
            local = self.work_dir / f"step-{step:08d}.pt"
            torch.save(state, local)
            digest = sha256_file(local)
            uri = self._step_uri(step)
            self.store.put_file(uri + STATE_FILE, local)
            marker = {"step": step, "sha256": digest, "size": local.stat().st_size}
            self.store.put_bytes(uri + MARKER_FILE, json.dumps(marker).encode())
            local.unlink(missing_ok=True)
            self.last_saved_step = step
            log.info("checkpoint at step %d uploaded to %s", step, uri)
            self._prune()
        except TrainerError as exc:
            self._error = exc
        except Exception as exc:  # surfaced to the training thread by wait()
            from tailor_trainer.errors import REASON_STORAGE_ERROR, RetryableError

            self._error = RetryableError(REASON_STORAGE_ERROR, f"checkpoint upload failed: {exc}")

    def _prune(self) -> None:
        steps = self.complete_steps()
        for old in steps[:-self.keep]:
            uri = self._step_uri(old)
            # The marker goes first: a half-deleted checkpoint is never mistaken for complete.
            self.store.delete(uri + MARKER_FILE)
            with contextlib.suppress(NotFound):
                self.store.delete_prefix(uri)
