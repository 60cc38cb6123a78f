"""The hash split and the locked test set: deterministic, stable as data grows, no overlap."""

from __future__ import annotations

import json

import pytest
from tailor_contract.trainer_api import EXIT_PERMANENT
from tailor_contract.trainingjob import Split
from tailor_trainer.data.split import (
    LockedTestSet,
    Splitter,
    content_digest,
    fingerprint,
    verify_test_set,
)
from tailor_trainer.errors import PermanentError

SPLIT = Split(validation=0.1, test=0.2, seed=7)


def assign_all(splitter: Splitter, ids: list[str], groups: dict[str, str] | None = None):
    return {i: splitter.assign(i, (groups or {}).get(i)) for i in ids}


def test_split_is_deterministic_and_matches_the_shares() -> None:
    ids = [f"ex-{i}" for i in range(20000)]
    first = assign_all(Splitter(SPLIT, None), ids)
    again = assign_all(Splitter(Split(validation=0.1, test=0.2, seed=7), None), ids)
    assert first == again
    shares = {part: sum(1 for p in first.values() if p == part) / len(ids)
              for part in ("train", "validation", "test")}
    assert shares["test"] == pytest.approx(0.2, abs=0.01)
    assert shares["validation"] == pytest.approx(0.1, abs=0.01)
    assert shares["train"] == pytest.approx(0.7, abs=0.01)


def test_seed_reshuffles() -> None:
    ids = [f"ex-{i}" for i in range(2000)]
    a = assign_all(Splitter(SPLIT, None), ids)
    b = assign_all(Splitter(Split(validation=0.1, test=0.2, seed=8), None), ids)
    assert sum(a[i] != b[i] for i in ids) > 500


def test_assignments_do_not_move_when_data_grows() -> None:
    old = [f"ex-{i}" for i in range(3000)]
    new = old + [f"new-{i}" for i in range(3000)]
    before = assign_all(Splitter(SPLIT, None), old)
    after = assign_all(Splitter(SPLIT, None), new)
    assert all(after[i] == before[i] for i in old)


def test_groups_never_straddle_parts() -> None:
    ids = [f"ex-{i}" for i in range(5000)]
    groups = {i: f"g-{n // 5}" for n, i in enumerate(ids)}
    parts = assign_all(Splitter(SPLIT, None), ids, groups)
    by_group: dict[str, set[str]] = {}
    for i, part in parts.items():
        by_group.setdefault(groups[i], set()).add(part)
    assert all(len(p) == 1 for p in by_group.values())
    assert {"train", "validation", "test"} <= {next(iter(p)) for p in by_group.values()}


def locked_from(parts: dict[str, str], groups: dict[str, str] | None = None) -> LockedTestSet:
    ids = {i: content_digest(i, f"text {i}", "a") for i, p in parts.items() if p == "test"}
    return LockedTestSet(version=1, seed=SPLIT.seed, ids=ids, fingerprint=fingerprint(ids.values()),
                         groups={(groups or {})[i] for i in ids} if groups else set())


def test_locked_test_set_is_kept_exactly_and_new_examples_never_enter_it() -> None:
    old = [f"ex-{i}" for i in range(2000)]
    locked = locked_from(assign_all(Splitter(SPLIT, None), old))
    grown = old + [f"new-{i}" for i in range(2000)]
    parts = assign_all(Splitter(SPLIT, locked), grown)
    assert {i for i, p in parts.items() if p == "test"} == set(locked.ids)
    new_parts = {parts[f"new-{i}"] for i in range(2000)}
    assert new_parts == {"train", "validation"}
    # Zero overlap between the parts, by construction of a mapping; and every id is assigned.
    assert len(parts) == len(grown)


def test_new_members_of_a_locked_group_are_held_out() -> None:
    ids = [f"ex-{i}" for i in range(1000)]
    groups = {i: f"g-{n // 4}" for n, i in enumerate(ids)}
    parts = assign_all(Splitter(SPLIT, None), ids, groups)
    locked = locked_from(parts, groups)
    test_group = next(iter(locked.groups))
    grown_groups = {**groups, "late": test_group}
    part = Splitter(SPLIT, locked).assign("late", grown_groups["late"])
    assert part == "held-out"


def test_manifest_roundtrip_and_tamper_detection() -> None:
    parts = assign_all(Splitter(SPLIT, None), [f"ex-{i}" for i in range(500)])
    locked = locked_from(parts)
    again = LockedTestSet.from_json(locked.to_json(), "s3://b/m.json")
    assert again.ids == locked.ids and again.fingerprint == locked.fingerprint
    data = json.loads(locked.to_json())
    data["examples"][0]["sha256"] = "f" * 64
    tampered = json.dumps(data).encode()
    with pytest.raises(PermanentError, match="does not match its own fingerprint") as info:
        LockedTestSet.from_json(tampered, "s3://b/m.json")
    assert info.value.exit_code == EXIT_PERMANENT
    with pytest.raises(PermanentError, match="unreadable"):
        LockedTestSet.from_json(b"{not json", "s3://b/m.json")


def test_verify_names_missing_and_changed_examples() -> None:
    ids = {"a": content_digest("a", "x", "l"), "b": content_digest("b", "y", "l")}
    locked = LockedTestSet(1, 0, ids, fingerprint=fingerprint(ids.values()))
    verify_test_set(locked, dict(ids), "m")
    with pytest.raises(PermanentError, match=r"1 missing and 1 changed") as info:
        verify_test_set(locked, {"a": content_digest("a", "x", "other label")}, "m")
    assert "testSetVersion" in info.value.message


def test_additional_rows_never_enter_the_test_set_locked_or_not() -> None:
    ids = [f"prod-{i}" for i in range(2000)]
    for locked in (None, locked_from(assign_all(Splitter(SPLIT, None),
                                                [f"ex-{i}" for i in range(500)]))):
        splitter = Splitter(SPLIT, locked)
        parts = {i: splitter.assign(i, None, additional=True) for i in ids}
        assert set(parts.values()) == {"train", "validation"}
        # The same hash as data.uri's rows: validation keeps its share of the non-test rows.
        share = sum(p == "validation" for p in parts.values()) / len(ids)
        assert abs(share - SPLIT.validation / (1 - SPLIT.test)) < 0.03


def test_an_additional_copy_of_a_test_example_or_group_is_held_out() -> None:
    ids = [f"ex-{i}" for i in range(1000)]
    groups = {i: f"g-{n // 4}" for n, i in enumerate(ids)}
    locked = locked_from(assign_all(Splitter(SPLIT, None), ids, groups), groups)
    splitter = Splitter(SPLIT, locked)
    test_id = next(iter(locked.ids))
    assert splitter.assign(test_id, None) == "test"
    assert splitter.assign(test_id, None, additional=True) == "held-out"
    assert splitter.assign("prod-1", next(iter(locked.groups)), additional=True) == "held-out"
