"""The DriftMonitor on the real stack: logs in MinIO, checks, metrics, retrains, the alert path,
and following the production model after a promotion."""

from __future__ import annotations

import io
import json
import secrets
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tailor_contract.profile import build_reference_profile
from tailor_devstack import services

from tests.support import chart_rules
from tests.support.testing import OperatorProcess, StackHandle, eventually

RETRAIN_COMMAND = ["python", "-c", "print('retrained')"]
CLASSES = np.array(["sport", "tech"])


@pytest.fixture
def bucket(stack: StackHandle) -> Iterator[str]:
    s3 = s3_client(stack)
    name = f"drift-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=name)
    yield name
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def s3_client(stack: StackHandle) -> Any:
    return boto3.client("s3", endpoint_url=stack.state.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=stack.state.s3_access_key,
                        aws_secret_access_key=stack.state.s3_secret_key)


def write_reference(stack: StackHandle, bucket: str, run: str = "model/run-1", *, seed: int = 7,
                    shift: float = 0.0) -> str:
    """A run's reference profile (`shift`: trained where production moved to). The unit test
    test_drift_false_alarms.py draws the same profiles."""
    rng = np.random.default_rng(seed)
    n = 3000
    predictions = rng.choice(["sport", "tech"], n)
    profile = build_reference_profile({"length": rng.normal(300 + 40 * shift, 40, n),
                                       "links": rng.poisson(2, n).astype(float)},
                                      predictions, classes=["sport", "tech"],
                                      labels=predictions)
    s3_client(stack).put_object(Bucket=bucket, Key=f"{run}/reference-profile.json",
                                Body=json.dumps(profile.to_json()).encode())
    return f"s3://{bucket}/{run}/reference-profile.json"


def write_window(stack: StackHandle, bucket: str, *, part: str, shift: float,
                 accuracy: float, n: int = 800, at: float | None = None) -> dict[str, str]:
    """Prediction logs (features shifted by `shift` standard deviations; predicted at `at`,
    else a minute ago) and their labels, `accuracy` of them matching the prediction; returns
    the labels by id.

    Seeded by the part's name through crc32, the same in every process (hash() of a string is
    not: a healthy window then raised DriftDetected in about one run in twenty).
    tests/unit/drift/test_drift_false_alarms.py draws the same windows and checks that each
    part used here says what its test expects ("fine" is healthy), and that healthy windows
    alarm no more often than the checks' significance level."""
    rng = np.random.default_rng(zlib.crc32(part.encode()))
    now = time.time()
    predicted = rng.choice(CLASSES, n)
    correct = rng.random(n) < accuracy
    actual = np.where(correct, predicted, np.where(predicted == "sport", "tech", "sport"))
    length = rng.normal(300 + 40 * shift, 40, n)
    links = rng.poisson(2, n).astype(float)
    predicted_at = now - 60 if at is None else at
    predictions = [{"id": f"{part}-{i}", "timestamp": predicted_at, "length": float(length[i]),
                    "links": float(links[i]), "prediction": str(predicted[i])} for i in range(n)]
    labels = [{"id": f"{part}-{i}", "label": str(actual[i]), "timestamp": now - 30}
              for i in range(n)]
    s3 = s3_client(stack)
    for key, rows in ((f"logs/predictions/{part}.jsonl", predictions),
                      (f"logs/labels/{part}.jsonl", labels)):
        body = io.BytesIO("".join(json.dumps(r) + "\n" for r in rows).encode())
        s3.put_object(Bucket=bucket, Key=key, Body=body.getvalue())
    return {row["id"]: row["label"] for row in labels}


