"""Managed transfers: the multipart settings from the environment (each bad value a clear
PermanentError), the SHA-256 forms the store keeps, and the integrity checks' verdicts."""

from __future__ import annotations

import base64
import hashlib
import random
from pathlib import Path

import pytest
from tailor_contract.trainer_api import EXIT_PERMANENT, EXIT_RETRYABLE
from tailor_trainer.errors import REASON_INVALID_SPEC, REASON_STORAGE_ERROR, PermanentError
from tailor_trainer.storage import Store
from tailor_trainer.transfer import (
    DEFAULT_CHUNKSIZE,
    DEFAULT_THRESHOLD,
    ENV_MAX_CONCURRENCY,
    ENV_MULTIPART_CHUNKSIZE,
    ENV_MULTIPART_THRESHOLD,
    MIB,
    Digest,
    IntegrityError,
    Stored,
    TransferSettings,
    check_copy,
    check_file,
    hash_file,
    parse_size,
)


@pytest.mark.parametrize(("text", "size"), [
    ("67108864", 64 * MIB), ("64Mi", 64 * MIB), (" 5 Mi ", 5 * MIB), ("1Gi", 1024 * MIB),
    ("100M", 100_000_000), ("2G", 2_000_000_000), ("6000Ki", 6000 * 1024), ("7000k", 7_000_000),
])
def test_sizes_are_bytes_or_kubernetes_quantities(text: str, size: int) -> None:
    assert parse_size("X", text) == size


@pytest.mark.parametrize("text", ["abc", "64MB", "64 MiB", "-5Mi", "1.5Gi", "Mi", "64mi", "64ki", "64K"])
def test_a_malformed_size_names_the_variable_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(PermanentError) as error:
        parse_size(ENV_MULTIPART_CHUNKSIZE, text)
    assert error.value.reason == REASON_INVALID_SPEC
    assert error.value.exit_code == EXIT_PERMANENT
    assert f"{ENV_MULTIPART_CHUNKSIZE}={text!r} is not a size" in error.value.message
    assert "64Mi" in error.value.message


def test_defaults_when_unset_or_empty() -> None:
    defaults = TransferSettings(DEFAULT_THRESHOLD, DEFAULT_CHUNKSIZE, 8)
    assert TransferSettings.from_env({}) == defaults
    assert TransferSettings.from_env({ENV_MULTIPART_THRESHOLD: "", ENV_MULTIPART_CHUNKSIZE: " ",
                                      ENV_MAX_CONCURRENCY: ""}) == defaults
    assert DEFAULT_THRESHOLD == DEFAULT_CHUNKSIZE == 64 * MIB


def test_settings_from_the_environment_make_the_transfer_config() -> None:
    settings = TransferSettings.from_env({ENV_MULTIPART_THRESHOLD: "5Mi",
                                          ENV_MULTIPART_CHUNKSIZE: "16Mi",
                                          ENV_MAX_CONCURRENCY: "3"})
    assert settings == TransferSettings(5 * MIB, 16 * MIB, 3)
    config = settings.config()
    assert (config.multipart_threshold, config.multipart_chunksize, config.max_concurrency) == (
        5 * MIB, 16 * MIB, 3)
    assert config.preferred_transfer_client == "classic"
    assert settings.config(chunksize=7 * MIB).multipart_chunksize == 7 * MIB


@pytest.mark.parametrize(("name", "value", "bound"), [
    (ENV_MULTIPART_THRESHOLD, "4Mi", "between 5242880 and 5368709120"),
    (ENV_MULTIPART_CHUNKSIZE, "1024", "between 5242880 and 5368709120"),
    (ENV_MULTIPART_CHUNKSIZE, "6Gi", "between 5242880 and 5368709120"),
    (ENV_MAX_CONCURRENCY, "0", "between 1 and 64"),
    (ENV_MAX_CONCURRENCY, "65", "between 1 and 64"),
])
def test_an_out_of_range_value_says_the_range(name: str, value: str, bound: str) -> None:
    with pytest.raises(PermanentError) as error:
        TransferSettings.from_env({name: value})
    assert error.value.reason == REASON_INVALID_SPEC
    assert f"{name}=" in error.value.message and "out of range" in error.value.message
    assert bound in error.value.message


@pytest.mark.parametrize("value", ["many", "2.5", "-1"])
def test_a_concurrency_that_is_no_whole_number_is_refused(value: str) -> None:
    with pytest.raises(PermanentError, match=f"{ENV_MAX_CONCURRENCY}='{value}' is not a whole"):
        TransferSettings.from_env({ENV_MAX_CONCURRENCY: value})


def test_the_store_refuses_a_bad_environment_when_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_MULTIPART_THRESHOLD, "big")
    with pytest.raises(PermanentError, match=f"{ENV_MULTIPART_THRESHOLD}='big'"):
        Store()
    assert Store(transfer=TransferSettings()) is not None  # explicit settings skip the env


