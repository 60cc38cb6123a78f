"""The operator as users run it: the Helm chart installed into the local stack.

`install` puts the chart (helm/tailor) into a namespace of the running stack with the images
`make images` built and the node preloaded (helm/tailor/ci/local-stack-values.yaml, the values
docs/quickstart-kind.md uses too), plus what only this stack knows: the MinIO and MLflow
addresses, the namespaces to serve, and Secrets made from the stack's own credentials (the S3
keys, the webhook's token and a certificate signed by the stack's CA). The values never hold a
credential: the chart mounts or references each Secret by name.

It returns once `helm upgrade --install --wait` saw the operator pod Ready through its probes.
The host reaches pod IPs and Service ClusterIPs on this stack (the machine routes both ranges
to the node), so `metrics_url` goes through the Service as a Prometheus in the cluster would,
and Alertmanager on the host reaches the webhook at the ClusterIP with TLS checked against the
name `<fullname>.<namespace>.svc` (`alertmanager_receiver`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
import yaml
from tailor_devstack.pki import PKI

from tests.support import chart_rules
from tests.support.testing import (
    OPERATOR_IMAGE,
    TRAINER_IMAGE,
    StackHandle,
    eventually,
    install_crds,
    require_images,
)

CHART = chart_rules.CHART
LOCAL_VALUES = CHART / "ci" / "local-stack-values.yaml"
# The Secrets the values name (helm/tailor/ci/local-stack-values.yaml and values.yaml).
S3_SECRET = "tailor-s3"
WEBHOOK_TOKEN_SECRET = "tailor-webhook-token"
WEBHOOK_TLS_SECRET = "tailor-webhook-tls"
CLUSTER_DOMAIN = "cluster.local"


@dataclass
class ChartOperator:
    """An installed release; `address`/`metrics_port`/`metrics_url` match OperatorProcess."""

    stack: StackHandle
    release: str
    namespace: str
    metrics_port: int
    webhook_port: int | None = None
    webhook_token: str | None = field(default=None, repr=False)
    # Seconds from `helm upgrade --install` to the release's pod Ready (helm --wait).
    ready_after: float = 0.0
    cluster_ip: str = ""

    @property
    def fullname(self) -> str:
        """The chart's `tailor.fullname`: the release's name when it contains "tailor"."""
        return self.release if "tailor" in self.release else f"{self.release}-tailor"

    @property
    def service_account(self) -> str:
        return self.fullname

    @property
    def selector(self) -> str:
        return (f"app.kubernetes.io/instance={self.release},"
                "app.kubernetes.io/component=operator")

    def pods(self) -> list[dict[str, Any]]:
        out = self.stack.kubectl("get", "pods", "-n", self.namespace, "-l", self.selector,
                                 "-o", "json").stdout
        items: list[dict[str, Any]] = json.loads(out)["items"]
        return items

    def pod(self) -> dict[str, Any]:
        """The one pod that is not going away (replicas: 1)."""
        live = [p for p in self.pods() if not p["metadata"].get("deletionTimestamp")]
        assert len(live) == 1, [p["metadata"]["name"] for p in live]
        return live[0]

    @property
    def address(self) -> str:
        """The Service's ClusterIP (kube-proxy's rules answer it from the host too); fixed for
        the Service's life, so read once."""
        if not self.cluster_ip:
            self.cluster_ip = self.stack.kubectl(
                "get", "service", self.fullname, "-n", self.namespace,
                "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
        return self.cluster_ip

    @property
    def pod_ip(self) -> str:
        return str(self.pod()["status"]["podIP"])

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}:{self.metrics_port}/metrics"

    @property
    def webhook_url(self) -> str:
        return f"https://{self.address}:{self.webhook_port}/alerts"

    @property
    def webhook_server_name(self) -> str:
        """The name the webhook's certificate carries and Alertmanager checks."""
        return f"{self.fullname}.{self.namespace}.svc"

    def logs(self, *, previous: bool = False) -> str:
        """The operator container's log, from the kubelet through the API server."""
        name = self.pod()["metadata"]["name"]
        result = self.stack.kubectl("logs", "-n", self.namespace, name, "-c", "operator",
                                    *(["--previous"] if previous else []), check=False)
        return result.stdout + result.stderr

    def log(self) -> str:  # the name ServiceAccountOperator and the fault tests use
        return self.logs()

    def lease_holder(self) -> str:
        result = self.stack.kubectl("get", "lease", f"{self.fullname}-leader", "-n",
                                    self.namespace, "-o", "jsonpath={.spec.holderIdentity}",
                                    check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    def alive(self) -> bool:
        """The pod is Ready (its readiness probe, GET /healthz, passes)."""
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for p in self.pods() for c in p.get("status", {}).get("conditions", []))

    def scrape(self) -> str:
        response = requests.get(self.metrics_url, timeout=5)
        response.raise_for_status()
        return response.text

    def alertmanager_receiver(self, name: str) -> dict[str, Any]:
        """An Alertmanager receiver posting to the webhook as the chart's AlertmanagerConfig
        does (bearer token, TLS verified against the CA), by ClusterIP: Alertmanager runs on
        the host, outside the cluster's DNS."""
        assert self.webhook_port and self.webhook_token, "installed without the webhook"
        return {"name": name, "webhook_configs": [{
            "url": self.webhook_url, "send_resolved": False,
            "http_config": {
                "authorization": {"type": "Bearer", "credentials": self.webhook_token},
                "tls_config": {"ca_file": str(self.stack.dir / "pki" / "ca.crt"),
                               "server_name": self.webhook_server_name}}}]}

    def uninstall(self, *, delete_namespace: bool = True) -> None:
        helm(self.stack, "uninstall", self.release, "-n", self.namespace, "--wait",
             "--timeout", "120s", check=False)
        if delete_namespace:
            # Waited for: the next session installs into a namespace of the same name.
            self.stack.kubectl("delete", "namespace", self.namespace, "--wait=true",
                               "--timeout=120s", check=False, timeout=150)

    def stop(self) -> None:  # OperatorProcess's name for the end of a fixture
        self.uninstall()


