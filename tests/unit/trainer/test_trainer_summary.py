"""What the operator reads of a run: the verdict's reason and the data-quality outcome in the
termination message, for every verdict and for the failures the gate decides."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from tailor_contract import constants, trainer_api
from tailor_contract.trainer_api import TerminationSummary
from tailor_contract.trainingjob import Evaluation, Promotion, Quality
from tailor_trainer import judge, significance
from tailor_trainer.data.load import ColumnMap
from tailor_trainer.data.quality import QualityGate, QualityReport
from tailor_trainer.errors import (
    REASON_DATA_QUALITY_FAILED,
    REASON_TEST_SET_CHANGED,
    DataQualityFailed,
    PermanentError,
)
from tailor_trainer.pipeline import summary

COLS = ColumnMap(id="id", input="text", label="label", group=None, annotators=())


def gate_report(rows: list[tuple[str, str, str]], quality: Quality) -> QualityReport:
    gate = QualityGate(quality, COLS, None)
    gate.add({"id": [r[0] for r in rows], "text": [r[1] for r in rows],
              "label": [r[2] for r in rows]})
    return gate.report()


CLEAN = [(f"id-{i}", f"text number {i}", "ab"[i % 2]) for i in range(40)]
# Ten of forty inputs repeat an earlier one: 25% duplicates.
DUPLICATED = CLEAN[:30] + [(f"dup-{i}", f"text number {i}", "ab"[i % 2]) for i in range(10)]
WARN_DUPLICATES = Quality.model_validate(
    {"minExamples": 10, "duplicates": {"maxFraction": 0.05, "action": "Warn"}})
FAIL_DUPLICATES = Quality.model_validate(
    {"minExamples": 10, "duplicates": {"maxFraction": 0.05, "action": "Fail"}})


def comparison(improvement: float, p: float, name: str = "generic") -> significance.Comparison:
    return significance.Comparison(name, "accuracy", 0.9, 0.9 - improvement, improvement, p,
                                   None, None, better=improvement >= 0.01, significant=p < 0.05,
                                   examples=120)


def decide(comparisons: list[significance.Comparison], promotion: Promotion) -> judge.Verdict:
    """The first-run rule on the locked test set, from ready-made comparisons."""
    parts = [judge.better_part(trainer_api.BENCHMARK_LOCKED_TEST_SET, c, Evaluation())
             for c in comparisons]
    return judge.decide(parts, comparisons, promotion, in_order=False)


def metrics_for(verdict: judge.Verdict,
                comparisons: list[significance.Comparison]) -> dict[str, object]:
    """A metrics.json as the evaluate stage writes it, reduced to what the summary reads."""
    return {"metric": "accuracy", "validation": {"accuracy": 0.91},
            "test": {"candidate": {"accuracy": 0.9}, "generic": {"accuracy": 0.85}},
            "comparisons": [c.to_dict() for c in comparisons],
            "verdict": {"promote": verdict.promote, "reason": verdict.reason,
                        "message": verdict.message},
            "promotion": verdict.summary(),
            "testSet": {"examples": 120}, "training": {"steps": 30}}


VERDICTS = [
    (constants.REASON_PROMOTED, [comparison(0.05, 0.001)], Promotion(), True),
    (constants.REASON_NOT_BETTER, [comparison(0.005, 0.001)], Promotion(), False),
    (constants.REASON_NOT_SIGNIFICANT, [comparison(0.05, 0.2)], Promotion(), False),
    (constants.REASON_AWAITING_APPROVAL, [comparison(0.05, 0.001)], Promotion(policy="Manual"),
     False),
]


@pytest.mark.parametrize(("reason", "comparisons", "promotion", "promoted"), VERDICTS,
                         ids=[v[0] for v in VERDICTS])
def test_each_verdict_reaches_the_termination_message(reason, comparisons, promotion, promoted):
    verdict = decide(comparisons, promotion)
    assert (verdict.reason, verdict.promote) == (reason, promoted)
    quality = gate_report(CLEAN, WARN_DUPLICATES)
    out = summary.succeeded(metrics_for(verdict, comparisons), quality, "s3://b/run/", "ml-1")
    parsed = TerminationSummary.parse(out.to_message())
    assert parsed is not None
    assert (parsed.outcome, parsed.reason, parsed.promoted) == ("Succeeded", reason, promoted)
    assert parsed.data_quality == trainer_api.QUALITY_PASSED
    assert parsed.metrics[trainer_api.SUMMARY_TEST] == 0.9
    assert parsed.metrics[trainer_api.SUMMARY_IMPROVEMENT] == comparisons[0].improvement


def test_without_a_baseline_to_beat_the_candidate_is_promoted():
    verdict = decide([], Promotion())
    assert (verdict.reason, verdict.promote) == (constants.REASON_PROMOTED, True)


def test_a_run_with_warnings_reports_them():
    quality = gate_report(DUPLICATED, WARN_DUPLICATES)
    assert quality.passed
    assert quality.outcome() == (trainer_api.QUALITY_WARNINGS, "warnings: duplicates")
    verdict = decide([comparison(0.05, 0.001)], Promotion())
    out = summary.succeeded(metrics_for(verdict, [comparison(0.05, 0.001)]), quality, "", "")
    assert out.data_quality == trainer_api.QUALITY_WARNINGS
    assert out.data_quality_message == "warnings: duplicates"


def test_a_failed_gate_reports_the_violated_checks():
    quality = gate_report([*DUPLICATED, ("id-0", "again", "a")], FAIL_DUPLICATES)
    status, checks = quality.outcome()
    assert (status, checks) == (trainer_api.QUALITY_FAILED, "failed: ids, duplicates")
    error = DataQualityFailed("data quality gate failed: ...", checks)
    out = summary.failed(error, "s3://b/run/", None)
    assert (out.reason, out.permanent) == (REASON_DATA_QUALITY_FAILED, True)
    assert (out.data_quality, out.data_quality_message) == (trainer_api.QUALITY_FAILED, checks)


def test_the_gate_outcome_travels_between_ranks():
    # Errors reach the other ranks pickled (all_gather_object); the checks must survive.
    error = pickle.loads(pickle.dumps(DataQualityFailed("split", "failed: split")))
    assert isinstance(error, DataQualityFailed)
    assert (error.reason, error.message, error.checks) == (
        REASON_DATA_QUALITY_FAILED, "split", "failed: split")
    assert summary.failed(error, "", None).data_quality_message == "failed: split"


def test_a_later_failure_keeps_the_outcome_of_a_passed_gate():
    quality = gate_report(DUPLICATED, WARN_DUPLICATES)
    out = summary.failed(PermanentError(REASON_TEST_SET_CHANGED, "changed"), "", quality)
    assert out.reason == REASON_TEST_SET_CHANGED
    assert out.data_quality == trainer_api.QUALITY_WARNINGS
    crashed = summary.failed(ValueError("boom"), "", None)
    assert (crashed.reason, crashed.message, crashed.data_quality) == (
        "Crashed", "ValueError: boom", "")


def test_a_report_read_back_gives_the_same_outcome():
    # A restarted group of a finished run reports from data-quality.json.
    quality = gate_report(DUPLICATED, WARN_DUPLICATES)
    again = QualityReport.from_dict(quality.to_dict())
    assert again.outcome() == quality.outcome()
    assert again.findings == quality.findings


def test_the_vectorised_bootstrap_statistic_is_the_contract_macro_f1():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 5, size=(30, 40))
    pred = np.where(rng.random((30, 40)) < 0.7, y, rng.integers(0, 5, size=(30, 40)))
    rows = significance.macro_f1_rows(y, pred, 6)  # class 5 occurs nowhere: left out
    assert rows == pytest.approx([significance.macro_f1(y[i], pred[i], 6) for i in range(30)])


def retrain_parts(why: str = "x") -> list[dict[str, object]]:
    return [{"benchmark": b, "against": a, "metric": "accuracy", "candidate": 0.91,
             "other": 0.78, "improvement": 0.13, "pValue": 0.0012, "examples": 300,
             "passed": True, "why": why}
            for b, a in (("recentHoldout", "production"), ("lockedTestSet", "production"),
                         ("lockedTestSet", "generic"))]


def test_a_retrain_reports_its_parts_and_the_recent_comparison() -> None:
    verdict = decide([comparison(0.05, 0.001)], Promotion())
    metrics = {**metrics_for(verdict, [comparison(0.05, 0.001)]), "registeredVersion": "7"}
    metrics["promotion"] = {"verdict": "Promoted", "reason": "Promoted", "message": "m",
                            "parts": retrain_parts()}
    out = summary.succeeded(metrics, gate_report(CLEAN, WARN_DUPLICATES), "", "")
    parsed = TerminationSummary.parse(out.to_message())
    assert parsed is not None
    assert parsed.promotion["parts"] == retrain_parts()
    assert parsed.promotion["modelVersion"] == "7"
    # The decisive comparison of a retrain is the recent holdout's.
    assert parsed.metrics[trainer_api.SUMMARY_IMPROVEMENT] == 0.13
    assert parsed.metrics[trainer_api.SUMMARY_P_VALUE] == 0.0012


def test_the_promotion_report_stays_small_and_keeps_its_numbers() -> None:
    verdict = decide([comparison(0.05, 0.001)], Promotion())
    metrics = metrics_for(verdict, [comparison(0.05, 0.001)])
    metrics["promotion"] = {"verdict": "Rejected", "reason": "Regressed", "message": "m" * 5000,
                            "parts": retrain_parts("w" * 2000)}
    report = summary.promotion(metrics)
    assert len(json.dumps(report, separators=(",", ":")).encode()) <= summary.PROMOTION_LIMIT
    assert [p["pValue"] for p in report["parts"]] == [0.0012] * 3
    assert report["reason"] == "Regressed" and report["message"].startswith("m")


def test_an_oversized_summary_drops_the_least_important_first() -> None:
    parts = retrain_parts("why " * 100)
    big = TerminationSummary(outcome="Succeeded", reason="Regressed", message="m" * 3000,
                             data_quality="Warnings", data_quality_message="d" * 3000,
                             metrics={f"n{i}": 0.5 for i in range(20)},
                             promotion={"verdict": "Rejected", "reason": "Regressed",
                                        "message": "p" * 3000, "parts": parts})
    text = big.to_message()
    assert len(text.encode()) <= trainer_api.TERMINATION_MESSAGE_LIMIT
    parsed = TerminationSummary.parse(text)
    assert parsed is not None and parsed.reason == "Regressed"
    # Cutting the texts was enough: every number is still there.
    assert len(parsed.metrics) == 20 and len(parsed.promotion["parts"]) == 3
    assert len(parsed.message) == 1024 and len(parsed.promotion["parts"][0]["why"]) == 160
    huge = TerminationSummary(outcome="Succeeded", reason="Regressed", message="m",
                              metrics={f"n{i}": 0.5 for i in range(300)},
                              promotion={"verdict": "Rejected", "reason": "Regressed",
                                         "parts": retrain_parts("w") * 6})
    parsed = TerminationSummary.parse(huge.to_message())
    assert parsed is not None and len(huge.to_message()) <= trainer_api.TERMINATION_MESSAGE_LIMIT
    # The numbers went before the parts; the verdict stays.
    assert parsed.metrics == {} and len(parsed.promotion["parts"]) == 18
    assert all("why" not in p for p in parsed.promotion["parts"])
    assert parsed.promotion["verdict"] == "Rejected"
