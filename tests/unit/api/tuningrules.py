"""The CEL rules of spec.tuning that name hyper-parameters, written out from tailor_contract.tuning.

crds/trainingjobs.yaml is hand-written, but its per-name rules (bounds, whole numbers, the known
names, the grid) must say exactly what ``TUNABLE`` says; test_api_tuning.py compares the CRD with
these. To change a bound, change the Hyperparameters field, then paste ``python
tests/unit/api/tuningrules.py``'s output into the CRD.

A map entry is read as ``self['name']`` and tested with ``has(self.name)``: through a field
selection the API server's cost estimate loses the entry's bounds (maxItems of values) and
refuses the CRD as too expensive, through an index it keeps them.
"""

from __future__ import annotations

from tailor_contract.tuning import (
    GRID_CAP,
    GRID_EPSILON,
    GRID_NEEDS_STEPS,
    GRID_TOO_LARGE,
    TUNABLE,
    UNKNOWN_NAME_MESSAGE,
    Tunable,
)


def _cel(number: float) -> str:
    return repr(float(number))


def _low(value: str, tunable: Tunable) -> str:
    operator = ">" if tunable.exclusive_minimum else ">="
    return f"{value} {operator} {_cel(tunable.minimum)}"


def bounds_rule(t: Tunable) -> str:
    h, e, hi = f"self.{t.name}", f"self['{t.name}']", _cel(t.maximum)
    return (
        f"!has({h}) || (has({h}.values) ? {e}.values.all(v, {_low('v', t)} && v <= {hi}) : "
        f"(!has({h}.min) || {_low(f'{e}.min', t)}) && (!has({h}.max) || {e}.max <= {hi}))"
    )


def whole_rule(t: Tunable) -> str:
    h, e = f"self.{t.name}", f"self['{t.name}']"
    lo, hi = _cel(t.minimum), _cel(t.maximum)

    def whole(v: str) -> str:
        return f"{v} < {lo} || {v} > {hi} || {v} == double(int({v}))"

    return (
        f"!has({h}) || ((!has({h}.values) || {e}.values.all(v, {whole('v')})) && "
        f"(!has({h}.min) || {whole(f'{e}.min')}) && (!has({h}.max) || {whole(f'{e}.max')}) && "
        f"(!has({h}.step) || {e}.step > {hi} || {e}.step == double(int({e}.step))))"
    )


def known_names_rule() -> str:
    return "self.size() == " + " + ".join(f"(has(self.{n}) ? 1 : 0)" for n in TUNABLE)


def known_names_message_expression() -> str:
    names = ", ".join(f"'{n}'" for n in TUNABLE)
    return (
        f"'tuning.searchSpace.' + self.filter(k, !(k in [{names}]))[0] + "
        f"' {UNKNOWN_NAME_MESSAGE}'"
    )


def search_space_rules() -> list[dict[str, str]]:
    """The rules on spec.tuning.searchSpace (the map), in the CRD's order."""
    rules = [
        {
            "rule": known_names_rule(),
            "messageExpression": known_names_message_expression(),
            "message": f"tuning.searchSpace names a hyper-parameter that {UNKNOWN_NAME_MESSAGE}",
        }
    ]
    for t in TUNABLE.values():
        rules.append({"rule": bounds_rule(t), "message": t.bounds_message()})
        if t.integer:
            rules.append({"rule": whole_rule(t), "message": t.whole_message()})
    return rules


def _grid_term(t: Tunable) -> str:
    h, e = f"self.searchSpace.{t.name}", f"self.searchSpace['{t.name}']"
    steps = f"({e}.max - {e}.min) / {e}.step"
    stepped = (
        f"({steps} > {_cel(GRID_CAP)} ? {_cel(GRID_CAP + 1)} : "
        f"double(int({steps} + {GRID_EPSILON!r})) + 1.0)"
    )
    unstepped = f"{e}.max - {e}.min + 1.0" if t.integer else "1.0"
    return (
        f"(has({h}) ? (has({h}.values) ? double(size({e}.values)) : "
        f"!has({h}.min) || !has({h}.max) ? 1.0 : has({h}.step) ? {stepped} : {unstepped}) : 1.0)"
    )


def grid_rules() -> list[dict[str, str]]:
    """The grid rules on spec.tuning."""
    discrete = " && ".join(
        f"(!has(self.searchSpace.{n}) || has(self.searchSpace.{n}.values) || "
        f"has(self.searchSpace.{n}.step))"
        for n, t in TUNABLE.items()
        if not t.integer
    )
    product = " * ".join(_grid_term(t) for t in TUNABLE.values())
    return [
        {
            "rule": f"self.algorithm != 'grid' || ({discrete})",
            "message": GRID_NEEDS_STEPS,
            "fieldPath": ".algorithm",
        },
        {
            "rule": f"self.algorithm != 'grid' || {product} <= double(self.maxTrials)",
            "message": GRID_TOO_LARGE,
            "fieldPath": ".maxTrials",
        },
    ]


if __name__ == "__main__":
    import yaml

    print(yaml.safe_dump({"searchSpace": search_space_rules(), "tuning": grid_rules()},
                         sort_keys=False, width=96))
