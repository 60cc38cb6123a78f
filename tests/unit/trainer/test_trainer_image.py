"""The image-classification recipe: base checkpoints, image references, batches, saved models."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tailor_trainer import artifacts
from tailor_trainer.errors import PermanentError
from tailor_trainer.recipes.base import ProfileFeatures
from tailor_trainer.recipes.image import (
    CONFIG_FILE,
    HEAD_FILE,
    PREPROCESSING_FILE,
    WEIGHTS_FILE,
    ImageClassifier,
    ImageRecipe,
    image_root,
)
from tailor_trainer.storage import Store
from torch import nn

SIZE = 32


def save_timm(model: nn.Module, path: Path) -> Path:
    from timm.models import save_for_hf

    save_for_hf(model, str(path), safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random test_resnet in timm's own checkpoint layout, with an ImageNet-sized head."""
    import timm

    torch.manual_seed(0)
    return save_timm(timm.create_model("test_resnet", num_classes=7),
                     tmp_path_factory.mktemp("base") / "test_resnet")


def png(width: int, height: int, seed: int, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    for i in range(6):
        (root / "img" / f"{i}.png").write_bytes(png(20 + 3 * i, 24, i))
    (root / "img" / "gray.png").write_bytes(png(8, 8, 9, mode="L"))
    (root / "img" / "big.png").write_bytes(png(300, 200, 10))
    (root / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def recipe_for(base: Path, root: Path) -> ImageRecipe:
    return ImageRecipe(base, SIZE, Store(), str(root) + "/", "path")


def test_collate_gives_normalised_batches_of_the_spec_size(base: Path, images: Path) -> None:
    recipe = recipe_for(base, images)
    items = recipe.encode([f"img/{i}.png" for i in range(4)] + ["img/gray.png"])
    assert {recipe.length(i) for i in items} == {1}
    batch = recipe.collate(items, train=False)
    assert list(batch) == ["pixel_values"]
    assert batch["pixel_values"].shape == (5, 3, SIZE, SIZE)
    assert batch["pixel_values"].dtype == torch.float32
    # test_resnet normalises with mean 0.5 and std 0.5: pixels land in [-1, 1].
    assert float(batch["pixel_values"].min()) >= -1.0 and float(batch["pixel_values"].max()) <= 1
    assert torch.equal(recipe.collate(items, train=False)["pixel_values"],
                       batch["pixel_values"])  # evaluation is deterministic


def test_augmentation_only_in_training_and_replayable_from_the_rng(base: Path,
                                                                   images: Path) -> None:
    recipe = recipe_for(base, images)
    items = recipe.encode([f"img/{i}.png" for i in range(6)])
    evaluation = recipe.collate(items, train=False)["pixel_values"]
    torch.manual_seed(1)
    first = recipe.collate(items, train=True)["pixel_values"]
    second = recipe.collate(items, train=True)["pixel_values"]
    assert first.shape == evaluation.shape == (6, 3, SIZE, SIZE)
    assert not torch.equal(first, evaluation) and not torch.equal(first, second)
    # A resumed run restores torch's generator and so sees the same crops and flips.
    torch.manual_seed(1)
    assert torch.equal(recipe.collate(items, train=True)["pixel_values"], first)


def test_paths_absolute_uris_and_inline_images_decode_alike(base: Path, images: Path) -> None:
    recipe = recipe_for(base, images)
    raw = (images / "img" / "3.png").read_bytes()
    inline = "data:image/png;base64," + base64.b64encode(raw).decode()
    items = recipe.encode(["img/3.png", str(images / "img" / "3.png"), inline, " img/3.png "])
    for item in items[1:]:
        assert torch.equal(item.pixels, items[0].pixels)
    assert (items[0].width, items[0].height) == (29, 24)
    assert items[0].pixels.shape == (3, 24, 29)
    # Large images are kept only as large as the evaluation resize needs.
    big = recipe.encode(["img/big.png"])[0]
    assert (big.width, big.height) == (300, 200)
    assert min(big.pixels.shape[1:]) == recipe.pre.resize and big.pixels.shape[2] > SIZE


def test_the_test_set_digest_covers_the_image_bytes_not_only_the_path(base: Path,
                                                                       images: Path) -> None:
    recipe = recipe_for(base, images)
    [before] = recipe.encode(["img/3.png"])
    [again] = recipe.encode(["img/3.png"])
    assert recipe.content("img/3.png", again) == recipe.content("img/3.png", before)
    (images / "img" / "3.png").write_bytes(png(29, 24, 99))  # another image, the same name
    [after] = recipe.encode(["img/3.png"])
    assert recipe.content("img/3.png", after) != recipe.content("img/3.png", before)
    assert before.sha256 == hashlib.sha256(png(29, 24, 3)).hexdigest()


def test_relative_paths_are_relative_to_the_data_files_folder(tmp_path: Path) -> None:
    store = Store()
    (tmp_path / "index.csv").write_text("id,path,label\n")
    assert image_root(store, str(tmp_path / "index.csv")) == f"{tmp_path}/"
    assert image_root(store, str(tmp_path)) == f"{tmp_path}/"
    assert image_root(store, "s3://bucket/images/") == "s3://bucket/images/"


def test_unreadable_images_fail_permanently_naming_the_value(base: Path, images: Path) -> None:
    recipe = recipe_for(base, images)
    cases = {
        "img/broken.png": "not a readable image",
        "img/missing.png": "no image at",
        "https://example.com/cat.png": "nothing is downloaded from other URLs",
        "data:image/png,notbase64": "base64 data URI",
        "data:image/png;base64,@@@": "invalid base64",
    }
    for value, reason in cases.items():
        with pytest.raises(PermanentError) as info:
            recipe.encode(["img/0.png", value])
        assert info.value.reason == "DataUnreadable", value
        assert f"data.columns.path value {value!r}" in info.value.message, info.value.message
        assert reason in info.value.message, info.value.message


def test_bad_base_checkpoints_fail_permanently_with_the_reason(base: Path,
                                                               tmp_path: Path) -> None:
    def broken(name: str, config: object | None, weights: bytes | None) -> Path:
        path = tmp_path / name
        path.mkdir()
        if config is not None:
            (path / CONFIG_FILE).write_text(config if isinstance(config, str)
                                            else json.dumps(config))
        if weights is not None:
            (path / WEIGHTS_FILE).write_bytes(weights)
        return path

    weights = (base / WEIGHTS_FILE).read_bytes()
    config = json.loads((base / CONFIG_FILE).read_text())
    cases = {
        broken("empty", None, None): f"has no {CONFIG_FILE}",
        broken("not-json", "{", weights): "is not JSON",
        broken("no-arch", {"num_classes": 3}, weights): "names no architecture",
        broken("unknown", {**config, "architecture": "resnet_9000"}, weights):
            "'resnet_9000' is not a timm architecture",
        broken("no-weights", config, None): f"has no {WEIGHTS_FILE}",
        broken("truncated", config, weights[:1000]): "cannot load a test_resnet backbone",
        broken("other-arch", {**config, "architecture": "test_vit", "model_args": {}},
               weights): "cannot load a test_vit backbone",
    }
    for path, reason in cases.items():
        with pytest.raises(PermanentError) as info:
            ImageRecipe(path, SIZE)
        assert info.value.reason == "BaseModelUnusable", path.name
        assert reason in info.value.message, (path.name, info.value.message)
        assert str(path) in info.value.message


def test_generic_gives_pooled_features_and_build_a_fresh_linear_head(base: Path,
                                                                     images: Path) -> None:
    recipe = recipe_for(base, images)
    batch = recipe.collate(recipe.encode([f"img/{i}.png" for i in range(3)]), train=False)
    generic = recipe.generic()
    assert not generic.training
    assert isinstance(generic, ImageClassifier)
    with torch.no_grad():
        features = generic.features(**batch)
    assert features.shape == (3, recipe.num_features)
    model = recipe.build(4)
    assert isinstance(model.get_submodule("head"), nn.Linear)
    assert model(**batch).shape == (3, 4)
    # The backbone starts from the base checkpoint's weights, not from a random init.
    assert torch.equal(model.state_dict()["backbone.conv1.0.weight"],
                       generic.state_dict()["backbone.conv1.0.weight"])


def test_save_then_load_gives_identical_logits(base: Path, images: Path,
                                               tmp_path: Path) -> None:
    recipe = recipe_for(base, images)
    items = recipe.encode([f"img/{i}.png" for i in range(6)])
    model = recipe.build(3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()  # one step moves the weights and the batch-norm statistics
    torch.manual_seed(0)
    loss = nn.functional.cross_entropy(model(**recipe.collate(items, True)),
                                       torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    optimizer.step()
    model.eval()
    recipe.save(model, tmp_path / "model", ["a", "b", "c"])
    for name in (WEIGHTS_FILE, HEAD_FILE, CONFIG_FILE, PREPROCESSING_FILE, "tailor-model.json"):
        assert (tmp_path / "model" / name).is_file(), name
    loaded, labels = recipe.load(tmp_path / "model")
    assert labels == ["a", "b", "c"]
    batch = recipe.collate(items, train=False)
    with torch.no_grad():
        assert torch.equal(loaded(**batch), model(**batch))
    pre = json.loads((tmp_path / "model" / PREPROCESSING_FILE).read_text())
    assert pre["inputSize"] == [3, SIZE, SIZE] and pre["mean"] == [0.5, 0.5, 0.5]
    # The saved backbone is a timm checkpoint folder in its own right.
    import timm

    features = timm.create_model(f"local-dir:{tmp_path / 'model'}", pretrained=True,
                                 num_classes=0).eval()
    with torch.no_grad():
        assert isinstance(model, ImageClassifier)
        assert torch.equal(features(batch["pixel_values"]), model.features(**batch))
    # A text model's folder is refused with the reason.
    (tmp_path / "model" / "tailor-model.json").write_text(
        json.dumps({"task": "text-classification", "labels": ["a"]}))
    with pytest.raises(PermanentError, match="not image-classification"):
        recipe.load(tmp_path / "model")


def test_fixed_size_backbones_are_built_for_the_spec_size(tmp_path: Path, images: Path) -> None:
    import timm

    base = save_timm(timm.create_model("test_vit", num_classes=5), tmp_path / "vit")
    recipe = ImageRecipe(base, SIZE, Store(), f"{images}/", "path")
    batch = recipe.collate(recipe.encode(["img/0.png", "img/1.png"]), train=False)
    assert batch["pixel_values"].shape == (2, 3, SIZE, SIZE)
    model = recipe.build(2).eval()
    assert model(**batch).shape == (2, 2)
    recipe.save(model, tmp_path / "saved", ["x", "y"])
    loaded, _ = recipe.load(tmp_path / "saved")
    with torch.no_grad():
        assert torch.equal(loaded(**batch), model(**batch))


def test_reference_profile_describes_images_by_numeric_summaries(base: Path,
                                                                 images: Path) -> None:
    recipe = recipe_for(base, images)
    refs = [f"img/{i}.png" for i in range(6)]
    parts = [recipe.profile_features("path", refs[:3], recipe.encode(refs[:3])),
             recipe.profile_features("path", refs[3:], recipe.encode(refs[3:]))]
    features = ProfileFeatures.concat(parts)
    assert set(features.values) == {"path:width", "path:height", "path:brightness"}
    assert features.values["path:width"] == [20.0, 23.0, 26.0, 29.0, 32.0, 35.0]
    assert all(0.3 < b < 0.7 for b in features.values["path:brightness"])  # uniform noise
    probs = np.full((6, 2), 0.5)
    profile = artifacts.reference_profile(features, ["a", "b"], ["a"] * 3 + ["b"] * 3,
                                          ["a"] * 6, probs, {"runId": "r"})
    assert profile["features"]["path:width"]["type"] == "numeric"
    assert profile["features"]["path:brightness"]["count"] == 6


class RecordingStore(Store):
    """Answers every read with one image and records which URIs were asked for."""

    def __init__(self, image: bytes) -> None:
        super().__init__()
        self.image = image
        self.asked: list[str] = []

    def get_bytes(self, uri: str) -> bytes:
        self.asked.append(uri)
        return self.image


def test_relative_paths_resolve_inside_the_s3_prefix(base: Path) -> None:
    store = RecordingStore(png(10, 10, 0))
    recipe = ImageRecipe(base, SIZE, store, "s3://bucket/sets/v1/", "path")
    recipe.encode(["a.png", "./img/b.png", "../shared/c.png", "s3://other/d.png", "/opt/e.png"])
    assert sorted(store.asked) == sorted([
        "s3://bucket/sets/v1/a.png", "s3://bucket/sets/v1/img/b.png",
        "s3://bucket/sets/shared/c.png", "s3://other/d.png", "/opt/e.png"])
