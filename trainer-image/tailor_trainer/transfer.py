"""Managed S3 transfers: multipart settings, and the integrity check after every transfer.

A file at or above `TAILOR_S3_MULTIPART_THRESHOLD` moves in parts of
`TAILOR_S3_MULTIPART_CHUNKSIZE` (boto3's transfer manager: parallel part uploads, ranged GETs,
UploadPartCopy), which lifts S3's 5 GiB limit on a single PUT and a single CopyObject. A
multipart upload becomes visible only when it is completed, all at once: a reader never sees
part of an object under its key.

What the store says about an object (`Stored`: size, SHA-256 checksum, part layout, ETag) is
checked against what was sent, after every upload, download and copy:

- uploads carry `ChecksumAlgorithm=SHA256`: S3 (and MinIO) check each part on arrival and keep
  a checksum of the object, the SHA-256 of the whole object when sent in one request, else the
  *composite* one (the SHA-256 of the parts' SHA-256 digests, suffixed `-<parts>`). The file is
  hashed locally with the object's part layout and the two must agree; the same pass gives the
  whole file's SHA-256 that the manifest records.
- a download is hashed the same way against the object's checksum.
- a copy below the threshold is one CopyObject with `ChecksumAlgorithm=SHA256`: the store
  computes the whole object's SHA-256, compared with the manifest's. Above it the copy keeps the
  source's part layout, so the copy's checksum, or else its ETag (MinIO computes no checksum
  for UploadPartCopy, measured), must equal the source's.

A disagreement is an `IntegrityError`, retryable: the transfer is done again by the restarted
worker group. An object carrying no comparable checksum is checked by size only, with a warning.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig

from tailor_trainer.errors import (
    REASON_INVALID_SPEC,
    REASON_STORAGE_ERROR,
    PermanentError,
    RetryableError,
)

ENV_MULTIPART_THRESHOLD = "TAILOR_S3_MULTIPART_THRESHOLD"
ENV_MULTIPART_CHUNKSIZE = "TAILOR_S3_MULTIPART_CHUNKSIZE"
ENV_MAX_CONCURRENCY = "TAILOR_S3_MAX_CONCURRENCY"

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3's smallest part (but the last)
MAX_PART_SIZE = 5 * 1024 * MIB  # S3's largest part, and largest single PUT or CopyObject
DEFAULT_THRESHOLD = 64 * MIB
DEFAULT_CHUNKSIZE = 64 * MIB
DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 64
READ_BLOCK = 8 * MIB

_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
_SIZE = re.compile(r"^\s*(\d+)\s*(Ki|Mi|Gi|k|M|G)?\s*$")

log = logging.getLogger(__name__)


class IntegrityError(RetryableError):
    """The store's record of an object disagrees with what was sent: retry the transfer."""

    def __init__(self, uri: str, what: str) -> None:
        super().__init__(REASON_STORAGE_ERROR, f"integrity check failed for {uri}: {what}; the "
                                               "transfer will be retried")


def parse_size(name: str, text: str) -> int:
    """A byte count written as a Kubernetes quantity: `67108864`, `64Mi`, `1Gi`, `100M`."""
    match = _SIZE.match(text)
    if match is None:
        raise PermanentError(REASON_INVALID_SPEC,
                             f"{name}={text!r} is not a size: give bytes or a number with Ki, "
                             "Mi, Gi (powers of 1024) or k, M, G (powers of 1000), e.g. 64Mi")
    return int(match.group(1)) * _UNITS[match.group(2) or ""]


def _bounded(name: str, value: int, low: int, high: int, why: str) -> int:
    if not low <= value <= high:
        raise PermanentError(REASON_INVALID_SPEC, f"{name}={value} is out of range: it must be "
                                                  f"between {low} and {high} ({why})")
    return value


@dataclass(frozen=True)
class TransferSettings:
    """When and how boto3 splits a transfer; read from the environment (`from_env`)."""

    threshold: int = DEFAULT_THRESHOLD
    chunksize: int = DEFAULT_CHUNKSIZE
    concurrency: int = DEFAULT_CONCURRENCY

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TransferSettings:
        """The settings in TAILOR_S3_MULTIPART_THRESHOLD, TAILOR_S3_MULTIPART_CHUNKSIZE and
        TAILOR_S3_MAX_CONCURRENCY (unset or empty: the default); a bad value is a
        PermanentError naming the variable."""
        env = os.environ if env is None else env
        sizes = {}
        for name, default in ((ENV_MULTIPART_THRESHOLD, DEFAULT_THRESHOLD),
                              (ENV_MULTIPART_CHUNKSIZE, DEFAULT_CHUNKSIZE)):
            text = env.get(name, "").strip()
            value = parse_size(name, text) if text else default
            sizes[name] = _bounded(name, value, MIN_PART_SIZE, MAX_PART_SIZE,
                                   "bytes: S3 parts are 5 MiB to 5 GiB")
        text = env.get(ENV_MAX_CONCURRENCY, "").strip()
        if text and not text.isdigit():
            raise PermanentError(REASON_INVALID_SPEC,
                                 f"{ENV_MAX_CONCURRENCY}={text!r} is not a whole number")
        concurrency = _bounded(ENV_MAX_CONCURRENCY, int(text) if text else DEFAULT_CONCURRENCY,
                               1, MAX_CONCURRENCY, "parallel requests per transfer")
        return cls(sizes[ENV_MULTIPART_THRESHOLD], sizes[ENV_MULTIPART_CHUNKSIZE], concurrency)

    def config(self, *, threshold: int | None = None, chunksize: int | None = None
               ) -> TransferConfig:
        """boto3's TransferConfig (the classic transfer manager, whose settings it honours)."""
        return TransferConfig(multipart_threshold=threshold or self.threshold,
                              multipart_chunksize=chunksize or self.chunksize,
                              max_concurrency=self.concurrency,
                              preferred_transfer_client="classic")


