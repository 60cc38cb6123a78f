"""The registry's version is an MLflow model, against the stack's real MLflow server (artifacts in
its MinIO): a run logs its saved model through the Tracker, a promotion registers it and moves
the alias, and `mlflow.pyfunc.load_model("models:/<name>@<alias>")` in this process predicts
labels for raw texts (and image bytes) exactly as the trainer's own code does."""

from __future__ import annotations

import io
import secrets
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import S3
from mlflow.entities import LoggedModelStatus
from PIL import Image
from tailor_trainer import evaluate
from tailor_trainer import mlflow_model as mm
from tailor_trainer.recipes.image import ImageRecipe
from tailor_trainer.recipes.text import TextRecipe
from tailor_trainer.storage import Store
from tailor_trainer.tracking import ARTIFACT_TAG, MODEL_URI_TAG, RUN_TAG, Tracker

from tests.support.trainer import spread_head

LABELS = ["business", "entertainment", "politics", "sport"]
TEXTS = ["Shares fell sharply after the quarterly results.", "The band announced a world tour.",
         "Parliament voted on the budget late last night.", "The keeper saved a late penalty.",
         "Quarterly profit beat forecasts.", "A new film topped the box office.",
         "The minister resigned.", "Extra time decided the final.", "hello", "",
         "Markets rallied as inflation eased across the region this spring.", "goal"]


@pytest.fixture
def tracking(stack: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """This process reads the registry as a user would: MLFLOW_TRACKING_URI."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.state.mlflow_uri)
    return str(stack.state.mlflow_uri)


def text_model(base: Path, target: Path, seed: int) -> Path:
    """A model in the real saved format: the text recipe's own `save`."""
    recipe = TextRecipe(base, 32)
    model = recipe.build(len(LABELS))
    spread_head(model, seed)
    recipe.save(model, target, LABELS)
    return target


def trainers_own(recipe: Any, model_dir: Path, inputs: list[str]) -> list[str]:
    """The trainer's predictions: the recipe's load and encode, then evaluate.predict."""
    model, labels = recipe.load(model_dir)
    probs = evaluate.predict(model, recipe, recipe.encode(inputs), torch.device("cpu"), None)
    return [labels[i] for i in probs.argmax(1)]


def tracked_run(uri: str, experiment: str, s3: S3) -> Tracker:
    run_id = secrets.token_hex(4)
    tracker = Tracker(uri, experiment, run_id, f"run-{run_id}",
                      s3.uri(f"models/{experiment}/runs/{run_id}/"))
    assert tracker.start({"tailor.trainingjob": "tests/registry"})
    return tracker


def promote(uri: str, experiment: str, tracker: Tracker, s3: S3, model_dir: Path,
            name: str) -> str:
    """Register the way the promotion Job does: a fresh Tracker that did not log the model."""
    production = s3.upload_dir(model_dir, f"models/{experiment}/production/{tracker.tailor_run_id}/")
    promoter = Tracker(uri, experiment, tracker.tailor_run_id, tracker.run_name,
                       tracker.artifact_uri)
    assert promoter.start({}) == tracker.mlflow_run_id
    version = promoter.register(name, production, "production")
    assert version
    return version


def test_the_registered_text_model_loads_by_alias_and_predicts_labels(
        tracking: str, s3: S3, tiny_model: Path, tmp_path: Path) -> None:
    experiment, name = f"registry-{secrets.token_hex(3)}", f"news-{secrets.token_hex(3)}"
    saved = text_model(tiny_model, tmp_path / "first" / "model", seed=1)
    first = tracked_run(tracking, experiment, s3)
    first.log_model(saved, "text-classification", LABELS)
    assert first.model_id, "the model was not logged (see the warning in the log)"
    assert promote(tracking, experiment, first, s3, saved, name) == "1"

    client = mlflow.MlflowClient(tracking)
    version = client.get_model_version_by_alias(name, "production")
    assert version.version == "1" and version.run_id == first.mlflow_run_id
    assert version.source == f"models:/{first.model_id}"
    assert version.tags[RUN_TAG] == first.tailor_run_id
    assert version.tags[MODEL_URI_TAG].startswith(s3.uri(f"models/{experiment}/production/"))
    logged = client.get_logged_model(first.model_id)
    assert logged.status == LoggedModelStatus.READY and logged.source_run_id == first.mlflow_run_id
    assert logged.tags[ARTIFACT_TAG] == first.artifact_uri
    # The files are in the stack's MinIO, behind MLflow's artifact proxy.
    key = logged.artifact_location.removeprefix("mlflow-artifacts:/")
    stored = s3.client.list_objects_v2(Bucket="mlflow", Prefix=f"artifacts/{key}/")
    names = {o["Key"].rsplit("/", 1)[-1] for o in stored.get("Contents", [])}
    assert {"MLmodel", "input_example.json", "classifier-head.safetensors"} <= names

    loaded = mlflow.pyfunc.load_model(f"models:/{name}@production",
                                      model_config={"device": "cpu"})
    assert loaded.metadata.get_input_schema().input_names() == ["text"]
    assert loaded.metadata.get_output_schema().input_names() == ["label"]
    assert loaded.metadata.saved_input_example_info is not None
    got = list(loaded.predict(pd.DataFrame({"text": TEXTS})))
    own = trainers_own(TextRecipe(saved, 32), saved, TEXTS)
    assert got == own and set(got) <= set(LABELS) and len(set(got)) >= 2
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"missing inputs \['text'\]"):
        loaded.predict(pd.DataFrame({"body": TEXTS}))
    by_run = mlflow.pyfunc.load_model(f"runs:/{first.mlflow_run_id}/model")
    assert list(by_run.predict(pd.DataFrame({"text": TEXTS}))) == own

    # A later promotion moves the alias; the old version stays loadable by number.
    retrained = text_model(tiny_model, tmp_path / "second" / "model", seed=2)
    second = tracked_run(tracking, experiment, s3)
    second.log_model(retrained, "text-classification", LABELS)
    assert promote(tracking, experiment, second, s3, retrained, name) == "2"
    assert client.get_model_version_by_alias(name, "production").version == "2"
    now = mlflow.pyfunc.load_model(f"models:/{name}@production")
    assert list(now.predict(pd.DataFrame({"text": TEXTS}))) == trainers_own(
        TextRecipe(retrained, 32), retrained, TEXTS)
    old = mlflow.pyfunc.load_model(f"models:/{name}/1")
    assert list(old.predict(pd.DataFrame({"text": TEXTS}))) == own


