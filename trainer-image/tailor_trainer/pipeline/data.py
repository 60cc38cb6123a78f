"""Stage 1, data: one pass over the data, the quality gate and the locked test set.

Every rank reads every row and assigns it itself (the split hash needs no coordination); each
keeps only its shard of train/validation, rank 0 also the test rows, the recent holdout's rows
and the gate's counts. Which production rows are the recent holdout is decided first, from the
production files alone (`tailor_trainer.data.holdout`), on every rank alike.
The gate runs on rank 0 before anything is trained, and `data-quality.json` is written whether
it passes or not. The test set is locked only after the gate passed and the base model and
every input proved readable, so a bad configuration leaves nothing behind.

A trial of a hyper-parameter search (trial mode) reads the locked test set's ids and plans the
recent holdout like any run, but drops every row assigned to the test set, the recent holdout or
held out with them, before anything else sees it: such rows are never kept, encoded, gated or
counted, and a trial neither checks nor locks a test set. What every run read, by split, is
rank 0's record (`LocalData.ids`; rank 0 assigns every row), written as ids-read.json.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from tailor_contract import trainer_api, uris

from tailor_trainer.data import holdout
from tailor_trainer.data.load import (
    Batch,
    ColumnMap,
    DataFile,
    KnownIds,
    iter_batches,
    resolve_all,
    resolve_files,
)
from tailor_trainer.data.quality import QualityGate, is_empty
from tailor_trainer.data.split import (
    LockedTestSet,
    Part,
    Splitter,
    content_digest,
    fingerprint,
    verify_test_set,
)
from tailor_trainer.errors import DataQualityFailed
from tailor_trainer.pipeline.context import RunContext
from tailor_trainer.recipes.base import Recipe
from tailor_trainer.train import Shard

log = logging.getLogger("tailor_trainer")


@dataclass
class LocalData:
    """What one rank keeps from the pass over the data."""

    train_text: list[str] = field(default_factory=list)
    train_label: list[str] = field(default_factory=list)
    val_text: list[str] = field(default_factory=list)
    val_label: list[str] = field(default_factory=list)
    test: list[tuple[str, str, str]] = field(default_factory=list)  # rank 0: id, text, label
    test_items: list[Any] = field(default_factory=list)  # rank 0: the test inputs, encoded
    recent: list[tuple[str, str, str]] = field(default_factory=list)  # rank 0: the holdout
    recent_items: list[Any] = field(default_factory=list)  # rank 0: its inputs, encoded
    counts: dict[str, int] = field(default_factory=dict)
    labels_seen: set[str] = field(default_factory=set)
    seen: dict[str, int] = field(default_factory=lambda: {"train": 0, "validation": 0})
    """Rows of train/validation met so far over all ranks: they are dealt out round-robin."""
    ids: dict[str, list[str]] = field(default_factory=lambda: {
        "train": [], "validation": [], "test": [], "recentHoldout": []})
    """Rank 0: the id of every row read into each split, over all ranks (ids-read.json)."""


IDS_KEY = {"train": "train", "validation": "validation", "test": "test",
           "recent": "recentHoldout"}
"""The key of ids-read.json (trainer_api.ARTIFACT_IDS_READ) for each part that is read."""


def read_locked(ctx: RunContext) -> LockedTestSet | None:
    """The model's locked test set of this testSetVersion, if a run already locked it."""
    uri = trainer_api.test_set_manifest(ctx.cfg.model_uri, ctx.data.split.test_set_version)
    raw = ctx.store.get_bytes_or_none(uri)
    return None if raw is None else LockedTestSet.from_json(raw, uri)


