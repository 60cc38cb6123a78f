"""Typed ``spec.hyperparameters`` and ``spec.tuning``: the training settings and their search.

Parses, defaults and refuses exactly as crds/trainingjobs.yaml does, with the same messages as
its CEL rules, so that a spec refused here reads the same as one the API server refuses
(tests/unit/api keeps the two in step).

The tunable hyper-parameters and their bounds are not written down twice: ``TUNABLE`` reads them
from ``Hyperparameters``' own field constraints (a search cannot try a learning rate the spec
itself would refuse). The CRD repeats them in hand-written CEL, since the API server cannot read
Python; tests/unit/api/test_api_tuning.py checks those rules against ``TUNABLE``.

A search space is a map from hyper-parameter name to entry, not a list, so that a name appears
once. CEL has no product or fold over a map, so the CRD's grid-size rule spells out the product
over the ten known names; ``Range.size`` is the same arithmetic (the same floating-point
tolerance), so both refuse the same grids.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from tailor_contract.common import ApiModel
from tailor_contract.constants import MAX_TRIALS


class Hyperparameters(ApiModel):
    """Training settings of the built-in recipes (also handed to a custom command)."""

    epochs: Annotated[int, Field(ge=1, le=1000)] = 3
    max_steps: Annotated[int, Field(ge=1, le=100000000)] | None = None
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 5e-5
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 32
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=1024)] = 1
    warmup_ratio: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.01
    max_sequence_length: Annotated[int, Field(ge=8, le=32768)] = 256
    image_size: Annotated[int, Field(ge=16, le=4096)] = 224
    early_stopping_patience: Annotated[int, Field(ge=0, le=1000)] = 3
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    seed: Annotated[int, Field(ge=0, le=2147483647)] = 42


TUNABLE_NAMES = (
    "learningRate",
    "batchSize",
    "epochs",
    "maxSteps",
    "gradientAccumulationSteps",
    "warmupRatio",
    "weightDecay",
    "maxSequenceLength",
    "imageSize",
    "earlyStoppingPatience",
)
"""The hyper-parameters a search may vary (API names). Not precision (a numeric format, not a
setting to optimise) nor seed (varying it would select for a lucky seed, not for settings)."""
MAX_VALUES = 64
"""maxItems of a search-space entry's values."""
GRID_EPSILON = 1e-9
"""Added to (max - min) / step before flooring, in CEL as here: 0.3 / 0.1 is 2.9999999999999996
in floating point, and a range 0..0.3 by 0.1 has four points, not three."""
GRID_CAP = 1000
"""A stepped range of more points than this counts as GRID_CAP + 1 (in CEL as here): far above
any maxTrials, and it keeps int() in CEL away from overflow."""


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


@dataclass(frozen=True)
class Tunable:
    """A hyper-parameter a search may vary, with the bounds of its own field."""

    name: str
    integer: bool
    minimum: float
    maximum: float
    exclusive_minimum: bool = False

    def contains(self, value: float) -> bool:
        above = value > self.minimum if self.exclusive_minimum else value >= self.minimum
        return above and value <= self.maximum

    def range_text(self) -> str:
        """The bounds in words, as the CRD's messages say them."""
        low = "greater than" if self.exclusive_minimum else "at least"
        return f"{low} {_number(self.minimum)} and at most {_number(self.maximum)}"

    def bounds_message(self) -> str:
        return (
            f"tuning.searchSpace.{self.name} must stay within {self.name}'s own range: "
            f"{self.range_text()}"
        )

    def whole_message(self) -> str:
        return (
            f"tuning.searchSpace.{self.name} needs whole numbers: {self.name} is an integer "
            "hyper-parameter"
        )


def _tunable(name: str) -> Tunable:
    schema = Hyperparameters.model_json_schema(by_alias=True)["properties"][name]
    node = next(o for o in schema.get("anyOf", [schema]) if o.get("type") != "null")
    exclusive = "exclusiveMinimum" in node
    return Tunable(
        name=name,
        integer=node["type"] == "integer",
        minimum=float(node["exclusiveMinimum"] if exclusive else node["minimum"]),
        maximum=float(node["maximum"]),
        exclusive_minimum=exclusive,
    )


TUNABLE: Mapping[str, Tunable] = MappingProxyType({name: _tunable(name) for name in TUNABLE_NAMES})
"""Each tunable hyper-parameter by API name: integer or not, and its field's bounds."""

