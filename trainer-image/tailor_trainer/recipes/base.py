"""What every built-in recipe provides to the training loop, and where base models come from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from tailor_contract.uris import is_s3
from torch import nn

from tailor_trainer.errors import REASON_BASE_MODEL_UNUSABLE, PermanentError
from tailor_trainer.storage import NotFound, Store

MODEL_META = "tailor-model.json"
"""Written beside the weights: task, labels and how to rebuild the model."""


@dataclass
class ProfileFeatures:
    """Per-example inputs for the reference profile, one list per feature name.

    Features named in `text` are profiled by their text summaries (tailor_contract.profile), the
    others by type (numbers numeric, strings categorical).
    """

    values: dict[str, list[Any]]
    text: tuple[str, ...] = ()

    @classmethod
    def concat(cls, parts: Sequence[ProfileFeatures]) -> ProfileFeatures:
        """Every rank's part, in rank order (features as in the first part)."""
        if not parts:
            return cls({})
        return cls({name: [v for p in parts for v in p.values.get(name, [])]
                    for name in parts[0].values}, parts[0].text)


class Recipe(Protocol):
    """A task's model, input encoding and batching; the loop in train.py stays generic."""

    task: str

    def build(self, num_labels: int) -> nn.Module:
        """The candidate: the base model with a fresh classification head."""

    def encode(self, inputs: Sequence[str]) -> list[Any]:
        """Per-example inputs ready for `collate` (token ids, image tensors)."""

    def length(self, item: Any) -> int:
        """A cost measure for bucketing (tokens for text; constant for images)."""

    def content(self, value: str, item: Any) -> str:
        """What the locked test set's digest covers of one input: the input itself, not only
        its column value (a text is its value; an image also its bytes' SHA-256)."""

    def collate(self, items: Sequence[Any], train: bool) -> dict[str, torch.Tensor]:
        """A padded batch of encoded inputs (augmented when `train`): the model's kwargs."""

    def profile_features(self, column: str, inputs: Sequence[str],
                         items: Sequence[Any]) -> ProfileFeatures:
        """What the reference profile describes of these inputs (texts; image summaries)."""

    def save(self, model: nn.Module, directory: Path, labels: Sequence[str]) -> None:
        """Weights (safetensors), config and preprocessing, loadable by `load`."""

    def load(self, directory: Path) -> tuple[nn.Module, list[str]]:
        """A model saved by `save`, with its labels."""

    def generic(self) -> nn.Module:
        """The base model as it is, for the linear-probe baseline (features only)."""


def fetch_base_model(store: Store, uri: str, work_dir: Path) -> Path:
    """A local directory holding the base model named by spec.model.base."""
    if uri.startswith("hf://"):
        # Only where the cluster reaches the Hub: let transformers download it.
        return Path(uri[len("hf://"):])
    if not is_s3(uri):
        path = Path(uri)
        if not path.is_dir():
            raise PermanentError(REASON_BASE_MODEL_UNUSABLE,
                                 f"spec.model.base {uri} is not a directory in the image")
        return path
    prefix = uri if uri.endswith("/") else uri + "/"
    target = work_dir / "base-model"
    objects = list(store.list(prefix))
    if not objects:
        raise PermanentError(REASON_BASE_MODEL_UNUSABLE,
                             f"spec.model.base {uri} holds no files")
    for obj in objects:
        relative = obj.uri[len(prefix):]
        local = target / relative
        if not local.exists() or local.stat().st_size != obj.size:
            try:
                store.download(obj.uri, local)
            except NotFound as exc:
                raise PermanentError(REASON_BASE_MODEL_UNUSABLE,
                                     f"{obj.uri} vanished while downloading") from exc
    return target


def write_meta(directory: Path, task: str, labels: Sequence[str], **fields: Any) -> None:
    """`tailor-model.json`: the task, the labels and the recipe's own fields."""
    meta = {"task": task, "labels": list(labels), **fields}
    (directory / MODEL_META).write_text(json.dumps(meta, indent=1))


def read_meta(directory: Path, task: str) -> dict[str, Any]:
    """A saved model's `tailor-model.json`; refused unless it is a `task` model."""
    try:
        meta: dict[str, Any] = json.loads((directory / MODEL_META).read_text())
    except (OSError, ValueError) as exc:
        raise PermanentError(REASON_BASE_MODEL_UNUSABLE,
                             f"{directory} is not a model saved by Tailor ({exc})") from exc
    if meta.get("task") != task:
        raise PermanentError(REASON_BASE_MODEL_UNUSABLE,
                             f"{directory} holds a {meta.get('task')} model, not {task}")
    return meta
