"""The image-classification recipe on the stack: a tiny timm ResNet, from a base checkpoint in
MinIO, fine-tuned by two torchrun processes on scikit-learn's digits (PNGs in MinIO, indexed by a
CSV), judged against the linear probe, with its artifacts and manifest in place; a test image
replaced under the same path is noticed by the locked test set."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import S3, Trainer, to_csv
from PIL import Image
from tailor_contract.profile import ReferenceProfile
from tailor_contract.trainer_api import EXIT_PERMANENT

MODEL = "digits"
LABELS = [str(d) for d in range(10)]
PER_CLASS = 36
SIDE = 32


@pytest.fixture(scope="module")
def base_model(s3: S3, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A test_resnet in timm's checkpoint layout (config.json + model.safetensors).

    Its weights are random, but its batch-norm statistics are those of digit-like images, as a
    pre-trained model's are of its pre-training data: the features it gives in evaluation mode
    (the probe's) and in training mode (fine-tuning's) are then on the same scale.
    """
    import timm
    import torch
    from sklearn.datasets import load_digits
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=1000)
    images = torch.as_tensor(load_digits().images[:768], dtype=torch.float32)[:, None] / 16
    images = torch.nn.functional.interpolate(images, size=(SIDE, SIDE), mode="bilinear")
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a cumulative average over every batch
    model.train()
    with torch.no_grad():
        for batch in images.split(256):
            model((batch.expand(-1, 3, -1, -1) - 0.5) / 0.5)
    path = tmp_path_factory.mktemp("base") / "test-resnet"
    save_for_hf(model.eval(), str(path), safe_serialization=True)
    return s3.upload_dir(path, "base-models/test-resnet/")