UNKNOWN_NAME_MESSAGE = "cannot be tuned; the tunable hyper-parameters are " + ", ".join(
    TUNABLE_NAMES
)
ENTRY_RULES = (
    "tuning.searchSpace entries need either values or both min and max",
    "tuning.searchSpace entries with values take no scale or step",
    "tuning.searchSpace entries need min less than max",
    "tuning.searchSpace entries with scale log need min greater than 0",
    "tuning.searchSpace entries with scale log take no step",
    "tuning.searchSpace entries need step at most max - min",
)
"""The messages of the CRD's rules on one search-space entry, in its order."""
GRID_NEEDS_STEPS = (
    "tuning.algorithm grid needs values or a step for every range of a non-integer "
    "hyper-parameter in tuning.searchSpace"
)
GRID_TOO_LARGE = (
    "tuning.algorithm grid: the grid (the product of the searchSpace entries' sizes) must not "
    "exceed tuning.maxTrials"
)
PARALLEL_ABOVE_MAX = "tuning.parallelTrials must not exceed tuning.maxTrials"
FAILED_ABOVE_MAX = "tuning.maxFailedTrials must not exceed tuning.maxTrials"
DIRECTION_MISMATCH = (
    "tuning.objective.direction must be minimize for metric loss and maximize for accuracy and "
    "macro-f1"
)


VALUES_UNIQUE = "tuning.searchSpace values must be unique"


def _distinct(values: list[float]) -> list[float]:
    """The CRD's uniqueness rule (a CEL rule there: a set-typed list of numbers broke the
    API server's `self == oldSelf` on every status update)."""
    if len(set(values)) != len(values):
        raise ValueError(VALUES_UNIQUE)
    return values


class Range(ApiModel):
    """One searched hyper-parameter: a list of values, or a range from min to max."""

    values: (
        Annotated[list[float], Field(min_length=1, max_length=MAX_VALUES),
                  AfterValidator(_distinct)]
        | None
    ) = None
    min: float | None = None
    max: float | None = None
    scale: Literal["linear", "log"] | None = None
    """Absent means linear."""
    step: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _shape(self) -> Range:
        lo, hi, log = self.min, self.max, self.scale == "log"
        checks = (
            (self.values is not None and lo is None and hi is None)
            or (self.values is None and lo is not None and hi is not None),
            self.values is None or (self.scale is None and self.step is None),
            lo is None or hi is None or lo < hi,
            not log or lo is None or lo > 0,
            not log or self.step is None,
            self.step is None or lo is None or hi is None or self.step <= hi - lo,
        )
        for ok, message in zip(checks, ENTRY_RULES, strict=True):
            if not ok:
                raise ValueError(message)
        return self

    def numbers(self) -> list[float]:
        """The numbers that must lie within the hyper-parameter's bounds."""
        if self.values is not None:
            return list(self.values)
        return [n for n in (self.min, self.max) if n is not None]

    def size(self, integer: bool = False) -> int | None:
        """Points of this entry in a grid; None for a float range without a step (no grid)."""
        if self.values is not None:
            return len(self.values)
        assert self.min is not None and self.max is not None  # the validator's first rule
        if self.step is not None:
            steps = (self.max - self.min) / self.step
            return GRID_CAP + 1 if steps > GRID_CAP else math.floor(steps + GRID_EPSILON) + 1
        if integer:
            return int(self.max - self.min) + 1
        return None

    def grid_values(self, integer: bool = False) -> list[int | float]:
        """The grid's points of this entry, in order; ints for an integer hyper-parameter.

        A stepped range's points are min + i * step, rounded to 12 significant digits (so 0.1
        steps give 0.3, not 0.30000000000000004) and never beyond max.
        """
        size = self.size(integer)
        if size is None:
            raise ValueError("a range of a non-integer hyper-parameter without a step has no grid")
        if self.values is not None:
            points = list(self.values)
        else:
            assert self.min is not None and self.max is not None
            step = self.step if self.step is not None else 1.0
            points = [min(float(f"{self.min + i * step:.12g}"), self.max) for i in range(size)]
        return [round(p) for p in points] if integer else points


class Objective(ApiModel):
    """What a trial is judged by: a metric on the validation split."""

    metric: Literal["accuracy", "macro-f1", "loss"] = "accuracy"
    direction: Literal["maximize", "minimize"] | None = None
    """Absent: minimize for loss, maximize otherwise (``Tuning.direction``)."""

    @model_validator(mode="after")
    def _direction_fits(self) -> Objective:
        if self.direction is not None and (self.metric == "loss") != (
            self.direction == "minimize"
        ):
            raise ValueError(DIRECTION_MISMATCH)
        return self


