"""The `make demo` story and its other ending, through the operator on the local stack.

One first fine-tune, promoted over the generic model; one day of the usual feed and one of the
shifted feed served by it. Then two DriftMonitors in turn catch the drop, and their retrains end
the story both ways:

- without the labelled production examples, the retrain learns nothing the production model
  did not know: it is rejected and the old model stays in production;
- with them, it is promoted on the recent holdout, not worse on the locked test set, and the
  shifted feed served by it is accurate again, which clears the monitor's accuracy condition.

The slowest test: three fine-tuning runs of MiniLM on CPU in worker pods (about a minute each).
The data is the demo's: the verdicts need a locked test set and a recent holdout large enough
for their tests to show what they show.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from tailor_contract import constants as c
from tailor_contract.trainer_api import (
    AGAINST_GENERIC,
    AGAINST_PRODUCTION,
    BENCHMARK_LOCKED_TEST_SET,
    BENCHMARK_RECENT_HOLDOUT,
    VERDICT_PROMOTED,
    VERDICT_REJECTED,
)

from tests.support.story import JOB, MODEL, MONITOR, Size, Story, condition
from tests.support.testing import OperatorProcess, StackHandle

SIZE = Size()
ALPHA = 0.05
OLD_DATA_MONITOR = "news-monitor-old-data"


@pytest.fixture
def story(stack: StackHandle, namespace: str, operator: OperatorProcess) -> Iterator[Story]:
    told = Story(stack, namespace, f"e2e-{secrets.token_hex(4)}", SIZE, say=print)
    yield told
    told.remove_bucket()


def parts(status: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(p["benchmark"], p["against"]): p for p in status["promotion"].get("parts", [])}


def spec(story: Story, name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(story.stack.kubectl("get", "tj", name, "-n", story.ns,
                                                          "-o", "json").stdout)["spec"]
    return body


def test_a_retrain_with_production_data_replaces_the_model_and_one_without_does_not(
        story: Story) -> None:
    first = first_promoted(story)
    normal = story.serve("normal", "day-1")
    drifted = story.serve("shifted", "day-2")
    assert normal.run_id == drifted.run_id == first["runId"]
    assert drifted.accuracy < SIZE.threshold < normal.accuracy

    # The other ending first: the old data again, nothing learnt, the old model stays.
    first_pointer = story.pointer()
    old_data = story.monitor(OLD_DATA_MONITOR, include_production_data=False)
    assert old_data["retrainCount"] == 1
    unchanged = story.retrain(old_data)
    assert unchanged["phase"] == "Succeeded", unchanged.get("failure")
    assert unchanged["promotion"]["verdict"] == VERDICT_REJECTED, unchanged["promotion"]
    assert not (unchanged.get("triggeredBy", {}).get("productionData") or {}).get("rows")
    assert "productionUris" not in spec(story, old_data["lastRetrain"]["name"])["data"]
    assert story.pointer() == first_pointer
    story.stack.kubectl("delete", "dm", OLD_DATA_MONITOR, "-n", story.ns)

    # The story: the labelled production examples folded in, judged where production is now.
    retrained = promoted_retrain(story)
    after = story.serve("after", "day-3")
    assert after.run_id == retrained["runId"]
    assert after.accuracy > SIZE.threshold > drifted.accuracy
    cleared = story.cleared()
    below = condition(cleared, c.CONDITION_ACCURACY_BELOW_THRESHOLD)
    assert below["reason"] == c.REASON_ACCURACY_OK
    assert cleared["window"]["labeled"] == 5 * SIZE.after


def first_promoted(story: Story) -> dict[str, Any]:
    """The first fine-tune, promoted over the generic model, significantly."""
    story.upload()
    first = story.train()
    assert first["phase"] == "Succeeded", first.get("failure")
    assert first["workers"]["restarts"] == 0
    assert first["promotion"]["verdict"] == VERDICT_PROMOTED, first["promotion"]
    generic = parts(first)[(BENCHMARK_LOCKED_TEST_SET, AGAINST_GENERIC)]
    assert generic["passed"] and generic["pValue"] < ALPHA
    assert generic["candidate"] > generic["other"] and generic["examples"] >= 300
    pointer = story.pointer()
    assert pointer is not None and pointer["runId"] == first["runId"]
    return first


def promoted_retrain(story: Story) -> dict[str, Any]:
    """The monitor's retrain with the window's labelled predictions, promoted on the recent
    holdout, not worse on the locked test set, still better than the generic model."""
    monitored = story.monitor()
    assert condition(monitored, c.CONDITION_ACCURACY_BELOW_THRESHOLD)["status"] == "True"
    assert monitored["window"]["labeled"] == 5 * (SIZE.normal + SIZE.shifted)
    name = monitored["lastRetrain"]["name"]
    retrained = story.retrain(monitored)
    assert retrained["phase"] == "Succeeded", retrained.get("failure")
    assert retrained["triggeredBy"]["driftMonitor"] == MONITOR
    folded = retrained["triggeredBy"]["productionData"]
    assert folded["rows"] == monitored["window"]["labeled"]
    assert folded["uri"].endswith(f"/{MODEL}/production-data/{name}.parquet")
    # The locked test set is data.uri's, as the first run locked it; production rows only add.
    assert spec(story, name)["data"] == {**spec(story, JOB)["data"],
                                         "productionUris": [folded["uri"]]}

    assert retrained["promotion"]["verdict"] == VERDICT_PROMOTED, retrained["promotion"]
    judged = parts(retrained)
    recent = judged[(BENCHMARK_RECENT_HOLDOUT, AGAINST_PRODUCTION)]
    assert recent["passed"] and recent["pValue"] < ALPHA and recent["improvement"] > 0
    assert recent["examples"] >= 0.25 * folded["rows"]
    guard = judged[(BENCHMARK_LOCKED_TEST_SET, AGAINST_PRODUCTION)]
    assert guard["passed"] and guard["pValue"] < ALPHA
    assert judged[(BENCHMARK_LOCKED_TEST_SET, AGAINST_GENERIC)]["passed"]
    pointer = story.pointer()
    assert pointer is not None and pointer["runId"] == retrained["runId"]
    return retrained
