"""The Helm chart rendered offline: lint, its CRDs against crds/, the operator's RBAC rule by rule,
the Deployment's hardening and arguments (parsed by the operator's own parser), values schema,
alerts and the Grafana dashboard."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO
from prometheus_client import REGISTRY
from tailor.io import metrics as operator_metrics
from tailor.settings import parse
from tailor_contract import trainer_api

CHART = REPO / "helm" / "tailor"
NONDEFAULT = CHART / "ci" / "nondefault-values.yaml"
KUBE_VERSION = "1.36.3"
# DriftMonitor metrics (docs/drift.md, operator/tailor/metrics.py).
DRIFTMONITOR_METRICS = {
    "tailor_model_metric", "tailor_model_metric_threshold", "tailor_feature_drift_score",
    "tailor_prediction_drift_score", "tailor_drift_detected", "tailor_label_coverage",
    "tailor_retrains_total", "tailor_drift_check_duration_seconds_bucket",
    "tailor_drift_check_duration_seconds_sum", "tailor_drift_check_duration_seconds_count"}
TRAINER_METRICS = {getattr(trainer_api, name) for name in dir(trainer_api) if name.startswith("METRIC_")}


def render(helm: Path, *args: str, check: bool = True) -> list[dict[str, Any]]:
    result = subprocess.run([str(helm), "template", "tailor", str(CHART), "-n", "tailor-system",
                             "--kube-version", KUBE_VERSION, *args],
                            capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_error(helm: Path, *args: str) -> str:
    result = subprocess.run([str(helm), "template", "tailor", str(CHART), "--kube-version",
                             KUBE_VERSION, *args], capture_output=True, text=True)
    assert result.returncode != 0, "rendering should have failed"
    return result.stderr


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in found])
    return found[0]


def rules_of(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples: compares rules however they are grouped."""
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def triples(group: str, resources: str, verbs: str) -> set[tuple[str, str, str]]:
    return {(group, r, v) for r in resources.split() for v in verbs.split()}


# Every verb the operator uses (operator/tailor/k8s.py, Kopf's watches), and nothing else.
OPERATOR_RULES = (
    triples("tailor.dev", "trainingjobs", "get list watch create delete")
    | triples("tailor.dev", "trainingjobs/status driftmonitors/status", "patch")
    | triples("tailor.dev", "driftmonitors", "get list watch")
    | triples("batch", "jobs", "get list watch create delete")
    | triples("", "services", "create") | triples("", "pods", "list")
    | triples("", "events", "create"))


@pytest.mark.parametrize("values", [[], ["-f", str(NONDEFAULT)],
                                    ["-f", str(CHART / "ci" / "local-stack-values.yaml")]],
                         ids=["defaults", "nondefault", "local-stack"])