class EarlyStopping(ApiModel):
    """Stopping trials that are unlikely to beat the best (pruning)."""

    algorithm: Literal["median", "hyperband"]
    min_epochs: Annotated[int, Field(ge=1, le=1000)] = 1


class Tuning(ApiModel):
    """``TrainingJob.spec.tuning``: a hyper-parameter search before the run."""

    objective: Objective = Field(default_factory=Objective)
    algorithm: Literal["tpe", "random", "grid"] = "tpe"
    seed: Annotated[int, Field(ge=0, le=2147483647)] | None = None
    """The sampler's seed; absent: spec.hyperparameters.seed."""
    early_stopping: EarlyStopping | None = None
    max_trials: Annotated[int, Field(ge=1, le=MAX_TRIALS)] = 12
    parallel_trials: Annotated[int, Field(ge=1, le=MAX_TRIALS)] = 1
    max_failed_trials: Annotated[int, Field(ge=0, le=MAX_TRIALS)] | None = None
    search_space: Annotated[dict[str, Range], Field(min_length=1, max_length=len(TUNABLE_NAMES))]

    @model_validator(mode="after")
    def _consistent(self) -> Tuning:
        """The CRD's rules on spec.tuning and on its searchSpace map."""
        problem = next(self._problems(), None)
        if problem is not None:
            raise ValueError(problem)
        return self

    def _problems(self) -> Iterator[str]:
        for name in self.search_space:
            if name not in TUNABLE:
                yield f"tuning.searchSpace.{name} {UNKNOWN_NAME_MESSAGE}"
        for name, entry in self.search_space.items():
            tunable = TUNABLE[name]  # every name is known once the loop above yielded nothing
            if not all(tunable.contains(n) for n in entry.numbers()):
                yield tunable.bounds_message()
            if tunable.integer and not self._whole(entry, tunable):
                yield tunable.whole_message()
        if self.algorithm == "grid":
            if self.grid_size() is None:
                yield GRID_NEEDS_STEPS
            elif self.grid_size_exceeds(self.max_trials):
                yield GRID_TOO_LARGE
        if self.parallel_trials > self.max_trials:
            yield PARALLEL_ABOVE_MAX
        if self.max_failed_trials is not None and self.max_failed_trials > self.max_trials:
            yield FAILED_ABOVE_MAX

    @staticmethod
    def _whole(entry: Range, tunable: Tunable) -> bool:
        """As the CRD checks it: numbers outside the bounds are the bounds rule's to report."""
        inside = [n for n in entry.numbers() if tunable.minimum <= n <= tunable.maximum]
        if entry.step is not None and entry.step <= tunable.maximum:
            inside.append(entry.step)
        return all(n.is_integer() for n in inside)

    @property
    def metric(self) -> str:
        return self.objective.metric

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """objective.direction, or its default: minimize for loss, maximize otherwise."""
        if self.objective.direction is not None:
            return self.objective.direction
        return "minimize" if self.objective.metric == "loss" else "maximize"

    @staticmethod
    def is_integer(name: str) -> bool:
        """Whether the hyper-parameter takes whole numbers (its grid points and trials' values
        are ints)."""
        return TUNABLE[name].integer

    def grid_size(self) -> int | None:
        """Points of the full grid: the product of the entries' sizes; None when a range of a
        non-integer hyper-parameter has no step (no finite grid)."""
        total = 1
        for name, entry in self.search_space.items():
            size = entry.size(self.is_integer(name))
            if size is None:
                return None
            total *= size
        return total

    def grid_size_exceeds(self, limit: int) -> bool:
        size = self.grid_size()
        return size is None or size > limit

    def max_epochs(self, epochs: int | None = None) -> int:
        """The most epochs a trial can train: the top of searchSpace.epochs if searched, else
        ``epochs`` (pass spec.hyperparameters.epochs), else the hyperparameters' default."""
        entry = self.search_space.get("epochs")
        if entry is not None:
            return int(max(entry.numbers()))
        return epochs if epochs is not None else Hyperparameters().epochs

    @staticmethod
    def merged(hyperparameters: Mapping[str, Any], params: Mapping[str, float]) -> dict[str, Any]:
        """API-cased ``hyperparameters`` with a trial's ``params`` applied (whole numbers as
        ints for the integer hyper-parameters, so the result validates as Hyperparameters)."""
        out = dict(hyperparameters)
        for name, value in params.items():
            tunable = TUNABLE.get(name)
            if tunable is None:
                raise ValueError(f"tuning.searchSpace.{name} {UNKNOWN_NAME_MESSAGE}")
            out[name] = round(value) if tunable.integer else float(value)
        return out