def monitor(name: str, bucket: str, profile_uri: str, stack: StackHandle,
            triggers: list[str], cooldown: str = "1h",
            template: dict[str, Any] | None = None) -> str:
    return json.dumps({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "DriftMonitor",
        "metadata": {"name": name},
        "spec": {
            "model": {"profileUri": profile_uri},
            "production": {"predictionsUri": f"s3://{bucket}/logs/predictions/",
                           "groundTruthUri": f"s3://{bucket}/logs/labels/", "window": "1h",
                           "minSamples": 200, "minLabeled": 100},
            "storage": {"endpoint": stack.state.s3_endpoint,
                        "credentialsSecret": {"name": "s3"}},
            "interval": "10s",
            "checks": {"accuracy": {"threshold": 0.8}},
            "retrain": {"triggers": triggers, "cooldown": cooldown,
                        "template": {"spec": template or {"task": "custom", "workers": 1,
                                                          "procsPerWorker": 1,
                                                          "command": RETRAIN_COMMAND}}},
        }})


def dm_status(stack: StackHandle, namespace: str, name: str) -> dict[str, Any]:
    result = stack.kubectl("get", "dm", name, "-n", namespace, "-o", "json", check=False)
    status: dict[str, Any] = json.loads(result.stdout).get("status", {}) \
        if result.returncode == 0 else {}
    return status


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def retrains(stack: StackHandle, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(stack.kubectl(
        "get", "tj", "-n", namespace, "-l", f"tailor.dev/driftmonitor={name}", "-o", "json"
    ).stdout)["items"]
    return items


def scrape(operator: OperatorProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The operator's metrics as {(sample name, labels): value}."""
    text = requests.get(operator.metrics_url, timeout=10).text
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.fixture
def storage_secret(stack: StackHandle, namespace: str) -> None:
    stack.kubectl("create", "secret", "generic", "s3", "-n", namespace,
                  f"--from-literal=AWS_ACCESS_KEY_ID={stack.state.s3_access_key}",
                  f"--from-literal=AWS_SECRET_ACCESS_KEY={stack.state.s3_secret_key}")


def test_a_shift_and_an_accuracy_drop_are_detected_and_retrain_once(
        stack: StackHandle, namespace: str, operator: OperatorProcess, bucket: str,
        storage_secret: None) -> None:
    profile = write_reference(stack, bucket)
    truth = write_window(stack, bucket, part="shifted", shift=3.0, accuracy=0.6)
    # A retrain with data (and so an output): the window's labelled examples are folded in.
    template = {"task": "custom", "workers": 1, "procsPerWorker": 1, "command": RETRAIN_COMMAND,
                "data": {"uri": f"s3://{bucket}/data/curated.csv"},
                "output": {"uri": f"s3://{bucket}/models"}}
    stack.kubectl("apply", "-n", namespace, "-f", "-",
                  input=monitor("news", bucket, profile, stack, ["AccuracyBelowThreshold"],
                                template=template))
    status = eventually(lambda: (s := dm_status(stack, namespace, "news")) and
                        condition(s, "AccuracyBelowThreshold").get("status") == "True" and s,
                        timeout=60, what="the check to find the accuracy drop")
    assert condition(status, "DriftDetected")["status"] == "True"
    assert condition(status, "DriftDetected")["reason"] == "FeatureDrift"
    assert condition(status, "Ready")["status"] == "True"
    drifted = {f["name"]: f for f in status["features"]}
    assert drifted["length"]["drifted"] is True and drifted["links"]["drifted"] is False
    assert 0.5 < status["accuracy"]["value"] < 0.7
    assert status["accuracy"]["lower"] < status["accuracy"]["value"] < status["accuracy"]["upper"]
    assert status["window"]["predictions"] == 800 and status["window"]["labelCoverage"] == 1.0
    assert status["retrainCount"] == 1 and status["lastRetrain"]["reason"] == \
        "AccuracyBelowThreshold"

    [job] = eventually(lambda: retrains(stack, namespace, "news"), timeout=30,
                       what="the retraining TrainingJob")
    assert job["metadata"]["name"] == status["lastRetrain"]["name"]
    assert job["metadata"]["name"].startswith("news-retrain-")
    lineage = json.loads(job["metadata"]["annotations"]["tailor.dev/trigger"])
    assert lineage["driftMonitor"] == "news" and lineage["reason"] == "AccuracyBelowThreshold"
    assert "accuracy" in lineage["message"] and lineage["windowEnd"]
    assert job["spec"]["command"] == RETRAIN_COMMAND
    triggered = eventually(lambda: (t := retrains(stack, namespace, "news")[0].get(
        "status", {}).get("triggeredBy", {})).get("driftMonitor") == "news" and t, timeout=30,
        what="the TrainingJob's status to carry its lineage")

    # The production data: written before the job, named by it, the window's labelled rows.
    key = f"models/news/production-data/{job['metadata']['name']}.parquet"
    uri = f"s3://{bucket}/{key}"
    assert job["spec"]["data"]["productionUris"] == [uri]
    assert "additionalUris" not in job["spec"]["data"]
    assert job["spec"]["data"]["uri"] == f"s3://{bucket}/data/curated.csv"
    assert lineage["productionData"] == {"uri": uri, "rows": 800}
    assert triggered["productionData"] == {"uri": uri, "rows": 800}
    assert status["lastRetrain"]["windowEnd"] == lineage["windowEnd"]
    body = s3_client(stack).get_object(Bucket=bucket, Key=key)["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    # The retrain's columns: its id and label, the model's inputs (the profile's features) and
    # its timestamp column, when each was predicted (what orders its recent holdout).
    assert table.column_names == ["id", "length", "links", "timestamp", "label"]
    rows = table.to_pylist()
    assert {r["id"]: r["label"] for r in rows} == truth
    assert all(float(r["length"]) > 0 for r in rows)
    assert all(r["timestamp"].endswith("Z") for r in rows)

    samples = scrape(operator)
    labels = {"namespace": namespace, "monitor": "news"}
    assert samples[("tailor_drift_detected", frozenset(labels.items()))] == 1.0
    accuracy = frozenset({**labels, "metric": "accuracy"}.items())
    assert samples[("tailor_model_metric_threshold", accuracy)] == 0.8
    assert samples[("tailor_model_metric", accuracy)] == status["accuracy"]["value"]
    retrained = frozenset({**labels, "reason": "AccuracyBelowThreshold"}.items())
    assert samples[("tailor_retrains_total", retrained)] == 1.0
    assert any(name == "tailor_feature_drift_score" and ("feature", "length") in key
               for name, key in samples)

    # Another bad window inside the cooldown: checked, but no second retrain.
    first_check = status["lastCheckTime"]
    write_window(stack, bucket, part="worse", shift=3.0, accuracy=0.55)
    later = eventually(lambda: (s := dm_status(stack, namespace, "news")) and
                       s.get("lastCheckTime") != first_check and s, timeout=60,
                       what="a second check")
    assert condition(later, "AccuracyBelowThreshold")["status"] == "True"
    assert condition(later, "Retraining")["reason"] in ("CooldownActive", "RetrainRunning")
    assert later["retrainCount"] == 1
    assert len(retrains(stack, namespace, "news")) == 1


def test_healthy_production_data_raises_nothing(stack: StackHandle, namespace: str,
                                                operator: OperatorProcess, bucket: str,
                                                storage_secret: None) -> None:
    profile = write_reference(stack, bucket)
    write_window(stack, bucket, part="fine", shift=0.0, accuracy=0.95)
    stack.kubectl("apply", "-n", namespace, "-f", "-",
                  input=monitor("calm", bucket, profile, stack, ["AccuracyBelowThreshold",
                                                                 "DriftDetected"]))
    status = eventually(lambda: (s := dm_status(stack, namespace, "calm")) and
                        s.get("lastCheckTime") and s, timeout=60, what="a check")
    assert condition(status, "DriftDetected")["status"] == "False"
    assert condition(status, "AccuracyBelowThreshold")["status"] == "False"
    assert status["phase"] == "Healthy" and retrains(stack, namespace, "calm") == []


def test_a_missing_secret_stalls_the_monitor_with_a_clear_reason(
        stack: StackHandle, namespace: str, operator: OperatorProcess, bucket: str) -> None:
    stack.kubectl("apply", "-n", namespace, "-f", "-",
                  input=monitor("nosecret", bucket, f"s3://{bucket}/none.json", stack,
                                ["AccuracyBelowThreshold"]))
    status = eventually(lambda: (s := dm_status(stack, namespace, "nosecret")) and
                        condition(s, "Stalled").get("status") == "True" and s, timeout=60,
                        what="the monitor to stall")
    assert condition(status, "Stalled")["reason"] == "SecretNotFound"
    assert "'s3'" in condition(status, "Stalled")["message"]
    assert retrains(stack, namespace, "nosecret") == []


def write_pointer(stack: StackHandle, bucket: str, run: str, promoted_at: float) -> None:
    """The production pointer as the trainer's promotion writes it (tailor_trainer.artifacts)."""
    pointer = {"runId": run, "artifactUri": f"s3://{bucket}/models/news/runs/{run}/",
               "modelUri": f"s3://{bucket}/models/news/production/{run}/model/", "files": {},
               "metric": "accuracy", "promotedAt": promoted_at}
    s3_client(stack).put_object(Bucket=bucket, Key="models/news/production.json",
                                Body=json.dumps(pointer).encode())


def test_after_a_promotion_the_monitor_follows_the_new_model(
        stack: StackHandle, namespace: str, operator: OperatorProcess, bucket: str,
        storage_secret: None) -> None:
    # The monitored TrainingJob only names the model (suspended: nothing runs); its first run
    # was promoted two hours ago, and production's accuracy has fallen since.
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "news"},
        "spec": {"task": "custom", "workers": 1, "procsPerWorker": 1, "command": RETRAIN_COMMAND,
                 "output": {"uri": f"s3://{bucket}/models"}, "runPolicy": {"suspend": True}}}))
    first = write_reference(stack, bucket, "models/news/runs/run-1")
    write_pointer(stack, bucket, "run-1", time.time() - 7200)
    write_window(stack, bucket, part="bad", shift=0.0, accuracy=0.6)
    spec = json.loads(monitor("follow", bucket, first, stack, ["AccuracyBelowThreshold"]))
    spec["spec"]["model"] = {"trainingJob": "news"}
    spec["spec"]["retrain"] = {"enabled": False}
    stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(spec))
    status = eventually(lambda: (s := dm_status(stack, namespace, "follow")) and
                        condition(s, "AccuracyBelowThreshold").get("status") == "True" and s,
                        timeout=60, what="the check to find the first model's accuracy drop")
    assert status["profileUri"] == first
    followed_first = status.get("reference")

    # A retrain trained where production moved to is promoted, with its own profile; the new
    # model then serves the shifted feed well.
    second = write_reference(stack, bucket, "models/news/runs/run-2", seed=8, shift=3.0)
    promoted_at = time.time()
    write_pointer(stack, bucket, "run-2", promoted_at)
    write_window(stack, bucket, part="served", shift=3.0, accuracy=0.95, at=promoted_at + 1)
    status = eventually(lambda: (s := dm_status(stack, namespace, "follow")) and
                        s["profileUri"] == second and s["window"]["predictions"] == 800 and s,
                        timeout=60, what="a check of the new model's predictions")
    # Only the predictions since the promotion count: the old model's bad ones no longer do.
    promoted = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(promoted_at)))
    assert status["window"]["start"] == promoted
    below = condition(status, "AccuracyBelowThreshold")
    assert (below["status"], below["reason"]) == ("False", "AccuracyOK")
    assert status["accuracy"]["value"] > 0.9 and status["phase"] == "Healthy"
    # The shifted inputs are what run-2 was trained on: no drift against its profile.
    assert {f["name"]: f["drifted"] for f in status["features"]} == {"length": False,
                                                                     "links": False}
    assert "since run-2 was promoted" in condition(status, "Ready")["message"]
    # Status says which run the checks compare with (CRD: status.reference).
    assert followed_first == {"source": "ProductionPointer", "runId": "run-1",
                              "promotedAt": (followed_first or {}).get("promotedAt")}
    assert status["reference"] == {"source": "ProductionPointer", "runId": "run-2",
                                   "promotedAt": promoted}


