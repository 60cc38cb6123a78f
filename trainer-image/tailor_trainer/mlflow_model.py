"""A saved model as an MLflow pyfunc model: raw inputs in, predicted labels out.

Every run logs one in its MLflow run (name "model"), so a registry alias points at something
`mlflow.pyfunc.load_model("models:/<name>@<alias>")` predicts with. The model directory the run
uploaded to S3 travels inside the MLflow model unchanged (`artifacts/model/`), and predicting goes
through the trainer's own code: the recipe's `load`, `encode` and evaluation `collate`, then
`evaluate.predict`, exactly as the locked test set was scored. A second implementation of the
tokenizer, pooling or image preprocessing could drift from the model that was judged; this one
cannot. The price: loading needs `tailor_trainer` installed (the trainer image, the dev venv),
because the pickled python model names this module. The trainer image has mlflow-skinny only;
nothing here needs more (pandas and numpy come with statsmodels).

What a caller sends, one row per example:

- text-classification: a DataFrame with a string column `text`.
- image-classification: a DataFrame with a binary column `image`, each value the bytes of an
  image file (PNG, JPEG, anything Pillow reads); over MLflow's REST scoring server, base64 in
  the JSON, as for any binary column. Bytes rather than paths or URLs: the caller holds the
  image, and a serving process need not reach the caller's files or buckets.

What comes back: a pandas Series `label`, the predicted label (a string) per row, in order.
The trainer imports this module only when a run is tracked (tracking.py), so an untracked run
never loads mlflow.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.metadata
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.types import ColSpec, DataType, Schema
from tailor_contract.trainingjob import TASK_IMAGE_CLASSIFICATION, TASK_TEXT_CLASSIFICATION

from tailor_trainer.errors import PermanentError
from tailor_trainer.evaluate import predict as predict_probabilities
from tailor_trainer.recipes.base import MODEL_META

MODEL_NAME = "model"
"""The MLflow model's name in its run: `runs:/<mlflow run id>/model`."""
ENTRY = Path(__file__).with_name("mlflow_entry.py")
"""What MLflow runs to load the model (models from code): no pickled object in the model."""
MODEL_ARTIFACT = "model"
"""The saved model directory's key among the pyfunc artifacts."""
MODEL_CONFIG = {"device": "auto"}
"""Saved with the model so that a caller may override it at load: `load_model(uri,
model_config={"device": "cpu"})`; "auto" is CUDA when there is one."""
OUTPUT = "label"
INPUTS = {TASK_TEXT_CLASSIFICATION: ("text", DataType.string, "a string"),
          TASK_IMAGE_CLASSIFICATION: ("image", DataType.binary, "an image file's bytes")}
"""Per task: the input column, its MLflow type, and what one value is (for error messages)."""
BATCH_SIZE = 32
DISTRIBUTIONS = {
    TASK_TEXT_CLASSIFICATION: ("tailor-trainer", "tailor-contract", "mlflow-skinny", "torch",
                               "transformers", "tokenizers", "safetensors", "pandas", "numpy",
                               "scipy", "statsmodels"),
    TASK_IMAGE_CLASSIFICATION: ("tailor-trainer", "tailor-contract", "mlflow-skinny", "torch",
                                "torchvision", "timm", "safetensors", "pillow", "pandas", "numpy",
                                "scipy", "statsmodels"),
}
"""What loading needs, pinned to the versions that saved the model. tailor-trainer is not on
PyPI: MLflow's own environment managers cannot rebuild this, so load it where tailor_trainer is
installed (`env_manager="local"`, the default of `mlflow.pyfunc.load_model`)."""
_SHOWN = 5


class ModelInputError(ValueError):
    """A prediction request the model cannot answer; the message says what to send."""


def task_input(task: str) -> tuple[str, DataType, str]:
    """The task's input column, its MLflow type and what one value is; other tasks (a custom
    recipe's) have no MLflow model."""
    if task not in INPUTS:
        raise ValueError(f"no MLflow model for task {task!r}: only "
                         f"{', '.join(sorted(INPUTS))} models are logged")
    return INPUTS[task]


