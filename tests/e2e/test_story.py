"""The `make demo` story, smaller: train through the operator, serve, shift, detect, retrain.

The slowest test: two fine-tuning runs of MiniLM on CPU in worker pods.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.story import JOB, MODEL, Size, Story
from tests.support.testing import OperatorProcess, StackHandle

# Small data: the reference profile (the validation split) has only a handful of rows, too few
# for a feature-drift test to reject anything, so this story is carried by the accuracy drop
# (feature drift on real-sized data: tests/integration/operator/test_driftmonitor.py).
SMALL = Size(per_class=12, epochs=1, max_length=64, served_per_class=8, threshold=0.9,
             timeout=900)


@pytest.fixture
def story(stack: StackHandle, namespace: str, operator: OperatorProcess) -> Iterator[Story]:
    told = Story(stack, namespace, f"e2e-{secrets.token_hex(4)}", SMALL, say=print)
    yield told
    for page in told.s3.get_paginator("list_objects_v2").paginate(Bucket=told.bucket):
        for obj in page.get("Contents", []):
            told.s3.delete_object(Bucket=told.bucket, Key=obj["Key"])
    told.s3.delete_bucket(Bucket=told.bucket)


def production_pointer(story: Story) -> dict[str, Any] | None:
    try:
        body = story.s3.get_object(Bucket=story.bucket,
                                   Key=f"models/{MODEL}/production.json")["Body"].read()
    except story.s3.exceptions.NoSuchKey:
        return None
    pointer: dict[str, Any] = json.loads(body)
    return pointer


def assert_promotion_is_earned(status: dict[str, Any], pointer: dict[str, Any] | None,
                               previous: dict[str, Any] | None) -> None:
    """Promoted only with a better test metric than every model it was compared with, and the
    production pointer moves exactly when a run is promoted."""
    verdict = status["promotion"]["verdict"]
    metrics = status["metrics"]
    if verdict == "Promoted":
        for other in ("baseline", "production"):
            if metrics.get(other) is not None:
                assert metrics["test"] > metrics[other], (other, metrics)
        assert pointer is not None and pointer["runId"] == status["runId"]
    else:
        assert pointer == previous


def test_train_serve_drift_and_retrain(story: Story) -> None:
    story.upload()
    trained = story.train()
    assert trained["phase"] == "Succeeded", trained.get("failure")
    assert trained["workers"]["restarts"] == 0
    for key in ("test", "baseline"):
        assert 0 <= trained["metrics"][key] <= 1
    first_pointer = production_pointer(story)
    assert_promotion_is_earned(trained, first_pointer, None)

    run_uri = trained["artifacts"]["runUri"]
    story.serve(run_uri, shift=False, part="day-1")
    story.serve(run_uri, shift=True, part="day-2")
    monitored = story.monitor()
    conditions = {c["type"]: c for c in monitored["conditions"]}
    assert conditions["AccuracyBelowThreshold"]["status"] == "True"
    assert monitored["accuracy"]["value"] < 0.9 and monitored["window"]["labeled"] == 80
    assert {f["name"] for f in monitored["features"]} >= {"text:chars", "text:words"}
    assert monitored["retrainCount"] == 1

    retrain_name = monitored["lastRetrain"]["name"]
    retrained = story.follow(retrain_name)
    assert retrained["phase"] == "Succeeded", retrained.get("failure")
    assert retrained["triggeredBy"]["driftMonitor"] == "news-monitor"
    assert retrained["triggeredBy"]["reason"] == "AccuracyBelowThreshold"
    assert_promotion_is_earned(retrained, production_pointer(story), first_pointer)
    source = json.loads(story.stack.kubectl("get", "tj", JOB, "-n", story.ns, "-o",
                                            "json").stdout)
    clone = json.loads(story.stack.kubectl("get", "tj", retrain_name, "-n", story.ns, "-o",
                                           "json").stdout)
    # The window's 80 labelled predictions are folded into the clone's data; the locked test set
    # (data.uri's) is the one the first run wrote, which assert_promotion_is_earned relies on.
    folded = retrained["triggeredBy"]["productionData"]
    assert folded["rows"] == monitored["window"]["labeled"]
    assert folded["uri"].endswith(f"/{MODEL}/production-data/{retrain_name}.parquet")
    assert clone["spec"]["data"] == {**source["spec"]["data"], "additionalUris": [folded["uri"]]}
    assert clone["spec"]["model"]["name"] == MODEL
