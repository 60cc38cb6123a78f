"""Pieces shared by both kinds: the base model, durations, patterns, storage and names."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from tailor_contract import constants

# The patterns are the CRDs' own (tests/unit/api compares them); each is valid in Go's RE2, the
# API server's regexp dialect, and in Python.
S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"
HTTP_URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_1035_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 (a pattern, not a secret)
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}


class ApiModel(BaseModel):
    """Base of every spec model: camelCase aliases, unknown fields refused, no type coercion.

    Strict mode matters: the API server refuses "2" where an integer belongs, so the models must
    too, or an object could parse here that the schema refuses (and the other way round).
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _prune_nulls(cls, data: Any) -> Any:
        """Drop null fields, as the API server prunes nulls from non-nullable fields.

        A null then gets the field's default, like an absent field (Helm templates often
        render an empty value as null). Any mapping is accepted, e.g. Kopf's read-only spec.
        """
        if isinstance(data, Mapping):  # also read-only views such as kopf.Spec
            return {key: value for key, value in data.items() if value is not None}
        return data

    def to_api(self) -> dict[str, object]:
        """The object as the API server stores it once defaulted (camelCase, no unset fields)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def parse_duration(value: str) -> timedelta:
    """Parse a duration such as ``30s``, ``5m``, ``1h30m`` or ``1.5h`` (the CRDs' format).

    The CRDs accept a subset of Go's time.ParseDuration (units h, m, s), so that CEL's
    ``duration()`` and this function agree on every accepted value.
    """
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"invalid duration {value!r}: use a number and a unit h, m or s, e.g. 5m")
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
    return timedelta(seconds=seconds)


def duration_bounds(minimum: str | None = None, maximum: str | None = None) -> AfterValidator:
    """Bound a duration string like the CRD's CEL rule: ``Annotated[str, duration_bounds(...)]``."""
    low = parse_duration(minimum) if minimum else None
    high = parse_duration(maximum) if maximum else None

    def check(value: str) -> str:
        parsed = parse_duration(value)
        if low is not None and parsed < low:
            raise ValueError(f"must be at least {minimum}")
        if high is not None and parsed > high:
            raise ValueError(f"must be at most {maximum}")
        return value

    return AfterValidator(check)


def _unique(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise ValueError("must not contain duplicates")
    return values


Unique = AfterValidator(_unique)
"""Mirrors ``x-kubernetes-list-type: set``: the API server refuses duplicate items."""

S3Uri = Annotated[str, Field(min_length=6, max_length=2048, pattern=S3_URI_PATTERN)]
HttpUrl = Annotated[str, Field(max_length=1024, pattern=HTTP_URL_PATTERN)]
ColumnName = Annotated[str, Field(min_length=1, max_length=256)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Action = Literal["Fail", "Warn"]
Metric = Literal["accuracy", "macro-f1"]


class CredentialsSecret(ApiModel):
    """A Secret holding an S3 access key pair; credentials never appear in a spec."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
    access_key_id_key: Annotated[
        str, Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)
    ] = "AWS_ACCESS_KEY_ID"
    secret_access_key_key: Annotated[
        str, Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)
    ] = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 (the key name in the Secret)


class Storage(ApiModel):
    """How to reach the S3-compatible store."""

    endpoint: Annotated[str, Field(max_length=1024, pattern=HTTP_URL_PATTERN)] | None = None
    region: Annotated[str, Field(min_length=1, max_length=64)] = "us-east-1"
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    credentials_secret: CredentialsSecret | None = None


def name_errors(kind: str, name: str) -> list[str]:
    """The CRD's root rules on metadata.name, for callers that build names (e.g. retrains)."""
    limit = (
        constants.MAX_TRAININGJOB_NAME
        if kind == constants.TRAININGJOB_KIND
        else constants.MAX_DRIFTMONITOR_NAME
    )
    errors = []
    if len(name) > limit:
        errors.append(f"metadata.name must be at most {limit} characters")
    if not re.fullmatch(DNS_1035_LABEL_PATTERN, name):
        errors.append("metadata.name must be a DNS-1035 label")
    return errors
