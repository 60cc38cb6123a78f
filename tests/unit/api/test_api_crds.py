"""The CRDs themselves: shape, descriptions, names, immutability and the shared sub-schemas."""

from __future__ import annotations

import re
from typing import Any

import pytest
from apischema import (
    CRD_FILES,
    load_crd,
    root_schema,
    spec_schema,
    strip_transition_rules,
    walk,
)
from tailor_contract import constants as c
from tailor_contract.names import retrain_job_name, service_name, worker_hostname, worker_job_name

KINDS = list(CRD_FILES)


@pytest.mark.parametrize("kind", KINDS)
def test_names_group_and_version(kind: str) -> None:
    crd = load_crd(kind)
    plural = {"TrainingJob": c.TRAININGJOB_PLURAL, "DriftMonitor": c.DRIFTMONITOR_PLURAL}[kind]
    short = {"TrainingJob": c.TRAININGJOB_SHORT_NAME, "DriftMonitor": c.DRIFTMONITOR_SHORT_NAME}
    assert crd["metadata"]["name"] == f"{plural}.{c.GROUP}"
    assert crd["spec"]["group"] == c.GROUP
    assert crd["spec"]["scope"] == "Namespaced"
    names = crd["spec"]["names"]
    assert names["kind"] == kind
    assert names["plural"] == plural
    assert names["shortNames"] == [short[kind]]
    assert names["categories"] == [c.CATEGORY]
    [version] = crd["spec"]["versions"]
    assert version["name"] == c.VERSION
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_has_a_description(kind: str) -> None:
    undocumented = [
        path or "<root>"
        for path, node in walk(root_schema(kind))
        if not node.get("description")
        and path != "metadata"
        # Items of scalar lists and map values are described by their list or map.
        and not (path.endswith(("[]", "{}")) and node.get("type") != "object")
    ]
    assert undocumented == []


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(kind: str) -> None:
    """Every node has a type (or is int-or-string / an opaque object) and strings are bounded.

    Bounded strings, lists and maps keep the CEL rules' estimated cost under the API server's
    limit; an unbounded one makes the CRD itself fail to apply.
    """
    problems = []
    for path, node in walk(root_schema(kind)):
        if node.get("x-kubernetes-int-or-string"):
            assert node.get("anyOf") == [{"type": "integer"}, {"type": "string"}], path
            continue
        if "type" not in node:
            problems.append(f"{path}: no type")
        bounded = "maxLength" in node or "enum" in node
        if path.startswith("spec") and node.get("type") == "string" and not bounded:
            problems.append(f"{path}: string without maxLength")
        if path.startswith("spec") and node.get("type") == "array" and "maxItems" not in node:
            problems.append(f"{path}: array without maxItems")
    assert problems == []


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_satisfy_their_own_schema(kind: str) -> None:
    """A default must be an allowed value: in its enum and range (the server checks at apply)."""
    for path, node in walk(root_schema(kind)):
        if "default" not in node:
            continue
        default = node["default"]
        if "enum" in node:
            assert default in node["enum"], path
        if "minimum" in node:
            assert default >= node["minimum"], path
        if "maximum" in node:
            assert default <= node["maximum"], path
        if "pattern" in node and isinstance(default, str):
            assert re.search(node["pattern"], default), path


@pytest.mark.parametrize("kind", KINDS)
def test_status_has_observed_generation_and_standard_conditions(kind: str) -> None:
    status = root_schema(kind)["properties"]["status"]["properties"]
    assert status["observedGeneration"]["type"] == "integer"
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    reason = re.compile(item["properties"]["reason"]["pattern"])
    reasons = [v for k, v in vars(c).items() if k.startswith("REASON_")]
    assert reasons and all(reason.match(r) for r in reasons)
    kind_conditions = {
        "TrainingJob": c.TRAININGJOB_CONDITIONS,
        "DriftMonitor": c.DRIFTMONITOR_CONDITIONS,
    }
    condition_type = re.compile(item["properties"]["type"]["pattern"])
    assert all(condition_type.match(t) for t in kind_conditions[kind])


def test_condition_and_storage_schemas_are_the_same_in_both_kinds() -> None:
    tj, dm = root_schema("TrainingJob"), root_schema("DriftMonitor")
    assert (
        tj["properties"]["status"]["properties"]["conditions"]["items"]
        == dm["properties"]["status"]["properties"]["conditions"]["items"]
    )
    assert (
        tj["properties"]["spec"]["properties"]["storage"]
        == (dm["properties"]["spec"]["properties"]["storage"])
    )


def test_retrain_template_embeds_the_trainingjob_spec_without_immutability() -> None:
    embedded = dict(
        spec_schema("DriftMonitor")["properties"]["retrain"]["properties"]["template"][
            "properties"
        ]["spec"]
    )
    expected = strip_transition_rules(spec_schema("TrainingJob"))
    embedded.pop("description")
    expected.pop("description")
    assert embedded == expected, (
        "crds/driftmonitors.yaml spec.retrain.template.spec must be crds/trainingjobs.yaml's "
        "spec schema without its oldSelf rules; run python hack/gen_api_docs.py"
    )


def _rules(node: dict[str, Any]) -> list[str]:
    return [rule["rule"] for rule in node.get("x-kubernetes-validations", [])]