def test_helm_lint_strict(helm: Path, values: list[str]) -> None:
    result = subprocess.run([str(helm), "lint", "--strict", str(CHART), *values],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_chart_crds_are_generated_from_crds_folder() -> None:
    spec = importlib.util.spec_from_file_location("gen_chart_crds",
                                                  REPO / "hack" / "gen_chart_crds.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.differences() == [], "run: python hack/gen_chart_crds.py"
    for path in (CHART / "crds").glob("*.yaml"):
        assert yaml.safe_load(path.read_text()) == \
            yaml.safe_load((REPO / "crds" / path.name).read_text())


def test_cluster_wide_rbac_is_exactly_the_verbs_the_operator_uses(helm: Path) -> None:
    docs = render(helm)
    operator = one(docs, "ClusterRole", "tailor")
    assert rules_of(operator) == OPERATOR_RULES | triples("", "secrets", "get")
    framework = one(docs, "ClusterRole", "tailor-framework")
    assert rules_of(framework) == triples("apiextensions.k8s.io", "customresourcedefinitions",
                                          "list watch")
    for role in (operator, framework):
        assert all("*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
                   and "resourceNames" not in rule for rule in role["rules"])
    subject = [{"kind": "ServiceAccount", "name": "tailor", "namespace": "tailor-system"}]
    for name in ("tailor", "tailor-framework"):
        binding = one(docs, "ClusterRoleBinding", name)
        assert binding["subjects"] == subject and binding["roleRef"]["name"] == name
    # The only namespaced rules: leader election's Lease, in the release's namespace.
    assert [(d["kind"], d["metadata"]["name"]) for d in docs
            if d["kind"] in ("Role", "RoleBinding")] == [
        ("Role", "tailor-leader-election"), ("RoleBinding", "tailor-leader-election")]


def test_leader_election_rbac_is_the_one_lease_get_update_and_create(helm: Path) -> None:
    docs = render(helm)
    role = one(docs, "Role", "tailor-leader-election")
    assert role["metadata"]["namespace"] == "tailor-system"
    assert rules_of(role) == triples("coordination.k8s.io", "leases", "get update create")
    by_verbs = {tuple(r["verbs"]): r.get("resourceNames") for r in role["rules"]}
    assert by_verbs == {("create",): None, ("get", "update"): ["tailor-leader"]}
    binding = one(docs, "RoleBinding", "tailor-leader-election")
    assert binding["metadata"]["namespace"] == "tailor-system"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "tailor-leader-election"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "tailor",
                                    "namespace": "tailor-system"}]
    off = render(helm, "--set", "leaderElection.enabled=false")
    assert not [d for d in off if d["kind"] in ("Role", "RoleBinding")]
    assert "--leader-elect" not in container(off)["args"]
    assert one(off, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_two_replicas_elect_a_leader_spread_over_nodes_under_a_disruption_budget(
        helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(helm, "--set", "replicas=2")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    selector = deployment["spec"]["selector"]["matchLabels"]
    term = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term == {"topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": selector}}
    budget = one(docs, "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    monkeypatch.setenv("POD_NAMESPACE", "tailor-system")
    settings = parse(container(docs)["args"])
    assert settings.leader_elect and settings.leader_elect_resource_name == "tailor-leader"
    assert not [d for d in render(helm) if d["kind"] == "PodDisruptionBudget"]
    custom = render(helm, "--set", "replicas=3", "--set", "affinity.nodeAffinity.x=y")
    assert one(custom, "Deployment")["spec"]["template"]["spec"]["affinity"] == {
        "nodeAffinity": {"x": "y"}}  # the user's affinity replaces the default spread


def test_namespaced_rbac_binds_the_rules_only_in_the_watched_namespaces(helm: Path) -> None:
    docs = render(helm, "-f", str(NONDEFAULT))
    assert rules_of(one(docs, "ClusterRole", "tailor")) == OPERATOR_RULES  # no Secrets
    bindings = [d for d in docs if d["kind"] == "RoleBinding"
                and d["roleRef"]["kind"] == "ClusterRole"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert {b["roleRef"]["name"] for b in bindings} == {"tailor"}
    assert {s["name"] for b in bindings for s in b["subjects"]} == {"tailor-operator"}
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"] == \
        ["tailor-framework"]
    # Kopf follows namespaces when it serves some or excludes some.
    assert rules_of(one(docs, "ClusterRole", "tailor-framework")) == \
        triples("apiextensions.k8s.io", "customresourcedefinitions", "list watch") | \
        triples("", "namespaces", "list watch")
    assert not [d for d in docs if d["metadata"]["name"] in ("tailor-edit", "tailor-view")]


def test_namespace_admins_editors_and_viewers_get_the_kinds_but_not_their_status(
        helm: Path) -> None:
    docs = render(helm)
    edit, view = one(docs, "ClusterRole", "tailor-edit"), one(docs, "ClusterRole", "tailor-view")
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    writes = {"create", "update", "patch", "delete", "deletecollection"}
    assert {(r, v) for _, r, v in rules_of(edit)} == {
        (r, v) for r in ("trainingjobs", "driftmonitors")
        for v in writes | {"get", "list", "watch"}}
    assert not {v for _, _, v in rules_of(view)} & writes


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(docs, "Deployment")
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return c


def test_deployment_is_one_hardened_replica_with_kopf_probes(
        helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(helm)
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    # Leader election on: the new pod waits as a standby until the old one releases the Lease.
    assert spec["replicas"] == 1 and spec["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert "affinity" not in spec["template"]["spec"]
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "tailor"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(docs)
    assert c["securityContext"] == {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                                    "capabilities": {"drop": ["ALL"]}}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8000,
                                                                   "health": 8080}
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    downward = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]
                if "valueFrom" in e}
    assert downward == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    monkeypatch.setenv("POD_NAMESPACE", "tailor-system")
    settings = parse(c["args"])
    assert (settings.metrics_port, settings.liveness_port, settings.namespaces,
            settings.trainer_image) == (8000, 8080, (), "ghcr.io/tailor-dev/tailor-trainer:0.1.0")
    assert (settings.leader_elect, settings.leader_elect_resource_name,
            settings.leader_elect_resource_namespace, settings.leader_elect_lease_duration,
            settings.leader_elect_renew_deadline, settings.leader_elect_retry_period) == \
        (True, "tailor-leader", "tailor-system", 15, 10.0, 2.0)


def test_nondefault_arguments_reach_the_operator(helm: Path, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    docs = render(helm, "-f", str(NONDEFAULT))
    c = container(docs)
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    monkeypatch.setenv("POD_NAMESPACE", "tailor-system")  # the downward API's, in a pod
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    settings = parse(c["args"])
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.exclude_namespaces == ("sandbox-*",)
    assert (settings.metrics_port, settings.liveness_port, settings.webhook_port) == \
        (9000, 9080, 9443)
    assert settings.trainer_image == "registry.example/tailor-trainer:0.2.0"
    assert settings.progress_interval == 5
    # The token comes from the mounted Secret key, never through the API.
    assert settings.webhook_token_file == "/var/run/secrets/tailor.dev/webhook/bearer"
    mount = next(m for m in c["volumeMounts"] if m["name"] == "webhook-token")
    assert mount == {"name": "webhook-token", "mountPath": "/var/run/secrets/tailor.dev/webhook",
                     "readOnly": True}
    volume = next(v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "webhook-token")
    assert volume["secret"]["secretName"] == "alert-hook"
    assert env["TAILOR_DEFAULT_S3_ENDPOINT"] == "http://minio.storage:9000"
    assert env["TAILOR_DEFAULT_MLFLOW_TRACKING_URI"] == "http://mlflow.mlops:5000"
    assert c["image"].endswith("@sha256:" + "0123456789abcdef" * 4)
    service = one(docs, "Service")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"metrics": 9000,
                                                                        "webhook": 9443}
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    receiver = one(docs, "AlertmanagerConfig")["spec"]["receivers"][0]["webhookConfigs"][0]
    assert receiver["url"] == "https://tailor.tailor-system.svc:9443/alerts"
    assert receiver["httpConfig"]["tlsConfig"] == {"ca": {"secret": {"name": "alert-hook-tls",
                                                                     "key": "ca.crt"}}}
    assert (settings.webhook_tls_cert_file, settings.webhook_tls_key_file) == (
        "/var/run/secrets/tailor.dev/webhook-tls/tls.crt",
        "/var/run/secrets/tailor.dev/webhook-tls/tls.key")
    assert receiver["httpConfig"]["authorization"]["credentials"] == {"name": "alert-hook",
                                                                     "key": "bearer"}


@pytest.mark.parametrize(("values", "complaint"), [
    (["--set", "replicas=2", "--set", "leaderElection.enabled=false"],
     "replicas > 1 needs leaderElection.enabled"),
    (["--set", "replicas=-1"], "replicas"),
    (["--set", "leaderElection.renewDeadline=20"], "leaseDuration > renewDeadline > retryPeriod"),
    (["--set", "leaderElection.leaseDuration=1.5"], "leaseDuration"),
    (["--set", "watchNamespaces[0]=team-*"], "watchNamespaces"),
    (["--set", "rbac.readSecrets=true"], "readSecrets"),
    (["--set", "image.digest=latest"], "digest"),
    (["--set", "prometheusRule.enabled=true", "--set",
      "prometheusRule.alertmanagerConfig.enabled=true"], "needs webhook.enabled"),
])
def test_bad_values_are_refused_with_the_field_named(helm: Path, values: list[str],
                                                     complaint: str) -> None:
    assert complaint in render_error(helm, *values)


def exported_sample_names() -> set[str]:
    """The names of the samples the operator's metrics produce (e.g. a histogram's _bucket)."""
    assert operator_metrics.API_REQUESTS  # imported for its registrations
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": (
        "_bucket", "_sum", "_count", "_created"), "summary": ("_sum", "_count", "_created")}
    return {family.name + suffix for family in REGISTRY.collect()
            if family.name.startswith("tailor_") for suffix in suffixes.get(family.type, ("",))}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\btailor_[a-z0-9_]+\b", expr))


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((CHART / "dashboards" / "tailor.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"]
              if isinstance(v.get("query"), dict)]
    return exprs