def signature(task: str) -> ModelSignature:
    """One named input column (strings or bytes), one string output: the label."""
    column, kind, _ = task_input(task)
    return ModelSignature(inputs=Schema([ColSpec(kind, column)]),
                          outputs=Schema([ColSpec(DataType.string, OUTPUT)]))


def input_example(task: str) -> pd.DataFrame:
    """Two rows a caller could send; MLflow keeps them and checks they predict at logging."""
    column = task_input(task)[0]
    if task == TASK_TEXT_CLASSIFICATION:
        return pd.DataFrame({column: ["The central bank raised interest rates again today.",
                                      "The striker scored twice in the second half."]})
    return pd.DataFrame({column: [example_png(0), example_png(1)]})


def example_png(seed: int, side: int = 32) -> bytes:
    """A small PNG of seeded noise: an input example that is a real image file."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), "RGB").save(out, "PNG")
    return out.getvalue()


def pip_requirements(task: str) -> list[str]:
    """The installed versions of what loading needs (explicit, so MLflow does not load the
    model in a subprocess to guess them)."""
    pinned = []
    for name in DISTRIBUTIONS.get(task, ()):
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return pinned


def column_values(model_input: Any, task: str) -> list[Any]:
    """The request's values of the task's input column, each checked; a clear error otherwise.

    MLflow enforces the signature before this runs; the checks here cover callers of the python
    model directly, and say what to send in the words of this model.
    """
    column, _, what = task_input(task)
    if isinstance(model_input, dict):
        model_input = pd.DataFrame(model_input)
    if not isinstance(model_input, pd.DataFrame):
        raise ModelInputError(f"this {task} model takes a DataFrame with a column {column!r} "
                              f"({what} per row); got {type(model_input).__name__}")
    if column not in model_input.columns:
        found = ", ".join(repr(str(c)) for c in list(model_input.columns)[:_SHOWN]) or "none"
        raise ModelInputError(f"this {task} model takes a DataFrame with a column {column!r} "
                              f"({what} per row); the request has columns: {found}")
    values = list(model_input[column])
    expected: tuple[type, ...] = ((str,) if task == TASK_TEXT_CLASSIFICATION
                                  else (bytes, bytearray, memoryview))
    bad = [i for i, v in enumerate(values) if not isinstance(v, expected)]
    if bad:
        shown = ", ".join(f"{i} ({_kind(values[i])})" for i in bad[:_SHOWN])
        raise ModelInputError(f"column {column!r} must hold {what} in every row; "
                              f"{len(bad)} row(s) do not: {shown}")
    return values


def _kind(value: Any) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "missing" if missing else type(value).__name__


def as_references(values: Sequence[Any], task: str) -> list[str]:
    """What the recipe's `encode` reads: texts as they are, image bytes as `data:` URIs (the
    image recipe's inline form), so the recipe decodes them exactly as it did the test set."""
    if task == TASK_TEXT_CLASSIFICATION:
        return [str(v) for v in values]
    return ["data:application/octet-stream;base64," + base64.b64encode(bytes(v)).decode()
            for v in values]


@dataclass
class Predictor:
    """A saved model loaded with its recipe: references in, labels out."""

    task: str
    recipe: Any
    model: torch.nn.Module
    labels: list[str]
    device: torch.device

    def predict(self, references: Sequence[str]) -> list[str]:
        if not references:
            return []
        try:
            items = self.recipe.encode(references)
        except PermanentError as exc:
            raise ModelInputError(self._unreadable(references, exc)) from exc
        probs = predict_probabilities(self.model, self.recipe, items, self.device, None,
                                      batch_size=BATCH_SIZE)
        return [self.labels[i] for i in probs.argmax(1)]


    def _unreadable(self, references: Sequence[str], exc: PermanentError) -> str:
        """Which rows the recipe cannot read (an image that is not one), found one at a time."""
        bad = []
        for row, reference in enumerate(references):
            try:
                self.recipe.encode([reference])
            except PermanentError:
                bad.append(row)
        column = INPUTS[self.task][0]
        if not bad:
            return f"column {column!r} could not be read: {exc.message}"
        shown = ", ".join(str(row) for row in bad[:_SHOWN])
        return (f"column {column!r} must hold {INPUTS[self.task][2]} in every row; "
                f"{len(bad)} row(s) are not readable: {shown}")