@pytest.mark.parametrize(
    ("kind", "immutable"),
    [
        ("TrainingJob", c.TRAININGJOB_IMMUTABLE_FIELDS),
        ("DriftMonitor", c.DRIFTMONITOR_IMMUTABLE_FIELDS),
    ],
)
def test_immutable_fields_are_exactly_the_documented_ones(
    kind: str, immutable: tuple[str, ...]
) -> None:
    spec = spec_schema(kind)
    with_rule = {
        name for name, prop in spec["properties"].items() if "self == oldSelf" in _rules(prop)
    }
    assert with_rule == set(immutable)
    # Optional immutable fields also may not appear or vanish (a transition rule on the field
    # itself only runs when both the old and the new object have it).
    for name in immutable:
        if "default" not in spec["properties"][name] and name not in spec.get("required", []):
            assert f"has(self.{name}) == has(oldSelf.{name})" in _rules(spec), name
    # Nothing below the spec's own fields is separately immutable, and runPolicy stays mutable.
    for path, node in walk(spec):
        if path.count(".") >= 1 and not path.startswith(tuple(immutable)):
            assert not any("oldSelf" in rule for rule in _rules(node)), path


def _name_limit(kind: str) -> int:
    for rule in _rules(root_schema(kind)):
        match = re.fullmatch(r"self\.metadata\.name\.size\(\) <= (\d+)", rule)
        if match:
            return int(match.group(1))
    raise AssertionError("no name length rule")


def test_name_limits_keep_children_within_63_characters() -> None:
    job_limit = _name_limit("TrainingJob")
    monitor_limit = _name_limit("DriftMonitor")
    assert job_limit == c.MAX_TRAININGJOB_NAME
    assert monitor_limit == c.MAX_DRIFTMONITOR_NAME
    workers = spec_schema("TrainingJob")["properties"]["workers"]
    assert workers["maximum"] == c.MAX_WORKERS

    longest_job = "j" * job_limit
    assert len(service_name(longest_job)) <= c.DNS_LABEL_MAX
    assert len(worker_job_name(longest_job)) <= c.DNS_LABEL_MAX
    assert len(worker_hostname(longest_job, c.MAX_WORKERS - 1)) == c.DNS_LABEL_MAX

    retrain = retrain_job_name("m" * monitor_limit, "trigger")
    assert len(retrain) == job_limit
    assert re.fullmatch(r"m+-retrain-[0-9a-f]{8}", retrain)
    assert retrain == retrain_job_name("m" * monitor_limit, "trigger")  # deterministic
    assert retrain != retrain_job_name("m" * monitor_limit, "another trigger")
    embedded_job = spec_schema("DriftMonitor")["properties"]["model"]["properties"]["trainingJob"]
    assert embedded_job["maxLength"] == job_limit


def test_enums_match_the_constants() -> None:
    tj_status = root_schema("TrainingJob")["properties"]["status"]["properties"]
    dm_status = root_schema("DriftMonitor")["properties"]["status"]["properties"]
    triggers = spec_schema("DriftMonitor")["properties"]["retrain"]["properties"]["triggers"]
    assert tuple(tj_status["phase"]["enum"]) == c.TRAININGJOB_PHASES
    assert tuple(dm_status["phase"]["enum"]) == c.DRIFTMONITOR_PHASES
    assert tuple(tj_status["promotion"]["properties"]["verdict"]["enum"]) == c.PROMOTION_VERDICTS
    assert set(triggers["items"]["enum"]) == {
        c.TRIGGER_ACCURACY_BELOW_THRESHOLD,
        c.TRIGGER_DRIFT_DETECTED,
        c.TRIGGER_ALERT,
    }
    assert tj_status["triggeredBy"]["properties"]["reason"]["enum"] == triggers["items"]["enum"]


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("TrainingJob", ["Phase", "Workers", "Progress", "Trials", "Metric", "Promoted", "Age"]),
        ("DriftMonitor", ["Model", "Accuracy", "Drift", "Retrains", "Last Check", "Age"]),
    ],
)
def test_printer_columns(kind: str, columns: list[str]) -> None:
    [version] = load_crd(kind)["spec"]["versions"]
    shown = [col["name"] for col in version["additionalPrinterColumns"] if not col.get("priority")]
    assert shown == columns
    schema = root_schema(kind)
    for col in version["additionalPrinterColumns"]:
        path = col["jsonPath"].split("[")[0].lstrip(".").split(".")
        if path[0] == "metadata":
            continue
        node = schema
        for part in path:
            node = node["properties"][part]
        assert node, col["name"]


def test_no_inline_credentials_anywhere() -> None:
    secretish = re.compile(r"(password|secretAccessKey|accessKeyId|token)$", re.IGNORECASE)
    for kind in KINDS:
        for path, node in walk(spec_schema(kind)):
            leaf = path.rsplit(".", 1)[-1]
            if secretish.search(leaf):
                raise AssertionError(f"{kind} {path} looks like an inline credential")
            if leaf == "credentialsSecret":
                assert set(node["properties"]) == {"name", "accessKeyIdKey", "secretAccessKeyKey"}


@pytest.mark.parametrize("kind", KINDS)
def test_fractional_minimums_are_also_checked_in_cel(kind: str) -> None:
    """OpenAPI compares an integer value with int(minimum): ``test: 0`` passes ``minimum: 0.01``.

    The API server does that (found by the integration corpus), so a number field whose minimum
    is not a whole number repeats the bound in a CEL rule, which compares as doubles.
    """
    for path, node in walk(root_schema(kind)):
        if path.startswith("spec") and node.get("type") == "number":
            minimum = node.get("minimum")
            if minimum is not None and minimum % 1 and not node.get("exclusiveMinimum"):
                assert any(f"self >= {minimum}" in rule for rule in _rules(node)), path
