"""The object store a DriftMonitor reads and writes (S3 or an S3-compatible store such as MinIO).

Credentials never appear in a spec: `storage` resolves the spec's `storage` block, reading the
access key pair from the Secret it names (a `get` of that one Secret) and filling in the
operator's default endpoint. `read_json` reads one object (the reference profile, the
production pointer) with boto3; `s3_filesystem` gives the pyarrow filesystem that
`tailor.drift` streams logs from and writes production data to.

boto3 and pyarrow are imported on first use, with the rest of the drift stack: an operator
without DriftMonitors never loads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tailor_contract.common import Storage as StorageSpec
from tailor_contract.uris import S3Uri

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from tailor.io.k8s import Kube


class SecretNotFound(LookupError):
    """The credentials Secret, or one of its keys, does not exist."""


class ObjectNotFound(LookupError):
    """The object does not exist."""


@dataclass(frozen=True)
class Storage:
    """How to reach the store, credentials resolved."""

    endpoint: str | None = None
    region: str = "us-east-1"
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)


def storage(kube: Kube, namespace: str, spec: StorageSpec, *,
            default_endpoint: str | None = None, default_region: str | None = None) -> Storage:
    """The spec's store: its endpoint (else the operator's default) and the key pair from the
    Secret it names (else the default credential chain: environment, IRSA, instance profile)."""
    endpoint, region = spec.endpoint, spec.region
    if not endpoint and default_endpoint:
        endpoint, region = default_endpoint, default_region or spec.region
    secret = spec.credentials_secret
    if secret is None:
        return Storage(endpoint, region)
    access = kube.secret_value(namespace, secret.name, secret.access_key_id_key)
    key = kube.secret_value(namespace, secret.name, secret.secret_access_key_key)
    if access is None or key is None:
        raise SecretNotFound(f"Secret {secret.name!r} or its keys "
                             f"{secret.access_key_id_key!r}/{secret.secret_access_key_key!r} "
                             f"not found in {namespace}")
    return Storage(endpoint, region, access, key)


def read_json(uri: str, store: Storage) -> dict[str, Any]:
    """One JSON object of the store; ObjectNotFound if there is none at `uri`, ValueError if it
    is not JSON."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=store.endpoint, region_name=store.region,
                      aws_access_key_id=store.access_key,
                      aws_secret_access_key=store.secret_key)
    location = S3Uri.parse(uri)
    try:
        data: dict[str, Any] = json.loads(
            s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read())
    except s3.exceptions.NoSuchKey as error:
        raise ObjectNotFound(f"{uri} does not exist") from error
    return data


def filesystem(store: Storage) -> pafs.S3FileSystem:
    """The store as a pyarrow filesystem (what `tailor.drift` reads logs through)."""
    return s3_filesystem(endpoint=store.endpoint, region=store.region,
                         access_key=store.access_key, secret_key=store.secret_key)


def s3_filesystem(
    *,
    endpoint: str | None = None,
    region: str = "us-east-1",
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
) -> pafs.S3FileSystem:
    """An arrow S3 filesystem for AWS S3 or an S3-compatible store such as MinIO.

    Without keys, arrow's default chain (environment, IRSA web identity, instance profile) is used.
    """
    import pyarrow.fs as pafs

    kwargs: dict[str, object] = {"region": region}
    if endpoint:
        scheme, _, rest = endpoint.partition("://")
        kwargs["endpoint_override"] = rest or scheme
        kwargs["scheme"] = scheme if rest else "https"
    if access_key and secret_key:
        kwargs.update(access_key=access_key, secret_key=secret_key, session_token=session_token)
    return pafs.S3FileSystem(**kwargs)
