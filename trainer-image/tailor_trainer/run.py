"""One training run, from the spec in the environment to the verdict in S3.

    load config -> (rank 0) data-quality gate + locked test set -> split shards on every rank
    -> DDP fine-tuning -> (rank 0) evaluation on the test set against the baselines
    -> artifacts, manifest last -> promotion -> termination message

Every phase that more than one rank takes part in ends in `dist.agree`, so an error anywhere
reaches every rank and they all exit with the same code. A run whose manifest already exists
is complete: a restarted worker group only finishes its promotion and reports again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from tailor.api import contract
from tailor.api.contract import EXIT_SUCCESS, TerminationSummary
from tailor.api.trainingjob import TASK_IMAGE_CLASSIFICATION, TASK_TEXT_CLASSIFICATION

from tailor_trainer import artifacts, evaluate
from tailor_trainer.checkpoint import Checkpointer
from tailor_trainer.config import ENV_WORK_DIR, RunConfig, join_uri, load_config
from tailor_trainer.data.load import (
    ColumnMap,
    KnownIds,
    iter_batches,
    resolve_all,
    resolve_files,
)
from tailor_trainer.data.quality import QualityGate, QualityReport, is_empty
from tailor_trainer.data.split import (
    LockedTestSet,
    Splitter,
    content_digest,
    fingerprint,
    manifest_uri,
    verify_test_set,
)
from tailor_trainer.dist import World, agree, broadcast, gather, init_world, shutdown
from tailor_trainer.errors import (
    REASON_CRASHED,
    REASON_DATA_QUALITY_FAILED,
    REASON_INVALID_SPEC,
    REASON_PREEMPTED,
    REASON_TEST_SET_CHANGED,
    PermanentError,
    RetryableError,
    TrainerError,
)
from tailor_trainer.metrics import Progress
from tailor_trainer.recipes.base import ProfileFeatures, Recipe, fetch_base_model
from tailor_trainer.storage import Store
from tailor_trainer.tracking import Tracker
from tailor_trainer.train import Shard, StopSignal, Trainer, autocast_dtype

log = logging.getLogger("tailor_trainer")
PROBE_MAX_EXAMPLES = 20000
"""Training examples (over all ranks) the linear probe is fitted on."""


@dataclass
class LocalData:
    """What one rank keeps from the pass over the data."""

    train_text: list[str] = field(default_factory=list)
    train_label: list[str] = field(default_factory=list)
    val_text: list[str] = field(default_factory=list)
    val_label: list[str] = field(default_factory=list)
    test: list[tuple[str, str, str]] = field(default_factory=list)  # rank 0: id, text, label
    test_items: list[Any] = field(default_factory=list)  # rank 0: the test inputs, encoded
    counts: dict[str, int] = field(default_factory=dict)
    labels_seen: set[str] = field(default_factory=set)


def write_termination(path: str, summary: TerminationSummary) -> None:
    """The pod's termination message; silently nothing where the path is not writable."""
    try:
        with open(path, "w") as handle:
            handle.write(summary.to_message())
    except OSError:
        pass


def _preempted(signum: int, frame: FrameType | None) -> None:
    raise RetryableError(REASON_PREEMPTED, "stopped by SIGTERM before training started")