def read(ctx: RunContext) -> LocalData:
    """The pass over data.uri, data.additionalUris and data.productionUris: this rank's rows,
    rank 0's report. The recent holdout is planned first (a bad timestamp fails here)."""
    world, cols, data, trial = ctx.world, ctx.columns, ctx.data, ctx.cfg.trial is not None
    files = resolve_all(ctx.store, data)
    ctx.recent = holdout.plan(ctx.store, data, ctx.spec.evaluation.recent_holdout, cols,
                              ctx.work_dir, ctx.locked.ids if ctx.locked else ())
    recent = ctx.recent
    splitter = Splitter(data.split, ctx.locked, recent.ids if recent else (),
                        recent.groups if recent else ())
    gate = QualityGate(data.quality, cols, data.labels) if world.is_main else None
    local = LocalData(counts={"train": 0, "validation": 0, "test": 0, "held-out": 0,
                              "recent": 0})
    # Additional and production rows whose id already names an example are left out (load.py).
    known = KnownIds() if data.additional_uris or data.production_uris else None
    extra = {"additional": [0, 0], "production": [0, 0]}  # rows kept, rows left out
    for file, batch in iter_batches(ctx.store, files, cols, ctx.work_dir):
        if known is not None:
            if file.additional:
                batch, dropped = known.new_rows(batch, cols.id)
                counts = extra["production" if file.production else "additional"]
                counts[0] += len(batch[cols.id])
                counts[1] += dropped
            else:
                known.add(batch, cols.id)
        parts = _assign(splitter, batch, cols, file)
        if trial:
            batch, parts = _trial_rows(batch, parts)
        if gate is not None:
            gate.add(batch, annotated=not file.additional)
        _keep(ctx, local, batch, parts)
    if gate is not None:
        report = gate.report()
        shown = ("train", "validation") if trial else ("train", "validation", "test")
        report.split = {k: v for k, v in local.counts.items() if v or k in shown}
        for name, uris_of in (("additional", data.additional_uris),
                              ("production", data.production_uris)):
            if uris_of:
                setattr(report, name, {"uris": list(uris_of), "rows": extra[name][0],
                                       "leftOut": extra[name][1]})
        if report.production is not None:
            report.production["recentHoldout"] = local.counts["recent"]
        ctx.quality = report
    return local


def _assign(splitter: Splitter, batch: Batch, cols: ColumnMap,
            file: DataFile) -> list[Part | None]:
    """Each row's part (None for a row without an id: it cannot be assigned, or used)."""
    ids = batch[cols.id]
    groups = batch[cols.group] if cols.group else [None] * len(ids)
    return [None if example_id is None or is_empty(example_id) else
            splitter.assign(example_id, None if is_empty(group) else group,
                            additional=file.additional, production=file.production)
            for example_id, group in zip(ids, groups, strict=True)]


def _trial_rows(batch: Batch, parts: list[Part | None]) -> tuple[Batch, list[Part | None]]:
    """Trial mode: the rows of a batch that may train or validate (and those without an id,
    which the gate counts as such); the rest are dropped before the gate sees them."""
    rows = [i for i, part in enumerate(parts) if part in (None, "train", "validation")]
    if len(rows) == len(parts):
        return batch, parts
    return ({name: [values[i] for i in rows] for name, values in batch.items()},
            [parts[i] for i in rows])


def _keep(ctx: RunContext, local: LocalData, batch: Batch, parts: list[Part | None]) -> None:
    """Keep each usable row of a batch that belongs to this rank (rank 0: record its id)."""
    world, cols = ctx.world, ctx.columns
    ids, texts, labels = batch[cols.id], batch[cols.input], batch[cols.label]
    for example_id, text, label, part in zip(ids, texts, labels, parts, strict=True):
        if part is None or is_empty(text) or is_empty(label):
            continue
        assert example_id is not None and text is not None and label is not None
        label = label.strip()
        local.labels_seen.add(label)
        local.counts[part] += 1
        if world.is_main and part in IDS_KEY:
            local.ids[IDS_KEY[part]].append(example_id)
        if part in ("test", "recent"):
            if world.is_main:
                (local.test if part == "test" else local.recent).append((example_id, text, label))
        elif part in local.seen:
            owner = local.seen[part] % world.size
            local.seen[part] += 1
            if owner == world.rank:
                texts_of, labels_of = ((local.train_text, local.train_label) if part == "train"
                                       else (local.val_text, local.val_label))
                texts_of.append(text)
                labels_of.append(label)


def encode(recipe: Recipe, local: LocalData) -> tuple[list[Any], list[Any]]:
    """Every input read through the recipe (an image can be unreadable): train and
    validation items; the test rows' are kept in `local` for the end."""
    train_items, val_items = recipe.encode(local.train_text), recipe.encode(local.val_text)
    local.test_items = recipe.encode([t for _, t, _ in local.test])
    local.recent_items = recipe.encode([t for _, t, _ in local.recent])
    return train_items, val_items