def test_dashboard_is_valid_json_shipped_as_a_labelled_configmap(helm: Path) -> None:
    text = (CHART / "dashboards" / "tailor.json").read_text()
    dashboard = json.loads(text)
    assert dashboard["uid"] and dashboard["panels"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    configmap = one(render(helm), "ConfigMap", "tailor-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["tailor.json"]) == dashboard


def test_dashboard_covers_the_issue_and_names_only_exported_metrics() -> None:
    used = set().union(*map(metric_names, dashboard_exprs()))
    known = exported_sample_names() | TRAINER_METRICS | DRIFTMONITOR_METRICS
    assert used - known == set()
    # Training progress and throughput, outcomes, drift scores, metric against threshold,
    # retrains.
    assert {"tailor_trainer_step", "tailor_trainer_samples_per_second",
            "tailor_trainingjob_duration_seconds_count", "tailor_feature_drift_score",
            "tailor_model_metric", "tailor_model_metric_threshold",
            "tailor_retrains_total"} <= used


def test_alerts_name_only_exported_metrics(helm: Path) -> None:
    rule = one(render(helm, "-f", str(NONDEFAULT)), "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "TailorModelMetricBelowThreshold" in alerts
    used = set().union(*map(metric_names, alerts.values()))
    assert used - (exported_sample_names() | DRIFTMONITOR_METRICS) == set()
    route = one(render(helm, "-f", str(NONDEFAULT)), "AlertmanagerConfig")["spec"]["route"]
    assert route["matchers"][0]["value"] == "TailorModelMetricBelowThreshold"
    # The webhook finds the DriftMonitor from these labels of the alert.
    assert set(route["groupBy"]) == {"namespace", "monitor"}
    assert "on (namespace, monitor, metric)" in alerts["TailorModelMetricBelowThreshold"]


def test_kind_config_is_a_valid_cluster_with_a_control_plane_and_two_workers() -> None:
    config = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    allowed_node_keys = {"role", "image", "labels", "extraMounts", "extraPortMappings",
                         "kubeadmConfigPatches"}
    roles = []
    for node in config["nodes"]:
        assert set(node) <= allowed_node_keys, node
        roles.append(node["role"])
    assert sorted(roles) == ["control-plane", "worker", "worker"]
    images = {node.get("image") for node in config["nodes"]}
    assert len(images) == 1 and re.fullmatch(r"kindest/node:v1\.\d+\.\d+@sha256:[0-9a-f]{64}",
                                             images.pop() or "")
