"""The services around the control plane are real: MinIO, MLflow, Prometheus, Alertmanager."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import mlflow
import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from tailor_devstack import services

from tests.support.testing import StackHandle, eventually


def s3(stack: StackHandle) -> Any:
    return boto3.client("s3", endpoint_url=stack.state.s3_endpoint,
                        aws_access_key_id=stack.state.s3_access_key,
                        aws_secret_access_key=stack.state.s3_secret_key, region_name="us-east-1")


def test_minio_stores_and_returns_an_object(stack: StackHandle) -> None:
    client = s3(stack)
    bucket = f"test-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="data/train.csv", Body=b"id,text,label\n1,hi,a\n")
    body = client.get_object(Bucket=bucket, Key="data/train.csv")["Body"].read()
    assert body == b"id,text,label\n1,hi,a\n"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["data/train.csv"]


def test_minio_refuses_wrong_credentials(stack: StackHandle) -> None:
    bad = boto3.client("s3", endpoint_url=stack.state.s3_endpoint, aws_access_key_id="nobody",
                       aws_secret_access_key="wrong-secret", region_name="us-east-1")
    with pytest.raises(bad.exceptions.ClientError, match="InvalidAccessKeyId"):
        bad.list_buckets()


def test_mlflow_logs_a_run_and_reads_it_back_with_artifacts_in_minio(
        stack: StackHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.state.mlflow_uri)
    experiment = f"stack-test-{secrets.token_hex(4)}"
    mlflow.set_experiment(experiment)
    report = tmp_path / "report.json"
    report.write_text('{"accuracy": 0.91}')
    with mlflow.start_run() as run:
        mlflow.log_param("lr", 3e-5)
        for step, loss in enumerate([1.0, 0.6, 0.4]):
            mlflow.log_metric("loss", loss, step=step)
        mlflow.log_artifact(str(report))
    client = MlflowClient(stack.state.mlflow_uri)
    stored = client.get_run(run.info.run_id)
    assert stored.data.params == {"lr": "3e-05"}
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [1.0, 0.6, 0.4]
    downloaded = client.download_artifacts(run.info.run_id, "report.json", str(tmp_path / "dl"))
    assert json.loads(Path(downloaded).read_text()) == {"accuracy": 0.91}
    # The tracking server proxies artifacts into MinIO: the file is really there.
    pages = s3(stack).get_paginator("list_objects_v2").paginate(
        Bucket="mlflow", Prefix=f"artifacts/{run.info.experiment_id}/")  # MinIO outlives `down`
    assert any(o["Key"].endswith(f"{run.info.run_id}/artifacts/report.json")
               for page in pages for o in page.get("Contents", []))


@pytest.fixture
def metrics_target(stack: StackHandle) -> Iterator[tuple[Gauge, str]]:
    """A metrics endpoint on the bridge that Prometheus scrapes, registered by file discovery."""
    registry = CollectorRegistry()
    gauge = Gauge("tailor_stack_test_value", "set by the test", ["case"], registry=registry)
    server, thread = start_http_server(0, addr=stack.state.gateway, registry=registry)
    port = server.server_address[1]
    case = secrets.token_hex(4)
    target_file = stack.dir / "prometheus" / "targets" / f"test-{case}.json"
    target_file.write_text(json.dumps([{"targets": [f"{stack.state.gateway}:{port}"],
                                        "labels": {"case": case}}]))
    yield gauge, case
    target_file.unlink()
    server.shutdown()
    thread.join(5)


def prometheus_query(stack: StackHandle, query: str) -> list[dict[str, Any]]:
    response = requests.get(f"{stack.state.prometheus_url}/api/v1/query",
                            params={"query": query}, timeout=10)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def write_rule(stack: StackHandle, name: str, rules: list[dict[str, Any]]) -> Path:
    path = stack.dir / "prometheus" / "rules" / f"{name}.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": name, "rules": rules}]}))
    services.reload(stack.state.prometheus_url)
    return path


def test_prometheus_scrapes_a_target_and_evaluates_a_rule(
        stack: StackHandle, metrics_target: tuple[Gauge, str]) -> None:
    gauge, case = metrics_target
    gauge.labels(case=case).set(0.42)
    rule = write_rule(stack, f"record-{case}", [{
        "record": "tailor_stack_test_value:doubled",
        "expr": f'2 * tailor_stack_test_value{{case="{case}"}}'}])
    try:
        scraped = eventually(lambda: prometheus_query(
            stack, f'tailor_stack_test_value{{case="{case}"}}'), timeout=30,
            what="Prometheus to scrape the test target")
        assert float(scraped[0]["value"][1]) == pytest.approx(0.42)
        recorded = eventually(lambda: prometheus_query(
            stack, f'tailor_stack_test_value:doubled{{case="{case}"}}'), timeout=30,
            what="the recording rule to be evaluated")
        assert float(recorded[0]["value"][1]) == pytest.approx(0.84)
    finally:
        rule.unlink()
        services.reload(stack.state.prometheus_url)


class WebhookReceiver:
    """An HTTP server standing in for a webhook that Alertmanager posts to."""

    def __init__(self, host: str) -> None:
        self.payloads: list[dict[str, Any]] = []
        received = self.payloads

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


def test_a_firing_rule_reaches_a_webhook_through_alertmanager(
        stack: StackHandle, metrics_target: tuple[Gauge, str]) -> None:
    gauge, case = metrics_target
    gauge.labels(case=case).set(0.55)
    receiver = WebhookReceiver(stack.state.gateway)
    fragment = stack.dir / "alertmanager" / "receivers" / f"test-{case}.yml"
    fragment.write_text(yaml.safe_dump({
        "receiver": {"name": f"test-{case}",
                     "webhook_configs": [{"url": receiver.url, "send_resolved": False}]},
        "matchers": [f'case="{case}"']}))
    services.write_alertmanager_config(stack.dir / "alertmanager")
    services.reload(stack.state.alertmanager_url)
    rule = write_rule(stack, f"alert-{case}", [{
        "alert": "ModelMetricBelowThreshold",
        "expr": f'tailor_stack_test_value{{case="{case}"}} < 0.7',
        "labels": {"severity": "warning"},
        "annotations": {"summary": "the model metric fell below its threshold"}}])
    try:
        payload = eventually(lambda: receiver.payloads, timeout=60,
                             what="Alertmanager to deliver the alert to the webhook")[0]
        assert payload["status"] == "firing"
        alert = payload["alerts"][0]
        assert alert["labels"]["alertname"] == "ModelMetricBelowThreshold"
        assert alert["labels"]["case"] == case
        assert alert["annotations"]["summary"] == "the model metric fell below its threshold"
    finally:
        rule.unlink()
        fragment.unlink()
        services.reload(stack.state.prometheus_url)
        services.write_alertmanager_config(stack.dir / "alertmanager")
        services.reload(stack.state.alertmanager_url)
        receiver.close()
