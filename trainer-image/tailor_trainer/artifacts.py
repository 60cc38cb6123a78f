"""The run's artifacts in S3, the manifest written last, and promotion.

Layout under TAILOR_ARTIFACT_URI (one prefix per run):

    model/                  weights (safetensors), config, tokenizer, tailor-model.json
    checkpoints/            step-<n>/state.pt + COMPLETE (rotating; not in the manifest)
    data-quality.json       the gate's report (written even when the gate fails)
    metrics.json            validation and test numbers, comparisons, verdict, curves
    recent-holdout.json     with data.productionUris: the recent holdout's ids and digests
    reference-profile.json  training-time distributions for the DriftMonitor
    ids-read.json           the example ids read into each split (train, validation, test,
                            recentHoldout): the test-set-read-once rule, checkable
    model-card.md           the numbers for humans, with confusion-matrix.png
    manifest.json           sha256 and size of every file above, written last

A reader that finds manifest.json knows every file it lists is complete. Promotion copies the
model to `<model uri>/production/<run id>/` and then replaces one pointer object,
`<model uri>/production.json`, in a single PUT: readers see the old model or the new one,
never a mixture.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tailor_contract import uris
from tailor_contract.profile import build_reference_profile
from tailor_contract.trainer_api import ARTIFACT_MANIFEST, ARTIFACT_MODEL_DIR, PRODUCTION_POINTER

from tailor_trainer.search import card_lines
from tailor_trainer.storage import Store
from tailor_trainer.transfer import Digest

if TYPE_CHECKING:
    from tailor_trainer.recipes.base import ProfileFeatures

MANIFEST_FORMAT = 1


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_dir(store: Store, local: Path, uri: str) -> dict[str, dict[str, Any]]:
    """Upload every file below `local` to `uri`, each streamed (multipart when large) and
    checked once stored; returns {relative path: {sha256, size}}."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        relative = path.relative_to(local).as_posix()
        files[relative] = store.put_file(uris.join(uri, relative), path).manifest_entry()
    return files


def _digest(entry: dict[str, Any]) -> Digest | None:
    """A manifest entry as the Digest a copy is checked against (None if incomplete)."""
    if isinstance(entry.get("sha256"), str) and isinstance(entry.get("size"), int):
        return Digest(entry["sha256"], entry["size"])
    return None


def write_manifest(store: Store, artifact_uri: str, files: dict[str, dict[str, Any]],
                   run: dict[str, Any]) -> str:
    """The completion record of a run: written after everything it lists."""
    body = {"format": MANIFEST_FORMAT, "run": run, "createdAt": time.time(),
            "files": dict(sorted(files.items()))}
    uri = uris.join(artifact_uri, ARTIFACT_MANIFEST)
    store.put_bytes(uri, json.dumps(body, indent=1).encode())
    return uri


def read_manifest(store: Store, artifact_uri: str) -> dict[str, Any] | None:
    raw = store.get_bytes_or_none(uris.join(artifact_uri, ARTIFACT_MANIFEST))
    return None if raw is None else dict(json.loads(raw))


def reference_profile(features: ProfileFeatures, labels: Sequence[str],
                      true: Sequence[str], predicted: Sequence[str], probs: np.ndarray,
                      metadata: dict[str, str]) -> dict[str, Any]:
    """The DriftMonitor's reference (tailor_contract.profile's format), from validation data."""
    profile = build_reference_profile(
        features.values, list(predicted), classes=list(labels), labels=list(true),
        scores=probs, text_features=features.text, metadata=metadata)
    return profile.to_json()