def load_predictor(directory: Path, device: str = "auto") -> Predictor:
    """The model saved in `directory` by a built-in recipe, on `device` ("auto": CUDA if any)."""
    from tailor_trainer.recipes.base import read_meta

    try:
        task = str(json.loads((directory / MODEL_META).read_text()).get("task"))
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{directory} holds no model saved by Tailor ({MODEL_META}: "
                         f"{exc})") from exc
    recipe: Any
    if task == TASK_TEXT_CLASSIFICATION:
        from tailor_trainer.recipes.text import TextRecipe

        meta = read_meta(directory, task)
        recipe = TextRecipe(directory, int(meta.get("maxSequenceLength") or 512))
    elif task == TASK_IMAGE_CLASSIFICATION:
        from tailor_trainer.recipes.image import ImageRecipe

        meta = read_meta(directory, task)
        recipe = ImageRecipe(directory, int(meta["imageSize"]))
        recipe.generic()  # hands over, and so frees, the backbone it loaded to check the folder
    else:
        raise ValueError(f"{directory} holds a {task!r} model; only "
                         f"{', '.join(sorted(INPUTS))} models load as MLflow models")
    model, labels = recipe.load(directory)
    chosen = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                          else "cpu" if device == "auto" else device)
    return Predictor(task, recipe, model.to(chosen), labels, chosen)


class TailorModel(PythonModel):
    """The pyfunc face of a saved Tailor model. `model_config={"device": "cpu"}` at load time
    pins the device; by default a CUDA device is used when there is one."""

    def load_context(self, context: PythonModelContext) -> None:
        config = {**MODEL_CONFIG, **(context.model_config or {})}
        self.predictor = load_predictor(Path(context.artifacts[MODEL_ARTIFACT]),
                                        str(config["device"]))

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.Series:
        task = self.predictor.task
        references = as_references(column_values(model_input, task), task)
        return pd.Series(self.predictor.predict(references), name=OUTPUT, dtype=object)


def log_model(client: Any, run_id: str, model_dir: Path, task: str, labels: Sequence[str],
              tags: dict[str, str]) -> str:
    """Log `model_dir` as the MLflow model "model" of run `run_id`; its MLflow model id.

    With the client's own calls rather than `mlflow.pyfunc.log_model`, which logs into the
    process's active experiment (not the run's) and needs the global tracking URI. The model is
    READY only once every file is uploaded; a failed upload leaves it FAILED, never half there.
    """
    import tempfile

    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model
    from mlflow.pyfunc import save_model

    experiment = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment, name=MODEL_NAME, source_run_id=run_id,
                                        tags=tags, model_type=task)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / MODEL_NAME
            described = Model(artifact_path=logged.artifact_location, run_id=run_id,
                              model_id=logged.model_id, model_uuid=logged.model_id)
            save_model(str(local), mlflow_model=described, python_model=str(ENTRY),
                       artifacts={MODEL_ARTIFACT: str(model_dir)}, signature=signature(task),
                       input_example=input_example(task), pip_requirements=pip_requirements(task),
                       model_config=MODEL_CONFIG,
                       metadata={"tailor": {"task": task, "labels": list(labels)}})
            client.log_model_artifacts(logged.model_id, str(local))
    except BaseException:
        with contextlib.suppress(Exception):
            client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return str(logged.model_id)