def gate(ctx: RunContext, recipe: Recipe, local: LocalData) -> None:
    """Rank 0: the gate's verdict, the label set, and the locked test set."""
    if not ctx.world.is_main:
        return
    _check_quality(ctx)
    ctx.labels = list(ctx.data.labels) if ctx.data.labels else sorted(local.labels_seen)
    if local.counts["validation"] == 0 or local.counts["train"] == 0:
        raise DataQualityFailed(f"the split left {local.counts['train']} training and "
                                f"{local.counts['validation']} validation examples; more data "
                                "or larger split shares are needed", "failed: split")
    if ctx.cfg.trial is not None:
        return  # a trial read no test row: it has nothing to check or lock
    _lock_test_set(ctx, recipe, local)
    assert ctx.locked is not None
    ctx.tracker.tags({"tailor.test_set_fingerprint": ctx.locked.fingerprint,
                      "tailor.test_set_version": str(ctx.locked.version)})


def _check_quality(ctx: RunContext) -> None:
    """Write data-quality.json, then stop on a violated Fail check."""
    report = ctx.quality
    assert report is not None
    ctx.store.put_bytes(uris.join(ctx.cfg.artifact_uri, trainer_api.ARTIFACT_DATA_QUALITY),
                        json.dumps(report.to_dict(), indent=1).encode())
    ctx.tracker.tags({"tailor.data_fingerprint": report.data_fingerprint})
    if not report.passed:
        raise DataQualityFailed("data quality gate failed: " + "; ".join(
            f.message for f in report.failures), report.outcome()[1])
    for finding in report.warnings:
        log.warning("data quality warning: %s", finding.message)
    ctx.gate_passed = True


def _lock_test_set(ctx: RunContext, recipe: Recipe, local: LocalData) -> None:
    """Lock the test set on a model's first run (create-if-absent); check it on later ones."""
    found = test_digests(recipe, local)
    split = ctx.data.split
    uri = trainer_api.test_set_manifest(ctx.cfg.model_uri, split.test_set_version)
    if ctx.locked is not None:
        verify_test_set(ctx.locked, found, uri)
        return
    locked = LockedTestSet(version=split.test_set_version, seed=split.seed, ids=found,
                           fingerprint=fingerprint(found.values()),
                           created_by_run=ctx.cfg.run_id)
    if not found:
        raise DataQualityFailed("the split left no test examples; more data or a larger "
                                "data.split.test is needed", "failed: split")
    if ctx.columns.group:
        locked.groups = _test_groups(ctx, local)
    if not ctx.store.put_bytes(uri, locked.to_json(), if_absent=True):
        # Another run of the same model locked it first: use theirs.
        existing = LockedTestSet.from_json(ctx.store.get_bytes(uri), uri)
        verify_test_set(existing, found, uri)
        locked = existing
    ctx.locked = locked


def test_digests(recipe: Recipe, local: LocalData) -> dict[str, str]:
    """Each test example's content digest, covering its input as the recipe read it."""
    return {i: content_digest(i, recipe.content(value, item), y)
            for (i, value, y), item in zip(local.test, local.test_items, strict=True)}


def recent_manifest(ctx: RunContext, recipe: Recipe, local: LocalData) -> dict[str, Any] | None:
    """recent-holdout.json (rank 0): the held-out ids with their content digests, covering the
    input as the recipe read it, and the counts; None without data.productionUris."""
    if ctx.recent is None:
        return None
    digests = {i: content_digest(i, recipe.content(value, item), y)
               for (i, value, y), item in zip(local.recent, local.recent_items, strict=True)}
    return ctx.recent.manifest(digests, ctx.cfg.run_id)


def _test_groups(ctx: RunContext, local: LocalData) -> set[str]:
    """Groups of the test rows (a second, cheap pass over the group column)."""
    ids = {i for i, _, _ in local.test}
    groups: set[str] = set()
    cols = ctx.columns
    assert cols.group is not None
    for _file, batch in iter_batches(ctx.store, resolve_files(ctx.store, ctx.data), cols,
                                     ctx.work_dir):
        for example_id, group in zip(batch[cols.id], batch[cols.group], strict=True):
            if example_id in ids and not is_empty(group):
                groups.add(str(group))
    return groups


def ids_document(local: LocalData) -> bytes:
    """ids-read.json (rank 0): the ids read into each split, sorted."""
    return json.dumps({k: sorted(v) for k, v in local.ids.items()}, indent=1).encode()


def shards(labels: list[str], local: LocalData, train_items: list[Any],
           val_items: list[Any]) -> tuple[Shard, Shard]:
    """This rank's train and validation shards, labels as indexes into the label set."""
    index = {label: i for i, label in enumerate(labels)}
    return (Shard(train_items, [index[x] for x in local.train_label]),
            Shard(val_items, [index[x] for x in local.val_label]))
