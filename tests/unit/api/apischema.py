"""Helpers shared by the API unit tests: load the CRDs and apply their schema the server's way."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CRDS = REPO / "crds"
EXAMPLES = REPO / "examples"
INVALID = REPO / "tests" / "integration" / "api" / "invalid"

CRD_FILES = {"TrainingJob": CRDS / "trainingjobs.yaml", "DriftMonitor": CRDS / "driftmonitors.yaml"}

Schema = dict[str, Any]


def load_crd(kind: str) -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_FILES[kind].read_text())
    return crd


def root_schema(kind: str) -> Schema:
    schema: Schema = load_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def spec_schema(kind: str) -> Schema:
    schema: Schema = root_schema(kind)["properties"]["spec"]
    return schema


def examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


def load_example(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Structural defaulting as the API server does it, on a copy.

    A null where the schema does not allow one is pruned; then a missing property with a
    ``default`` gets a copy of it;
    then every property, defaulted ones included, is defaulted recursively, so ``default: {}``
    on an object fills in its children's defaults too.
    """
    value = copy.deepcopy(value)
    _default_in_place(value, schema)
    return value


def _default_in_place(value: Any, schema: Schema) -> None:
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties", {})
        for key, prop in properties.items():
            if key in value and value[key] is None and not prop.get("nullable"):
                del value[key]  # the server prunes a null it does not allow
            if "default" in prop and key not in value:
                value[key] = copy.deepcopy(prop["default"])
        additional = schema.get("additionalProperties")
        for key, child in value.items():
            if key in properties:
                _default_in_place(child, properties[key])
            elif isinstance(additional, dict):
                _default_in_place(child, additional)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default_in_place(item, schema["items"])


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with its dotted path (``[]`` for list items, ``{}`` for map values)."""
    yield path, schema
    for key, prop in schema.get("properties", {}).items():
        yield from walk(prop, f"{path}.{key}" if path else key)
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        yield from walk(additional, f"{path}{{}}")


def strip_transition_rules(schema: Schema) -> Schema:
    """A copy without the CEL rules that compare with ``oldSelf`` (immutability)."""
    schema = copy.deepcopy(schema)
    for _, node in walk(schema):
        rules = node.get("x-kubernetes-validations")
        if rules is None:
            continue
        kept = [rule for rule in rules if "oldSelf" not in rule["rule"]]
        if kept:
            node["x-kubernetes-validations"] = kept
        else:
            del node["x-kubernetes-validations"]
    return schema


def invalid_cases() -> list[Path]:
    return sorted(INVALID.glob("*.yaml"))


def expectation(path: Path) -> str:
    """The ``# expect: <substring>`` line of an invalid manifest."""
    for line in path.read_text().splitlines():
        if line.startswith("# expect:"):
            return line.removeprefix("# expect:").strip()
    raise AssertionError(f"{path.name} has no '# expect:' line")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
