"""The chart's operator Deployment running for real: `helm install` with the image `make images`
built, the operator a pod on the stack's kubelet under the chart's ServiceAccount, restricted as
the chart says (checked from inside the running container), Ready through its probes, its
metrics Service answering at its ClusterIP, holding the leader Lease, and running a TrainingJob
whose workers come from the trainer image. Alertmanager on the host reaches its webhook over
TLS (a certificate from the stack's CA) through the Service."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tailor_devstack import services
from test_chart_rbac import PROGRAM

from tests.support import chart_operator
from tests.support.chart_operator import ChartOperator
from tests.support.testing import (
    OPERATOR_IMAGE,
    TRAINER_IMAGE,
    StackHandle,
    create_namespace,
    eventually,
)

# Seconds from `helm upgrade --install` to Ready, and from apply to Succeeded, for the report.
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def jobs_namespace(stack: StackHandle) -> Iterator[str]:
    """The namespace the operator serves; the release lives in another one."""
    name = f"t-chartop-{secrets.token_hex(4)}-jobs"
    create_namespace(stack, name)
    yield name
    stack.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def released(stack: StackHandle, crds: None, jobs_namespace: str) -> Iterator[ChartOperator]:
    """The chart in its own namespace serving `<prefix>-*` (a glob, as the test session's
    operator serves t-op-*), with the webhook over TLS."""
    prefix = jobs_namespace.removesuffix("-jobs")
    with chart_operator.installed(stack, namespace=prefix, release=f"tailor-{prefix[-8:]}",
                                  serve=[f"{prefix}-*"], webhook=True) as handle:
        TIMINGS["install_to_ready_s"] = handle.ready_after
        print(f"helm install -> operator Ready: {handle.ready_after:.1f}s")
        yield handle


def test_the_operator_runs_as_the_charts_service_account_restricted(
        stack: StackHandle, released: ChartOperator) -> None:
    pod = released.pod()
    spec = pod["spec"]
    [container] = spec["containers"]
    assert spec["serviceAccountName"] == released.service_account
    assert container["image"] == OPERATOR_IMAGE
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    [status] = pod["status"]["containerStatuses"]
    assert status["imageID"], status  # containerd ran the preloaded image
    # What the kernel enforces on the running process, not only what the spec asks for.
    probe = ("import os, json\n"
             "st = dict(l.split(':\\t', 1) for l in open('/proc/1/status').read().splitlines()"
             " if ':\\t' in l)\n"
             "try:\n    open('/probe', 'w'); rootfs = 'writable'\n"
             "except OSError as e:\n    rootfs = e.strerror\n"
             "open('/tmp/probe', 'w').write('ok')\n"
             "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'rootfs': rootfs,"
             " 'CapEff': st['CapEff'], 'CapBnd': st['CapBnd'], 'NoNewPrivs': st['NoNewPrivs'],"
             " 'Seccomp': st['Seccomp']}))")
    seen = json.loads(stack.kubectl("exec", "-n", released.namespace,
                                    pod["metadata"]["name"], "-c", "operator", "--",
                                    "python", "-c", probe).stdout)
    assert seen == {"uid": 65532, "gid": 65532, "rootfs": "Read-only file system",
                    "CapEff": "0000000000000000", "CapBnd": "0000000000000000",
                    "NoNewPrivs": "1", "Seccomp": "2"}, seen


def test_its_probes_pass_and_it_holds_the_leader_lease(stack: StackHandle,
                                                      released: ChartOperator) -> None:
    pod = released.pod()
    [container] = pod["spec"]["containers"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health",
                                               "scheme": "HTTP"}
    [status] = pod["status"]["containerStatuses"]
    assert status["started"] and status["ready"], status
    assert status["restartCount"] == 0, released.logs(previous=True)
    name = pod["metadata"]["name"]
    eventually(lambda: released.lease_holder().startswith(f"{name}_"), timeout=30,
               what=f"{name} to hold {released.fullname}-leader")
    assert "leading: holding Lease" in released.logs()


def test_its_metrics_service_answers_at_the_cluster_ip(stack: StackHandle,
                                                       released: ChartOperator) -> None:
    service = json.loads(stack.kubectl("get", "service", released.fullname, "-n",
                                       released.namespace, "-o", "json").stdout)
    assert service["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"metrics": released.metrics_port, "webhook": released.webhook_port}
    # Through kube-proxy's rules, as a Prometheus in the cluster would scrape it.
    families = {f.name for f in text_string_to_metric_families(released.scrape())}
    assert {"tailor_trainingjobs", "tailor_api_requests", "tailor_alerts_received"} <= families


def worker_pods(stack: StackHandle, namespace: str, job: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(stack.kubectl(
        "get", "pods", "-n", namespace, "-l", f"tailor.dev/trainingjob={job}",
        "-o", "json").stdout)["items"]
    return items


def tj_condition(stack: StackHandle, namespace: str, name: str, kind: str) -> str:
    out = stack.kubectl("get", "tj", name, "-n", namespace, "-o",
                        f'jsonpath={{.status.conditions[?(@.type=="{kind}")].status}}',
                        check=False)
    return out.stdout.strip()


def test_a_trainingjob_runs_to_succeeded_with_trainer_image_workers(
        stack: StackHandle, released: ChartOperator, jobs_namespace: str) -> None:
    spec = {"task": "custom", "workers": 2, "procsPerWorker": 1,
            "command": ["python", "-c", PROGRAM], "runPolicy": {"backoffLimit": 0}}
    started = time.monotonic()
    stack.kubectl("apply", "-n", jobs_namespace, "-f", "-", input=json.dumps({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob",
        "metadata": {"name": "in-pod"}, "spec": spec}))
    eventually(lambda: tj_condition(stack, jobs_namespace, "in-pod", "Succeeded") == "True",
               timeout=300, what="the TrainingJob to succeed under the chart's operator")
    TIMINGS["custom_job_s"] = time.monotonic() - started
    print(f"TrainingJob apply -> Succeeded: {TIMINGS['custom_job_s']:.1f}s")
    done = json.loads(stack.kubectl("get", "tj", "in-pod", "-n", jobs_namespace,
                                    "-o", "json").stdout)
    assert done["status"]["metrics"]["test"] == 0.9
    pods = worker_pods(stack, jobs_namespace, "in-pod")
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    for pod in pods:
        assert pod["spec"]["containers"][0]["image"] == TRAINER_IMAGE
        assert pod["status"]["phase"] == "Succeeded", pod["status"]
    assert "403" not in released.logs()


def test_alertmanager_reaches_the_webhook_over_tls_through_the_service(
        stack: StackHandle, released: ChartOperator, jobs_namespace: str) -> None:
    """An alert naming a DriftMonitor retrains it: Alertmanager on the host posts to the
    ClusterIP, verifies the certificate (server name <fullname>.<ns>.svc, the stack's CA) and
    sends the token from the Secret the chart mounts."""
    stack.kubectl("apply", "-n", jobs_namespace, "-f", "-", input=json.dumps({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "DriftMonitor",
        "metadata": {"name": "alerted"},
        "spec": {"model": {"profileUri": "s3://no-such-bucket/profile.json"},
                 "production": {"predictionsUri": "s3://no-such-bucket/logs/"},
                 "interval": "1h",
                 "retrain": {"triggers": ["Alert"], "template": {"spec": {
                     "task": "custom", "workers": 1, "procsPerWorker": 1,
                     "command": ["python", "-c", "print(1)"]}}}}}))
    fragment = stack.dir / "alertmanager" / "receivers" / f"{jobs_namespace}.yml"
    fragment.write_text(yaml.safe_dump({
        "receiver": released.alertmanager_receiver(jobs_namespace),
        "matchers": [f'namespace="{jobs_namespace}"']}))
    try:
        services.write_alertmanager_config(stack.dir / "alertmanager")
        services.reload(stack.state.alertmanager_url)
        requests.post(f"{stack.state.alertmanager_url}/api/v2/alerts", timeout=10, json=[{
            "labels": {"alertname": "TailorModelMetricBelowThreshold",
                       "namespace": jobs_namespace, "monitor": "alerted"},
            "annotations": {"summary": "accuracy below threshold"}}]).raise_for_status()
        [job] = eventually(lambda: json.loads(stack.kubectl(
            "get", "tj", "-n", jobs_namespace, "-l", "tailor.dev/driftmonitor=alerted",
            "-o", "json").stdout)["items"], timeout=90,
            what="Alertmanager -> webhook (TLS, ClusterIP) -> retrain")
        assert json.loads(job["metadata"]["annotations"]["tailor.dev/trigger"])["reason"] \
            == "Alert"
        outcomes = {s.labels["outcome"]: s.value
                    for f in text_string_to_metric_families(released.scrape())
                    if f.name == "tailor_alerts_received" for s in f.samples
                    if s.name.endswith("_total")}
        assert outcomes.get("retrain-created") == 1, outcomes
    finally:
        fragment.unlink(missing_ok=True)
        services.write_alertmanager_config(stack.dir / "alertmanager")
        services.reload(stack.state.alertmanager_url)


def test_a_deleted_operator_pod_hands_the_lease_to_its_replacement(
        stack: StackHandle, released: ChartOperator) -> None:
    """The operator is PID 1 in its container: it must act on the kubelet's SIGTERM itself
    (the kernel drops default-action signals to PID 1), releasing the Lease well inside the
    grace period, so the ReplicaSet's new pod leads at once instead of after leaseDuration."""
    old = released.pod()["metadata"]["name"]
    started = time.monotonic()
    stack.kubectl("delete", "pod", old, "-n", released.namespace, "--wait=true")
    stopped = time.monotonic() - started
    assert stopped < 10, f"{old} took {stopped:.1f}s to stop (grace period 30s)"
    # Released as it stopped, not left to expire after leaseDuration.
    assert not released.lease_holder().startswith(f"{old}_")

    def taken() -> str:
        holder = released.lease_holder()
        return "" if holder.startswith(f"{old}_") else holder

    holder = eventually(taken, timeout=60, what="the replacement pod to take the Lease")
    new = released.pod()["metadata"]["name"]
    assert holder.startswith(f"{new}_"), (holder, new)
    eventually(released.alive, timeout=60, what="the replacement pod to be Ready")