def confusion_plot(matrix: list[list[int]], labels: Sequence[str], path: Path) -> bool:
    """A confusion-matrix PNG for the model card; False when matplotlib is unavailable."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    data = np.asarray(matrix)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, str(data[i, j]), ha="center", va="center",
                    color="white" if data[i, j] > data.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def model_card(model_name: str, run_id: str, base: str, metrics: dict[str, Any],
               plot: bool, search: dict[str, Any] | None = None) -> str:
    """model-card.md; `search` is the finished hyper-parameter search of a tuned job
    (TAILOR_SEARCH), documented in a section of its own."""
    test = metrics["test"]
    cand = test["candidate"]
    lines = [
        f"# {model_name} — run {run_id}",
        "",
        f"Fine-tuned from `{base}` for {metrics['task']}.",
        "",
        f"**Verdict: {metrics['verdict']['reason']}** — {metrics['verdict']['message']}",
        "",
        "## Locked test set",
        "",
        f"{cand['examples']} examples (test set v{metrics['testSet']['version']}, fingerprint "
        f"`{metrics['testSet']['fingerprint'][:16]}`), read once after training.",
        "",
        "| model | accuracy | macro-F1 | calibration error |",
        "|---|---|---|---|",
    ]
    lines += _score_rows(test)
    lines += _verdict_lines(metrics)
    lines += ["", "## Comparisons on the locked test set", "",
              "| baseline | metric | candidate | baseline | improvement | p-value |",
              "|---|---|---|---|---|---|"]
    for c in metrics["comparisons"]:
        lines.append(f"| {c['baseline']} | {c['metric']} | {c['candidate']:.4f} | "
                     f"{c['other']:.4f} | {c['improvement']:+.4f} | {c['p_value']:.3g} |")
    lines += ["", "## Per class (candidate)", "", "| class | precision | recall | F1 | support |",
              "|---|---|---|---|---|"]
    for label, s in cand["per_class"].items():
        lines.append(f"| {label} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | "
                     f"{s['support']} |")
    if plot:
        lines += ["", "![confusion matrix](confusion-matrix.png)"]
    train = metrics["training"]
    lines += ["", "## Training", "",
              f"{train['steps']} optimizer steps ({train['epochs']:.2f} epochs), best validation "
              f"at step {train['bestStep']}, {train['samplesPerSecond']:.1f} samples/s."]
    if search is not None:
        lines += card_lines(search)
    return "\n".join([*lines, ""])


def _score_rows(results: dict[str, Any]) -> list[str]:
    rows = []
    for name, result in results.items():
        if isinstance(result, dict) and "accuracy" in result:
            if "method" in result:
                name = f"{name} ({result['method']})"
            rows.append(f"| {name} | {result['accuracy']:.4f} | {result['macro-f1']:.4f} | "
                        f"{result['calibration_error']:.4f} |")
    return rows


def _verdict_lines(metrics: dict[str, Any]) -> list[str]:
    """The recent holdout's scores and the verdict per benchmark."""
    lines: list[str] = []
    recent = metrics.get("recentHoldout")
    if recent:
        lines += ["", "## Recent holdout", "",
                  f"{recent['examples']} of {recent['productionRows']} labelled production "
                  "examples, the most recent, held out from training and validation "
                  f"(`recent-holdout.json`). {recent['why']}".rstrip()]
        if recent["test"]:
            lines += ["", "| model | accuracy | macro-F1 | calibration error |",
                      "|---|---|---|---|", *_score_rows(recent["test"])]
    parts = (metrics.get("promotion") or {}).get("parts", [])
    if parts:
        lines += ["", "## Verdict per benchmark", "",
                  "| benchmark | against | candidate | other | improvement | p-value | "
                  "examples | passed |", "|---|---|---|---|---|---|---|---|"]
        for p in parts:
            cells = [f"{p[k]:.4f}" if k in p else "" for k in ("candidate", "other")]
            cells.append(f"{p['improvement']:+.4f}" if "improvement" in p else "")
            cells.append(f"{p['pValue']:.3g}" if "pValue" in p else "")
            passed = {True: "yes", False: "no", None: "not applicable"}[p["passed"]]
            lines.append(f"| {p['benchmark']} | {p['against']} | {' | '.join(cells)} | "
                         f"{p['examples']} | {passed} |")
        lines += [""] + [f"- **{p['benchmark']} vs {p['against']}**: {p['why']}" for p in parts]
    return lines


def promote(store: Store, model_uri: str, run_id: str, artifact_uri: str,
            model_files: dict[str, dict[str, Any]], metrics: dict[str, Any]) -> str:
    """Copy the model to its production location, each file checked against the manifest
    (multipart above the threshold, so files over 5 GiB too), then flip the pointer (one
    atomic PUT)."""
    target = uris.join(model_uri, "production", run_id, ARTIFACT_MODEL_DIR) + "/"
    for relative, entry in model_files.items():
        store.copy(uris.join(artifact_uri, ARTIFACT_MODEL_DIR, relative),
                   uris.join(target, relative), _digest(entry))
    pointer = {
        "runId": run_id,
        "modelUri": target,
        "artifactUri": artifact_uri,
        "files": model_files,
        "metric": metrics.get("metric"),
        "test": {k: v for k, v in metrics["test"]["candidate"].items()
                 if k in ("accuracy", "macro-f1", "examples")},
        "promotedAt": time.time(),
    }
    store.put_bytes(uris.join(model_uri, PRODUCTION_POINTER),
                    json.dumps(pointer, indent=1).encode())
    return target


def production_model(store: Store, model_uri: str) -> dict[str, Any] | None:
    raw = store.get_bytes_or_none(uris.join(model_uri, PRODUCTION_POINTER))
    return None if raw is None else dict(json.loads(raw))