def helm(stack: StackHandle, *args: str, check: bool = True,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(chart_rules.helm_path()), f"--kubeconfig={stack.kubeconfig}",
                             *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stderr}{result.stdout}")
    return result


def apply_secret(stack: StackHandle, namespace: str, name: str, data: Mapping[str, str],
                 kind: str = "Opaque") -> None:
    """A Secret written through stdin, so its values appear in no command line."""
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": kind,
        "metadata": {"name": name, "namespace": namespace}, "stringData": dict(data)}))


def _webhook_secrets(stack: StackHandle, namespace: str, fullname: str, tls: bool) -> str:
    """The webhook's token Secret and (with `tls`) its certificate Secret; the token."""
    token = secrets.token_hex(32)
    apply_secret(stack, namespace, WEBHOOK_TOKEN_SECRET, {"token": token})
    if tls:
        service = f"{fullname}.{namespace}"
        names = [f"{service}.svc", fullname, service, f"{service}.svc.{CLUSTER_DOMAIN}"]
        pki = PKI(stack.dir / "pki")
        pki.issue(f"webhook-{namespace}-{fullname}", common_name=names[0], dns_names=names)
        apply_secret(stack, namespace, WEBHOOK_TLS_SECRET, {
            "tls.crt": pki.cert(f"webhook-{namespace}-{fullname}").read_text(),
            "tls.key": pki.key(f"webhook-{namespace}-{fullname}").read_text(),
            "ca.crt": pki.ca_cert.read_text()}, kind="kubernetes.io/tls")
    return token


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Values merged as Helm merges `-f` files: maps deeply, everything else replaced."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def stack_values(stack: StackHandle, serve: Sequence[str], watch_namespaces: Sequence[str],
                 webhook: bool, tls: bool) -> dict[str, Any]:
    """What only this stack knows, on top of LOCAL_VALUES."""
    values: dict[str, Any] = {
        "defaults": {"s3": {"endpoint": stack.state.s3_endpoint},
                     "mlflow": {"trackingUri": stack.state.mlflow_uri}},
        "watchNamespaces": list(watch_namespaces),
        # Globs (the tests' t-op-*) cannot be watchNamespaces, which binds one Role each.
        "extraArgs": [f"--namespace={pattern}" for pattern in serve]}
    if webhook:
        values["webhook"] = {"enabled": True, "tokenSecret": {"name": WEBHOOK_TOKEN_SECRET,
                                                              "key": "token"},
                             "tls": {"secretName": WEBHOOK_TLS_SECRET if tls else ""}}
    return values


