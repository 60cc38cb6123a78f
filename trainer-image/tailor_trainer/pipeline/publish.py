"""Stage 5, publish (rank 0): the artifacts, the manifest last, then promotion.

Under the run's prefix: `model/`, `metrics.json`, `reference-profile.json` (the validation
split as the DriftMonitor will compare production with), `data-quality.json` (again, so that the
manifest covers it), `recent-holdout.json` (with production data), `ids-read.json` (the ids read
into each split), `model-card.md` (with the hyper-parameter search of a tuned job) and its
confusion matrix, and `manifest.json` with the SHA-256 and size of each, written last: a run
with a manifest is complete. Promotion then copies the model to its production place, replaces
the pointer in one PUT and moves the MLflow registry alias (`promote_run`: the one promotion
path, which a person's approval takes too, through `tailor_trainer.promote`).

A restarted group whose run already has its manifest trains nothing: it re-does an
interrupted promotion and reports again (`completed`, `finish_completed`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from tailor_contract import uris
from tailor_contract.trainer_api import (
    ARTIFACT_DATA_QUALITY,
    ARTIFACT_IDS_READ,
    ARTIFACT_METRICS,
    ARTIFACT_MODEL_CARD,
    ARTIFACT_MODEL_DIR,
    ARTIFACT_RECENT_HOLDOUT,
    ARTIFACT_REFERENCE_PROFILE,
)

from tailor_trainer import artifacts
from tailor_trainer.dist import gather
from tailor_trainer.pipeline.context import RunContext
from tailor_trainer.pipeline.data import LocalData
from tailor_trainer.recipes.base import ProfileFeatures, Recipe
from tailor_trainer.train import Shard

log = logging.getLogger("tailor_trainer")
CONFUSION_PLOT = "confusion-matrix.png"


@dataclass
class ProfileInputs:
    """Every rank's validation split, as the reference profile describes it."""

    features: ProfileFeatures
    labels: list[str]
    probs: np.ndarray


@dataclass
class Completed:
    """A finished run's metrics.json and data-quality.json, read back."""

    metrics: dict[str, Any]
    quality: dict[str, Any] | None


def profile_inputs(ctx: RunContext, recipe: Recipe, local: LocalData, val: Shard,
                   outputs: np.ndarray) -> ProfileInputs:
    """Every rank's validation inputs, labels and predicted probabilities (a collective)."""
    described = recipe.profile_features(ctx.columns.input, local.val_text, val.items)
    parts = gather(ctx.world, (described, local.val_label, outputs))
    return ProfileInputs(features=ProfileFeatures.concat([p[0] for p in parts]),
                         labels=[y for p in parts for y in p[1]],
                         probs=np.concatenate([p[2] for p in parts if len(p[2])]))


def publish(ctx: RunContext, recipe: Recipe, model: Any, metrics: dict[str, Any],
            profile: ProfileInputs, holdout: dict[str, Any] | None = None,
            ids_read: bytes | None = None) -> None:
    """Upload the model and the documents, the manifest last, then promote on the verdict.

    `holdout` is recent-holdout.json's content (None without production data), `ids_read`
    ids-read.json's. `metrics`
    gains `promotedModelUri` and `registeredVersion` when the model is promoted.
    """
    cfg = ctx.cfg
    out = ctx.work_dir / "out"
    model_dir = out / ARTIFACT_MODEL_DIR
    recipe.save(model, model_dir, ctx.labels)
    ctx.tracker.log_model(model_dir, ctx.spec.task, ctx.labels)
    model_files = artifacts.upload_dir(ctx.store, model_dir,
                                       uris.join(cfg.artifact_uri, ARTIFACT_MODEL_DIR))
    files = {f"{ARTIFACT_MODEL_DIR}/{k}": v for k, v in model_files.items()}
    documents = _documents(ctx, metrics, profile)
    if holdout is not None:
        documents[ARTIFACT_RECENT_HOLDOUT] = json.dumps(holdout, indent=1).encode()
    if ids_read is not None:
        documents[ARTIFACT_IDS_READ] = ids_read
    for name, data in documents.items():
        (out / name).write_bytes(data)
        ctx.store.put_bytes(uris.join(cfg.artifact_uri, name), data)
        files[name] = {"sha256": artifacts.sha256_bytes(data), "size": len(data)}
    ctx.tracker.metrics(metrics["training"]["steps"], flat_metrics(metrics))
    ctx.tracker.artifacts(out, skip={ARTIFACT_MODEL_DIR})  # the MLflow model carries the weights
    artifacts.write_manifest(ctx.store, cfg.artifact_uri, files, {
        "runId": cfg.run_id, "model": cfg.model_name, "trainingJob": cfg.name,
        "namespace": cfg.namespace, "uid": cfg.uid, "mlflowRunId": ctx.tracker.mlflow_run_id,
    })
    ctx.tracker.tags(verdict_tags(metrics))
    if metrics["verdict"]["promote"]:
        promote_run(ctx, model_files, metrics)
    ctx.tracker.finish("FINISHED")