@pytest.fixture
def webhook_operator(stack: StackHandle, namespace: str, crds: None,
                     tmp_path: Path) -> Iterator[tuple[OperatorProcess, str, str]]:
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "token"
    token_file.write_text(token)
    import socket
    with socket.socket() as s:
        s.bind((stack.state.gateway, 0))
        port = s.getsockname()[1]
    process = OperatorProcess(stack, tmp_path / "operator.log", "--namespace", namespace,
                              "--webhook-token-file", str(token_file),
                              "--webhook-port", str(port))
    yield process, f"http://{stack.state.gateway}:{port}/alerts", token
    process.stop()


# The chart's retrain alert fires at once here (`for` defaults to 5m);
# tests/unit/chart/test_chart_promtool.py holds what `for` does.
CHART_RULE_VALUES = ["--set", "prometheusRule.for.modelMetric=0s"]


def test_solo_chart_alert_through_prometheus_and_alertmanager_retrains_once(
        stack: StackHandle, namespace: str, bucket: str, storage_secret: None,
        webhook_operator: tuple[OperatorProcess, str, str]) -> None:
    """The chart's PrometheusRule (checked by promtool) fires on an accuracy drop like the
    demo's second day (under the monitor's 0.8), the chart's AlertmanagerConfig route takes it
    to the webhook, and the operator retrains once."""
    operator, url, token = webhook_operator
    targets = stack.dir / "prometheus" / "targets" / f"{namespace}.json"
    fragment = stack.dir / "alertmanager" / "receivers" / f"{namespace}.yml"
    with chart_rules.installed(stack.dir, stack.state.prometheus_url, f"chart-{namespace}",
                               CHART_RULE_VALUES):
        try:
            targets.write_text(json.dumps([{
                "targets": [f"{operator.address}:{operator.metrics_port}"],
                "labels": {"job": "tailor-operator"}}]))
            # The Prometheus Operator scopes the chart's route to one namespace; so do we.
            fragment.write_text(yaml.safe_dump({
                "receiver": {"name": namespace, "webhook_configs": [{
                    "url": url, "send_resolved": False,
                    "http_config": {"authorization": {"type": "Bearer",
                                                      "credentials": token}}}]},
                "matchers": [*chart_rules.route_matchers(), f'namespace="{namespace}"']}))
            services.write_alertmanager_config(stack.dir / "alertmanager")
            services.reload(stack.state.alertmanager_url)
            alerted_once(stack, namespace, bucket, operator)
        finally:
            for path in (targets, fragment):
                path.unlink(missing_ok=True)
            services.write_alertmanager_config(stack.dir / "alertmanager")
            services.reload(stack.state.alertmanager_url)


