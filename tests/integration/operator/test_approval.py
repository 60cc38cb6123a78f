"""Manual approval through the running operator: a Manual-policy TrainingJob fine-tunes MiniLM on
a little BBC News, waits as AwaitingApproval, refuses an approval naming another run (an Event,
nothing promoted), and promotes when the annotation names its run: the promote Job runs the
trainer's real `python -m tailor_trainer.promote` in a pod, production.json names the run, and
Promoted is True.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from tailor_contract import constants as c

from tests.support.story import MODEL, Size, Story
from tests.support.testing import OperatorProcess, StackHandle, eventually

JOB = "approval"
# Small: one worker, one epoch of 10 articles per topic. The generic baseline is off, so a
# first run has no model to beat and the Manual policy stops it at AwaitingApproval whatever
# its accuracy: this test is about what happens after the verdict, not about the verdict.
SIZE = Size(per_class=10, epochs=1, max_length=32, timeout=900)


@pytest.fixture
def story(stack: StackHandle, namespace: str, operator: OperatorProcess) -> Iterator[Story]:
    told = Story(stack, namespace, f"approval-{secrets.token_hex(4)}", SIZE, say=print)
    yield told
    told.remove_bucket()


def manifest(story: Story) -> dict[str, Any]:
    tj = story.single_worker_job(JOB)
    spec = tj["spec"]
    spec["promotion"] = {"policy": "Manual"}
    return tj


def production_pointer(story: Story) -> dict[str, Any] | None:
    try:
        body = story.s3.get_object(Bucket=story.bucket,
                                   Key=f"models/{MODEL}/production.json")["Body"].read()
    except story.s3.exceptions.NoSuchKey:
        return None
    pointer: dict[str, Any] = json.loads(body)
    return pointer


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((x for x in status.get("conditions", []) if x["type"] == kind), {})


def events(story: Story) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(story.stack.kubectl(
        "get", "events", "-n", story.ns, "--field-selector",
        f"involvedObject.name={JOB},involvedObject.kind=TrainingJob", "-o", "json").stdout)["items"]
    return items


def event(story: Story, reason: str) -> dict[str, Any] | None:
    return next((e for e in events(story) if e["reason"] == reason), None)


def promote_job(story: Story) -> bool:
    return story.stack.kubectl("get", "job", f"{JOB}-promote", "-n", story.ns,
                               check=False).returncode == 0


def annotate(story: Story, key: str, value: str) -> None:
    story.stack.kubectl("annotate", "--overwrite", "tj", JOB, "-n", story.ns, f"{key}={value}")


def test_a_manual_verdict_is_refused_for_another_run_and_promoted_for_its_own(story: Story
                                                                              ) -> None:
    story.upload()
    story.stack.kubectl("apply", "-n", story.ns, "-f", "-", input=json.dumps(manifest(story)))
    status = story.follow(JOB)
    assert status["phase"] == "Succeeded", status.get("failure")
    run = status["runId"]
    assert status["promotion"]["verdict"] == c.REASON_AWAITING_APPROVAL, status["promotion"]
    promoted = condition(status, c.CONDITION_PROMOTED)
    assert (promoted["status"], promoted["reason"]) == ("False", c.REASON_AWAITING_APPROVAL)
    assert production_pointer(story) is None

    # An approval naming another run: refused with the reason, and nothing else happens.
    other = "run-00000000"
    annotate(story, c.ANNOTATION_APPROVE, other)
    refused = eventually(lambda: event(story, c.REASON_APPROVAL_REFUSED), timeout=60,
                         what="the ApprovalRefused Event")
    assert refused["type"] == "Warning"
    assert other in refused["message"] and run in refused["message"]
    after = story.status("tj", JOB)
    assert "approval" not in after["promotion"]
    assert after["promotion"]["verdict"] == c.REASON_AWAITING_APPROVAL
    assert condition(after, c.CONDITION_PROMOTED)["status"] == "False"
    assert not promote_job(story) and production_pointer(story) is None

    # The run's own id: the promote Job publishes it exactly as the automatic path would.
    annotate(story, c.ANNOTATION_APPROVE, run)
    final = eventually(
        lambda: (s := story.status("tj", JOB)) and
        condition(s, c.CONDITION_PROMOTED).get("status") == "True" and s,
        timeout=300, what="Promoted to become True after the approval")
    assert final["promotion"]["verdict"] == c.REASON_PROMOTED
    approval = final["promotion"]["approval"]
    assert (approval["decision"], approval["runId"]) == ("Approved", run) and approval["time"]
    message = condition(final, c.CONDITION_PROMOTED)["message"]
    assert f"{c.ANNOTATION_APPROVE}={run}" in message
    pointer = production_pointer(story)
    assert pointer is not None and pointer["runId"] == run
    reasons = [e["reason"] for e in events(story)]
    assert "Promoting" in reasons and c.REASON_APPROVED in reasons
    # One promote Job, owned by the TrainingJob, and it completed.
    job = json.loads(story.stack.kubectl("get", "job", f"{JOB}-promote", "-n", story.ns,
                                         "-o", "json").stdout)
    tj = json.loads(story.stack.kubectl("get", "tj", JOB, "-n", story.ns, "-o", "json").stdout)
    assert job["metadata"]["ownerReferences"][0]["uid"] == tj["metadata"]["uid"]
    assert any(x["type"] == "Complete" and x["status"] == "True"
               for x in job["status"].get("conditions", []))
