"""Large artifacts against the stack's MinIO, with the multipart threshold lowered to S3's
smallest part (5 MiB) so that a 12 MiB file takes every multipart path: upload, ranged
download, UploadPartCopy (the promotion copy). Content and checksum are checked after each; a
failed part leaves no object behind; a corrupted download or a copy that disagrees with the
manifest is a retryable IntegrityError."""

from __future__ import annotations

import hashlib
import json
import random
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from conftest import S3
from tailor_contract.common import Storage
from tailor_trainer import artifacts
from tailor_trainer.errors import RetryableError
from tailor_trainer.storage import Store
from tailor_trainer.transfer import (
    MIB,
    Digest,
    IntegrityError,
    TransferSettings,
    hex_to_base64,
    stored,
)

SIZE = 12 * MIB + 123  # three parts of 5, 5 and 2 MiB


@pytest.fixture
def store(s3: S3, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return Store(Storage(endpoint=s3.endpoint, addressing_style="path"),
                 TransferSettings(threshold=5 * MIB, chunksize=5 * MIB, concurrency=3))


@pytest.fixture
def prefix(s3: S3) -> Iterator[str]:
    name = f"large-{secrets.token_hex(3)}/"
    yield name
    for key in s3.keys(name):
        s3.client.delete_object(Bucket=s3.bucket, Key=key)


def big_file(path: Path, size: int = SIZE) -> bytes:
    data = random.Random(7).randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def head(s3: S3, key: str) -> dict[str, Any]:
    return dict(s3.client.head_object(Bucket=s3.bucket, Key=key, ChecksumMode="ENABLED"))


def test_upload_download_and_copy_in_parts_keep_content_and_checksum(
        store: Store, s3: S3, prefix: str, tmp_path: Path) -> None:
    data = big_file(tmp_path / "model.bin")
    digest = store.put_file(s3.uri(f"{prefix}up/model.bin"), tmp_path / "model.bin")
    assert digest == Digest(hashlib.sha256(data).hexdigest(), SIZE)
    uploaded = stored(s3.client, s3.bucket, f"{prefix}up/model.bin")
    assert (uploaded.parts, uploaded.part_size, uploaded.composite) == (3, 5 * MIB, True)
    assert head(s3, f"{prefix}up/model.bin")["ChecksumSHA256"].endswith("-3")
    assert s3.get(f"{prefix}up/model.bin") == data

    store.download(s3.uri(f"{prefix}up/model.bin"), tmp_path / "down" / "model.bin")
    assert (tmp_path / "down" / "model.bin").read_bytes() == data
    assert not (tmp_path / "down" / "model.bin.part").exists()

    store.copy(s3.uri(f"{prefix}up/model.bin"), s3.uri(f"{prefix}copy/model.bin"), digest)
    copied = stored(s3.client, s3.bucket, f"{prefix}copy/model.bin")
    assert (copied.size, copied.parts, copied.part_size) == (SIZE, 3, 5 * MIB)
    assert copied.etag == uploaded.etag  # same parts, same MD5s: the check that ran
    assert s3.get(f"{prefix}copy/model.bin") == data


def test_a_copy_below_the_threshold_gets_the_manifests_sha256(
        store: Store, s3: S3, prefix: str, tmp_path: Path) -> None:
    data = big_file(tmp_path / "config.json", 3 * MIB)
    digest = store.put_file(s3.uri(f"{prefix}small"), tmp_path / "config.json")
    store.copy(s3.uri(f"{prefix}small"), s3.uri(f"{prefix}small-copy"), digest)
    copied = head(s3, f"{prefix}small-copy")
    assert copied["ChecksumSHA256"] == hex_to_base64(hashlib.sha256(data).hexdigest())
    with pytest.raises(IntegrityError, match="is not the manifest's") as error:
        store.copy(s3.uri(f"{prefix}small"), s3.uri(f"{prefix}small-bad"),
                   Digest(hashlib.sha256(b"other").hexdigest(), 3 * MIB))
    assert isinstance(error.value, RetryableError)


def test_promotion_copies_a_multipart_model_checked_against_the_manifest(
        store: Store, s3: S3, prefix: str, tmp_path: Path) -> None:
    model = tmp_path / "model"
    weights = big_file(model / "model.safetensors")
    (model / "config.json").write_text('{"labels": 3}')
    run = s3.uri(f"{prefix}runs/r1/")
    files = artifacts.upload_dir(store, model, run + "model")
    assert files["model.safetensors"] == {"sha256": hashlib.sha256(weights).hexdigest(),
                                          "size": SIZE}
    metrics = {"metric": "accuracy", "test": {"candidate": {"accuracy": 0.9}}}
    target = artifacts.promote(store, s3.uri(f"{prefix}m/"), "r1", run, files, metrics)
    assert target == s3.uri(f"{prefix}m/production/r1/model/")
    assert s3.get(f"{prefix}m/production/r1/model/model.safetensors") == weights
    assert s3.json(f"{prefix}m/production.json")["files"] == files


def test_a_failed_part_leaves_no_object_and_no_upload_behind(
        store: Store, s3: S3, prefix: str, tmp_path: Path) -> None:
    big_file(tmp_path / "model.bin")

    def fail_second_part(params: dict[str, Any], **_: Any) -> None:
        if params.get("PartNumber") == 2:
            raise EndpointConnectionError(endpoint_url=s3.endpoint)

    store.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_second_part)
    with pytest.raises(RetryableError, match="cannot reach S3"):
        store.put_file(s3.uri(f"{prefix}torn/model.bin"), tmp_path / "model.bin")
    assert s3.keys(f"{prefix}torn/") == []
    # MinIO lists an object's uploads only when asked with its whole key.
    uploads = s3.client.list_multipart_uploads(Bucket=s3.bucket,
                                               Prefix=f"{prefix}torn/model.bin")
    assert uploads.get("Uploads", []) == []  # aborted, not left to a lifecycle rule


def test_a_corrupted_download_is_refused_and_not_left_behind(
        store: Store, s3: S3, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big_file(tmp_path / "model.bin")
    store.put_file(s3.uri(f"{prefix}dl/model.bin"), tmp_path / "model.bin")
    download = store.client.download_file

    def flip_a_byte(bucket: str, key: str, filename: str, **kwargs: Any) -> None:
        download(bucket, key, filename, **kwargs)
        with open(filename, "r+b") as handle:
            handle.seek(6 * MIB)
            byte = handle.read(1)
            handle.seek(6 * MIB)
            handle.write(bytes([byte[0] ^ 1]))

    monkeypatch.setattr(store.client, "download_file", flip_a_byte)
    with pytest.raises(IntegrityError, match=r"SHA-256 checksum .* is not the file's"):
        store.download(s3.uri(f"{prefix}dl/model.bin"), tmp_path / "got" / "model.bin")
    assert list((tmp_path / "got").iterdir()) == []


def test_small_documents_carry_a_sha256_checksum(store: Store, s3: S3, prefix: str) -> None:
    body = json.dumps({"a": 1}).encode()
    store.put_bytes(s3.uri(f"{prefix}doc.json"), body)
    assert head(s3, f"{prefix}doc.json")["ChecksumSHA256"] == hex_to_base64(
        hashlib.sha256(body).hexdigest())
    assert store.put_bytes(s3.uri(f"{prefix}once.json"), body, if_absent=True)
    assert not store.put_bytes(s3.uri(f"{prefix}once.json"), b"{}", if_absent=True)
    assert s3.get(f"{prefix}once.json") == body
