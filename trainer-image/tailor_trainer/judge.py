"""The promotion rule: each model's predictions on each benchmark in, a verdict with its parts out.

**A first run** (no production model to compare with, or no recent holdout to compare on) must
beat every baseline on the locked test set, by evaluation.minImprovement and significantly: the
generic model, and the production model when there is one.

**A retrain** (a production model and a recent holdout of labelled production examples) is
promoted only when all three parts pass:

(a) `recentHoldout` against `production`: better by minImprovement, significantly (exact
    McNemar for accuracy, paired bootstrap for macro-F1). After a drift the locked test set no
    longer describes production: it was drawn before the world changed, the production model is
    still good there, and a retrain that fixes the drifted cases can almost never beat it on
    that set. The recent holdout is where production is now (champion/challenger).
(b) `lockedTestSet` against `production`: not worse beyond evaluation.nonInferiorityMargin, by
    a one-sided paired test at the significance level (`significance.non_inferior`). The fixed
    benchmark stays as a regression guard: fitting the recent data must not cost what the model
    already did well. Passing needs evidence, so a benchmark too small to show it fails the
    guard rather than letting a regression through.
(c) `lockedTestSet` against `generic`: the first run's rule, still required (when the generic
    baseline is on): a custom model that no longer beats the generic one has no reason to be.

The reason of a rejected retrain is that of its first failed part in that order: NotBetter or
NotSignificant for (a) and (c), Regressed for (b). A first run keeps today's order (NotBetter
over any part, then NotSignificant). Too few recent examples make part (a) NotApplicable, with
the counts, and the first-run rule judges. With promotion.policy Manual a verdict that would
promote waits as AwaitingApproval.

No torch here (numpy and the significance tests only): `tests/unit/trainer` simulates the rule,
including its rate of promotion when the labels carry no signal at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tailor_contract.constants import (
    REASON_AWAITING_APPROVAL,
    REASON_NOT_BETTER,
    REASON_NOT_SIGNIFICANT,
    REASON_PROMOTED,
    REASON_REGRESSED,
)
from tailor_contract.trainer_api import (
    AGAINST_GENERIC,
    AGAINST_PRODUCTION,
    BENCHMARK_LOCKED_TEST_SET,
    BENCHMARK_RECENT_HOLDOUT,
    VERDICT_AWAITING_APPROVAL,
    VERDICT_PROMOTED,
    VERDICT_REJECTED,
)
from tailor_contract.trainingjob import Evaluation, Promotion

from tailor_trainer.significance import Comparison, compare, non_inferior

BENCHMARK_NAMES = {BENCHMARK_RECENT_HOLDOUT: "recent holdout",
                   BENCHMARK_LOCKED_TEST_SET: "locked test set"}


@dataclass
class Benchmark:
    """One benchmark's true classes and each model's predicted classes on it: "candidate", and
    "generic" and "production" when they were scored."""

    y: np.ndarray
    predictions: dict[str, np.ndarray]


@dataclass
class Part:
    """One benchmark's comparison of the candidate with one model."""

    benchmark: str
    against: str
    metric: str
    examples: int
    passed: bool | None
    """None: the part did not apply (NotApplicable)."""
    why: str
    reason: str = ""
    """When it failed: NotBetter, NotSignificant or Regressed."""
    candidate: float | None = None
    other: float | None = None
    improvement: float | None = None
    p_value: float | None = None

    @property
    def headline(self) -> str:
        return f"{BENCHMARK_NAMES.get(self.benchmark, self.benchmark)}: {self.why}"

    def summary(self) -> dict[str, Any]:
        """The part as status.promotion.parts[] shows it: rounded numbers, camelCase."""
        out: dict[str, Any] = {"benchmark": self.benchmark, "against": self.against,
                               "metric": self.metric}
        for key, value in (("candidate", self.candidate), ("other", self.other),
                           ("improvement", self.improvement)):
            if value is not None:
                out[key] = round(float(value), 4)
        if self.p_value is not None:
            out["pValue"] = float(f"{self.p_value:.3g}")
        out.update(examples=self.examples, passed=self.passed, why=self.why)
        return out


@dataclass
class Verdict:
    promote: bool
    reason: str  # Promoted, NotBetter, NotSignificant, Regressed or AwaitingApproval
    message: str
    parts: list[Part] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    """Superiority on the locked test set against every baseline (metrics.json's
    `comparisons`, as earlier runs wrote them)."""

    @property
    def verdict(self) -> str:
        if self.promote:
            return VERDICT_PROMOTED
        return (VERDICT_AWAITING_APPROVAL if self.reason == REASON_AWAITING_APPROVAL
                else VERDICT_REJECTED)

    def summary(self) -> dict[str, Any]:
        """metrics.json's `promotion` and TerminationSummary.promotion."""
        return {"verdict": self.verdict, "reason": self.reason, "message": self.message,
                "parts": [p.summary() for p in self.parts]}