class Run:
    def __init__(self, cfg: RunConfig, world: World) -> None:
        self.cfg = cfg
        self.world = world
        self.spec = cfg.spec
        self.store = Store(cfg.spec.storage)
        # Processes on one node may share TAILOR_WORK_DIR; each keeps to its own folder.
        root = Path(os.environ.get(ENV_WORK_DIR) or tempfile.mkdtemp(prefix="tailor-"))
        self.work_dir = root / f"rank-{world.rank}"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.progress = Progress() if world.is_main else None
        tracking = self.spec.tracking
        experiment = (tracking.experiment if tracking and tracking.experiment
                      else os.environ.get("MLFLOW_EXPERIMENT_NAME") or cfg.model_name)
        self.tracker = Tracker(
            (tracking.uri if tracking else None) if world.is_main else None,
            experiment, cfg.run_id, f"{cfg.name}-{cfg.run_id}", cfg.artifact_uri)
        assert self.spec.data is not None and self.spec.model is not None
        self.data = self.spec.data
        self.columns = ColumnMap.from_spec(self.data)
        self.quality: QualityReport | None = None
        self.locked: LockedTestSet | None = None
        self.labels: list[str] = []

    # --- phases ---------------------------------------------------------------------------------
    def execute(self) -> TerminationSummary:
        world, main = self.world, self.world.is_main
        if self.progress is not None:
            self.progress.serve(self.cfg.metrics_port)
        done = broadcast(world, agree(world, lambda: self._completed() if main else None))
        if done is not None:
            return self._finish_completed(done)
        if main:
            self.tracker.start({"tailor.trainingjob": f"{self.cfg.namespace}/{self.cfg.name}",
                                "tailor.model": self.cfg.model_name,
                                "tailor.task": self.spec.task})
            self.tracker.params(self._params())
        self.locked = broadcast(world, agree(world, lambda: self._read_locked() if main else None))
        local = agree(world, self._read_data)
        # The base model is checked before the gate locks a test set: a bad configuration
        # must leave nothing behind.
        recipe = agree(world, self._recipe)
        # So are the inputs (an image can be unreadable); the test rows' are kept for the end.
        train_items, val_items, local.test_items = agree(world, lambda: (
            recipe.encode(local.train_text), recipe.encode(local.val_text),
            recipe.encode([t for _, t, _ in local.test])))
        agree(world, lambda: self._gate(recipe, local))
        self.labels = broadcast(world, self.labels)
        index = {label: i for i, label in enumerate(self.labels)}
        train = Shard(train_items, [index[x] for x in local.train_label])
        val = Shard(val_items, [index[x] for x in local.val_label])
        checkpointer = Checkpointer(self.store, self.cfg.checkpoint_uri, self.work_dir,
                                    self.spec.checkpoint.keep)
        trainer = Trainer(world, self.spec, recipe, len(self.labels), checkpointer,
                          self.progress, self.tracker.metrics)
        # A linear probe on the frozen base model is fitted before training whenever the generic
        # baseline is on: it is that baseline (LinearProbe), and its head also starts the
        # candidate's (linear probing, then fine-tuning), whichever method judges the candidate.
        # The test set is not touched until after training.
        features = agree(world, lambda: self._probe_features(recipe, train, val))
        probe = self._gather_probe(gather(world, features[1]), features[0])
        head = agree(world, lambda: self._fit_probe(probe) if main else None)
        head = broadcast(world, head)
        stop = StopSignal()
        # Training holds collectives of its own, so it runs outside `agree`: a rank that fails
        # there exits, and torchrun stops its peers.
        with stop.installed():
            result = trainer.fit(train, val, stop, head)
        self.tracker.flush()
        outputs = agree(world, lambda: evaluate.predict(
            result.model, recipe, val.items, world.device,
            autocast_dtype(self.spec.hyperparameters.precision, world.device)))
        described = recipe.profile_features(self.columns.input, local.val_text, val.items)
        parts = gather(world, (described, local.val_label, outputs))
        profile_parts = {"features": ProfileFeatures.concat([p[0] for p in parts]),
                         "labels": [y for p in parts for y in p[1]],
                         "probs": np.concatenate([p[2] for p in parts if len(p[2])])}
        summary = agree(world, lambda: self._evaluate_and_publish(
            recipe, result, local, probe, profile_parts) if main else None)
        summary = broadcast(world, summary)
        assert summary is not None
        return summary

    def _read_locked(self) -> LockedTestSet | None:
        uri = manifest_uri(self.cfg.model_uri, self.data.split.test_set_version)
        raw = self.store.get_bytes_or_none(uri)
        return None if raw is None else LockedTestSet.from_json(raw, uri)

    def _completed(self) -> dict[str, Any] | None:
        manifest = artifacts.read_manifest(self.store, self.cfg.artifact_uri)
        if manifest is None:
            return None
        raw = self.store.get_bytes(join_uri(self.cfg.artifact_uri, "metrics.json"))
        return dict(json.loads(raw))

    def _finish_completed(self, metrics: dict[str, Any]) -> TerminationSummary:
        """A restarted group whose run already finished: re-do promotion, report again."""
        if self.world.is_main and metrics["verdict"]["promote"]:
            pointer = artifacts.production_model(self.store, self.cfg.model_uri)
            if pointer is None or pointer.get("runId") != self.cfg.run_id:
                manifest = artifacts.read_manifest(self.store, self.cfg.artifact_uri) or {}
                model_files = {k[len("model/"):]: v for k, v in manifest.get("files", {}).items()
                               if k.startswith("model/")}
                artifacts.promote(self.store, self.cfg.model_uri, self.cfg.run_id,
                                  self.cfg.artifact_uri, model_files, metrics)
        log.info("run %s is already complete; nothing to train", self.cfg.run_id)
        return self._summary(metrics)

    def _params(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.spec.to_api()
        out: dict[str, Any] = {}
        for section in ("hyperparameters", "evaluation", "checkpoint", "promotion"):
            for key, value in (spec.get(section) or {}).items():
                out[f"{section}.{key}"] = value
        out.update({"task": self.spec.task, "model.base": self.spec.model.base if self.spec.model
                    else "", "data.uri": self.data.uri,
                    "data.additionalUris": ",".join(self.data.additional_uris or [])[:500],
                    "workers": self.spec.workers,
                    "world_size": self.world.size, "split.validation": self.data.split.validation,
                    "split.test": self.data.split.test, "split.seed": self.data.split.seed,
                    "split.testSetVersion": self.data.split.test_set_version})
        return out

    def _read_data(self) -> LocalData:
        world, cols = self.world, self.columns
        files = resolve_all(self.store, self.data)
        # Each rank assigns every row itself (the hash needs no coordination); rank 0 alone
        # checks quality and keeps the test rows.
        splitter = Splitter(self.data.split, self.locked)
        gate = QualityGate(self.data.quality, cols, self.data.labels) if world.is_main else None
        local = LocalData(counts={"train": 0, "validation": 0, "test": 0, "held-out": 0})
        seen = {"train": 0, "validation": 0}
        # data.additionalUris: rows whose id already names an example are left out (load.py).
        known = KnownIds() if self.data.additional_uris else None
        additional_rows = left_out = 0
        for file, batch in iter_batches(self.store, files, cols, self.work_dir):
            if known is not None:
                if file.additional:
                    batch, dropped = known.new_rows(batch, cols.id)
                    left_out += dropped
                    additional_rows += len(batch[cols.id])
                else:
                    known.add(batch, cols.id)
            if gate is not None:
                gate.add(batch, annotated=not file.additional)
            ids, texts, labels = batch[cols.id], batch[cols.input], batch[cols.label]
            groups = batch[cols.group] if cols.group else [None] * len(ids)
            for example_id, text, label, group in zip(ids, texts, labels, groups, strict=True):
                if is_empty(example_id) or is_empty(text) or is_empty(label):
                    continue
                assert example_id is not None and text is not None and label is not None
                label = label.strip()
                local.labels_seen.add(label)
                part = splitter.assign(example_id, None if is_empty(group) else group,
                                       additional=file.additional)
                local.counts[part] += 1
                if part == "test":
                    if world.is_main:
                        local.test.append((example_id, text, label))
                elif part in seen:
                    owner = seen[part] % world.size
                    seen[part] += 1
                    if owner == world.rank:
                        if part == "train":
                            local.train_text.append(text)
                            local.train_label.append(label)
                        else:
                            local.val_text.append(text)
                            local.val_label.append(label)
        if gate is not None:
            report = gate.report()
            report.split = {k: v for k, v in local.counts.items() if v or k != "held-out"}
            if known is not None:
                report.additional = {"uris": list(self.data.additional_uris or []),
                                     "rows": additional_rows, "leftOut": left_out}
            self.quality = report
        return local

    def _gate(self, recipe: Recipe, local: LocalData) -> None:
        if not self.world.is_main:
            return
        report = self.quality
        assert report is not None
        self.store.put_bytes(join_uri(self.cfg.artifact_uri, "data-quality.json"),
                             json.dumps(report.to_dict(), indent=1).encode())
        self.tracker.tags({"tailor.data_fingerprint": report.data_fingerprint})
        if not report.passed:
            raise PermanentError(REASON_DATA_QUALITY_FAILED,
                                 "data quality gate failed: " + "; ".join(
                                     f.message for f in report.failures))
        for finding in report.warnings:
            log.warning("data quality warning: %s", finding.message)
        self.labels = list(self.data.labels) if self.data.labels else sorted(local.labels_seen)
        if local.counts["validation"] == 0 or local.counts["train"] == 0:
            raise PermanentError(REASON_DATA_QUALITY_FAILED,
                                 f"the split left {local.counts['train']} training and "
                                 f"{local.counts['validation']} validation examples; more data "
                                 "or larger split shares are needed")
        found = self._test_digests(recipe, local)
        uri = manifest_uri(self.cfg.model_uri, self.data.split.test_set_version)
        if self.locked is None:
            locked = LockedTestSet(version=self.data.split.test_set_version,
                                   seed=self.data.split.seed, ids=found,
                                   fingerprint=fingerprint(found.values()),
                                   created_by_run=self.cfg.run_id)
            if not found:
                raise PermanentError(REASON_DATA_QUALITY_FAILED,
                                     "the split left no test examples; more data or a larger "
                                     "data.split.test is needed")
            if self.columns.group:
                locked.groups = self._test_groups(local)
            if not self.store.put_bytes(uri, locked.to_json(), if_absent=True):
                # Another run of the same model locked it first: use theirs.
                existing = LockedTestSet.from_json(self.store.get_bytes(uri), uri)
                verify_test_set(existing, found, uri)
                locked = existing
            self.locked = locked
        else:
            verify_test_set(self.locked, found, uri)
        self.tracker.tags({"tailor.test_set_fingerprint": self.locked.fingerprint,
                           "tailor.test_set_version": str(self.locked.version)})

    @staticmethod
    def _test_digests(recipe: Recipe, local: LocalData) -> dict[str, str]:
        """Each test example's content digest, covering its input as the recipe read it."""
        return {i: content_digest(i, recipe.content(value, item), y)
                for (i, value, y), item in zip(local.test, local.test_items, strict=True)}

    def _test_groups(self, local: LocalData) -> set[str]:
        """Groups of the test rows (a second, cheap pass over the group column)."""
        ids = {i for i, _, _ in local.test}
        groups: set[str] = set()
        cols = self.columns
        assert cols.group is not None
        for _file, batch in iter_batches(self.store, resolve_files(self.store, self.data), cols,
                                         self.work_dir):
            for example_id, group in zip(batch[cols.id], batch[cols.group], strict=True):
                if example_id in ids and not is_empty(group):
                    groups.add(str(group))
        return groups

    def _recipe(self) -> Recipe:
        assert self.spec.model is not None and self.spec.model.base is not None
        base = fetch_base_model(self.store, self.spec.model.base, self.work_dir)
        hp = self.spec.hyperparameters
        if self.spec.task == TASK_TEXT_CLASSIFICATION:
            from tailor_trainer.recipes.text import TextRecipe

            return TextRecipe(base, hp.max_sequence_length)
        if self.spec.task == TASK_IMAGE_CLASSIFICATION:
            from tailor_trainer.recipes.image import ImageRecipe, image_root

            return ImageRecipe(base, hp.image_size, self.store,
                               image_root(self.store, self.data.uri), self.columns.input)
        raise PermanentError(REASON_INVALID_SPEC, f"no built-in recipe for {self.spec.task}")

    def _probe_features(self, recipe: Recipe, train: Shard,
                        val: Shard) -> tuple[Any, tuple[Any, ...] | None]:
        """This rank's frozen base-model features of train/validation (None: no probe)."""
        assert self.spec.model is not None
        if not self.spec.model.baseline.generic:
            return None, None
        generic = recipe.generic().to(self.world.device)
        amp = autocast_dtype(self.spec.hyperparameters.precision, self.world.device)
        cap = max(1, PROBE_MAX_EXAMPLES // self.world.size)
        x_train = evaluate.predict(generic, recipe, train.items[:cap], self.world.device, amp,
                                   features=True)
        x_val = evaluate.predict(generic, recipe, val.items, self.world.device, amp,
                                 features=True)
        return generic, (x_train, train.labels[:cap], x_val, val.labels)

    @staticmethod
    def _gather_probe(parts: list[tuple[Any, ...] | None], generic: Any) -> dict[str, Any] | None:
        if generic is None or any(p is None for p in parts):
            return None
        ready = [p for p in parts if p is not None]

        def stack(i: int) -> np.ndarray:
            arrays = [p[i] for p in ready if len(p[i])]
            return np.concatenate(arrays) if arrays else np.zeros((0, 1))

        return {"model": generic,
                "x_train": stack(0), "y_train": np.concatenate([np.asarray(p[1]) for p in ready]),
                "x_val": stack(2), "y_val": np.concatenate([np.asarray(p[3]) for p in ready])}

    def _fit_probe(self, probe: dict[str, Any] | None) -> tuple[Any, Any] | None:
        if probe is None:
            return None
        linear = evaluate.LinearProbe(len(self.labels))
        probe["fit"] = linear.fit(probe["x_train"], probe["y_train"], probe["x_val"],
                                  probe["y_val"])
        probe["linear"] = linear
        log.info("linear probe on the frozen base model: validation accuracy %.4f",
                 probe["fit"]["validation_accuracy"])
        return linear.head_weights()

    def _evaluate_and_publish(self, recipe: Recipe, result: Any, local: LocalData,
                              probe: dict[str, Any] | None,
                              outputs: dict[str, Any] | None) -> TerminationSummary:
        cfg, spec = self.cfg, self.spec
        assert self.locked is not None and outputs is not None and spec.model is not None
        labels = self.labels
        index = {label: i for i, label in enumerate(labels)}
        # The test set, read once: verify it is still the locked one, then predict.
        found = self._test_digests(recipe, local)
        verify_test_set(self.locked, found, manifest_uri(cfg.model_uri, self.locked.version))
        y = np.array([index[label] for _, _, label in local.test])
        test_items = local.test_items
        device = self.world.device
        amp = autocast_dtype(spec.hyperparameters.precision, device)
        results: dict[str, Any] = {}
        predictions: dict[str, np.ndarray] = {}
        cand_probs = evaluate.predict(result.model, recipe, test_items, device, amp)
        results["candidate"] = evaluate.classification_report(y, cand_probs, labels)
        predictions["candidate"] = cand_probs.argmax(1)
        notes: list[str] = []
        if probe is not None:
            probs, how = self._generic_predictions(recipe, probe, test_items)
            results["generic"] = {**evaluate.classification_report(y, probs, labels), **how}
            predictions["generic"] = probs.argmax(1)
        pointer = (artifacts.production_model(self.store, cfg.model_uri)
                   if spec.model.baseline.production else None)
        if pointer is not None:
            prod = self._production_predictions(recipe, pointer, test_items)
            if prod is None:
                notes.append("the production model has a different label set; not compared")
            else:
                results["production"] = evaluate.classification_report(y, prod, labels)
                results["production"]["runId"] = pointer.get("runId")
                predictions["production"] = prod.argmax(1)
        comparisons = [evaluate.compare(name, y, predictions["candidate"], pred, len(labels),
                                        spec.evaluation, spec.hyperparameters.seed)
                       for name, pred in predictions.items() if name != "candidate"]
        verdict = evaluate.decide(comparisons, spec.promotion, spec.evaluation)
        metrics: dict[str, Any] = {
            "runId": cfg.run_id, "model": cfg.model_name, "task": spec.task,
            "metric": spec.evaluation.metric, "labels": labels,
            "validation": result.validation,
            "test": results,
            "comparisons": [c.to_dict() for c in comparisons],
            "verdict": {"promote": verdict.promote, "reason": verdict.reason,
                        "message": verdict.message},
            "testSet": {"version": self.locked.version, "fingerprint": self.locked.fingerprint,
                        "examples": len(self.locked.ids)},
            "training": {"steps": result.steps, "totalSteps": result.total_steps,
                         "epochs": result.epochs_done, "bestStep": result.best_step,
                         "seconds": result.train_seconds,
                         "samplesPerSecond": result.samples_per_second,
                         "resumedFrom": result.resumed_from,
                         "stoppedEarly": result.stopped_early, "worldSize": self.world.size},
            "history": result.history,
            "notes": notes,
        }
        self._publish(recipe, result.model, metrics, outputs)
        return self._summary(metrics)

    def _generic_predictions(self, recipe: Recipe, probe: dict[str, Any],
                             items: list[Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """The generic baseline's test probabilities, and how it predicted them."""
        assert self.spec.model is not None
        baseline = self.spec.model.baseline
        device = self.world.device
        amp = autocast_dtype(self.spec.hyperparameters.precision, device)
        x = evaluate.predict(probe["model"], recipe, items, device, amp, features=True)
        if baseline.generic_method == "ZeroShot":
            prompts = baseline.zero_shot_texts(self.labels)
            x_labels = evaluate.predict(probe["model"], recipe, recipe.encode(prompts), device,
                                        amp, features=True)
            return (evaluate.zero_shot_proba(x, x_labels),
                    {"method": "ZeroShot", "prompts": prompts})
        return (probe["linear"].predict_proba(x),
                {"method": "LinearProbe", "probe": probe["fit"]})

    def _production_predictions(self, recipe: Recipe, pointer: dict[str, Any],
                                items: list[Any]) -> np.ndarray | None:
        local_dir = self.work_dir / "production-model"
        prefix = str(pointer["modelUri"])
        for relative in pointer.get("files", {}):
            self.store.download(join_uri(prefix, relative), local_dir / relative)
        model, labels = recipe.load(local_dir)
        if labels != self.labels:
            return None
        model = model.to(self.world.device)
        amp = autocast_dtype(self.spec.hyperparameters.precision, self.world.device)
        return evaluate.predict(model, recipe, items, self.world.device, amp)

    def _publish(self, recipe: Recipe, model: Any, metrics: dict[str, Any],
                 outputs: dict[str, Any]) -> None:
        cfg, spec = self.cfg, self.spec
        assert spec.model is not None and self.quality is not None
        out = self.work_dir / "out"
        model_dir = out / "model"
        recipe.save(model, model_dir, self.labels)
        model_files = artifacts.upload_dir(self.store, model_dir, join_uri(cfg.artifact_uri,
                                                                           "model"))
        labels = self.labels
        predicted = [labels[i] for i in outputs["probs"].argmax(1)]
        profile = artifacts.reference_profile(
            outputs["features"], labels, outputs["labels"], predicted,
            outputs["probs"], {"model": cfg.model_name, "runId": cfg.run_id,
                               "dataFingerprint": self.quality.data_fingerprint,
                               "reference": "validation split"})
        plot = artifacts.confusion_plot(metrics["test"]["candidate"]["confusion_matrix"], labels,
                                        out / "confusion-matrix.png")
        documents = {
            "metrics.json": json.dumps(metrics, indent=1).encode(),
            "reference-profile.json": json.dumps(profile).encode(),
            "data-quality.json": json.dumps(self.quality.to_dict(), indent=1).encode(),
            "model-card.md": artifacts.model_card(cfg.model_name, cfg.run_id,
                                                  spec.model.base or "", metrics, plot).encode(),
        }
        if plot:
            documents["confusion-matrix.png"] = (out / "confusion-matrix.png").read_bytes()
        files = {f"model/{k}": v for k, v in model_files.items()}
        for name, data in documents.items():
            (out / name).write_bytes(data)
            self.store.put_bytes(join_uri(cfg.artifact_uri, name), data)
            files[name] = {"sha256": artifacts.sha256_bytes(data), "size": len(data)}
        self.tracker.metrics(metrics["training"]["steps"], self._flat_metrics(metrics))
        self.tracker.artifacts(out)
        artifacts.write_manifest(self.store, cfg.artifact_uri, files, {
            "runId": cfg.run_id, "model": cfg.model_name, "trainingJob": cfg.name,
            "namespace": cfg.namespace, "uid": cfg.uid, "mlflowRunId": self.tracker.mlflow_run_id,
        })
        verdict = metrics["verdict"]
        self.tracker.tags({"tailor.verdict": verdict["reason"]})
        if verdict["promote"]:
            target = artifacts.promote(self.store, cfg.model_uri, cfg.run_id, cfg.artifact_uri,
                                       model_files, metrics)
            version = self.tracker.register(cfg.model_name, target, spec.promotion.alias)
            metrics["promotedModelUri"] = target
            metrics["registeredVersion"] = version
        self.tracker.finish("FINISHED")

    @staticmethod
    def _flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
        flat: dict[str, float] = {}
        for name, result in metrics["test"].items():
            for key in ("accuracy", "macro-f1", "calibration_error"):
                flat[f"test_{name}_{key.replace('-', '_')}"] = float(result[key])
        for c in metrics["comparisons"]:
            flat[f"improvement_over_{c['baseline']}"] = float(c["improvement"])
            flat[f"p_value_vs_{c['baseline']}"] = float(c["p_value"])
        return flat

    def _summary(self, metrics: dict[str, Any]) -> TerminationSummary:
        """The numbers the operator puts in status, under the contract's SUMMARY_* keys."""
        verdict = metrics["verdict"]
        metric = metrics["metric"]
        test = metrics["test"]
        short: dict[str, float] = {}
        for key, name in ((contract.SUMMARY_TEST, "candidate"),
                          (contract.SUMMARY_BASELINE, "generic"),
                          (contract.SUMMARY_PRODUCTION, "production")):
            if name in test:
                short[key] = round(float(test[name][metric]), 4)
        validation = metrics.get("validation")
        if isinstance(validation, dict) and metric in validation:
            short[contract.SUMMARY_VALIDATION] = round(float(validation[metric]), 4)
        elif isinstance(validation, int | float):
            short[contract.SUMMARY_VALIDATION] = round(float(validation), 4)
        comparisons = {c["baseline"]: c for c in metrics["comparisons"]}
        decisive = comparisons.get("production") or comparisons.get("generic")
        if decisive is not None:
            short[contract.SUMMARY_IMPROVEMENT] = round(float(decisive["improvement"]), 4)
            short[contract.SUMMARY_P_VALUE] = float(decisive["p_value"])
        short[contract.SUMMARY_TEST_EXAMPLES] = float(metrics["testSet"]["examples"])
        short["steps"] = float(metrics["training"]["steps"])
        return TerminationSummary(
            outcome="Succeeded", reason=verdict["reason"], message=verdict["message"][:1024],
            artifact_uri=self.cfg.artifact_uri, mlflow_run_id=self.tracker.mlflow_run_id,
            promoted=bool(verdict["promote"]), metrics=short)


def main() -> int:
    logging.basicConfig(level=os.environ.get("TAILOR_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s rank" + os.environ.get("RANK", "0")
                        + " %(name)s: %(message)s", stream=sys.stderr)
    rank = int(os.environ.get("RANK", "0"))
    signal.signal(signal.SIGTERM, _preempted)
    termination_log = os.environ.get("TAILOR_TERMINATION_LOG", "/dev/termination-log")
    summary: TerminationSummary
    code = EXIT_SUCCESS
    cfg: RunConfig | None = None
    started = time.monotonic()
    try:
        cfg = load_config()
        termination_log = cfg.termination_log
        if cfg.spec.task == "custom":
            from tailor_trainer.recipes.custom import exec_custom

            exec_custom(cfg)  # replaces this process
        world = init_world()
        summary = Run(cfg, world).execute()
    except TrainerError as exc:
        log.error("%s: %s", exc.reason, exc.message)
        code = exc.exit_code
        summary = TerminationSummary(outcome="Failed", reason=exc.reason, message=exc.message,
                                     permanent=exc.permanent,
                                     artifact_uri=cfg.artifact_uri if cfg else "")
    except Exception as exc:
        log.exception("the trainer crashed")
        code = 1
        summary = TerminationSummary(outcome="Failed", reason=REASON_CRASHED,
                                     message=f"{type(exc).__name__}: {exc}"[:1024],
                                     artifact_uri=cfg.artifact_uri if cfg else "")
    if rank == 0:
        write_termination(termination_log, summary)
    log.info("finished in %.1fs: %s", time.monotonic() - started, summary.to_message())
    shutdown()
    return code


__all__ = ["REASON_TEST_SET_CHANGED", "main"]