@dataclass(frozen=True)
class Digest:
    """A file's size and SHA-256 (hex), as the manifest records them."""

    sha256: str
    size: int

    def manifest_entry(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Stored:
    """What the store says about one object (`stored`)."""

    size: int
    etag: str
    sha256: str | None  # base64, without the "-<parts>" suffix of a composite checksum
    composite: bool  # sha256 is over the parts' digests, not the content
    parts: int  # 0 when it was written in one request
    part_size: int  # the first part's size when parts > 0
    encrypted_by_kms: bool  # its ETag is then no MD5 and cannot be compared


def stored(client: Any, bucket: str, key: str) -> Stored:
    """HEAD the object (with its checksum), and its first part when it was uploaded in parts."""
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    etag = str(head.get("ETag", "")).strip('"')
    checksum = head.get("ChecksumSHA256")
    parts = int(etag.rpartition("-")[2]) if re.fullmatch(r".+-\d+", etag) else 0
    composite = bool(checksum) and ("-" in str(checksum)
                                     or head.get("ChecksumType") == "COMPOSITE")
    if composite and "-" in str(checksum):
        checksum, _, count = str(checksum).rpartition("-")
        parts = int(count)
    part_size = 0
    if parts:
        first = client.head_object(Bucket=bucket, Key=key, PartNumber=1)
        parts = int(first.get("PartsCount", parts))
        part_size = int(first["ContentLength"])
    kms = str(head.get("ServerSideEncryption", "")).startswith("aws:kms") or bool(
        head.get("SSECustomerAlgorithm"))
    return Stored(int(head["ContentLength"]), etag, checksum, composite, parts, part_size, kms)


def hash_file(path: Path, part_size: int = 0) -> tuple[Digest, str]:
    """One read of the file: its Digest, and its SHA-256 in the store's form (base64; for
    `part_size` > 0 the composite over parts of that size, without the `-<parts>` suffix)."""
    whole = hashlib.sha256()
    part_digests: list[bytes] = []
    part = hashlib.sha256()
    in_part = size = 0
    with path.open("rb") as handle:
        while block := handle.read(READ_BLOCK):
            whole.update(block)
            size += len(block)
            view = memoryview(block)
            while part_size and len(view):
                take = min(part_size - in_part, len(view))
                part.update(view[:take])
                view, in_part = view[take:], in_part + take
                if in_part == part_size:
                    part_digests.append(part.digest())
                    part, in_part = hashlib.sha256(), 0
    if in_part or (part_size and not part_digests):
        part_digests.append(part.digest())
    form = hashlib.sha256(b"".join(part_digests)).digest() if part_size else whole.digest()
    return Digest(whole.hexdigest(), size), base64.b64encode(form).decode()


def hex_to_base64(sha256: str) -> str:
    return base64.b64encode(bytes.fromhex(sha256)).decode()


def check_file(uri: str, path: Path, obj: Stored) -> Digest:
    """After an upload or a download: the local file and the object agree in size and, when the
    object carries one, SHA-256. Returns the file's Digest."""
    digest, form = hash_file(path, obj.part_size if obj.composite else 0)
    if digest.size != obj.size:
        raise IntegrityError(uri, f"the object has {obj.size} bytes, the file {digest.size}")
    if obj.sha256 is None:
        log.warning("%s carries no SHA-256 checksum: checked its size only", uri)
    elif obj.sha256 != form:
        raise IntegrityError(uri, f"its SHA-256 checksum {obj.sha256} is not the file's {form}")
    return digest


def check_copy(uri: str, source: Stored, target: Stored, expected: Digest | None) -> None:
    """After a copy: the target has the source's size (and the manifest's), and the strongest
    comparison available agrees: the target's whole-object SHA-256 with the manifest's, else
    the target's checksum or ETag with the source's when both have the same part layout."""
    if expected is not None and source.size != expected.size:
        raise IntegrityError(uri, f"the source has {source.size} bytes, the manifest says "
                                  f"{expected.size}")
    if target.size != source.size:
        raise IntegrityError(uri, f"the copy has {target.size} bytes, the source {source.size}")
    same_layout = (target.parts, target.part_size) == (source.parts, source.part_size)
    comparable = source.sha256 is not None and source.composite == target.composite
    if expected is not None and target.sha256 is not None and not target.composite:
        if target.sha256 != hex_to_base64(expected.sha256):
            raise IntegrityError(uri, f"its SHA-256 {target.sha256} is not the manifest's "
                                      f"{hex_to_base64(expected.sha256)}")
    elif same_layout and target.sha256 is not None and comparable:
        if target.sha256 != source.sha256:
            raise IntegrityError(uri, f"its SHA-256 checksum {target.sha256} is not the "
                                      f"source's {source.sha256}")
    elif same_layout and not (source.encrypted_by_kms or target.encrypted_by_kms):
        if target.etag != source.etag:
            raise IntegrityError(uri, f"its ETag {target.etag} is not the source's "
                                      f"{source.etag}")
    else:
        log.warning("%s: no checksum to compare with its source: checked its size only", uri)
