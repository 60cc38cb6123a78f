"""Typed ``spec.data.quality`` of a TrainingJob: the data-quality gate's thresholds.

Split from trainingjob.py to keep modules small; ``tailor_contract.trainingjob`` re-exports
``Quality``. Parses and defaults exactly as crds/trainingjobs.yaml does (tests/unit/api).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from tailor_contract.common import Action, ApiModel, Fraction


class EmptyExamples(ApiModel):
    max_fraction: Fraction = 0.0
    action: Action = "Fail"


class Duplicates(ApiModel):
    max_fraction: Fraction = 0.05
    action: Action = "Warn"


class ConflictingLabels(ApiModel):
    max_fraction: Fraction = 0.0
    action: Action = "Fail"


class ClassBalance(ApiModel):
    min_per_class: Annotated[int, Field(ge=1, le=1000000)] = 10
    max_ratio: Annotated[float, Field(ge=1, le=1000000)] = 50.0
    action: Action = "Warn"


class Agreement(ApiModel):
    minimum: Fraction = 0.667
    warn_below: Fraction = 0.8
    action: Action = "Fail"

    @model_validator(mode="after")
    def _ordered(self) -> Agreement:
        if self.minimum > self.warn_below:
            raise ValueError("agreement.minimum must not exceed agreement.warnBelow")
        return self


class Quality(ApiModel):
    """Thresholds of the data-quality gate, each with what a violation does."""

    min_examples: Annotated[int, Field(ge=1, le=1000000000)] = 100
    empty_examples: EmptyExamples = Field(default_factory=EmptyExamples)
    duplicates: Duplicates = Field(default_factory=Duplicates)
    conflicting_labels: ConflictingLabels = Field(default_factory=ConflictingLabels)
    class_balance: ClassBalance = Field(default_factory=ClassBalance)
    agreement: Agreement = Field(default_factory=Agreement)