def write(path: Path, size: int) -> bytes:
    data = random.Random(size).randbytes(size)
    path.write_bytes(data)
    return data


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@pytest.mark.parametrize("size", [0, 1, 5 * MIB, 5 * MIB + 1, 12 * MIB + 123])
def test_hash_file_gives_the_whole_and_the_composite_sha256(tmp_path: Path, size: int) -> None:
    data = write(tmp_path / "f", size)
    part = 5 * MIB
    digest, whole = hash_file(tmp_path / "f")
    assert digest == Digest(hashlib.sha256(data).hexdigest(), size)
    assert whole == b64(hashlib.sha256(data).digest())
    parts = [data[i:i + part] for i in range(0, size, part)] or [b""]
    expected = b64(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest())
    assert hash_file(tmp_path / "f", part) == (digest, expected)


def stored_as(size: int, sha256: str | None, *, composite: bool = False, parts: int = 0,
              part_size: int = 0, etag: str = "e", kms: bool = False) -> Stored:
    return Stored(size, etag, sha256, composite, parts, part_size, kms)


def test_check_file_accepts_the_same_content_and_returns_its_digest(tmp_path: Path) -> None:
    data = write(tmp_path / "f", 11 * MIB)
    _, composite = hash_file(tmp_path / "f", 5 * MIB)
    obj = stored_as(len(data), composite, composite=True, parts=3, part_size=5 * MIB)
    assert check_file("s3://b/k", tmp_path / "f", obj).sha256 == hashlib.sha256(data).hexdigest()
    assert check_file("s3://b/k", tmp_path / "f", stored_as(len(data), None)).size == len(data)


def test_check_file_refuses_another_size_or_checksum_as_retryable(tmp_path: Path) -> None:
    data = write(tmp_path / "f", 1000)
    _, whole = hash_file(tmp_path / "f")
    with pytest.raises(IntegrityError, match="the object has 999 bytes, the file 1000") as error:
        check_file("s3://b/k", tmp_path / "f", stored_as(999, whole))
    assert error.value.exit_code == EXIT_RETRYABLE and not error.value.permanent
    assert error.value.reason == REASON_STORAGE_ERROR
    assert "integrity check failed for s3://b/k" in error.value.message
    other = b64(hashlib.sha256(data + b"x").digest())
    with pytest.raises(IntegrityError, match=r"SHA-256 checksum .* is not the file's"):
        check_file("s3://b/k", tmp_path / "f", stored_as(1000, other))


def test_check_copy_compares_a_whole_object_checksum_with_the_manifest() -> None:
    expected = Digest(hashlib.sha256(b"model").hexdigest(), 5)
    good = stored_as(5, b64(hashlib.sha256(b"model").digest()))
    check_copy("s3://b/t", stored_as(5, None), good, expected)
    bad = stored_as(5, b64(hashlib.sha256(b"mode1").digest()))
    with pytest.raises(IntegrityError, match="is not the manifest's"):
        check_copy("s3://b/t", stored_as(5, None), bad, expected)
    with pytest.raises(IntegrityError, match="the source has 6 bytes, the manifest says 5"):
        check_copy("s3://b/t", stored_as(6, None), good, expected)


def in_parts(size: int, sha256: str | None, etag: str) -> Stored:
    return stored_as(size, sha256, composite=sha256 is not None, parts=3, part_size=5 * MIB,
                     etag=etag)


def test_check_copy_of_parts_compares_checksums_else_etags_in_the_same_layout() -> None:
    source = in_parts(12 * MIB, "abc", "x-3")
    check_copy("s3://b/t", source, in_parts(12 * MIB, "abc", "y-3"), None)
    with pytest.raises(IntegrityError, match="SHA-256 checksum abd is not the source's abc"):
        check_copy("s3://b/t", source, in_parts(12 * MIB, "abd", "x-3"), None)
    # MinIO's UploadPartCopy keeps no checksum: the ETags compare
    check_copy("s3://b/t", source, in_parts(12 * MIB, None, "x-3"), None)
    with pytest.raises(IntegrityError, match="its ETag y-3 is not the source's x-3"):
        check_copy("s3://b/t", source, in_parts(12 * MIB, None, "y-3"), None)
    with pytest.raises(IntegrityError, match="the copy has 1 bytes, the source 12582912"):
        check_copy("s3://b/t", source, in_parts(1, None, "x-3"), None)


def test_check_copy_falls_back_to_the_size_when_nothing_compares(
        caplog: pytest.LogCaptureFixture) -> None:
    source = stored_as(10, None, etag="a", kms=True)
    check_copy("s3://b/t", source, stored_as(10, None, etag="b", kms=True), None)
    assert "checked its size only" in caplog.text


def test_a_local_copy_is_checked_against_the_manifest(tmp_path: Path) -> None:
    data = write(tmp_path / "src", 100)
    store = Store(transfer=TransferSettings())
    digest = store.put_file(str(tmp_path / "a" / "obj"), tmp_path / "src")
    assert digest == Digest(hashlib.sha256(data).hexdigest(), 100)
    store.copy(str(tmp_path / "a" / "obj"), str(tmp_path / "b" / "obj"), digest)
    assert (tmp_path / "b" / "obj").read_bytes() == data
    with pytest.raises(IntegrityError, match="the manifest says"):
        store.copy(str(tmp_path / "a" / "obj"), str(tmp_path / "c" / "obj"),
                   Digest(digest.sha256, 101))
