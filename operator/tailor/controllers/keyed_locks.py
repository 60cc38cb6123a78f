"""One lock per object, so two handlers never reconcile the same object at once while
different objects proceed in parallel."""

from __future__ import annotations

import threading
from collections.abc import Hashable


class KeyedLocks:
    """``locks[key]`` is the same ``threading.Lock`` for equal keys, made on first use."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def __getitem__(self, key: Hashable) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def discard(self, key: Hashable) -> None:
        """Forget a deleted object's lock (a holder keeps the one it has)."""
        with self._guard:
            self._locks.pop(key, None)
