"""image-classification: a timm backbone from a base checkpoint, pooled, under a linear head.

The base model is a timm checkpoint folder, the layout timm's own `save_for_hf`/`push_to_hub`
write: `config.json` (the architecture name, its model arguments and `pretrained_cfg` with the
preprocessing it was trained with) and `model.safetensors`. timm builds the architecture by
name with `num_classes=0`, so the backbone returns its pooled features, and loads the weights
from the folder; nothing is fetched from a hub. Those pooled features feed both the linear-probe
baseline and the candidate's linear head, as the text recipe's mean-pooled ones do.

Images are named per row by `data.columns.image`: a path relative to the folder of `data.uri`
(the prefix itself, or the folder holding the data file), an absolute `s3://` URI or local
path, or the image inline as a `data:` URI (`data:image/png;base64,...`). Each is fetched and
decoded once, in `encode`, and kept as uint8 pixels no larger than the evaluation resize needs;
`collate` applies the standard augmentations for training (random resized crop, horizontal
flip) or the standard resize and centre crop for evaluation, then the backbone's normalisation.
The augmentations draw from torch's global generator, which checkpoints save per rank, so a
resumed run sees the same crops and flips.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import io
import json
import math
import posixpath
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tailor_contract.trainingjob import TASK_IMAGE_CLASSIFICATION
from tailor_contract.uris import S3Uri, is_s3
from torch import nn

from tailor_trainer.errors import (
    REASON_BASE_MODEL_UNUSABLE,
    REASON_DATA_UNREADABLE,
    PermanentError,
)
from tailor_trainer.recipes.base import ProfileFeatures, read_meta, write_meta
from tailor_trainer.storage import NotFound, Store

TASK = TASK_IMAGE_CLASSIFICATION
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HEAD_FILE = "classifier-head.safetensors"
PREPROCESSING_FILE = "preprocessing.json"
TRAIN_SCALE = (0.25, 1.0)
"""Random-resized-crop area share: milder than ImageNet pre-training's 0.08, because
fine-tuning sets are small and their subjects often fill the frame."""
TRAIN_RATIO = (3 / 4, 4 / 3)
FETCH_THREADS = 8
PROFILE_SUMMARIES = ("width", "height", "brightness")
_LOAD_ERRORS = (RuntimeError, ValueError, KeyError, TypeError, AttributeError, OSError,
                AssertionError, SafetensorError)
"""What timm and safetensors raise for a checkpoint that does not fit its config."""
_SHOWN = 80


@dataclass(frozen=True)
class ImageItem:
    """One decoded image: pixels for `collate`, summaries for the reference profile."""

    pixels: torch.Tensor
    """uint8 (channels, height, width), the shorter side at most `Preprocessing.resize`."""
    width: int
    """Of the image as stored."""
    height: int
    brightness: float
    """Mean luminance in [0, 1]."""
    sha256: str
    """Of the bytes as stored: the locked test set notices a changed image under the same name."""


@dataclass(frozen=True)
class Preprocessing:
    """How pixels reach the backbone; saved with the model as preprocessing.json."""

    size: int
    resize: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str

    @classmethod
    def from_data_config(cls, config: dict[str, Any], size: int) -> Preprocessing:
        """timm's data config (normalisation, crop share) at the spec's image size."""
        crop_pct = float(config.get("crop_pct") or 0.875)
        channels = int(config.get("input_size", (3,))[0])
        mean = tuple(float(x) for x in config.get("mean", (0.485, 0.456, 0.406)))
        std = tuple(float(x) for x in config.get("std", (0.229, 0.224, 0.225)))
        interpolation = str(config.get("interpolation") or "bilinear")
        if interpolation not in ("bilinear", "bicubic", "nearest"):
            interpolation = "bilinear"
        return cls(size=size, resize=max(size, math.floor(size / crop_pct)), channels=channels,
                   mean=mean[:channels] if len(mean) >= channels else mean * channels,
                   std=std[:channels] if len(std) >= channels else std * channels,
                   interpolation=interpolation)

    def to_json(self) -> dict[str, Any]:
        return {"inputSize": [self.channels, self.size, self.size], "resize": self.resize,
                "crop": "center", "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std), "scale": 1 / 255,
                "steps": ["convert to RGB (L for one channel)",
                          f"resize the shorter side to {self.resize} ({self.interpolation})",
                          f"centre-crop {self.size}x{self.size}",
                          "scale to [0, 1]", "subtract mean, divide by std"]}


class ImageClassifier(nn.Module):
    """timm backbone (num_classes=0: pooled features) -> linear."""

    def __init__(self, backbone: nn.Module, num_features: int, num_labels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(num_features, num_labels)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pooled: torch.Tensor = self.backbone(pixel_values)
        return pooled

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(pixel_values))
        return logits


def image_root(store: Store, data_uri: str) -> str:
    """What relative image paths are relative to: data.uri's folder when it names a file."""
    if data_uri.endswith("/"):
        return data_uri
    is_file = store.exists(data_uri) if is_s3(data_uri) else Path(data_uri).is_file()
    if is_file:
        return data_uri.rsplit("/", 1)[0] + "/"
    return data_uri + "/"