def promote_run(ctx: RunContext, model_files: dict[str, dict[str, Any]],
                metrics: dict[str, Any]) -> None:
    """Promote this run: the model copied to its production place and the pointer flipped
    (`artifacts.promote`), then a registered MLflow version with the alias moved to it.

    The automatic verdict and a person's approval (`tailor_trainer.promote`) both come here, so
    an approved model is promoted exactly as one the rule promoted. `metrics` gains
    `promotedModelUri` and `registeredVersion`.
    """
    cfg = ctx.cfg
    target = artifacts.promote(ctx.store, cfg.model_uri, cfg.run_id, cfg.artifact_uri,
                               model_files, metrics)
    version = ctx.tracker.register(cfg.model_name, target, ctx.spec.promotion.alias)
    metrics["promotedModelUri"] = target
    metrics["registeredVersion"] = version


def model_files_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The model's files as `artifacts.upload_dir` listed them, from a run's manifest."""
    prefix = f"{ARTIFACT_MODEL_DIR}/"
    return {k[len(prefix):]: v for k, v in manifest.get("files", {}).items()
            if k.startswith(prefix)}


def verdict_tags(metrics: dict[str, Any]) -> dict[str, str]:
    """The verdict as MLflow tags: its reason, and each part's outcome."""
    tags = {"tailor.verdict": metrics["verdict"]["reason"]}
    for part in (metrics.get("promotion") or {}).get("parts", []):
        outcome = {True: "passed", False: "failed", None: "notApplicable"}[part.get("passed")]
        tags[f"tailor.promotion.{part['benchmark']}.{part['against']}"] = outcome
    return tags


def _documents(ctx: RunContext, metrics: dict[str, Any],
               profile: ProfileInputs) -> dict[str, bytes]:
    """The run's documents by file name, in the order they are written."""
    cfg, labels, quality = ctx.cfg, ctx.labels, ctx.quality
    assert quality is not None
    out = ctx.work_dir / "out"
    predicted = [labels[i] for i in profile.probs.argmax(1)]
    reference = artifacts.reference_profile(
        profile.features, labels, profile.labels, predicted, profile.probs,
        {"model": cfg.model_name, "runId": cfg.run_id,
         "dataFingerprint": quality.data_fingerprint, "reference": "validation split"})
    plot = artifacts.confusion_plot(metrics["test"]["candidate"]["confusion_matrix"], labels,
                                    out / CONFUSION_PLOT)
    documents = {
        ARTIFACT_METRICS: json.dumps(metrics, indent=1).encode(),
        ARTIFACT_REFERENCE_PROFILE: json.dumps(reference).encode(),
        ARTIFACT_DATA_QUALITY: json.dumps(quality.to_dict(), indent=1).encode(),
        ARTIFACT_MODEL_CARD: artifacts.model_card(cfg.model_name, cfg.run_id,
                                                  ctx.model.base or "", metrics, plot,
                                                  cfg.search).encode(),
    }
    if plot:
        documents[CONFUSION_PLOT] = (out / CONFUSION_PLOT).read_bytes()
    return documents


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of each benchmark, the comparisons and each part of the verdict as MLflow
    metrics (`promotion_<benchmark>_<against>_<number>`)."""
    flat: dict[str, float] = {}
    recent = (metrics.get("recentHoldout") or {}).get("test", {})
    for prefix, results in (("test", metrics["test"]), ("recent", recent)):
        for name, result in results.items():
            for key in ("accuracy", "macro-f1", "calibration_error"):
                flat[f"{prefix}_{name}_{key.replace('-', '_')}"] = float(result[key])
    for c in metrics["comparisons"]:
        flat[f"improvement_over_{c['baseline']}"] = float(c["improvement"])
        flat[f"p_value_vs_{c['baseline']}"] = float(c["p_value"])
    for part in (metrics.get("promotion") or {}).get("parts", []):
        name = f"promotion_{part['benchmark']}_{part['against']}"
        for key, metric in (("candidate", "candidate"), ("other", "other"),
                            ("improvement", "improvement"), ("pValue", "p_value"),
                            ("examples", "examples")):
            if isinstance(part.get(key), int | float) and not isinstance(part[key], bool):
                flat[f"{name}_{metric}"] = float(part[key])
        if part.get("passed") is not None:
            flat[f"{name}_passed"] = float(bool(part["passed"]))
    return flat


def completed(ctx: RunContext) -> Completed | None:
    """A finished run's documents when its manifest exists, else None."""
    if artifacts.read_manifest(ctx.store, ctx.cfg.artifact_uri) is None:
        return None
    raw = ctx.store.get_bytes(uris.join(ctx.cfg.artifact_uri, ARTIFACT_METRICS))
    quality = ctx.store.get_bytes_or_none(uris.join(ctx.cfg.artifact_uri, ARTIFACT_DATA_QUALITY))
    return Completed(dict(json.loads(raw)), None if quality is None else json.loads(quality))


def finish_completed(ctx: RunContext, done: Completed) -> None:
    """A restarted group whose run already finished: re-do an interrupted promotion."""
    cfg = ctx.cfg
    if ctx.world.is_main and done.metrics["verdict"]["promote"]:
        pointer = artifacts.production_model(ctx.store, cfg.model_uri)
        if pointer is None or pointer.get("runId") != cfg.run_id:
            manifest = artifacts.read_manifest(ctx.store, cfg.artifact_uri) or {}
            promote_run(ctx, model_files_of(manifest), done.metrics)
    log.info("run %s is already complete; nothing to train", cfg.run_id)