def alerted_once(stack: StackHandle, namespace: str, bucket: str,
                 operator: OperatorProcess) -> None:
    profile = write_reference(stack, bucket)
    write_window(stack, bucket, part="bad", shift=0.0, accuracy=0.6)
    # The internal trigger is off: only the alert may retrain.
    stack.kubectl("apply", "-n", namespace, "-f", "-",
                  input=monitor("alerted", bucket, profile, stack, ["Alert"]))
    [job] = eventually(lambda: retrains(stack, namespace, "alerted"), timeout=120,
                       what="Prometheus -> Alertmanager -> webhook -> retrain")
    lineage = json.loads(job["metadata"]["annotations"]["tailor.dev/trigger"])
    # The chart's summary annotation, as Prometheus filled it in.
    assert lineage["reason"] == "Alert"
    assert lineage["message"] == "alert: alerted: accuracy is below its threshold"
    status = dm_status(stack, namespace, "alerted")
    assert status["retrainCount"] == 1 and status["lastRetrain"]["reason"] == "Alert"
    assert scrape(operator)[("tailor_alerts_received_total",
                             frozenset({("outcome", "retrain-created")}))] == 1.0
    [alert] = [a for a in requests.get(
        f"{stack.state.alertmanager_url}/api/v2/alerts", timeout=10,
        params={"filter": f'namespace="{namespace}"'}).json()
        if a["labels"]["alertname"] == chart_rules.RETRAIN_ALERT]
    assert {k: alert["labels"][k] for k in ("monitor", "metric", "tailor_action")} == {
        "monitor": "alerted", "metric": "accuracy", "tailor_action": "retrain"}
    assert [r["name"] for r in alert["receivers"]] == [namespace]
    assert len(retrains(stack, namespace, "alerted")) == 1


