"""text-classification: a Hugging Face encoder, mean-pooled, under a linear head.

Mean pooling over the attention mask is what sentence encoders such as all-MiniLM-L6-v2 were
trained with, and it works as well for BERT-style encoders; the same pooled features feed the
linear-probe baseline, so candidate and baseline differ only in fine-tuning. Inputs are
tokenized once, up front, and batches are padded dynamically to their own longest member
(rounded up to a multiple of 8), with length bucketing in the loop's batch plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tailor_contract.trainingjob import TASK_TEXT_CLASSIFICATION
from torch import nn

from tailor_trainer.errors import REASON_BASE_MODEL_UNUSABLE, PermanentError
from tailor_trainer.recipes.base import ProfileFeatures, read_meta, write_meta

TASK = TASK_TEXT_CLASSIFICATION
PAD_MULTIPLE = 8
HEAD_FILE = "classifier-head.safetensors"


class EncoderClassifier(nn.Module):
    """Encoder -> masked mean pooling -> dropout -> linear."""

    def __init__(self, encoder: nn.Module, hidden: int, num_labels: int,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)

    def features(self, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden: torch.Tensor = self.encoder(input_ids=input_ids,
                                            attention_mask=attention_mask)[0]
        if attention_mask is None:
            return hidden.mean(1)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        pooled = self.features(input_ids, attention_mask)
        logits: torch.Tensor = self.head(self.dropout(pooled))
        return logits


class TextRecipe:
    task = TASK

    def __init__(self, base_dir: Path | str, max_length: int) -> None:
        from transformers import AutoTokenizer

        self.base_dir = str(base_dir)
        self.max_length = max_length
        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(self.base_dir)
        except (OSError, ValueError) as exc:
            raise PermanentError(REASON_BASE_MODEL_UNUSABLE,
                                 f"cannot load a tokenizer from spec.model.base "
                                 f"({self.base_dir}): {exc}") from exc
        model_max = getattr(self.tokenizer, "model_max_length", max_length) or max_length
        self.max_length = min(max_length, int(model_max))
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        self.pad_multiple = PAD_MULTIPLE

    def _encoder(self, path: str) -> tuple[nn.Module, int]:
        from transformers import AutoModel

        try:
            encoder: Any = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise PermanentError(REASON_BASE_MODEL_UNUSABLE,
                                 f"cannot load an encoder from {path}: {exc}") from exc
        if getattr(encoder, "pooler", None) is not None:
            # Mean pooling replaces BERT's pooler; unused parameters would stall DDP.
            encoder.pooler = None
        return encoder, int(encoder.config.hidden_size)

    def build(self, num_labels: int) -> nn.Module:
        encoder, hidden = self._encoder(self.base_dir)
        return EncoderClassifier(encoder, hidden, num_labels)

    def generic(self) -> nn.Module:
        encoder, hidden = self._encoder(self.base_dir)
        model = EncoderClassifier(encoder, hidden, 1)
        model.eval()
        return model

    def encode(self, inputs: Sequence[str]) -> list[Any]:
        out: list[Any] = []
        for start in range(0, len(inputs), 1024):
            chunk = list(inputs[start:start + 1024])
            ids = self.tokenizer(chunk, truncation=True, max_length=self.max_length,
                                 add_special_tokens=True)["input_ids"]
            out.extend(ids)
        return out

    def length(self, item: Any) -> int:
        return len(item)

    def content(self, value: str, item: Any) -> str:
        return value

    def profile_features(self, column: str, inputs: Sequence[str],
                         items: Sequence[Any]) -> ProfileFeatures:
        return ProfileFeatures(values={column: list(inputs)}, text=(column,))

    def collate(self, items: Sequence[Any], train: bool) -> dict[str, torch.Tensor]:
        """Pad to the batch's longest input; a batch without padding gets no mask at all.

        Without a mask PyTorch's attention can take its fastest (flash) kernel; the encoder
        drops an all-ones mask by itself only outside `torch.compile`.
        """
        lengths = [len(i) for i in items]
        if min(lengths) == max(lengths):
            return {"input_ids": torch.as_tensor(np.asarray(items, dtype=np.int64))}
        width = -(-max(lengths) // self.pad_multiple) * self.pad_multiple
        ids = np.full((len(items), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(items), width), dtype=np.int64)
        for row, item in enumerate(items):
            ids[row, :len(item)] = item
            mask[row, :len(item)] = 1
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    def save(self, model: nn.Module, directory: Path, labels: Sequence[str]) -> None:
        assert isinstance(model, EncoderClassifier)
        directory.mkdir(parents=True, exist_ok=True)
        model.encoder.save_pretrained(str(directory), safe_serialization=True)  # type: ignore[operator]
        head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
        save_file(head, str(directory / HEAD_FILE))
        self.tokenizer.save_pretrained(str(directory))
        write_meta(directory, TASK, labels, pooling="mean", head=HEAD_FILE,
                   maxSequenceLength=self.max_length)

    def load(self, directory: Path) -> tuple[nn.Module, list[str]]:
        meta = read_meta(directory, TASK)
        labels = [str(x) for x in meta["labels"]]
        encoder, hidden = self._encoder(str(directory))
        model = EncoderClassifier(encoder, hidden, len(labels))
        model.head.load_state_dict(load_file(str(directory / str(meta.get("head", HEAD_FILE)))))
        model.eval()
        return model, labels