def install(stack: StackHandle, *, namespace: str = "tailor-system", release: str = "tailor",
            serve: Sequence[str] = (), watch_namespaces: Sequence[str] = (),
            values: Mapping[str, Any] | None = None, webhook: bool = False,
            webhook_tls: bool = True, require_trainer: bool = True,
            timeout: float = 300) -> ChartOperator:
    """`helm upgrade --install --wait` of the chart; returns once the operator pod is Ready.

    `serve`: namespace globs the operator serves (--namespace; with a cluster-wide binding);
    `watch_namespaces`: the chart's watchNamespaces (RoleBindings; they must exist); neither:
    all namespaces. `values` override everything else. A release name must be unique in the
    cluster (the chart's ClusterRoles carry it). Lists in `values` replace the file's, as
    with `helm -f` (an `extraEnv` there drops the S3 keys' entries). `require_trainer`: fail at
    once unless the node has the trainer image too (a private stack imports only the
    operator's)."""
    require_images(stack, (OPERATOR_IMAGE, TRAINER_IMAGE) if require_trainer
                   else (OPERATOR_IMAGE,))
    install_crds(stack)
    _forget_interrupted(stack, release, namespace)
    stack.kubectl("apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}))
    apply_secret(stack, namespace, S3_SECRET, {"AWS_ACCESS_KEY_ID": stack.state.s3_access_key,
                                               "AWS_SECRET_ACCESS_KEY": stack.state.s3_secret_key})
    handle = ChartOperator(stack, release, namespace, metrics_port=0)
    token = _webhook_secrets(stack, namespace, handle.fullname, webhook_tls) if webhook else None
    merged = merge(stack_values(stack, serve, watch_namespaces, webhook, webhook_tls),
                   values or {})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="tailor-values-") as file:
        yaml.safe_dump(merged, file)
        file.flush()
        started = time.monotonic()
        result = helm(stack, "upgrade", "--install", release, str(CHART), "-n", namespace,
                      "--skip-crds", "-f", str(LOCAL_VALUES), "-f", file.name, "--wait",
                      "--timeout", f"{int(timeout)}s", check=False, timeout=timeout + 60)
    if result.returncode != 0:
        raise AssertionError(f"helm install failed:\n{result.stderr}\n{diagnose(handle)}")
    handle.ready_after = time.monotonic() - started
    computed = json.loads(helm(stack, "get", "values", release, "-n", namespace, "--all",
                               "-o", "json").stdout)
    handle.metrics_port = int(computed["metrics"]["port"])
    if webhook:
        handle.webhook_port, handle.webhook_token = int(computed["webhook"]["port"]), token
    eventually(handle.alive, timeout=30, what="the operator pod to be Ready")
    return handle


def _forget_interrupted(stack: StackHandle, release: str, namespace: str) -> None:
    """A session killed during `helm install` leaves the release pending, and Helm refuses
    another operation on it: remove it first (what it created goes with it)."""
    result = helm(stack, "status", release, "-n", namespace, "-o", "json", check=False)
    if result.returncode == 0 and \
            json.loads(result.stdout)["info"]["status"].startswith("pending-"):
        helm(stack, "uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")


def diagnose(handle: ChartOperator) -> str:
    """What went wrong with a release's pod: its description, log and the namespace's events."""
    run = handle.stack.kubectl
    parts = [run("describe", "pods", "-n", handle.namespace, "-l", handle.selector,
                 check=False).stdout,
             run("logs", "-n", handle.namespace, "-l", handle.selector, "--tail=60",
                 "--all-containers", check=False).stdout,
             run("get", "events", "-n", handle.namespace, "--sort-by=.lastTimestamp",
                 check=False).stdout]
    return "\n".join(part[-6000:] for part in parts)


@contextlib.contextmanager
def installed(stack: StackHandle, **options: Any) -> Iterator[ChartOperator]:
    """`install` for the block; uninstalled (and its namespace deleted) after it."""
    handle = install(stack, **options)
    try:
        yield handle
    finally:
        handle.uninstall()