def test_solo_webhook_refuses_bad_callers_and_bad_payloads(
        stack: StackHandle, namespace: str, bucket: str, storage_secret: None,
        webhook_operator: tuple[OperatorProcess, str, str]) -> None:
    _, url, token = webhook_operator
    profile = write_reference(stack, bucket)
    stack.kubectl("apply", "-n", namespace, "-f", "-",
                  input=monitor("guarded", bucket, profile, stack, ["Alert"]))
    alert = {"version": "4", "status": "firing", "alerts": [{
        "status": "firing", "fingerprint": "abc123", "startsAt": "2026-01-01T00:00:00Z",
        "labels": {"alertname": "X", "namespace": namespace, "monitor": "guarded"},
        "annotations": {"summary": "test"}}]}
    assert requests.post(url, json=alert, timeout=10).status_code == 401
    assert requests.post(url, json=alert, timeout=10,
                         headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": f"Bearer {token}"}
    for bad in (b"not json", b"[]", b'{"alerts": [{"labels": 3}]}', b'{"alerts": "x"}'):
        response = requests.post(url, data=bad, headers=auth, timeout=10)
        assert response.status_code == 400, bad
        assert "malformed payload" in response.json()["error"]
    assert retrains(stack, namespace, "guarded") == []
    # The same alert twice (Alertmanager repeats): one retrain.
    first = requests.post(url, json=alert, headers=auth, timeout=10)
    second = requests.post(url, json=alert, headers=auth, timeout=10)
    assert first.json()["results"][0]["outcome"] == "retrain-created"
    assert second.json()["results"][0]["outcome"] == "duplicate"
    assert len(retrains(stack, namespace, "guarded")) == 1


def test_solo_operator_killed_during_checks_creates_no_duplicate_retrain(
        stack: StackHandle, namespace: str, bucket: str, storage_secret: None, crds: None,
        tmp_path: Path) -> None:
    profile = write_reference(stack, bucket)
    write_window(stack, bucket, part="bad", shift=2.0, accuracy=0.55)
    own = OperatorProcess(stack, tmp_path / "operator.log", "--namespace", namespace)
    stack.kubectl("apply", "-n", namespace, "-f", "-",
                  input=monitor("sturdy", bucket, profile, stack, ["AccuracyBelowThreshold"]))
    eventually(lambda: dm_status(stack, namespace, "sturdy").get("lastRetrain"), timeout=60,
               what="the first retrain to be recorded")
    own.kill()  # SIGKILL, whatever it was doing
    write_window(stack, bucket, part="worse", shift=2.0, accuracy=0.5)
    restarted = OperatorProcess(stack, tmp_path / "operator-2.log", "--namespace", namespace)
    try:
        before = dm_status(stack, namespace, "sturdy")["lastCheckTime"]
        eventually(lambda: dm_status(stack, namespace, "sturdy").get("lastCheckTime") != before,
                   timeout=60, what="a check by the restarted operator")
        status = dm_status(stack, namespace, "sturdy")
        assert status["retrainCount"] == 1
        [job] = retrains(stack, namespace, "sturdy")
        assert job["metadata"]["name"] == status["lastRetrain"]["name"]
    finally:
        restarted.stop()
