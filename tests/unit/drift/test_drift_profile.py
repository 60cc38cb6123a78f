"""The reference-profile format shared with the trainer."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from tailor.drift import FORMAT_VERSION, ProfileError, ReferenceProfile, build_reference_profile
from tailor_contract.profile import CategoricalProfile, NumericProfile, TextProfile, text_summaries


def _profile(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return build_reference_profile(
        {
            "amount": rng.lognormal(size=n),
            "count": rng.integers(0, 5, n),
            "country": rng.choice(["de", "fr", "it"], n, p=[0.6, 0.3, 0.1]),
            "body": [("héllo " * int(k)).strip() for k in rng.integers(1, 6, n)],
        },
        rng.choice(["spam", "ham"], n),
        classes=["ham", "spam"],
        labels=rng.choice(["spam", "ham"], n, p=[0.2, 0.8]),
        scores=rng.dirichlet([1, 1], n),
        text_features=["body"],
        metadata={"run": "r1"},
    )


def test_json_round_trip_is_lossless():
    profile = _profile()
    document = json.loads(json.dumps(profile.to_json()))
    assert document["formatVersion"] == FORMAT_VERSION == 1
    again = ReferenceProfile.from_json(document)
    assert again.to_json() == profile.to_json()
    assert again.samples == 2000
    assert again.metadata == {"run": "r1"}


def test_types_are_inferred_or_declared():
    profile = _profile()
    assert isinstance(profile.features["amount"], NumericProfile)
    assert isinstance(profile.features["count"], NumericProfile)
    assert isinstance(profile.features["country"], CategoricalProfile)
    assert isinstance(profile.features["body"], TextProfile)
    assert set(profile.compared_columns()) == {
        "amount",
        "count",
        "country",
        "body:chars",
        "body:words",
        "body:non_ascii",
    }


def test_numeric_bins_cover_every_reference_value():
    profile = _profile()
    amount = profile.features["amount"]
    assert isinstance(amount, NumericProfile)
    assert int(amount.counts.sum()) == amount.count == 2000
    assert amount.edges[0] == amount.min
    assert amount.edges[-1] > amount.max
    assert amount.edges.size == 102  # 100 quantile bins and one for the maximum
    # A discrete feature gets one bin per value.
    count = profile.features["count"]
    assert isinstance(count, NumericProfile)
    assert count.edges[:-1].tolist() == [0, 1, 2, 3, 4]


def test_predictions_priors_and_confidence():
    profile = _profile()
    assert profile.classes == ("ham", "spam")
    assert sum(profile.predictions.values()) == 2000
    assert profile.class_priors is not None
    assert sum(profile.class_priors.values()) == pytest.approx(1.0)
    assert profile.class_priors["ham"] == pytest.approx(0.8, abs=0.03)
    assert profile.confidence is not None and profile.confidence.min >= 0.5


def test_missing_values_are_counted_not_binned():
    profile = build_reference_profile(
        {"x": [1.0, np.nan, 3.0, None, np.inf], "c": ["a", None, "b", "a", "a"]},
        ["p"] * 5,
        classes=["p"],
    )
    x = profile.features["x"]
    c = profile.features["c"]
    assert isinstance(x, NumericProfile) and (x.count, x.missing) == (2, 3)
    assert isinstance(c, CategoricalProfile) and c.categories == {"a": 3, "b": 1}
    assert c.missing == 1


def test_categories_beyond_the_limit_are_pooled():
    values = ["a"] * 5 + ["b"] * 3 + ["c", "d"]
    profile = build_reference_profile({"c": values}, ["p"] * 10, classes=["p"], max_categories=2)
    c = profile.features["c"]
    assert isinstance(c, CategoricalProfile)
    assert c.categories == {"a": 5, "b": 3} and c.other == 2


def test_text_summaries():
    out = text_summaries(pa.array(["two words", "", "ünï", None]))
    assert out["chars"][:3].tolist() == [9, 0, 3]
    assert out["words"][:3].tolist() == [2, 0, 1]
    assert out["non_ascii"][:3].tolist() == pytest.approx([0.0, 0.0, 2 / 3])
    assert np.isnan(out["chars"][3])


def test_unknown_format_version_is_refused():
    document = _profile().to_json()
    document["formatVersion"] = 2
    with pytest.raises(ProfileError, match="formatVersion 2"):
        ReferenceProfile.from_json(document)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": ["a"], "predictions": ["a", "z"]}, "outside classes"),
        ({"classes": ["a", "a"], "predictions": ["a", "a"]}, "distinct"),
        ({"classes": ["a"], "predictions": ["a"]}, "values but there are"),
        ({"classes": ["a"], "predictions": ["a", "a"], "text_features": ["nope"]}, "not in"),
    ],
)
def test_bad_input_is_refused_clearly(kwargs, message):
    with pytest.raises(ProfileError, match=message):
        build_reference_profile({"x": [1.0, 2.0]}, **kwargs)


def test_profile_from_parquet_columns_equals_profile_from_memory(tmp_path):
    import pyarrow.parquet as pq
    from tailor.drift import ParquetColumns

    rng = np.random.default_rng(3)
    n = 3000
    table = pa.table(
        {
            "amount": rng.lognormal(size=n),
            "count": rng.integers(0, 5, n),
            "country": rng.choice(["de", "fr", "it"], n),
            "body": [("héllo " * int(k)).strip() for k in rng.integers(1, 6, n)],
        }
    )
    pq.write_table(table.slice(0, 2000), tmp_path / "part-0.parquet", row_group_size=700)
    # A later file without a column: its rows count as missing values of that column.
    pq.write_table(table.slice(2000).drop_columns(["count"]), tmp_path / "part-1.parquet")
    columns = ParquetColumns(str(tmp_path))
    assert columns.num_rows == n
    assert list(columns) == ["amount", "count", "country", "body"]
    predictions = rng.choice(["spam", "ham"], n)
    lazy = build_reference_profile(
        columns, predictions, classes=["ham", "spam"], text_features=["body"]
    )
    in_memory = {c: table[c] for c in table.column_names}
    in_memory["count"] = pa.chunked_array(
        [table["count"].slice(0, 2000), pa.nulls(1000, pa.int64())]
    )
    direct = build_reference_profile(
        in_memory, predictions, classes=["ham", "spam"], text_features=["body"]
    )
    assert lazy.to_json() == direct.to_json()
    assert lazy.features["count"].missing == 1000
    with pytest.raises(KeyError):
        columns["nope"]
