"""The typed models and the CRD schemas must parse and default every object the same way."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from apischema import (
    apply_defaults,
    documents,
    examples,
    expectation,
    invalid_cases,
    load_example,
    spec_schema,
)
from pydantic import BaseModel, ValidationError
from tailor_contract import DriftMonitorSpec, TrainingJobSpec, name_errors, parse_duration

MODELS: dict[str, type[BaseModel]] = {
    "TrainingJob": TrainingJobSpec,
    "DriftMonitor": DriftMonitorSpec,
}

CUSTOM: dict[str, Any] = {"task": "custom", "command": ["python", "-c", "print(1)"]}
TEXT: dict[str, Any] = {
    "task": "text-classification",
    "model": {"base": "s3://models/minilm/"},
    "data": {"uri": "s3://data/news.csv", "columns": {"text": "body"}},
    "output": {"uri": "s3://models/out"},
}
IMAGE: dict[str, Any] = {
    "task": "image-classification",
    "model": {"base": "/models/resnet"},
    "data": {"uri": "/data/index.parquet", "columns": {"image": "path"}},
    "output": {"uri": "s3://models/out"},
}
MONITOR: dict[str, Any] = {
    "model": {"trainingJob": "news"},
    "production": {"predictionsUri": "s3://logs/predictions/"},
}

# Small specs that leave almost everything to the defaults, plus every example.
MINIMAL = [
    ("TrainingJob", CUSTOM),
    ("TrainingJob", TEXT),
    ("TrainingJob", IMAGE),
    ("TrainingJob", {**TEXT, "storage": {"credentialsSecret": {"name": "s3"}}}),
    ("TrainingJob", {**CUSTOM, "env": [{"name": "A"}], "scheduling": {"tolerations": [{}]}}),
    ("TrainingJob", {**TEXT, "data": {**TEXT["data"], "split": None}}),
    ("TrainingJob", {**TEXT, "tuning": {"searchSpace": {"epochs": {"min": 2, "max": 4}}}}),
    ("TrainingJob", {**IMAGE, "tuning": {"earlyStopping": {"algorithm": "hyperband"},
                                         "searchSpace": {"imageSize": {"values": [224, 288]}}}}),
    ("DriftMonitor", MONITOR),
    ("DriftMonitor", {**MONITOR, "retrain": {"template": {"spec": CUSTOM}}}),
    ("DriftMonitor", {**MONITOR, "checks": {"featureDrift": {"threshold": 0.01}}}),
    ("DriftMonitor", {**MONITOR, "checks": {"featureDrift": {"method": "psi", "threshold": 0.2}}}),
]


def _cases() -> list[Any]:
    cases = [
        pytest.param(kind, spec, id=f"{kind}-minimal-{i}") for i, (kind, spec) in enumerate(MINIMAL)
    ]
    for path in examples():
        doc = load_example(path)
        cases.append(pytest.param(doc["kind"], doc["spec"], id=path.name))
    return cases


@pytest.mark.parametrize(("kind", "spec"), _cases())
def test_models_default_exactly_as_the_schema(kind: str, spec: dict[str, Any]) -> None:
    from_schema = apply_defaults(spec, spec_schema(kind))
    from_model = (
        MODELS[kind].model_validate(spec).model_dump(by_alias=True, exclude_none=True, mode="json")
    )
    assert from_model == from_schema


@pytest.mark.parametrize(("kind", "spec"), _cases())
def test_defaulted_spec_is_a_fixed_point(kind: str, spec: dict[str, Any]) -> None:
    once = MODELS[kind].model_validate(spec)
    again = MODELS[kind].model_validate(once.model_dump(by_alias=True, exclude_none=True))
    assert again == once


@pytest.mark.parametrize("path", examples(), ids=lambda p: p.name)
def test_examples_validate_against_the_crd_schema(path: Path) -> None:
    import jsonschema

    doc = load_example(path)
    assert doc["apiVersion"] == "tailor.dev/v1alpha1"
    assert doc["metadata"]["name"]
    assert not name_errors(doc["kind"], doc["metadata"]["name"])
    jsonschema.Draft4Validator(spec_schema(doc["kind"])).validate(doc["spec"])


def test_examples_cover_both_kinds_and_every_task() -> None:
    docs = [load_example(p) for p in examples()]
    tasks = {d["spec"]["task"] for d in docs if d["kind"] == "TrainingJob"}
    assert tasks == {"text-classification", "image-classification", "custom"}
    assert any(d["kind"] == "DriftMonitor" for d in docs)


def _model_checkable(path: Path) -> bool:
    """Single-object cases about the spec; names and immutability need the API server."""
    return len(documents(path)) == 1 and "metadata.name" not in expectation(path)


@pytest.mark.parametrize(
    "path", [p for p in invalid_cases() if _model_checkable(p)], ids=lambda p: p.name
)
def test_models_refuse_what_the_schema_refuses(path: Path) -> None:
    """Each invalid manifest is refused by the models too, and for the same field or rule."""
    [doc] = documents(path)
    with pytest.raises(ValidationError) as refused:
        MODELS[doc["kind"]].model_validate(doc["spec"])
    expect = expectation(path)
    if expect.startswith('unknown field "'):
        needle = expect.split('"')[1].rsplit(".", 1)[-1]
    elif expect.startswith("spec."):
        needle = re.sub(r"\[\d+\]$", "", expect.split(":")[0]).rsplit(".", 1)[-1]
    elif expect in str(refused.value):  # a spec-level CEL rule: the models say the same
        needle = expect
    else:  # a field's CEL rule ("interval must be ..."): the error is at that field
        needle = expect.split()[0].rsplit(".", 1)[-1]
    assert needle in str(refused.value)


@pytest.mark.parametrize("path", invalid_cases(), ids=lambda p: p.name)
def test_invalid_cases_are_well_formed(path: Path) -> None:
    docs = documents(path)
    assert 1 <= len(docs) <= 2
    assert expectation(path)
    if "metadata.name" not in expectation(path):
        assert all(not name_errors(d["kind"], d["metadata"]["name"]) for d in docs)
    if len(docs) == 2:  # create, then an update that must be refused: the first is valid
        assert docs[0]["metadata"] == docs[1]["metadata"]
        MODELS[docs[0]["kind"]].model_validate(docs[0]["spec"])
        MODELS[docs[1]["kind"]].model_validate(docs[1]["spec"])


def test_the_invalid_corpus_is_large_enough() -> None:
    assert len(invalid_cases()) >= 40


# --- Comparing the models' JSON schema with the CRD's OpenAPI schema ---------------------------


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        ref = node["$ref"].rsplit("/", 1)[-1]
        return {**defs[ref], **{k: v for k, v in node.items() if k != "$ref"}}
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        if len(options) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return {**_resolve(options[0], defs), **rest}
    return node


def _bounds(node: dict[str, Any]) -> dict[str, Any]:
    """Numeric bounds in one form (OpenAPI 3.0 booleans vs JSON Schema 2020 numbers)."""
    out = {}
    for key in ("minimum", "maximum"):
        if key in node:
            exclusive = node.get("exclusive" + key.capitalize())
            if exclusive is True:
                out["exclusive" + key.capitalize()] = node[key]
            else:
                out[key] = node[key]
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(node.get(key), int | float) and not isinstance(node.get(key), bool):
            out[key] = node[key]
    return out


SAME_KEYS = ("minLength", "maxLength", "pattern", "minItems", "maxItems", "enum", "type")


def _compare(crd: dict[str, Any], py: dict[str, Any], defs: dict[str, Any], path: str) -> list[str]:
    py = _resolve(py, defs)
    errors: list[str] = []
    if crd.get("x-kubernetes-int-or-string"):
        if crd.get("default") != py.get("default"):
            errors.append(f"{path}: default {crd.get('default')!r} != {py.get('default')!r}")
        return errors
    if crd.get("x-kubernetes-preserve-unknown-fields"):
        return errors if py.get("type") == "object" else [f"{path}: expected a free-form object"]
    py = dict(py)
    if "const" in py:
        py["enum"] = [py.pop("const")]
    if py.get("type") == "object" and "additionalProperties" in py and "maxLength" in py:
        py["maxProperties"] = py.pop("maxLength")
    for key in (*SAME_KEYS, "maxProperties"):
        if crd.get(key) != py.get(key):
            errors.append(f"{path}: {key} {crd.get(key)!r} != {py.get(key)!r}")
    if _bounds(crd) != _bounds(py):
        errors.append(f"{path}: bounds {_bounds(crd)} != {_bounds(py)}")
    properties = crd.get("properties", {})
    py_properties = py.get("properties", {})
    if set(properties) != set(py_properties):
        errors.append(f"{path}: fields {sorted(properties)} != {sorted(py_properties)}")
    if set(crd.get("required", [])) != set(py.get("required", [])):
        errors.append(f"{path}: required {crd.get('required')} != {py.get('required')}")
    for key in set(properties) & set(py_properties):
        child, py_child = properties[key], py_properties[key]
        if "default" in child:
            # Object and list defaults come from default_factory: compared through the
            # defaulting tests above; here only that the field is optional.
            if not isinstance(child["default"], dict | list) and child["default"] != py_child.get(
                "default"
            ):
                errors.append(
                    f"{path}.{key}: default {child['default']!r} != {py_child.get('default')!r}"
                )
        elif py_child.get("default") is not None:
            errors.append(f"{path}.{key}: the model has a default the schema lacks")
        errors += _compare(child, py_child, defs, f"{path}.{key}")
    if "items" in crd:
        errors += _compare(crd["items"], py.get("items", {}), defs, f"{path}[]")
    if isinstance(crd.get("additionalProperties"), dict):
        errors += _compare(
            crd["additionalProperties"], py.get("additionalProperties", {}), defs, f"{path}{{}}"
        )
    return errors


@pytest.mark.parametrize("kind", list(MODELS))
def test_model_fields_types_and_validation_match_the_schema(kind: str) -> None:
    py = MODELS[kind].model_json_schema(by_alias=True, mode="validation")
    defs = py.pop("$defs", {})
    crd = dict(spec_schema(kind))
    assert _compare(crd, py, defs, "spec") == []


# --- Behaviour of the model helpers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5h", timedelta(minutes=90)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", "5d", "-5m", "5ms", "1h-2m", "P1D"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("auto", True),
        (1, True),
        (8, True),
        (128, True),
        (0, False),
        (129, False),
        ("2", False),
        ("Auto", False),
        (True, False),
        (1.0, False),
    ],
)
def test_procs_per_worker(value: object, ok: bool) -> None:
    spec = {**CUSTOM, "procsPerWorker": value}
    if ok:
        assert TrainingJobSpec.model_validate(spec).procs_per_worker == value
    else:
        with pytest.raises(ValidationError, match="procsPerWorker"):
            TrainingJobSpec.model_validate(spec)


def test_models_are_strict_and_closed() -> None:
    with pytest.raises(ValidationError, match="workers"):
        TrainingJobSpec.model_validate({**CUSTOM, "workers": "2"})
    with pytest.raises(ValidationError, match="accessKeyId"):
        TrainingJobSpec.model_validate({**CUSTOM, "storage": {"accessKeyId": "AKIA"}})
    # Python names work too, and the dump uses the API's names.
    spec = TrainingJobSpec(task="custom", command=["true"], procs_per_worker=2)
    assert spec.to_api()["procsPerWorker"] == 2


def test_model_name_defaults_to_the_job_name() -> None:
    assert TrainingJobSpec.model_validate(CUSTOM).model_name("smoke") == "smoke"
    named = {**TEXT, "model": {**TEXT["model"], "name": "news"}}
    assert TrainingJobSpec.model_validate(named).model_name("news-retrain-0a1b2c3d") == "news"


def test_zero_shot_prompts_fill_in_the_label_literally() -> None:
    spec = TrainingJobSpec.model_validate({**TEXT, "model": {
        "base": "s3://models/minilm/",
        "baseline": {"genericMethod": "ZeroShot", "zeroShotPrompt": "{label}: {0} {label.x}"}}})
    # Plain replacement, not str.format: the prompt is user input.
    assert spec.model is not None
    assert spec.model.baseline.zero_shot_texts(["tech", "sport"]) == [
        "tech: {0} {label.x}", "sport: {0} {label.x}"]
    plain = TrainingJobSpec.model_validate(TEXT)
    assert plain.model is not None and plain.model.baseline.generic_method == "LinearProbe"
    assert plain.model.baseline.zero_shot_texts(["tech"]) == ["tech"]


def test_retrain_triggers() -> None:
    plain = DriftMonitorSpec.model_validate(MONITOR)
    assert plain.retrains_on("Alert")
    assert not plain.retrains_on("AccuracyBelowThreshold")  # no accuracy check configured
    assert not plain.retrains_on("DriftDetected")  # not among the default triggers
    labelled = DriftMonitorSpec.model_validate(
        {
            **MONITOR,
            "production": {**MONITOR["production"], "groundTruthUri": "s3://logs/labels/"},
            "checks": {"accuracy": {"threshold": 0.8}},
        }
    )
    assert labelled.retrains_on("AccuracyBelowThreshold")
    off = DriftMonitorSpec.model_validate({**MONITOR, "retrain": {"enabled": False}})
    assert not off.retrains_on("Alert")


@pytest.mark.parametrize(
    ("kind", "name", "ok"),
    [
        ("TrainingJob", "a" * 52, True),
        ("TrainingJob", "a" * 53, False),
        ("TrainingJob", "1abc", False),
        ("TrainingJob", "a.b", False),
        ("DriftMonitor", "m" * 35, True),
        ("DriftMonitor", "m" * 36, False),
    ],
)
def test_name_errors(kind: str, name: str, ok: bool) -> None:
    assert (name_errors(kind, name) == []) is ok


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("workers", {"maximum": 512}),
        ("workers", {"default": 2}),
        ("task", {"enum": ["text-classification", "custom"]}),
        ("image", {"maxLength": 10}),
        ("output", {"required": []}),
        ("hyperparameters", {"properties": {}}),
    ],
)
def test_schema_comparison_notices_a_difference(field: str, change: dict[str, Any]) -> None:
    """The comparison above can fail: each of these edits to the schema is reported."""
    py = TrainingJobSpec.model_json_schema(by_alias=True, mode="validation")
    defs = py.pop("$defs", {})
    crd = dict(spec_schema("TrainingJob"))
    crd["properties"] = {**crd["properties"], field: {**crd["properties"][field], **change}}
    assert _compare(crd, py, defs, "spec") != []


def test_models_accept_read_only_mappings() -> None:
    """Handlers can pass Kopf's spec view (a Mapping, not a dict) straight in."""
    from types import MappingProxyType

    spec = TrainingJobSpec.model_validate(MappingProxyType(CUSTOM))
    assert spec.command == CUSTOM["command"]


def test_production_data_and_the_retrain_benchmarks_default_sensibly() -> None:
    spec = TrainingJobSpec.model_validate(
        {**TEXT, "data": {**TEXT["data"], "additionalUris": ["s3://data/extra.csv"],
                          "productionUris": ["s3://data/production.parquet"]}})
    assert spec.data is not None
    # The order the trainer reads them in: curated, additional, production last.
    assert spec.data.uris() == ["s3://data/news.csv", "s3://data/extra.csv",
                                "s3://data/production.parquet"]
    assert spec.data.columns.timestamp == "timestamp"
    evaluation = spec.evaluation
    assert (evaluation.recent_holdout.fraction, evaluation.recent_holdout.min_examples) == (0.3, 30)
    assert evaluation.non_inferiority_margin == 0.02
    with pytest.raises(ValidationError, match=r"productionUris must not repeat data\.additionalUris"):
        TrainingJobSpec.model_validate({**TEXT, "data": {
            **TEXT["data"], "additionalUris": ["s3://data/x.csv"],
            "productionUris": ["s3://data/x.csv"]}})