def judge(locked: Benchmark, recent: Benchmark | str | None, classes: int,
          evaluation: Evaluation, promotion: Promotion, seed: int) -> Verdict:
    """The verdict on the candidate.

    `recent` is the recent holdout with the candidate's and the production model's predictions,
    or why there is none to judge on (a NotApplicable part), or None when the question does not
    arise (no production data and no production model).
    """
    comparisons = [compare(name, locked.y, locked.predictions["candidate"], pred, classes,
                           evaluation, seed)
                   for name, pred in locked.predictions.items() if name != "candidate"]
    by_name = {c.baseline: c for c in comparisons}
    if (isinstance(recent, Benchmark) and AGAINST_PRODUCTION in recent.predictions
            and AGAINST_PRODUCTION in locked.predictions):
        held = compare(AGAINST_PRODUCTION, recent.y, recent.predictions["candidate"],
                       recent.predictions[AGAINST_PRODUCTION], classes, evaluation, seed)
        parts = [better_part(BENCHMARK_RECENT_HOLDOUT, held, evaluation),
                 guard_part(locked, classes, evaluation, seed)]
        if AGAINST_GENERIC in by_name:
            parts.append(better_part(BENCHMARK_LOCKED_TEST_SET, by_name[AGAINST_GENERIC],
                                     evaluation))
        return decide(parts, comparisons, promotion, in_order=True)
    parts = []
    if recent is not None:
        why = recent if isinstance(recent, str) else "no production model to compare with"
        parts.append(Part(BENCHMARK_RECENT_HOLDOUT, AGAINST_PRODUCTION, evaluation.metric, 0,
                          None, f"{why}; judged by the first-run rule"))
    parts += [better_part(BENCHMARK_LOCKED_TEST_SET, by_name[name], evaluation)
              for name in (AGAINST_GENERIC, AGAINST_PRODUCTION) if name in by_name]
    return decide(parts, comparisons, promotion, in_order=False)


def better_part(benchmark: str, c: Comparison, evaluation: Evaluation) -> Part:
    """Better than another model on one benchmark, by the margin and significantly."""
    numbers = f"{c.metric} {c.candidate:.4f} vs {c.baseline} {c.other:.4f}"
    if not c.better:
        passed, reason = False, REASON_NOT_BETTER
        why = (f"{numbers}: improvement {c.improvement:+.4f} is below the required "
               f"{evaluation.min_improvement:g}")
    elif not c.significant:
        passed, reason = False, REASON_NOT_SIGNIFICANT
        why = f"{numbers}: not significant at {evaluation.significance_level:g} (p={c.p_value:.3g})"
    else:
        passed, reason = True, ""
        why = f"{numbers}: {c.improvement:+.4f}, p={c.p_value:.3g}"
    return Part(benchmark, c.baseline, c.metric, c.examples, passed, why, reason, c.candidate,
                c.other, c.improvement, c.p_value)


def guard_part(locked: Benchmark, classes: int, evaluation: Evaluation, seed: int) -> Part:
    """Not worse than production on the locked test set beyond the margin (one-sided)."""
    guard = non_inferior(locked.y, locked.predictions["candidate"],
                         locked.predictions[AGAINST_PRODUCTION], classes, evaluation, seed)
    numbers = (f"{guard.metric} {guard.candidate:.4f} vs production {guard.other:.4f} "
               f"({guard.difference:+.4f})")
    if guard.passed:
        why = (f"{numbers}: within the margin {guard.margin:g} "
               f"(one-sided p={guard.p_value:.3g})")
    else:
        why = (f"{numbers}: not shown to be within the margin {guard.margin:g} at "
               f"{evaluation.significance_level:g} (one-sided p={guard.p_value:.3g})")
    return Part(BENCHMARK_LOCKED_TEST_SET, AGAINST_PRODUCTION, guard.metric, guard.examples,
                guard.passed, why, "" if guard.passed else REASON_REGRESSED, guard.candidate,
                guard.other, guard.difference, guard.p_value)


def decide(parts: list[Part], comparisons: list[Comparison], promotion: Promotion, *,
           in_order: bool) -> Verdict:
    """The verdict from the parts: the reason of the first failed part (in order for a retrain,
    NotBetter first for a first run), else Promoted or, with policy Manual, AwaitingApproval."""
    judged = [p for p in parts if p.passed is not None]
    failed = [p for p in judged if not p.passed]
    if failed:
        first = failed[0] if in_order else _first_run_failure(failed)
        others = [p.headline for p in failed if p is not first]
        message = "; ".join([first.headline, *others])
        return Verdict(False, first.reason, message, parts, comparisons)
    summary = "; ".join(p.headline for p in judged) or "no baseline to beat"
    if promotion.policy == "Manual":
        return Verdict(False, REASON_AWAITING_APPROVAL, f"{summary}; promotion policy is Manual",
                       parts, comparisons)
    return Verdict(True, REASON_PROMOTED, summary, parts, comparisons)


def _first_run_failure(failed: Sequence[Part]) -> Part:
    """Today's precedence: a part that is not better at all says more than one that is better
    but not significantly so."""
    return next((p for p in failed if p.reason == REASON_NOT_BETTER), failed[0])