def _unusable(message: str) -> PermanentError:
    return PermanentError(REASON_BASE_MODEL_UNUSABLE, message)


def read_checkpoint_config(directory: Path, what: str) -> dict[str, Any]:
    """config.json of a timm checkpoint folder, checked for what the recipe needs."""
    import timm

    layout = (f"an image-classification model is a timm checkpoint folder: {CONFIG_FILE} "
              f"naming the architecture and {WEIGHTS_FILE} (what timm's save_for_hf writes)")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise _unusable(f"{what} ({directory}) has no {CONFIG_FILE}; {layout}")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _unusable(f"{what} ({directory}): {CONFIG_FILE} is not JSON: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise _unusable(f"{what} ({directory}): {CONFIG_FILE} names no architecture; {layout}")
    if not timm.is_model(config["architecture"]):
        raise _unusable(f"{what} ({directory}): {config['architecture']!r} is not a timm "
                        f"architecture known to timm {timm.__version__}")
    if not (directory / WEIGHTS_FILE).is_file():
        raise _unusable(f"{what} ({directory}) has no {WEIGHTS_FILE}; {layout}")
    return config


def _size_args(config: dict[str, Any], size: int) -> dict[str, Any]:
    """Models with a fixed input size (ViTs) are built for the spec's size; timm resamples
    their position embeddings when it loads the weights. CNNs take any size as they are."""
    model_args = config.get("model_args") or {}
    pretrained = config.get("pretrained_cfg") or {}
    if "img_size" in model_args or pretrained.get("fixed_input_size"):
        return {"img_size": size}
    return {}


class ImageRecipe:
    task = TASK

    def __init__(self, base_dir: Path | str, image_size: int, store: Store | None = None,
                 root: str = "", column: str = "image") -> None:
        from timm.data import config as timm_data

        self.base_dir = Path(base_dir)
        self.size = image_size
        self.store = store or Store()
        self.root = root
        self.column = column
        self.config = read_checkpoint_config(self.base_dir, "spec.model.base")
        # Loading the backbone once here checks the weights before the gate locks a test set.
        self._checked: nn.Module | None = None
        backbone = self._backbone()
        self.num_features = int(getattr(backbone, "num_features", 0))
        if self.num_features < 1:
            raise _unusable(f"spec.model.base ({self.base_dir}): {self.config['architecture']} "
                            "reports no num_features")
        resolve: Any = timm_data.resolve_model_data_config  # untyped in timm
        data_config: dict[str, Any] = resolve(backbone)
        self.pre = Preprocessing.from_data_config(data_config, image_size)
        self._mean = torch.tensor(self.pre.mean).view(-1, 1, 1)
        self._std = torch.tensor(self.pre.std).view(-1, 1, 1)
        self._checked = backbone  # the next model built takes it

    # --- models -----------------------------------------------------------------------------------
    def _backbone(self) -> nn.Module:
        """A freshly loaded backbone; the one loaded to check the base model, the first time."""
        checked, self._checked = self._checked, None
        if checked is not None:
            return checked
        import timm

        try:
            backbone: nn.Module = timm.create_model(
                f"local-dir:{self.base_dir}", pretrained=True, num_classes=0,
                **_size_args(self.config, self.size))
        except _LOAD_ERRORS as exc:
            raise _unusable(f"cannot load a {self.config['architecture']} backbone from "
                            f"spec.model.base ({self.base_dir}): {exc}") from exc
        return backbone

    def build(self, num_labels: int) -> nn.Module:
        return ImageClassifier(self._backbone(), self.num_features, num_labels)

    def generic(self) -> nn.Module:
        model = ImageClassifier(self._backbone(), self.num_features, 1)
        model.eval()
        return model

    # --- inputs -----------------------------------------------------------------------------------
    def _describe(self, reference: str) -> str:
        shown = reference if len(reference) <= _SHOWN else reference[:_SHOWN] + "..."
        return f"data.columns.{self.column} value {shown!r}"

    def _read(self, reference: str) -> bytes:
        ref = reference.strip()
        if ref.startswith("data:"):
            header, comma, payload = ref.partition(",")
            if not comma or not header.endswith(";base64"):
                raise PermanentError(REASON_DATA_UNREADABLE,
                                     f"{self._describe(reference)}: an inline image must be a "
                                     "base64 data URI (data:image/png;base64,...)")
            try:
                return base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise PermanentError(REASON_DATA_UNREADABLE,
                                     f"{self._describe(reference)}: invalid base64: "
                                     f"{exc}") from exc
        if "://" in ref and not is_s3(ref):
            raise PermanentError(REASON_DATA_UNREADABLE,
                                 f"{self._describe(reference)}: images are read from S3 "
                                 "(s3://), a path, or a data: URI; nothing is downloaded from "
                                 "other URLs")
        if is_s3(ref) or ref.startswith("/"):
            uri = ref
        elif is_s3(self.root):
            root = S3Uri.parse(self.root)
            joined = posixpath.normpath(posixpath.join("/", root.key, ref))
            uri = str(S3Uri(root.bucket, joined.lstrip("/")))
        else:
            uri = str(Path(self.root or ".") / ref)
        try:
            return self.store.get_bytes(uri)
        except NotFound as exc:
            raise PermanentError(REASON_DATA_UNREADABLE,
                                 f"{self._describe(reference)}: no image at {uri}") from exc

    def _decode(self, reference: str) -> ImageItem:
        from PIL import Image, UnidentifiedImageError

        raw = self._read(reference)
        try:
            with Image.open(io.BytesIO(raw)) as opened:
                opened.load()
                width, height = opened.size
                image = opened.convert("L" if self.pre.channels == 1 else "RGB")
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError,
                SyntaxError) as exc:
            raise PermanentError(REASON_DATA_UNREADABLE,
                                 f"{self._describe(reference)}: not a readable image "
                                 f"({len(raw)} bytes): {exc}") from exc
        shorter = min(width, height)
        if shorter > self.pre.resize:
            # Keep no more pixels than evaluation's resize uses; training crops from these.
            scale = self.pre.resize / shorter
            image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                 _pil_filter(self.pre.interpolation))
        array = np.asarray(image, dtype=np.uint8)
        if array.ndim == 2:
            array = array[:, :, None]
        pixels = torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
        luminance = np.asarray(image.convert("L"), dtype=np.float64)
        return ImageItem(pixels=pixels, width=int(width), height=int(height),
                         brightness=float(luminance.mean() / 255.0),
                         sha256=hashlib.sha256(raw).hexdigest())

    def encode(self, inputs: Sequence[str]) -> list[Any]:
        if not inputs:
            return []
        with ThreadPoolExecutor(min(FETCH_THREADS, len(inputs))) as pool:
            return list(pool.map(self._decode, inputs))

    def length(self, item: Any) -> int:
        return 1

    def content(self, value: str, item: Any) -> str:
        return f"{value}\x00sha256:{item.sha256}"

    def collate(self, items: Sequence[Any], train: bool) -> dict[str, torch.Tensor]:
        from torchvision import transforms
        from torchvision.transforms import functional

        mode = transforms.InterpolationMode(self.pre.interpolation)
        size = self.pre.size
        batch = torch.empty((len(items), self.pre.channels, size, size), dtype=torch.float32)
        for row, item in enumerate(items):
            pixels: torch.Tensor = item.pixels
            if train:
                top, left, height, width = transforms.RandomResizedCrop.get_params(
                    pixels, list(TRAIN_SCALE), list(TRAIN_RATIO))
                pixels = functional.resized_crop(pixels, top, left, height, width,
                                                 [size, size], mode, antialias=True)
                if float(torch.rand(())) < 0.5:
                    pixels = functional.hflip(pixels)
            else:
                pixels = functional.resize(pixels, [self.pre.resize], mode, antialias=True)
                pixels = functional.center_crop(pixels, [size, size])
            batch[row] = pixels.float()
        batch.div_(255.0).sub_(self._mean).div_(self._std)
        return {"pixel_values": batch}

    def profile_features(self, column: str, inputs: Sequence[str],
                         items: Sequence[Any]) -> ProfileFeatures:
        """Numeric summaries a serving system can log too: size as stored, and brightness."""
        return ProfileFeatures(values={
            f"{column}:width": [float(i.width) for i in items],
            f"{column}:height": [float(i.height) for i in items],
            f"{column}:brightness": [i.brightness for i in items],
        })

    # --- saved models -----------------------------------------------------------------------------
    def save(self, model: nn.Module, directory: Path, labels: Sequence[str]) -> None:
        assert isinstance(model, ImageClassifier)
        directory.mkdir(parents=True, exist_ok=True)
        # Cloned tensors: safetensors refuses tensors that share memory (tied weights).
        weights = {k: v.detach().cpu().contiguous().clone()
                   for k, v in model.backbone.state_dict().items()}
        save_file(weights, str(directory / WEIGHTS_FILE))
        head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
        save_file(head, str(directory / HEAD_FILE))
        # The backbone stays loadable by timm on its own: timm.create_model("local-dir:<dir>",
        # pretrained=True, num_classes=0) gives the fine-tuned features.
        config = copy.deepcopy(self.config)
        config["num_classes"] = 0
        model_args = dict(config.get("model_args") or {})
        model_args.update({"num_classes": 0, **_size_args(self.config, self.size)})
        config["model_args"] = model_args
        pretrained = dict(config.get("pretrained_cfg") or {})
        pretrained.update({"num_classes": 0, "input_size": [self.pre.channels, self.size,
                                                            self.size]})
        config["pretrained_cfg"] = pretrained
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=1))
        (directory / PREPROCESSING_FILE).write_text(json.dumps(self.pre.to_json(), indent=1))
        write_meta(directory, TASK, labels, architecture=config["architecture"],
                   numFeatures=self.num_features, weights=WEIGHTS_FILE, head=HEAD_FILE,
                   preprocessing=PREPROCESSING_FILE, imageSize=self.size)

    def load(self, directory: Path) -> tuple[nn.Module, list[str]]:
        import timm

        meta = read_meta(directory, TASK)
        labels = [str(x) for x in meta["labels"]]
        config = read_checkpoint_config(directory, "the saved model")
        model_args = {k: v for k, v in (config.get("model_args") or {}).items()
                      if k != "num_classes"}
        try:
            backbone: nn.Module = timm.create_model(config["architecture"], pretrained=False,
                                                    num_classes=0, **model_args)
            backbone.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
            features = int(meta.get("numFeatures") or getattr(backbone, "num_features", 0) or 0)
            model = ImageClassifier(backbone, features, len(labels))
            model.head.load_state_dict(load_file(str(directory / str(meta.get("head",
                                                                              HEAD_FILE)))))
        except _LOAD_ERRORS as exc:
            raise _unusable(f"cannot load the saved image model in {directory}: {exc}") from exc
        model.eval()
        return model, labels


def _pil_filter(interpolation: str) -> Any:
    from PIL import Image

    return {"bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}.get(
        interpolation, Image.Resampling.BILINEAR)
