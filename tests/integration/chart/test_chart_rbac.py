"""The chart installed into the local stack, and the operator run as the chart's ServiceAccount
(its token from the TokenRequest API, the arguments and environment of the rendered Deployment):
a TrainingJob runs end to end and a DriftMonitor is reconciled with only that RBAC, the operator
never meets a 403, `kubectl auth can-i` shows what it must not do, and the metrics the dashboard
and alerts query are in its live /metrics."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import requests
import yaml
from conftest import REPO
from prometheus_client.parser import text_string_to_metric_families
from tailor_contract import trainer_api
from tailor_contract.profile import build_reference_profile
from test_chart_schemas import kubeconform_run

from tests.support import chart_rules
from tests.support.testing import StackHandle, eventually

CHART = REPO / "helm" / "tailor"
# A short distributed run: every process all-reduces once; rank 0 writes the summary.
PROGRAM = textwrap.dedent("""
    import torch, torch.distributed as dist
    from tailor_contract import trainer_api
    dist.init_process_group("gloo")
    value = torch.tensor([1.0])
    dist.all_reduce(value)
    if dist.get_rank() == 0:
        with open("/dev/termination-log", "w") as f:
            f.write(trainer_api.TerminationSummary("Succeeded", reason="Completed",
                    message=f"sum {value.item()}", metrics={"test": 0.9}).to_message())
    dist.destroy_process_group()
""")


@dataclass
class Release:
    name: str
    namespace: str
    service_account: str
    manifests: list[dict[str, Any]]

    def deployment_container(self) -> dict[str, Any]:
        deployment = next(m for m in self.manifests if m["kind"] == "Deployment")
        container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
        return container


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def helm_run(helm: Path, stack: StackHandle, *args: str) -> str:
    result = subprocess.run([str(helm), f"--kubeconfig={stack.kubeconfig}", *args],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def release(stack: StackHandle, namespace: str, helm: Path, crds: None,
            tmp_path: Path) -> Iterator[Release]:
    """The chart installed into the test's namespace, serving only that namespace, with the
    operator's Deployment scaled to 0 (the node agent runs no probes): the test runs the operator
    itself, as the chart's ServiceAccount."""
    name = f"t{secrets.token_hex(3)}"
    token = secrets.token_hex(16)
    stack.kubectl("create", "secret", "generic", "webhook-token", "-n", namespace,
                  f"--from-literal=token={token}")
    values = {"replicas": 0, "watchNamespaces": [namespace],
              "metrics": {"port": free_port()}, "health": {"port": free_port()},
              "webhook": {"enabled": True, "port": free_port(),
                          "tokenSecret": {"name": "webhook-token", "key": "token"}},
              "trainer": {"progressInterval": 1}}
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm_run(helm, stack, "install", name, str(CHART), "-n", namespace, "--skip-crds",
             "-f", str(values_file))
    try:
        manifest = helm_run(helm, stack, "get", "manifest", name, "-n", namespace)
        yield Release(name, namespace, f"{name}-tailor",
                      [m for m in yaml.safe_load_all(manifest) if m])
    finally:
        helm_run(helm, stack, "uninstall", name, "-n", namespace, "--wait=false")


def service_account_kubeconfig(stack: StackHandle, release: Release, path: Path) -> Path:
    token = stack.kubectl("create", "token", release.service_account, "-n", release.namespace,
                          "--duration=1h").stdout.strip()
    admin = yaml.safe_load(stack.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "stack", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "stack", "user": "sa",
                                                "namespace": release.namespace}}]}))
    return path


class ServiceAccountOperator:
    """`python -m tailor` with the rendered Deployment's arguments and environment, as the
    chart's ServiceAccount. The webhook token Secret is mounted in a pod; here its key is
    written to a file at the same relative place."""

    def __init__(self, stack: StackHandle, release: Release, workdir: Path) -> None:
        container = release.deployment_container()
        self.args: list[str] = container["args"]
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        # The downward API's values in a pod: the Lease's namespace and the identity's prefix.
        env |= {"POD_NAMESPACE": release.namespace, "POD_NAME": f"{release.name}-operator"}
        token_file = Path(env["TAILOR_WEBHOOK_TOKEN_FILE"])
        secret = json.loads(stack.kubectl("get", "secret", "webhook-token", "-n",
                                          release.namespace, "-o", "json").stdout)
        local_token = workdir / token_file.name
        local_token.write_text(secret["data"]["token"])  # base64 is as good a token as any
        env["TAILOR_WEBHOOK_TOKEN_FILE"] = str(local_token)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        self.metrics_url = f"http://127.0.0.1:{ports['metrics']}/metrics"
        self.health_url = f"http://127.0.0.1:{ports['health']}/healthz"
        kubeconfig = service_account_kubeconfig(stack, release, workdir / "kubeconfig")
        self.log_path = stack.dir / "logs" / f"operator-chart-{release.name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        base = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tailor", *self.args],
            env={**base, **env, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"},
            stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        eventually(self.alive, timeout=60, what=f"the operator to answer (log {self.log_path})")

    def alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the operator exited; see {self.log_path}")
        try:
            return requests.get(self.health_url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._log.close()


def get(stack: StackHandle, namespace: str, kind: str, name: str) -> dict[str, Any]:
    result = stack.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", [])
                 if c["type"] == kind), {})


