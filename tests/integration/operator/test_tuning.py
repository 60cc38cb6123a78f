"""A hyper-parameter search through a running operator, on the local stack: four trials, two at a
time, with median pruning, each its own worker group of the real trainer in trial mode; the
operator is killed mid-search and a new one resumes the same study (no trial repeated, none
lost); the final run trains with the best parameters and is the only run that reads the locked
test set, once.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from tailor_contract import constants as c
from tailor_contract import trainer_api

from tests.support.story import MODEL, Size, Story
from tests.support.testing import OperatorProcess, StackHandle, eventually

JOB = "tuned"
SIZE = Size(per_class=20, epochs=2, steps=None, max_length=32, test=0.25, validation=0.25,
            timeout=1200)


@pytest.fixture
def story(stack: StackHandle, namespace: str) -> Iterator[Story]:
    told = Story(stack, namespace, f"tuning-{secrets.token_hex(4)}", SIZE, say=print)
    told.upload()
    yield told
    told.remove_bucket()


def manifest(story: Story) -> dict[str, Any]:
    tj = story.single_worker_job(JOB)
    spec = tj["spec"]
    spec["tuning"] = {
        "objective": {"metric": "accuracy"}, "algorithm": "tpe", "seed": 3,
        "earlyStopping": {"algorithm": "median", "minEpochs": 1},
        "maxTrials": 4, "parallelTrials": 2,
        "searchSpace": {"learningRate": {"min": 1e-5, "max": 3e-3, "scale": "log"},
                        "batchSize": {"values": [4, 8]}},
    }
    return tj


def tuning_of(story: Story) -> dict[str, Any]:
    search: dict[str, Any] = story.status("tj", JOB).get("tuning") or {}
    return search


def trial_jobs(story: Story) -> dict[str, str]:
    """Trial group name -> Job uid."""
    items = json.loads(story.stack.kubectl(
        "get", "jobs", "-n", story.ns, "-l",
        f"{c.LABEL_TRAININGJOB}={JOB},{c.LABEL_COMPONENT}={c.COMPONENT_TRIAL}",
        "-o", "json").stdout)["items"]
    return {j["metadata"]["name"]: j["metadata"]["uid"] for j in items}


def ids_read(story: Story, key: str) -> dict[str, list[str]]:
    body = story.s3.get_object(Bucket=story.bucket, Key=key)["Body"].read()
    read: dict[str, list[str]] = json.loads(body)
    return read


def test_a_search_survives_an_operator_restart_and_reads_the_test_set_once(
        stack: StackHandle, namespace: str, story: Story, tmp_path: Any) -> None:
    operator = OperatorProcess(stack, tmp_path / "operator-1.log", "--namespace", namespace)
    try:
        stack.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest(story)))

        def mid_search() -> dict[str, Any] | None:
            search = tuning_of(story)
            finished = sum(search.get(k, 0) for k in ("trialsCompleted", "trialsPruned",
                                                      "trialsFailed"))
            return search if finished >= 1 and search.get("trialsRunning", 0) >= 1 else None

        before = eventually(mid_search, timeout=600, what="one trial finished, one running")
        groups_before = trial_jobs(story)
    finally:
        operator.kill()
    assert story.status("tj", JOB)["phase"] == "Tuning"

    operator = OperatorProcess(stack, tmp_path / "operator-2.log", "--namespace", namespace)
    try:
        status = story.follow(JOB)
    finally:
        operator.stop()
    search = status["tuning"]
    trials = search["trials"]

    # The same study went on: every trial recorded before the kill kept its number and
    # parameters, none was asked twice, and a group that was running was not recreated.
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    for old in before["trials"]:
        assert trials[old["number"]]["parameters"] == old["parameters"]
    params = [json.dumps(t["parameters"], sort_keys=True) for t in trials]
    assert len(set(params)) == len(params)
    groups_after = trial_jobs(story)
    for name, uid in groups_before.items():
        if name in groups_after:
            assert groups_after[name] == uid, f"{name} was recreated after the restart"
    assert all(t["attempts"] == 1 for t in trials)
    assert search["state"] == c.SEARCH_COMPLETED
    assert search["trialsCompleted"] + search["trialsPruned"] + search["trialsFailed"] == 4
    assert search["trialsCompleted"] >= 1 and search["trialsRunning"] == 0
    best = search["bestTrial"]
    assert best["value"] == max(t["value"] for t in trials if t["state"] == c.TRIAL_COMPLETED)
    for t in trials:
        print(f"   trial {t['number']}: {t['state']:<9} {t.get('value', '-')} {t['parameters']}")
    print(f"   search: {search['summary']}; best trial {best['number']}")

    # The final run trained with the best parameters and was judged as any run is.
    assert status["phase"] == "Succeeded", status.get("conditions")
    assert status["metrics"]["test"] > 0

    # The discipline: no trial read a test id; the final run read the locked test set, and
    # it is the only run of the job that read any test row.
    run = f"models/{MODEL}/runs/{status['runId']}/"
    locked = json.loads(story.s3.get_object(
        Bucket=story.bucket, Key=f"models/{MODEL}/test-sets/v1/manifest.json")["Body"].read())
    test_ids = {e["id"] for e in locked["examples"]}
    assert test_ids
    readers = []
    for number in range(4):
        key = f"{run}{trainer_api.ARTIFACT_TRIALS_DIR}/{number}/{trainer_api.ARTIFACT_IDS_READ}"
        try:
            read = ids_read(story, key)
        except story.s3.exceptions.NoSuchKey:
            assert trials[number]["state"] != c.TRIAL_COMPLETED, key
            continue
        assert read["test"] == [] and read["recentHoldout"] == []
        assert not test_ids & (set(read["train"]) | set(read["validation"]))
        readers.append(number)
    assert readers, "no trial recorded what it read"
    final = ids_read(story, f"{run}{trainer_api.ARTIFACT_IDS_READ}")
    assert set(final["test"]) == test_ids
    keys = [o["Key"] for page in story.s3.get_paginator("list_objects_v2").paginate(
        Bucket=story.bucket, Prefix=run) for o in page.get("Contents", [])]
    reading = [k for k in keys if k.endswith(trainer_api.ARTIFACT_IDS_READ)
               and ids_read(story, k)["test"]]
    assert reading == [f"{run}{trainer_api.ARTIFACT_IDS_READ}"]

    # Visible where people look: the model card says what was searched and that the test
    # score was not tuned on; in MLflow every trial is a nested run of the final run.
    card = story.s3.get_object(Bucket=story.bucket, Key=f"{run}{trainer_api.ARTIFACT_MODEL_CARD}")
    text = card["Body"].read().decode()
    assert "Hyper-parameter search" in text and f"trial {best['number']}" in text
    found = requests.post(f"{stack.state.mlflow_uri}/api/2.0/mlflow/runs/search", json={
        "experiment_ids": [mlflow_experiment(stack, "tailor-demo")],
        "filter": f"tags.`tailor.searchRunId` = '{status['runId']}'"}, timeout=30).json()
    nested = {tags(r)["tailor.trial"]: tags(r).get("mlflow.parentRunId")
              for r in found.get("runs", [])}
    assert set(nested) == {str(n) for n in range(4)}
    assert set(nested.values()) == {status["mlflowRunId"]}


def mlflow_experiment(stack: StackHandle, name: str) -> str:
    answer = requests.get(f"{stack.state.mlflow_uri}/api/2.0/mlflow/experiments/get-by-name",
                          params={"experiment_name": name}, timeout=30).json()
    return str(answer["experiment"]["experiment_id"])


def tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}
