"""The demo story's pure parts: which articles each day serves, in which order, how a verdict
reads, and the error when nothing is in production."""

from __future__ import annotations

import io
import json
from collections import Counter
from typing import Any

import pytest

from tests.support.serving import production_pointer, serving_order
from tests.support.story import LABELS, Size, bbc_rows, part_line, shifted

DAYS = ("normal", "shifted", "after")


def test_the_days_serve_unseen_articles_that_the_corpus_holds() -> None:
    size = Size()
    training = {r["id"] for r in bbc_rows(size.per_class)}
    seen = set(training)
    for day in DAYS:
        offset, count = size.feed(day)
        rows = bbc_rows(count, offset=offset)
        # Every topic has enough articles left: the smallest (entertainment) has 386.
        assert Counter(r["label"] for r in rows) == dict.fromkeys(LABELS, count), day
        ids = {r["id"] for r in rows}
        assert not ids & seen, day
        seen |= ids


def test_the_most_recent_part_of_a_served_day_covers_every_topic() -> None:
    size = Size()
    offset, count = size.feed("shifted")
    rows = bbc_rows(count, offset=offset)
    order = serving_order(rows, "day-2")
    assert order == serving_order(rows, "day-2") and sorted(
        r["id"] for r in order) == sorted(r["id"] for r in rows)
    recent = Counter(r["label"] for r in order[-len(order) * 3 // 10:])
    assert set(recent) == set(LABELS) and min(recent.values()) >= 0.5 * len(order) * 0.3 / 5


def test_the_shifted_feed_keeps_the_article() -> None:
    assert shifted("Ink helps drive democracy in Asia").endswith(
        "Ink helps drive democracy in Asia")
    assert shifted("x").startswith("Sponsored:")


def test_a_part_of_a_verdict_reads_with_its_numbers() -> None:
    passed = {"benchmark": "recentHoldout", "against": "production", "metric": "accuracy",
              "candidate": 0.9333, "other": 0.3667, "improvement": 0.5667, "pValue": 2.7e-25,
              "examples": 180, "passed": True, "why": "..."}
    assert part_line(passed) == ("recentHoldout vs production: accuracy 0.933 vs 0.367 "
                                 "(+0.567), p=2.7e-25, 180 examples: passed")
    assert part_line({**passed, "passed": False}).endswith(": FAILED")
    missing = {"benchmark": "recentHoldout", "against": "production", "metric": "accuracy",
               "examples": 0, "passed": None, "why": "12 recent rows; 30 needed"}
    assert part_line(missing) == ("recentHoldout vs production: not applicable "
                                  "(12 recent rows; 30 needed)")


class FakeS3:
    """get_object on a dict of keys, raising NoSuchKey as boto3 does."""

    class exceptions:
        class NoSuchKey(Exception):
            pass

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        if Key not in self.objects:
            raise self.exceptions.NoSuchKey(Key)
        return {"Body": io.BytesIO(self.objects[Key])}


def test_serving_without_a_model_in_production_says_so() -> None:
    with pytest.raises(AssertionError, match=r"no model in production: "
                       r"s3://b/models/m/production.json does not exist"):
        production_pointer(FakeS3({}), "b", "models/m/")
    pointer = {"runId": "run-1", "modelUri": "s3://b/models/m/production/run-1/model/"}
    s3 = FakeS3({"models/m/production.json": json.dumps(pointer).encode()})
    assert production_pointer(s3, "b", "models/m/") == pointer
