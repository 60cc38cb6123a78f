"""Serving in the demo's story: predict with the model in production, log what it predicted.

The model served is the one `<model uri>/production.json` names (the pointer the trainer
replaces in one PUT when it promotes a run, `tailor_trainer.artifacts.promote`), never "the
last run": a run the gate rejected must not answer production traffic, and a retrain that was
promoted must, from the moment its pointer is written. The pointer's `files` list exactly what
was copied to its `modelUri`, so the model is read as promoted, not as trained.

Each prediction is logged with its own timestamp (`production/predictions/<part>.jsonl`) and
its label arrives later (`production/labels/<part>.jsonl`), as a DriftMonitor expects. The
articles of a part are served in a seeded random order, so that the most recent predictions,
which a retrain holds out to be judged on, cover every topic.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailor_contract.trainer_api import PRODUCTION_POINTER

SERVE_SEED = 13
"""Seeds the order in which each part's articles are served."""


@dataclass(frozen=True)
class Served:
    """What one part of the feed got: who predicted, how well, and where the logs went."""

    part: str
    run_id: str
    examples: int
    accuracy: float
    shifted: bool
    logs: str
    """The S3 URI of the part's prediction log."""


def production_pointer(s3: Any, bucket: str, model_prefix: str) -> dict[str, Any]:
    """`<model uri>/production.json`; a clear error when nothing was ever promoted."""
    key = f"{model_prefix}{PRODUCTION_POINTER}"
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise AssertionError(f"no model in production: s3://{bucket}/{key} does not exist "
                             "(nothing was promoted)") from None
    pointer: dict[str, Any] = json.loads(body)
    return pointer


class ProductionModel:
    """The model production.json names, loaded through the trainer's text recipe."""

    def __init__(self, s3: Any, bucket: str, model_prefix: str) -> None:
        self.pointer = production_pointer(s3, bucket, model_prefix)
        self.run_id = str(self.pointer["runId"])

        from tailor_trainer.recipes.base import read_meta
        from tailor_trainer.recipes.text import TASK, TextRecipe

        source_bucket, _, prefix = str(self.pointer["modelUri"]).removeprefix(
            "s3://").partition("/")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp)
            for relative in self.pointer["files"]:
                target = local / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(source_bucket, f"{prefix.rstrip('/')}/{relative}",
                                 str(target))
            max_length = int(read_meta(local, TASK).get("maxSequenceLength", 128))
            self.recipe = TextRecipe(local, max_length)
            self.model, self.labels = self.recipe.load(local)

    def predict(self, texts: Sequence[str], batch: int = 32) -> list[str]:
        import torch

        predictions: list[str] = []
        with torch.no_grad():
            for start in range(0, len(texts), batch):
                inputs = self.recipe.collate(self.recipe.encode(texts[start:start + batch]),
                                             train=False)
                logits = self.model(inputs["input_ids"], inputs.get("attention_mask"))
                predictions += [self.labels[i] for i in logits.argmax(-1).tolist()]
        return predictions


def quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def serving_order(rows: Sequence[dict[str, str]], part: str) -> list[dict[str, str]]:
    """The order in which a part's articles are served: seeded, topics mixed (the corpus lists
    them topic by topic, and a retrain's recent holdout is the last 30% of them)."""
    order = list(rows)
    random.Random(zlib.crc32(f"{SERVE_SEED}:{part}".encode())).shuffle(order)
    return order


def serve(s3: Any, bucket: str, model_prefix: str, rows: Sequence[dict[str, str]],
          transform: Callable[[str], str] | None, part: str) -> Served:
    """Predict `rows` (their texts through `transform`, the feed's shift) with the production
    model; write the prediction log and the late labels; the accuracy."""
    quiet_transformers()
    model = ProductionModel(s3, bucket, model_prefix)
    order = serving_order(rows, part)
    texts = [transform(r["text"]) if transform else r["text"] for r in order]
    started = time.time()
    predictions = model.predict(texts)
    # One timestamp per prediction, in serving order, all after the model was loaded: after
    # its promotion, which is where a DriftMonitor following it starts counting.
    stamps = [started + i * 0.001 for i in range(len(order))]
    logs = [{"id": f"{part}-{r['id']}", "timestamp": t, "text": text, "prediction": p}
            for r, t, text, p in zip(order, stamps, texts, predictions, strict=True)]
    truth = [{"id": f"{part}-{r['id']}", "label": r["label"], "timestamp": t + 1}
             for r, t in zip(order, stamps, strict=True)]
    logs_key = f"production/predictions/{part}.jsonl"
    for key, items in ((logs_key, logs), (f"production/labels/{part}.jsonl", truth)):
        s3.put_object(Bucket=bucket, Key=key,
                      Body="".join(json.dumps(i) + "\n" for i in items).encode())
    correct = sum(p == r["label"] for p, r in zip(predictions, order, strict=True))
    return Served(part=part, run_id=model.run_id, examples=len(order),
                  accuracy=correct / len(order), shifted=transform is not None,
                  logs=f"s3://{bucket}/{logs_key}")
