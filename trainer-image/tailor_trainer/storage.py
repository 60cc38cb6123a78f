"""One small interface over S3 (boto3, any endpoint such as MinIO) and local paths.

Every write is atomic for its reader: an S3 PUT replaces an object in one step, a multipart
upload appears only when it is completed, a download goes to `<name>.part` renamed into place,
and a local write goes to a temporary file that is renamed into place. Files move with boto3's
managed transfers, in parts above a threshold, and every transfer is checked for integrity
afterwards (`tailor_trainer.transfer`). Errors are classified here, once:
a missing bucket or object and refused credentials are permanent (the spec or the Secret must
change), anything about reaching the endpoint is retryable, and tried again for as long as
TAILOR_S3_RETRY_SECONDS allows (`tailor_trainer.outage`) before it fails the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from tailor_contract.common import Storage
from tailor_contract.uris import S3Uri, is_s3

from tailor_trainer import outage
from tailor_trainer.errors import (
    REASON_DATA_UNREADABLE,
    REASON_STORAGE_DENIED,
    REASON_STORAGE_ERROR,
    PermanentError,
    RetryableError,
    TrainerError,
)
from tailor_trainer.transfer import (
    MAX_PART_SIZE,
    Digest,
    IntegrityError,
    TransferSettings,
    check_copy,
    check_file,
    hash_file,
    stored,
)

_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
           "ExpiredToken", "AllAccessDisabled", "AuthorizationHeaderMalformed"}
_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}


class NotFound(Exception):
    """The object does not exist (callers decide whether that is an error)."""


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int


class Store:
    """Reads and writes `s3://bucket/key` URIs and absolute local paths alike."""

    def __init__(self, storage: Storage | None = None,
                 transfer: TransferSettings | None = None) -> None:
        """`transfer` defaults to the environment's settings (TransferSettings.from_env), a
        PermanentError when one of them is malformed."""
        storage = storage or Storage()
        self._transfer = transfer or TransferSettings.from_env()
        self._endpoint = storage.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or None
        self._region = storage.region
        self._config = Config(
            s3={"addressing_style": storage.addressing_style},
            retries={"mode": "standard", "max_attempts": 4},
            connect_timeout=10,
            read_timeout=60,
        )
        self._client: Any = None
        self.retry_seconds = outage.retry_seconds()
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client("s3", endpoint_url=self._endpoint,
                                        region_name=self._region, config=self._config)
        return self._client

    # --- error classification -----------------------------------------------------------------
    def _error(self, exc: Exception, uri: str, action: str) -> TrainerError:
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in _DENIED or status == 403:
                return PermanentError(REASON_STORAGE_DENIED,
                                      f"S3 refused to {action} {uri}: {code or status} (check "
                                      "spec.storage.credentialsSecret and the bucket policy)")
            if code in _MISSING or status == 404:
                return PermanentError(REASON_DATA_UNREADABLE,
                                      f"cannot {action} {uri}: {code or 'not found'}")
            return RetryableError(REASON_STORAGE_ERROR,
                                  f"S3 failed to {action} {uri}: {code or status}")
        if isinstance(exc, EndpointConnectionError | BotoCoreError):
            return RetryableError(REASON_STORAGE_ERROR,
                                  f"cannot reach S3 to {action} {uri}: {exc}")
        if isinstance(exc, PermissionError):
            return PermanentError(REASON_STORAGE_DENIED, f"cannot {action} {uri}: {exc}")
        if isinstance(exc, FileNotFoundError):
            return PermanentError(REASON_DATA_UNREADABLE, f"cannot {action} {uri}: not found")
        return RetryableError(REASON_STORAGE_ERROR, f"cannot {action} {uri}: {exc}")

    @staticmethod
    def _missing(exc: Exception) -> bool:
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            return code in {"NoSuchKey", "404", "NotFound"} or (
                status == 404 and code != "NoSuchBucket")
        return isinstance(exc, FileNotFoundError)

    # --- reads --------------------------------------------------------------------------------
    @outage.outlasting
    def get_bytes(self, uri: str) -> bytes:
        """The object's content; NotFound when it does not exist."""
        try:
            if is_s3(uri):
                loc = S3Uri.parse(uri)
                response = self.client.get_object(Bucket=loc.bucket, Key=loc.key)
                body: bytes = response["Body"].read()
                return body
            return Path(uri).read_bytes()
        except Exception as exc:
            if self._missing(exc):
                raise NotFound(uri) from exc
            raise self._error(exc, uri, "read") from exc

    def get_bytes_or_none(self, uri: str) -> bytes | None:
        try:
            return self.get_bytes(uri)
        except NotFound:
            return None

    @outage.outlasting
    def exists(self, uri: str) -> bool:
        try:
            if is_s3(uri):
                loc = S3Uri.parse(uri)
                self.client.head_object(Bucket=loc.bucket, Key=loc.key)
                return True
            return Path(uri).exists()
        except Exception as exc:
            if self._missing(exc):
                return False
            raise self._error(exc, uri, "check") from exc

    @outage.outlasting
    def download(self, uri: str, path: Path) -> None:
        """Stream the object to a local file (never whole into memory; in ranged parts above the
        multipart threshold), checked against the object's size and SHA-256."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if is_s3(uri):
                loc = S3Uri.parse(uri)
                obj = stored(self.client, loc.bucket, loc.key)
                tmp = path.with_name(path.name + ".part")
                try:
                    self.client.download_file(loc.bucket, loc.key, str(tmp),
                                              Config=self._transfer.config())
                    check_file(uri, tmp, obj)
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
                tmp.replace(path)
            else:
                shutil.copyfile(uri, path)
        except TrainerError:
            raise
        except Exception as exc:
            if self._missing(exc):
                raise NotFound(uri) from exc
            raise self._error(exc, uri, "download") from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under a prefix (recursively), in key order."""
        try:
            if is_s3(prefix):
                loc = S3Uri.parse(prefix)
                paginator = self.client.get_paginator("list_objects_v2")
                for page in paginator.paginate(Bucket=loc.bucket, Prefix=loc.key):
                    for item in page.get("Contents", []):
                        yield ObjectInfo(str(S3Uri(loc.bucket, item["Key"])), int(item["Size"]))
            else:
                root = Path(prefix)
                if root.is_file():
                    yield ObjectInfo(str(root), root.stat().st_size)
                elif root.is_dir():
                    for path in sorted(p for p in root.rglob("*") if p.is_file()):
                        yield ObjectInfo(str(path), path.stat().st_size)
        except TrainerError:
            raise
        except Exception as exc:
            raise self._error(exc, prefix, "list") from exc

    # --- writes -------------------------------------------------------------------------------
    @outage.outlasting
    def put_bytes(self, uri: str, data: bytes, *, if_absent: bool = False) -> bool:
        """Write an object; with if_absent, only when none exists (False when one did)."""
        try:
            if is_s3(uri):
                loc = S3Uri.parse(uri)
                if if_absent:
                    try:
                        self.client.put_object(Bucket=loc.bucket, Key=loc.key, Body=data,
                                               IfNoneMatch="*", ChecksumAlgorithm="SHA256")
                    except ClientError as exc:
                        code = str(exc.response.get("Error", {}).get("Code", ""))
                        if code in {"PreconditionFailed", "ConditionalRequestConflict"}:
                            return False
                        raise
                    return True
                # The store checks the SHA-256 sent with the body and refuses a corrupted one.
                self.client.put_object(Bucket=loc.bucket, Key=loc.key, Body=data,
                                       ChecksumAlgorithm="SHA256")
                return True
            path = Path(uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            if if_absent:
                try:
                    os.link(tmp, path)  # atomic create-if-absent
                except FileExistsError:
                    return False
                finally:
                    os.unlink(tmp)
                return True
            os.replace(tmp, path)
            return True
        except Exception as exc:
            raise self._error(exc, uri, "write") from exc

    @outage.outlasting
    def put_file(self, uri: str, path: Path) -> Digest:
        """Upload a file (in parts at or above the multipart threshold, never whole into memory)
        and check that the stored object is the file: size and SHA-256. Returns its Digest."""
        try:
            if is_s3(uri):
                loc = S3Uri.parse(uri)
                self.client.upload_file(str(path), loc.bucket, loc.key,
                                        ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                                        Config=self._transfer.config())
                return check_file(uri, path, stored(self.client, loc.bucket, loc.key))
            target = Path(uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
            os.close(fd)
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
            return hash_file(target)[0]
        except TrainerError:
            raise
        except Exception as exc:
            raise self._error(exc, uri, "write") from exc

    @outage.outlasting
    def delete(self, uri: str) -> None:
        try:
            if is_s3(uri):
                loc = S3Uri.parse(uri)
                self.client.delete_object(Bucket=loc.bucket, Key=loc.key)
            else:
                Path(uri).unlink(missing_ok=True)
        except Exception as exc:
            raise self._error(exc, uri, "delete") from exc

    def delete_prefix(self, prefix: str) -> None:
        for info in list(self.list(prefix)):
            self.delete(info.uri)

    @outage.outlasting
    def copy(self, source: str, target: str, expected: Digest | None = None) -> None:
        """Copy an object, of any size, and check the copy (`transfer.check_copy`); `expected`
        is the source's size and SHA-256 as the manifest records them, when known."""
        try:
            if is_s3(source) and is_s3(target):
                self._copy_s3(S3Uri.parse(source), S3Uri.parse(target), expected)
                return
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "object"
                self.download(source, local)
                digest = self.put_file(target, local)
            if expected is not None and digest != expected:
                raise IntegrityError(target, f"the copy is {digest}, the manifest says {expected}")
        except TrainerError:
            raise
        except Exception as exc:
            raise self._error(exc, source, "copy") from exc

    def _copy_s3(self, source: S3Uri, target: S3Uri, expected: Digest | None) -> None:
        """Below the threshold one CopyObject, whose whole-object SHA-256 the store computes;
        at or above it (and always above 5 GiB, CopyObject's limit) a multipart copy in the
        source's own part layout, so that checksums and ETags compare."""
        src = stored(self.client, source.bucket, source.key)
        extra: dict[str, str] = {"CopySourceIfMatch": f'"{src.etag}"'}  # pinned source
        if src.parts and src.size >= self._transfer.threshold:
            config = self._transfer.config(chunksize=src.part_size)
        else:
            config = self._transfer.config(threshold=MAX_PART_SIZE + 1)
            extra["ChecksumAlgorithm"] = "SHA256"
        self.client.copy({"Bucket": source.bucket, "Key": source.key}, target.bucket,
                         target.key, ExtraArgs=extra, Config=config)
        check_copy(str(target), src, stored(self.client, target.bucket, target.key), expected)
