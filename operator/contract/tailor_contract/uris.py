"""Object-store URIs, parsed in one place: ``s3://bucket/key`` or an absolute local path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

S3_SCHEME: Final = "s3://"


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        """``s3://bucket/some/key`` -> (``bucket``, ``some/key``); the key may be empty."""
        if not is_s3(uri):
            raise ValueError(f"not an s3:// URI: {uri!r}")
        bucket, _, key = uri[len(S3_SCHEME):].partition("/")
        if not bucket:
            raise ValueError(f"s3 URI without a bucket: {uri!r}")
        return cls(bucket, key)

    @property
    def path(self) -> str:
        """``bucket/key``: the form pyarrow's S3FileSystem takes."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.path}"


def join(base: str, *parts: str) -> str:
    """``base`` and ``parts`` joined with single slashes, a trailing slash on the last kept."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.lstrip('/')}"
    return out