def can_i(stack: StackHandle, release: Release, verb: str, resource: str,
          namespace: str | None) -> bool:
    where = ["-n", namespace] if namespace else []
    resource, _, subresource = resource.partition("/")
    if subresource:
        where.append(f"--subresource={subresource}")
    result = stack.kubectl("auth", "can-i", verb, resource, *where,
                           f"--as=system:serviceaccount:{release.namespace}:"
                           f"{release.service_account}", check=False)
    assert result.stdout.strip() in ("yes", "no"), result.stderr
    return result.stdout.strip() == "yes"


def test_solo_operator_runs_a_trainingjob_and_a_driftmonitor_with_only_the_charts_rbac(
        stack: StackHandle, namespace: str, release: Release, tmp_path: Path) -> None:
    operator = ServiceAccountOperator(stack, release, tmp_path)
    try:
        assert f"--namespace={namespace}" in operator.args
        # Leader election as the chart's ServiceAccount: the Lease is created and held.
        assert "--leader-elect" in operator.args
        eventually(lambda: lease_holder(stack, release).startswith(f"{release.name}-operator_"),
                   timeout=30, what="the operator to hold its Lease")
        spec = {"task": "custom", "workers": 2, "procsPerWorker": 1,
                "command": ["python", "-c", PROGRAM],
                "runPolicy": {"backoffLimit": 0, "ttlSecondsAfterFinished": 5}}
        stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "rbac"}, "spec": spec}))
        done = eventually(lambda: condition(get(stack, namespace, "tj", "rbac"), "Succeeded")
                          .get("status") == "True" and get(stack, namespace, "tj", "rbac"),
                          timeout=240, what="the TrainingJob to succeed (as the chart's SA)")
        assert done["status"]["metrics"]["test"] == 0.9
        assert get(stack, namespace, "service", "rbac")["spec"]["clusterIP"] == "None"
        reasons = {e["reason"] for e in json.loads(stack.kubectl(
            "get", "events", "-n", namespace, "--field-selector",
            "involvedObject.name=rbac,involvedObject.kind=TrainingJob", "-o", "json").stdout
        )["items"]}
        assert "Completed" in reasons  # events: create
        # ttlSecondsAfterFinished: the operator deletes the finished TrainingJob.
        eventually(lambda: not get(stack, namespace, "tj", "rbac"), timeout=60,
                   what="the finished TrainingJob to be deleted after its TTL")

        # A DriftMonitor with data: its credentials Secret read by name, the check run on logs
        # in MinIO, its status written, and a retraining TrainingJob created.
        bucket = f"rbac-{secrets.token_hex(4)}"
        s3 = boto3.client("s3", endpoint_url=stack.state.s3_endpoint, region_name="us-east-1",
                          aws_access_key_id=stack.state.s3_access_key,
                          aws_secret_access_key=stack.state.s3_secret_key)
        s3.create_bucket(Bucket=bucket)
        rng = np.random.default_rng(3)
        profile = build_reference_profile({"x": rng.normal(0, 1, 2000)},
                                          rng.choice(["a", "b"], 2000), classes=["a", "b"])
        s3.put_object(Bucket=bucket, Key="profile.json", Body=json.dumps(profile.to_json()))
        now = time.time()
        predicted = rng.choice(["a", "b"], 300)
        logs = "".join(json.dumps({"id": str(i), "timestamp": now - 60, "x": float(rng.normal(3, 1)),
                                   "prediction": str(p)}) + "\n" for i, p in enumerate(predicted))
        labels = "".join(json.dumps({"id": str(i), "timestamp": now - 30,
                                     "label": str(p) if i % 2 else "b" if p == "a" else "a"})
                         + "\n" for i, p in enumerate(predicted))
        s3.put_object(Bucket=bucket, Key="logs/p.jsonl", Body=logs.encode())
        s3.put_object(Bucket=bucket, Key="labels/l.jsonl", Body=labels.encode())
        stack.kubectl("create", "secret", "generic", "s3", "-n", namespace,
                      f"--from-literal=AWS_ACCESS_KEY_ID={stack.state.s3_access_key}",
                      f"--from-literal=AWS_SECRET_ACCESS_KEY={stack.state.s3_secret_key}")
        stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "DriftMonitor",
            "metadata": {"name": "rbac"},
            "spec": {"model": {"profileUri": f"s3://{bucket}/profile.json"}, "interval": "10s",
                     "production": {"predictionsUri": f"s3://{bucket}/logs/",
                                    "groundTruthUri": f"s3://{bucket}/labels/",
                                    "minSamples": 100, "minLabeled": 100},
                     "storage": {"endpoint": stack.state.s3_endpoint,
                                 "credentialsSecret": {"name": "s3"}},
                     "checks": {"accuracy": {"threshold": 0.8}},
                     "retrain": {"triggers": ["AccuracyBelowThreshold"], "template": {"spec": {
                         "task": "custom", "workers": 1, "procsPerWorker": 1,
                         "command": ["python", "-c", "print(1)"],
                         "runPolicy": {"suspend": True}}}}}}))
        monitor = eventually(
            lambda: condition(m := get(stack, namespace, "dm", "rbac"),
                              "AccuracyBelowThreshold").get("status") == "True" and m,
            timeout=90, what="the DriftMonitor's check (as the chart's SA)")
        assert condition(monitor, "DriftDetected")["status"] == "True"
        retrain = monitor["status"]["lastRetrain"]["name"]
        assert get(stack, namespace, "tj", retrain)["metadata"]["labels"][
            "tailor.dev/driftmonitor"] == "rbac"

        families = {f.name: f.type for f in text_string_to_metric_families(
            requests.get(operator.metrics_url, timeout=5).text)}
        scraped = exported_names(families)
        assert "tailor_trainingjob_duration_seconds_count" in scraped
        queried = dashboard_and_alert_metrics(stack, release)
        trainer = {getattr(trainer_api, n) for n in dir(trainer_api) if n.startswith("METRIC_")}
        assert queried - scraped - trainer == set()

        # Least privilege must still be enough: Kopf logs a 403 as a permissions warning.
        log = operator.log()
        assert not re.search(r"403|[Ff]orbidden|Not enough permissions", log), log[-3000:]
    finally:
        operator.stop()
    assert lease_holder(stack, release) == ""  # released on SIGTERM (update, as the SA)


