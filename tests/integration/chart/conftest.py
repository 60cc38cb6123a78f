"""Fixtures of the chart's integration tests: offline JSON schemas for kubeconform, made from the
live API server's OpenAPI v3 documents and from the CRDs, and the pinned tools."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.testing import StackHandle

REPO = Path(__file__).resolve().parents[3]
# The API groups whose kinds the chart renders (plus what examples/ and its CRDs need).
OPENAPI_PATHS = ("api/v1", "apis/apps/v1", "apis/rbac.authorization.k8s.io/v1",
                 "apis/apiextensions.k8s.io/v1", "apis/batch/v1", "apis/policy/v1",
                 "apis/networking.k8s.io/v1")


def bin_root() -> Path:
    out = subprocess.run(["bash", "-c", f'source "{REPO}/hack/versions.sh"; '
                          'echo "$TAILOR_BIN_ROOT $HELM_VERSION $KUBECONFORM_VERSION '
                          '$PROMETHEUS_OPERATOR_VERSION"'],
                         check=True, capture_output=True, text=True).stdout.split()
    return Path(out[0])


def _pins() -> list[str]:
    return subprocess.run(["bash", "-c", f'source "{REPO}/hack/versions.sh"; echo '
                           '"$HELM_VERSION $KUBECONFORM_VERSION $PROMETHEUS_OPERATOR_VERSION"'],
                          check=True, capture_output=True, text=True).stdout.split()


def _built(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is not built: run `make chart-tools`")
    return path


@pytest.fixture(scope="session")
def helm() -> Path:
    return _built(bin_root() / f"helm-{_pins()[0]}" / "helm")


@pytest.fixture(scope="session")
def kubeconform() -> Path:
    return _built(bin_root() / f"kubeconform-{_pins()[1]}" / "kubeconform")


def strict(node: Any) -> Any:
    """OpenAPI v3 to a JSON Schema that refuses unknown fields, as `kubeconform -strict` expects:
    objects with properties get additionalProperties false (unless they keep unknown fields),
    `nullable` becomes a null type, component refs point into `definitions`."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items()}
    if isinstance(out.get("$ref"), str):
        out["$ref"] = out["$ref"].replace("#/components/schemas/", "#/definitions/")
    if "properties" in out and "additionalProperties" not in out and \
            not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def write_schema(root: Path, group: str, version: str, kind: str, schema: dict[str, Any]) -> None:
    """Where the -schema-location template below looks: <group>/<version>/<kind>-strict.json
    (the core group is "v1/v1", as kubeconform names it)."""
    path = root / (group or version) / version / f"{kind.lower()}-strict.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema))


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads a bare `=` as the obsolete `value` tag (the Prometheus Operator's CRDs
    have `- =` in an enum); it is the string "="."""


_Loader.add_constructor("tag:yaml.org,2002:value",
                        lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]


def crd_schemas(root: Path, files: list[Path]) -> None:
    for path in files:
        for crd in yaml.load_all(path.read_text(), Loader=_Loader):  # a SafeLoader
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            for version in crd["spec"]["versions"]:
                write_schema(root, crd["spec"]["group"], version["name"],
                             crd["spec"]["names"]["kind"],
                             strict(version["schema"]["openAPIV3Schema"]))


SCHEMA_TEMPLATE = "{{ .Group }}/{{ .ResourceAPIVersion }}/{{ .ResourceKind }}{{ .StrictSuffix }}.json"


@pytest.fixture(scope="session")
def schema_locations(stack: StackHandle, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[list[str]]:
    """kubeconform -schema-location arguments: the cluster's kinds (from its OpenAPI v3), our
    CRDs (crds/) and the Prometheus Operator's (pinned Go module)."""
    root = tmp_path_factory.mktemp("schemas")
    for api_path in OPENAPI_PATHS:
        document = json.loads(stack.kubectl("get", "--raw", f"/openapi/v3/{api_path}").stdout)
        definitions = strict(document["components"]["schemas"])
        for schema in definitions.values():
            for gvk in schema.get("x-kubernetes-group-version-kind", []):
                if f"/{gvk['version']}" in f"/{api_path}" and \
                        (gvk["group"] or "api") in api_path.split("/")[0:2]:
                    write_schema(root, gvk["group"], gvk["version"], gvk["kind"],
                                 {**schema, "definitions": definitions})
    monitoring = _built(bin_root() / f"prometheus-operator-crds-{_pins()[2]}")
    crd_schemas(root, sorted((REPO / "crds").glob("*.yaml")) + sorted(monitoring.glob("*.yaml")))
    yield [f"{root}/{SCHEMA_TEMPLATE}"]
