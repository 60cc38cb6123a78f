"""The data-quality gate: agreement against published examples, and each rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tailor_contract.trainingjob import Quality
from tailor_trainer.data.load import ColumnMap
from tailor_trainer.data.quality import QualityGate, agreement_coefficient, measure_agreement

COLS = ColumnMap(id="id", input="text", label="label", group=None, annotators=())


def test_cohen_kappa_matches_the_textbook_example() -> None:
    # 50 items, two raters: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> kappa = 0.4.
    pairs = [(1, 1)] * 20 + [(1, 0)] * 5 + [(0, 1)] * 10 + [(0, 0)] * 15
    method, value = agreement_coefficient(np.array(pairs, dtype=float), 2)
    assert method == "cohen_kappa"
    assert value == pytest.approx(0.4)


def test_fleiss_kappa_matches_fleiss_1971_example() -> None:
    # The widely reproduced table of 10 subjects, 14 raters, 5 categories: kappa = 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
             [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
             [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    ratings = np.array([[c for c, n in enumerate(row) for _ in range(n)] for row in table],
                       dtype=float)
    method, value = agreement_coefficient(ratings, 5)
    assert method == "fleiss_kappa"
    assert value == pytest.approx(0.210, abs=0.001)


def test_krippendorff_alpha_matches_krippendorff_2011_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal data with
    # missing values: alpha = 0.743.
    nan = math.nan
    coders = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
              [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
              [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
              [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]
    method, value = agreement_coefficient(np.array(coders).T, 5)
    assert method == "krippendorff_alpha"
    assert value == pytest.approx(0.743, abs=0.001)


def test_per_label_agreement_is_reported() -> None:
    ratings: list[list[str | None]] = [["a", "a"], ["b", "b"], ["a", "b"], ["b", "b"], ["c", "c"], ["a", "a"]]
    result = measure_agreement(ratings)
    assert set(result["per_label"]) == {"a", "b", "c"}
    assert result["per_label"]["c"] == pytest.approx(1.0)
    assert result["method"] == "cohen_kappa"


def run_gate(rows, quality: Quality | None = None, labels=None, cols: ColumnMap = COLS):
    gate = QualityGate(quality or Quality(min_examples=1), cols, labels)
    batch = {name: [r.get(name) for r in rows] for name in cols.names()}
    gate.add(batch)
    return gate.report()


def balanced(n: int = 30, classes=("a", "b")) -> list[dict[str, str]]:
    return [{"id": f"{c}{i}", "text": f"text {c} {i}", "label": c}
            for c in classes for i in range(n)]


def finding(report, check: str):
    return next(f for f in report.findings if f.check == check)


def test_clean_data_passes() -> None:
    report = run_gate(balanced())
    assert report.passed and not report.warnings
    assert report.class_counts == {"a": 30, "b": 30}


def test_too_few_examples_fail() -> None:
    report = run_gate(balanced(5), Quality(min_examples=100))
    assert not report.passed
    assert "10 labelled examples, the minimum is 100" in finding(report, "minExamples").message


def test_empty_rows_fail_by_default() -> None:
    rows = [*balanced(), {"id": "e1", "text": "  ", "label": "a"}]
    report = run_gate(rows)
    assert finding(report, "emptyExamples").status == "fail"


def test_duplicate_inputs_warn_by_default_and_can_fail() -> None:
    rows = balanced() + [{"id": f"d{i}", "text": "text a 1", "label": "a"} for i in range(10)]
    assert finding(run_gate(rows), "duplicates").status == "warn"
    strict = Quality.model_validate({"minExamples": 1,
                                     "duplicates": {"maxFraction": 0.0, "action": "Fail"}})
    report = run_gate(rows, strict)
    assert not report.passed and "repeat an earlier input" in report.summary()


def test_conflicting_labels_fail() -> None:
    rows = [*balanced(), {"id": "x", "text": "TEXT a 1", "label": "b"}]  # same input, normalized
    report = run_gate(rows)
    assert finding(report, "conflictingLabels").status == "fail"
    assert "share their input with an example of another label" in report.summary()


def test_unknown_labels_fail_and_are_named() -> None:
    rows = [*balanced(), {"id": "u", "text": "odd", "label": "zebra"}]
    report = run_gate(rows, labels=["a", "b"])
    assert finding(report, "labelSet").status == "fail"
    assert "'zebra'" in report.summary()


def test_a_single_class_fails() -> None:
    report = run_gate(balanced(classes=("a",)))
    assert finding(report, "classes").status == "fail"


def test_duplicate_ids_fail() -> None:
    rows = [*balanced(), {"id": "a1", "text": "another text", "label": "a"}]
    report = run_gate(rows)
    assert finding(report, "ids").status == "fail"
    assert "'a1'" in finding(report, "ids").message


def test_class_imbalance_warns_by_default() -> None:
    rows = balanced(60, ("a",)) + balanced(5, ("b",))
    report = run_gate(rows)
    f = finding(report, "classBalance")
    assert f.status == "warn" and report.passed
    assert "['b'] below the minimum of 10" in f.message


def test_expected_label_without_examples_counts_as_imbalance() -> None:
    report = run_gate(balanced(), labels=["a", "b", "c"])
    assert finding(report, "classBalance").status == "warn"
    assert report.class_counts["c"] == 0


ANNOTATED = ColumnMap(id="id", input="text", label="label", group=None,
                      annotators=("r1", "r2"))


def annotated(agree_every: int) -> list[dict[str, str]]:
    rows = []
    for i in range(60):
        label = "a" if i % 2 else "b"
        other = label if i % agree_every else ("b" if label == "a" else "a")
        rows.append({"id": str(i), "text": f"t{i}", "label": label, "r1": label, "r2": other})
    return rows


def test_agreement_below_minimum_fails_with_the_numbers() -> None:
    report = run_gate(annotated(2), cols=ANNOTATED)  # every second pair disagrees
    f = finding(report, "agreement")
    assert f.status == "fail"
    assert "cohen_kappa" in f.message and "the minimum is 0.667" in f.message


def test_agreement_between_minimum_and_warn_threshold_warns() -> None:
    report = run_gate(annotated(8), cols=ANNOTATED)  # one pair in eight disagrees
    f = finding(report, "agreement")
    assert 0.667 <= f.value < 0.8
    assert f.status == "warn" and report.passed


def test_missing_ratings_switch_to_krippendorff() -> None:
    rows = annotated(1000)
    rows[3]["r2"] = ""
    report = run_gate(rows, cols=ANNOTATED)
    assert report.agreement is not None
    assert report.agreement["method"] == "krippendorff_alpha"
    assert report.agreement["missing_ratings"] == 1


def test_additional_rows_count_in_the_union_but_not_in_agreement() -> None:
    cols = ColumnMap(id="id", input="text", label="label", group=None, annotators=("r1", "r2"))
    gate = QualityGate(Quality(min_examples=1), cols, None)
    rated = [{"id": f"m{i}", "text": f"main {i}", "label": "ab"[i % 2], "r1": "ab"[i % 2],
              "r2": "ab"[i % 2]} for i in range(20)]
    gate.add({name: [r.get(name) for r in rated] for name in cols.names()})
    production: dict[str, list[str | None]] = {
        "id": ["p1", "m3"], "text": ["prod 1", "prod 2"], "label": ["a", "b"],
        "r1": [None, None], "r2": [None, None]}
    gate.add(production, annotated=False)
    report = gate.report()
    assert report.examples == 22
    # Production rows have no annotators: agreement stays Cohen's kappa on the 20 rated rows.
    assert report.agreement is not None and report.agreement["method"] == "cohen_kappa"
    assert report.agreement["units"] == 20
    # An id repeated across the union is still the gate's concern (run.py leaves such rows out).
    assert [f.check for f in report.failures] == ["ids"]
