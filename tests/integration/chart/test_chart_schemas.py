"""`helm template` output, default and non-default, validated by kubeconform -strict against the
live API server's schemas, our CRDs' and the Prometheus Operator's; examples/ likewise."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

CHART = REPO / "helm" / "tailor"


def kubeconform_run(kubeconform: Path, locations: list[str], manifests: str
                    ) -> list[dict[str, str]]:
    args = [str(kubeconform), "-strict", "-output", "json", "-summary", "-verbose"]
    for location in locations:
        args += ["-schema-location", location]
    result = subprocess.run([*args, "-"], input=manifests, capture_output=True, text=True)
    report = json.loads(result.stdout)
    problems = [r for r in report["resources"] if r["status"] != "statusValid"]
    assert result.returncode == 0 and not problems, json.dumps(problems, indent=1)
    return report["resources"]


@pytest.mark.parametrize("values", [[], ["-f", str(CHART / "ci" / "nondefault-values.yaml")],
                                    ["-f", str(CHART / "ci" / "local-stack-values.yaml")]],
                         ids=["defaults", "nondefault", "local-stack"])
def test_rendered_chart_is_valid_for_the_cluster_and_the_crds(
        helm: Path, kubeconform: Path, schema_locations: list[str], values: list[str]) -> None:
    manifests = subprocess.run(
        [str(helm), "template", "tailor", str(CHART), "-n", "tailor-system", "--include-crds",
         "--kube-version", "1.36.3", *values], check=True, capture_output=True, text=True).stdout
    resources = kubeconform_run(kubeconform, schema_locations, manifests)
    kinds = {r["kind"] for r in resources}
    assert {"Deployment", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "Service",
            "CustomResourceDefinition"} <= kinds
    if "nondefault-values.yaml" in " ".join(values):  # it turns every optional object on
        assert {"RoleBinding", "ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"} <= kinds


def test_strict_validation_catches_an_unknown_field(kubeconform: Path,
                                                    schema_locations: list[str]) -> None:
    bad = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n"
           "  replica: 1\n  selector: {matchLabels: {a: b}}\n  template:\n"
           "    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: i}]}\n")
    with pytest.raises(AssertionError, match="replica"):
        kubeconform_run(kubeconform, schema_locations, bad)
    bad_tj = ("apiVersion: tailor.dev/v1alpha1\nkind: TrainingJob\nmetadata: {name: x}\n"
              "spec: {task: custom, command: [x], worker: 2}\n")
    with pytest.raises(AssertionError, match="worker"):
        kubeconform_run(kubeconform, schema_locations, bad_tj)


def test_examples_are_valid_against_the_crds(kubeconform: Path,
                                             schema_locations: list[str]) -> None:
    manifests = "\n---\n".join(p.read_text() for p in sorted((REPO / "examples").glob("*.yaml")))
    resources = kubeconform_run(kubeconform, schema_locations, manifests)
    assert {r["kind"] for r in resources} == {"TrainingJob", "DriftMonitor"}
