"""The deterministic split and the locked test set.

Each example's split follows from a salted hash of its key (its id, or its group when a group
column is named, so every member of a group lands on the same side). Two independent hashes
decide: the first puts a `test` share into the test set; the second divides the rest between
validation and training. Because neither depends on any other row, assignments are stable as
the data grows.

The first run of a model writes the test set's manifest (ids, groups and a content
fingerprint) beside the model's runs (`tailor_contract.trainer_api.test_set_manifest`). Every
later run reads it and uses exactly those ids as the test set: new examples go to training or
validation only (new members of a locked group are held out entirely), and a changed or
missing test example fails the run, because the numbers would no longer be comparable. Only
data.split.testSetVersion starts a new test set.

Rows of data.additionalUris (e.g. labelled production examples folded into a retrain) never
enter the test set, locked or not: the test set is drawn from data.uri alone, so a retrain is
judged on the same benchmark as the model it may replace. They are divided between training
and validation by the same hash, and held out when their group is a locked test group.

Rows of data.productionUris are additional rows too, except the recent holdout
(`tailor_trainer.data.holdout`): those go to the part `recent`, read once at evaluation, and
any other row of a held-out row's group is held out, so that nothing of it trains or validates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from tailor_contract.trainingjob import Split

from tailor_trainer.errors import REASON_TEST_SET_CHANGED, PermanentError

Part = Literal["train", "validation", "test", "held-out", "recent"]
MANIFEST_FORMAT = 1


def unit_hash(salt: str, key: str) -> float:
    """A uniform number in [0, 1) from the key; the same on every machine and Python run."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def content_digest(example_id: str, text: str, label: str) -> str:
    return hashlib.sha256(f"{example_id}\x00{text}\x00{label}".encode()).hexdigest()


def fingerprint(digests: Iterable[str]) -> str:
    """Order-independent fingerprint of a set of examples."""
    h = hashlib.sha256()
    for digest in sorted(digests):
        h.update(bytes.fromhex(digest))
    return h.hexdigest()


@dataclass
class LockedTestSet:
    """The test ids of a model (and their groups), as written by its first run."""

    version: int
    seed: int
    ids: dict[str, str]  # id -> content digest
    groups: set[str] = field(default_factory=set)
    fingerprint: str = ""
    created_by_run: str = ""

    def to_json(self) -> bytes:
        return json.dumps({
            "format": MANIFEST_FORMAT,
            "version": self.version,
            "seed": self.seed,
            "createdByRun": self.created_by_run,
            "count": len(self.ids),
            "fingerprint": self.fingerprint,
            "groups": sorted(self.groups),
            "examples": [{"id": i, "sha256": d} for i, d in sorted(self.ids.items())],
        }, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes, uri: str) -> LockedTestSet:
        try:
            data: Any = json.loads(raw)
            ids = {str(e["id"]): str(e["sha256"]) for e in data["examples"]}
            locked = cls(version=int(data["version"]), seed=int(data["seed"]), ids=ids,
                         groups={str(g) for g in data.get("groups", [])},
                         fingerprint=str(data["fingerprint"]),
                         created_by_run=str(data.get("createdByRun", "")))
            actual = fingerprint(ids.values())
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(REASON_TEST_SET_CHANGED,
                                 f"the locked test manifest {uri} is unreadable ({exc}); restore "
                                 "it or bump data.split.testSetVersion") from exc
        if locked.fingerprint != actual:
            raise PermanentError(REASON_TEST_SET_CHANGED,
                                 f"the locked test manifest {uri} does not match its own "
                                 "fingerprint (edited by hand?); restore it or bump "
                                 "data.split.testSetVersion")
        return locked


class Splitter:
    """Assigns each example to a part, with or without a locked test set."""

    def __init__(self, split: Split, locked: LockedTestSet | None,
                 recent_ids: Collection[str] = (), recent_groups: Collection[str] = ()) -> None:
        self.split = split
        self.locked = locked
        self.recent_ids = recent_ids
        self.recent_groups = recent_groups
        self._salt = f"tailor-split:{split.seed}"
        self._val_share = split.validation / (1.0 - split.test)

    def assign(self, example_id: str, group: str | None, *, additional: bool = False,
               production: bool = False) -> Part:
        """The part of one example; ``additional`` for a row of data.additionalUris or
        data.productionUris, ``production`` (with it) for one of data.productionUris."""
        key = group if group else example_id
        if production and example_id in self.recent_ids:
            return "recent"
        if self.locked is not None:
            if example_id in self.locked.ids:
                # Only data.uri's copy of a test example is the test example.
                return "held-out" if additional else "test"
            if group and group in self.locked.groups:
                return "held-out"  # a new member of a test group would leak into training
        elif not additional and unit_hash(self._salt + ":test", key) < self.split.test:
            return "test"
        if group and group in self.recent_groups:
            return "held-out"  # would leak into the recent holdout
        if unit_hash(self._salt + ":validation", key) < self._val_share:
            return "validation"
        return "train"


def verify_test_set(locked: LockedTestSet, found: dict[str, str], uri: str) -> None:
    """Fail unless the data holds every locked test example, unchanged."""
    missing = [i for i in locked.ids if i not in found]
    changed = [i for i, d in locked.ids.items() if i in found and found[i] != d]
    if missing or changed:
        sample = ", ".join(repr(i) for i in (missing + changed)[:5])
        raise PermanentError(
            REASON_TEST_SET_CHANGED,
            f"the data no longer matches the locked test set {uri} ({len(locked.ids)} examples): "
            f"{len(missing)} missing and {len(changed)} changed (input or label), e.g. {sample}. "
            "Restore them, or bump data.split.testSetVersion to lock a new test set",
        )