def png(seed: int, side: int) -> bytes:
    """A seeded colour with a little noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, 3) + rng.integers(-20, 21, (side, side, 3))
    out = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").save(out, "PNG")
    return out.getvalue()


def test_the_registered_image_model_predicts_image_bytes(tracking: str, s3: S3,
                                                         tmp_path: Path) -> None:
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    base = tmp_path / "test_resnet"
    save_for_hf(timm.create_model("test_resnet", num_classes=7), str(base),
                safe_serialization=True)
    images = [png(seed, 24 + 4 * seed) for seed in range(10)]
    recipe = ImageRecipe(base, 32)
    model = recipe.build(len(LABELS))
    spread_head(model, 3)
    items = recipe.encode(mm.as_references(images, "image-classification"))
    features = evaluate.predict(model, recipe, items, torch.device("cpu"), None, features=True)
    with torch.no_grad():  # centred logits, as a fitted head gives: several labels
        head: Any = model.head
        head.weight.mul_(50)
        head.bias.copy_(-head.weight @ torch.as_tensor(features.mean(0)))
    saved = tmp_path / "model"
    recipe.save(model, saved, LABELS)

    experiment, name = f"registry-{secrets.token_hex(3)}", f"photos-{secrets.token_hex(3)}"
    run = tracked_run(tracking, experiment, s3)
    run.log_model(saved, "image-classification", LABELS)
    assert run.model_id
    assert promote(tracking, experiment, run, s3, saved, name) == "1"
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@production")
    assert loaded.metadata.get_input_schema().input_names() == ["image"]
    got = list(loaded.predict(pd.DataFrame({"image": images})))
    for i, data in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(data)
    from_files = ImageRecipe(saved, 32, Store(), f"{tmp_path}/", "image")
    assert got == trainers_own(from_files, saved, [f"{i}.png" for i in range(10)])
    assert len(set(got)) >= 2