def png(pixels: np.ndarray) -> bytes:
    """An 8x8 digit (0..16) as a grayscale PNG, upscaled to SIDE."""
    image = Image.fromarray((pixels * (255 / 16)).astype(np.uint8), "L")
    out = io.BytesIO()
    image.resize((SIDE, SIDE), Image.Resampling.BILINEAR).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def digits(s3: S3) -> list[dict[str, Any]]:
    """PER_CLASS digits of each class under datasets/digits/images/, rows for the index."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rows: list[dict[str, Any]] = []
    for label in range(10):
        for i in np.flatnonzero(data.target == label)[:PER_CLASS]:
            rows.append({"id": f"digit-{i}", "path": f"images/{i}.png", "label": str(label)})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda r: s3.put(f"datasets/digits/{r['path']}",
                                       png(data.images[int(r["id"][len("digit-"):])])), rows))
    return rows


def spec_for(trainer: Trainer, data_uri: str, base: str, model: str = MODEL) -> dict[str, Any]:
    spec = trainer.spec(
        model, data_uri, base,
        task="image-classification",
        model={"name": model, "base": base, "baseline": {"generic": True, "production": True}},
        data={"uri": data_uri, "columns": {"id": "id", "image": "path", "label": "label"},
              "labels": LABELS, "split": {"validation": 0.15, "test": 0.2},
              "quality": {"minExamples": 50, "classBalance": {"minPerClass": 5}}},
        hyperparameters={"epochs": 10, "batchSize": 16, "learningRate": 0.003,
                         "imageSize": SIDE, "warmupRatio": 0.1},
    )
    return spec


def test_fine_tunes_a_timm_backbone_on_digit_images(trainer: Trainer, s3: S3, base_model: str,
                                                    digits: list[dict[str, Any]]) -> None:
    index = s3.put("datasets/digits/index.csv", to_csv(digits))
    env = trainer.env(spec_for(trainer, index, base_model), "run-1", name="digits")
    result = trainer.run(env, nproc=2, timeout=240)
    assert result.code == 0, result.log[-4000:]
    assert result.summary is not None and result.summary.outcome == "Succeeded"
    run = f"models/{MODEL}/runs/run-1/"
    assert result.summary.artifact_uri == s3.uri(run)

    manifest = s3.json(run + "manifest.json")
    files = manifest["files"]
    for required in ("model/model.safetensors", "model/config.json",
                     "model/classifier-head.safetensors", "model/preprocessing.json",
                     "model/tailor-model.json", "metrics.json", "data-quality.json",
                     "reference-profile.json", "model-card.md"):
        assert required in files, sorted(files)
    for name, entry in files.items():
        assert hashlib.sha256(s3.get(run + name)).hexdigest() == entry["sha256"], name
    meta = s3.json(run + "model/tailor-model.json")
    assert meta["task"] == "image-classification" and meta["labels"] == LABELS
    assert meta["architecture"] == "test_resnet"
    assert s3.json(run + "model/preprocessing.json")["inputSize"] == [3, SIDE, SIDE]

    metrics = s3.json(run + "metrics.json")
    assert metrics["training"]["worldSize"] == 2 and metrics["training"]["steps"] > 0
    assert set(metrics["test"]) == {"candidate", "generic"}
    test_examples = metrics["testSet"]["examples"]
    assert metrics["test"]["candidate"]["examples"] == test_examples > 0
    # Ten classes: chance is 0.1. The fine-tuned model and the probe both learn the digits.
    assert metrics["test"]["candidate"]["accuracy"] > 0.5, metrics["test"]
    assert metrics["test"]["generic"]["accuracy"] > 0.3, metrics["test"]
    quality = s3.json(run + "data-quality.json")
    assert quality["passed"] and quality["examples"] == 10 * PER_CLASS

    profile = ReferenceProfile.from_json(s3.json(run + "reference-profile.json"))
    assert list(profile.classes) == LABELS
    assert set(profile.features) == {"path:width", "path:height", "path:brightness"}
    assert profile.samples == quality["split"]["validation"]

    # A locked test image replaced by another under the same path: run 2 refuses to evaluate.
    locked_key = f"models/{MODEL}/test-sets/v1/manifest.json"
    locked = s3.get(locked_key)
    test_id = s3.json(locked_key)["examples"][0]["id"]
    [row] = [r for r in digits if r["id"] == test_id]
    image_key = f"datasets/digits/{row['path']}"
    original = s3.get(image_key)
    s3.put(image_key, png(np.rot90(np.arange(64, dtype=np.float64).reshape(8, 8) % 17)))
    try:
        env2 = trainer.env(spec_for(trainer, index, base_model), "run-2", name="digits-2")
        result2 = trainer.run(env2, nproc=2, timeout=240)
    finally:
        s3.put(image_key, original)
    assert result2.code == EXIT_PERMANENT, result2.log[-4000:]
    assert result2.summary is not None and result2.summary.reason == "TestSetChanged"
    assert "1 changed (input or label)" in result2.summary.message
    assert repr(test_id) in result2.summary.message
    assert s3.get(locked_key) == locked
    assert not s3.keys(f"models/{MODEL}/runs/run-2/manifest.json")


def test_an_unreadable_image_fails_before_anything_is_locked(trainer: Trainer, s3: S3,
                                                             base_model: str,
                                                             digits: list[dict[str, Any]],
                                                             tmp_path: Path) -> None:
    s3.put("datasets/digits-broken/images/torn.png", b"\x89PNG\r\n\x1a\n torn off")
    rows = [{**r, "path": f"../digits/{r['path']}"} for r in digits]
    rows.append({"id": "torn", "path": "images/torn.png", "label": "3"})
    index = s3.put("datasets/digits-broken/index.csv", to_csv(rows))
    model = "digits-broken"
    env = trainer.env(spec_for(trainer, index, base_model, model), "run-1", name=model)
    result = trainer.run(env, nproc=1, timeout=240)
    assert result.code == EXIT_PERMANENT, result.log[-4000:]
    assert result.summary is not None and result.summary.reason == "DataUnreadable"
    assert "data.columns.path value 'images/torn.png'" in result.summary.message
    assert "not a readable image" in result.summary.message
    # Nothing locked, nothing published: the fixed data starts from a clean slate.
    assert not s3.keys(f"models/{model}/test-sets/")
    assert not s3.keys(f"models/{model}/runs/run-1/manifest.json")
