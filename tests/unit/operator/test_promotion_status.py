"""status.promotion and the Promoted condition from the trainer's verdict per benchmark
(`TerminationSummary.promotion`), including what a malformed report cannot break."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from tailor.assess.conditions import find
from tailor.assess.trainingjob import assess
from tailor.assess.workers import verdict_report
from tailor_contract import constants as c
from tailor_contract.trainer_api import TerminationSummary
from tailor_contract.trainingjob import TrainingJobSpec

NOW = "2026-01-01T00:01:00Z"
SPEC = TrainingJobSpec.model_validate({"task": "custom", "command": ["true"], "workers": 1})
RECENT = {"benchmark": "recentHoldout", "against": "production", "metric": "accuracy",
          "candidate": 0.86, "other": 0.62, "improvement": 0.24, "pValue": 0.0004,
          "examples": 50, "passed": True, "why": "better on recent data"}
LOCKED = {"benchmark": "lockedTestSet", "against": "production", "metric": "accuracy",
          "candidate": 0.88, "other": 0.93, "improvement": -0.05, "pValue": 0.41,
          "examples": 120, "passed": False, "why": "worse beyond the margin 0.02"}


def finish(summary: TerminationSummary) -> dict[str, Any]:
    """The status once the (single) worker completed and reported `summary`."""
    body = {"metadata": {"name": "j", "namespace": "ns", "uid": "abcdef0123", "generation": 1},
            "status": {}}
    pod = {"metadata": {"labels": {"batch.kubernetes.io/job-completion-index": "0"}},
           "status": {"containerStatuses": [{"state": {"terminated": {
               "exitCode": 0, "message": summary.to_message()}}}]}}
    done = {"metadata": {"name": "j-worker", "uid": "u1",
                         "annotations": {"tailor.dev/attempt": "0"}},
            "spec": {}, "status": {"succeeded": 1, "conditions": [
                {"type": "Complete", "status": "True"}]}}
    return assess(body, SPEC, done, [pod], NOW).status


def promoted(status: dict[str, Any]) -> tuple[str, str, str]:
    found = find(status["conditions"], c.CONDITION_PROMOTED)
    assert found is not None
    return found["status"], found["reason"], found["message"]


@pytest.mark.parametrize("verdict, reason, condition", [
    ("Promoted", "Promoted", "True"),
    ("Rejected", "NotBetter", "False"),
    ("Rejected", "NotSignificant", "False"),
    ("Rejected", "Regressed", "False"),
    ("AwaitingApproval", "AwaitingApproval", "False"),
])
def test_the_verdict_per_benchmark_goes_to_status_and_the_condition(
        verdict: str, reason: str, condition: str) -> None:
    message = "recent holdout +0.24 (p=0.0004); locked test set -0.05 beyond the margin"
    summary = TerminationSummary(
        "Succeeded", reason, message, promoted=verdict == "Promoted",
        metrics={"improvement": 0.24, "pValue": 0.0004},
        promotion={"verdict": verdict, "reason": reason, "message": message,
                   "parts": [RECENT, LOCKED]})
    s = finish(summary)
    assert s["promotion"] == {"verdict": verdict, "reason": reason, "message": message,
                              "parts": [RECENT, LOCKED], "time": NOW,
                              "improvement": 0.24, "pValue": 0.0004}
    assert promoted(s) == (condition, reason, message)


def test_a_part_that_did_not_apply_keeps_its_null() -> None:
    part = {"benchmark": "recentHoldout", "against": "production", "passed": None,
            "examples": 12, "why": "NotApplicable: 12 recent examples, fewer than 30"}
    summary = TerminationSummary("Succeeded", "Promoted", "first-run rule", promoted=True,
                                 promotion={"verdict": "Promoted", "reason": "Promoted",
                                            "parts": [part]})
    s = finish(summary)
    assert s["promotion"]["parts"] == [part]
    assert promoted(s)[:2] == ("True", "Promoted")


def test_a_malformed_report_cannot_break_the_status_patch() -> None:
    """What the API server's schema would refuse (NaN is not JSON; a p-value above 1, a
    fractional count, an over-long text) is cleaned; what has no shape is left out."""
    parts: list[Any] = [{**RECENT, "pValue": 1.0000001, "examples": 50.0,
                         "candidate": math.nan, "other": math.inf, "benchmark": "b" * 100,
                         "why": "w" * 5000, "nested": {"no": "objects"}},
                        "not a part", 7]
    report = verdict_report(TerminationSummary(
        "Succeeded", promotion={"verdict": "Rejected", "reason": "NotBetter",
                                "message": "m" * 5000, "parts": parts * 4}))
    assert report is not None
    part = report["parts"][0]
    assert part["pValue"] == 1.0 and part["examples"] == 50 and isinstance(part["examples"], int)
    assert "candidate" not in part and "other" not in part and "nested" not in part
    assert len(part["benchmark"]) == 64 and len(part["why"]) == 1024
    assert len(report["message"]) == 1024 and len(report["parts"]) == 4
    json.dumps(report, allow_nan=False)  # valid JSON for the API server
    for bad in ({"verdict": "Maybe"}, {"reason": "Promoted"}, {}):
        assert verdict_report(TerminationSummary("Succeeded", promotion=bad)) is None


def test_an_older_trainer_without_a_report_is_read_as_before() -> None:
    summary = TerminationSummary("Succeeded", "NotSignificant", "p=0.2", promoted=False,
                                 metrics={"pValue": 0.2, "improvement": 0.03})
    s = finish(summary)
    assert s["promotion"] == {"verdict": "Rejected", "reason": "NotSignificant",
                              "message": "p=0.2", "time": NOW, "improvement": 0.03,
                              "pValue": 0.2}
    assert promoted(s) == ("False", "NotSignificant", "p=0.2")


def test_an_unknown_reason_is_reported_as_not_applicable_with_the_words() -> None:
    summary = TerminationSummary("Succeeded", "Coinflip", "heads", promoted=False,
                                 promotion={"verdict": "Rejected", "reason": "Coinflip",
                                            "message": "heads"})
    assert promoted(finish(summary)) == ("False", "NotApplicable",
                                         "not promoted (Coinflip): heads")