def lease_holder(stack: StackHandle, release: Release) -> str:
    lease = get(stack, release.namespace, "lease", f"{release.name}-tailor-leader")
    return str(lease.get("spec", {}).get("holderIdentity") or "")


def exported_names(families: dict[str, str]) -> set[str]:
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                                 "_created")}
    return {name + suffix for name, kind in families.items()
            for suffix in suffixes.get(kind, ("",))}


def dashboard_and_alert_metrics(stack: StackHandle, release: Release) -> set[str]:
    dashboard = (CHART / "dashboards" / "tailor.json").read_text()
    exprs = [t["expr"] for p in json.loads(dashboard)["panels"] for t in p.get("targets", [])]
    # The PrometheusRule is off in this release; render it.
    exprs += [r["expr"] for g in chart_rules.rule_groups()["groups"] for r in g["rules"]]
    return set().union(*(set(re.findall(r"\btailor_[a-z0-9_]+\b", e)) for e in exprs))


# What the operator's ServiceAccount may do, and what it must not (verb, resource, namespace;
# None: cluster scope; "other": a namespace it does not serve).
ALLOWED = [
    ("get", "trainingjobs.tailor.dev"), ("list", "trainingjobs.tailor.dev"),
    ("watch", "trainingjobs.tailor.dev"), ("create", "trainingjobs.tailor.dev"),
    ("delete", "trainingjobs.tailor.dev"), ("patch", "trainingjobs.tailor.dev/status"),
    ("watch", "driftmonitors.tailor.dev"), ("patch", "driftmonitors.tailor.dev/status"),
    ("create", "jobs.batch"), ("delete", "jobs.batch"), ("watch", "jobs.batch"),
    ("create", "services"), ("list", "pods"), ("create", "events"),
    ("get", "secrets"),  # by name only: a DriftMonitor's credentialsSecret
    ("create", "leases.coordination.k8s.io"),  # leader election (get, update: its Lease only)
]
DENIED = [
    # Secrets: never listed or watched, never written.
    ("list", "secrets"), ("watch", "secrets"), ("create", "secrets"), ("update", "secrets"),
    # No shell or pods of its own: pods come only from its Jobs.
    ("create", "pods/exec"), ("get", "pods/exec"), ("create", "pods/attach"),
    ("create", "pods/portforward"), ("create", "pods"), ("delete", "pods"), ("get", "pods/log"),
    # Users own the specs; the operator writes only status.
    ("update", "trainingjobs.tailor.dev"), ("patch", "trainingjobs.tailor.dev"),
    ("create", "driftmonitors.tailor.dev"), ("patch", "driftmonitors.tailor.dev"),
    ("delete", "driftmonitors.tailor.dev"),
    # Children are created and deleted, never rewritten; no other kinds at all.
    ("patch", "jobs.batch"), ("update", "services"), ("delete", "services"),
    ("create", "deployments.apps"), ("create", "configmaps"), ("create", "cronjobs.batch"),
    ("create", "serviceaccounts/token"), ("create", "roles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"), ("impersonate", "serviceaccounts"),
    # Leases: its own one, read and renewed by name; no other, never listed, watched, deleted.
    ("get", "leases.coordination.k8s.io"), ("update", "leases.coordination.k8s.io"),
    ("list", "leases.coordination.k8s.io"), ("watch", "leases.coordination.k8s.io"),
    ("delete", "leases.coordination.k8s.io"), ("patch", "leases.coordination.k8s.io"),
]
DENIED_CLUSTER = [
    ("delete", "namespaces"), ("create", "namespaces"), ("get", "nodes"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("update", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("list", "trainingjobs.tailor.dev"),  # across namespaces: it serves one
    ("list", "secrets"),
]


def test_solo_can_i_matrix(stack: StackHandle, namespace: str, release: Release) -> None:
    other = "default"  # a namespace the release does not serve
    got = {(verb, resource): can_i(stack, release, verb, resource, namespace)
           for verb, resource in ALLOWED + DENIED}
    assert {k for k, v in got.items() if not v} == set(DENIED)
    assert not [k for k in DENIED_CLUSTER if can_i(stack, release, *k, None)]
    assert not [k for k in ALLOWED if can_i(stack, release, *k, other)]
    # Kopf's framework rules: CRDs and namespaces, read-only, cluster-wide.
    assert can_i(stack, release, "watch", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert can_i(stack, release, "list", "namespaces", None)
    # Its own Lease by name (kubectl auth can-i VERB TYPE/NAME), and only that one.
    who = f"--as=system:serviceaccount:{release.namespace}:{release.service_account}"

    def lease_can(verb: str, name: str, where: str) -> bool:
        result = stack.kubectl("auth", "can-i", verb, f"leases.coordination.k8s.io/{name}",
                               "-n", where, who, check=False)
        assert result.stdout.strip() in ("yes", "no"), result.stderr
        return result.stdout.strip() == "yes"

    own = f"{release.name}-tailor-leader"
    assert lease_can("get", own, namespace) and lease_can("update", own, namespace)
    assert not lease_can("delete", own, namespace) and not lease_can("patch", own, namespace)
    assert not [v for v in ("get", "update") if lease_can(v, "kube-scheduler", namespace)]
    assert not lease_can("get", own, other)


def test_a_two_replica_render_is_valid_and_keeps_one_lease(
        helm: Path, kubeconform: Path, schema_locations: list[str]) -> None:
    """replicas 2: the same Lease RBAC (the Role does not depend on the count), a disruption
    budget and the spread over nodes, all valid for the cluster (kubeconform -strict)."""
    manifests = subprocess.run(
        [str(helm), "template", "tailor", str(CHART), "-n", "tailor-system", "--kube-version",
         "1.36.3", "--set", "replicas=2"], check=True, capture_output=True, text=True).stdout
    resources = kubeconform_run(kubeconform, schema_locations, manifests)
    kinds = [(r["kind"], r["name"]) for r in resources]
    assert {("Role", "tailor-leader-election"), ("RoleBinding", "tailor-leader-election"),
            ("PodDisruptionBudget", "tailor"), ("Deployment", "tailor")} <= set(kinds)
    docs = [d for d in yaml.safe_load_all(manifests) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert "--leader-elect" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
