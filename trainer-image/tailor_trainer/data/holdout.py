"""The recent holdout: the most recent labelled production examples, set aside to judge a retrain.

After a drift the locked test set no longer describes production: it was drawn before the world
changed, and the production model is still good there. A retrain is therefore judged where
production is now, on the latest labelled production examples (data.productionUris), which it
must never have trained or validated on. Which rows those are is decided before the pass over
the data, from the production files alone (ids, inputs, labels and timestamps): the most recent
`fraction` of the usable production rows by data.columns.timestamp, at least `minExamples` of
them, ties broken by id so that every rank and every restart picks the same rows. With fewer
usable rows than `minExamples` there is no holdout, every production row trains or validates,
and the verdict's recentHoldout part says NotApplicable with the counts: judging on a handful of
examples would promote on noise.

A usable row is the one the pass over the data keeps: id, input and label present, the first
row with its id among the production files, and not a locked test example (the curated row
wins). Production ids that also name a curated training row are left out by that pass too
(``KnownIds``); such a holdout row is then missing at evaluation, and the manifest counts it.

Every production row needs a timestamp: RFC 3339 / ISO 8601 (UTC when it has no offset), an
Arrow timestamp, or seconds since the epoch. A missing or unreadable one fails the data-quality
gate naming the column, before anything is locked or written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tailor_contract.trainingjob import Data, RecentHoldout

from tailor_trainer.data.load import ColumnMap, iter_batches, resolve_production
from tailor_trainer.data.split import fingerprint
from tailor_trainer.errors import DataQualityFailed
from tailor_trainer.storage import Store

MANIFEST_FORMAT = 1
CHECKS = "failed: timestamps"
"""The violated check reported to the DataQualityPassed condition."""


def epoch_seconds(value: str | None) -> float | None:
    """Seconds since the epoch of a timestamp as the loader reads it (a string), else None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    return seconds if math.isfinite(seconds) else None


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def holdout_size(rows: int, holdout: RecentHoldout) -> int:
    """How many of `rows` usable production rows are held out (0: too few for a holdout)."""
    if rows < holdout.min_examples:
        return 0
    return min(rows, max(holdout.min_examples, math.ceil(holdout.fraction * rows)))


def most_recent(rows: Iterable[tuple[float, str]], size: int) -> list[tuple[float, str]]:
    """The `size` most recent (timestamp, id) pairs; equal timestamps are ordered by id, so the
    choice never depends on file or row order."""
    return sorted(rows, key=lambda r: (-r[0], r[1]))[:size]


@dataclass
class RecentPlan:
    """Which production rows form the recent holdout, decided before the pass over the data."""

    holdout: RecentHoldout
    uris: list[str]
    production_rows: int = 0
    """Usable production rows (see the module's docstring)."""
    ids: dict[str, float] = field(default_factory=dict)
    """The held-out ids and their timestamps (seconds since the epoch)."""
    groups: set[str] = field(default_factory=set)
    """Groups of the held-out rows: no other member of one trains or validates."""

    @property
    def applicable(self) -> bool:
        return bool(self.ids)

    def why_not(self) -> str:
        """Why there is no holdout, with the counts ("" when there is one)."""
        if self.applicable:
            return ""
        return (f"{self.production_rows} labelled production examples, fewer than "
                f"evaluation.recentHoldout.minExamples ({self.holdout.min_examples}): no recent "
                "holdout")

    def manifest(self, digests: dict[str, str], run_id: str) -> dict[str, Any]:
        """recent-holdout.json: what was held out (the ids found again, with their content
        digests), and the counts; `digests` maps each held-out id read to its digest."""
        found = sorted(digests)
        times = [self.ids[i] for i in found]
        return {
            "format": MANIFEST_FORMAT, "runId": run_id, "uris": self.uris,
            "fraction": self.holdout.fraction, "minExamples": self.holdout.min_examples,
            "productionRows": self.production_rows, "planned": len(self.ids),
            "count": len(found), "leftOut": len(self.ids) - len(found),
            "applicable": self.applicable, "why": self.why_not(),
            "from": iso(min(times)) if times else None, "to": iso(max(times)) if times else None,
            "fingerprint": fingerprint(digests.values()),
            "examples": [{"id": i, "sha256": digests[i], "timestamp": iso(self.ids[i])}
                         for i in found],
        }


def plan(store: Store, data: Data, holdout: RecentHoldout, columns: ColumnMap, work_dir: Path,
         locked_ids: Iterable[str] = ()) -> RecentPlan | None:
    """The recent holdout of data.productionUris (None without production data)."""
    if not data.production_uris:
        return None
    assert columns.timestamp is not None
    result = RecentPlan(holdout=holdout, uris=list(data.production_uris))
    skip = set(locked_ids)
    seen: set[str] = set()
    rows: list[tuple[float, str, str | None]] = []
    bad = 0
    example = ""
    for file, batch in iter_batches(store, resolve_production(store, data), columns, work_dir):
        groups = batch[columns.group] if columns.group else [None] * len(batch[columns.id])
        for example_id, text, label, stamp, group in zip(
                batch[columns.id], batch[columns.input], batch[columns.label],
                batch[columns.timestamp], groups, strict=True):
            if not _filled(example_id, text, label):
                continue
            assert example_id is not None
            seconds = epoch_seconds(stamp)
            if seconds is None:
                bad += 1
                example = example or f"{file.uri}: id {example_id!r} has {stamp!r}"
                continue
            if example_id in seen or example_id in skip:
                continue
            seen.add(example_id)
            rows.append((seconds, example_id, group if _filled(group) else None))
    if bad:
        raise DataQualityFailed(
            f"{bad} row(s) of data.productionUris have no readable timestamp in column "
            f"{columns.timestamp!r} (data.columns.timestamp), e.g. {example}; use RFC 3339 "
            "times or seconds since the epoch", CHECKS)
    result.production_rows = len(rows)
    group_of = {i: g for _, i, g in rows}
    chosen = most_recent(((t, i) for t, i, _ in rows), holdout_size(len(rows), result.holdout))
    result.ids = {i: t for t, i in chosen}
    result.groups = {g for i in result.ids if (g := group_of[i]) is not None}
    return result


def _filled(*values: str | None) -> bool:
    return all(v is not None and v.strip() for v in values)
