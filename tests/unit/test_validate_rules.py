"""The rule engine and cleansing steps of headrace.ingest.validate, on small frames."""

from __future__ import annotations

import polars as pl
import pytest

from headrace.config.sources import FileSource, IngestSpec
from headrace.datagen import churn_with_defects
from headrace.errors import ConfigError, DataError
from headrace.ingest.validate import QualityReport, check, column_stats


def spec(**kw) -> IngestSpec:
    return IngestSpec.model_validate({"dataset": "d", **kw})


def test_every_failed_rule_is_in_the_reason_and_originals_are_kept():
    frame = pl.DataFrame({"id": ["a", "b", "c"], "n": ["5", "-1", "x"], "c": ["A", "Z", "A"]})
    s = spec(
        columns={
            "id": {"type": "string", "required": True},
            "n": {"type": "int", "min": 0, "max": 3},
            "c": {"type": "string", "allowed": ["A", "B"]},
        }
    )
    r = check(frame, s, origin="f.csv", batch_id="b1")
    assert r.clean.height == 0
    reasons = dict(zip(r.rejected["id"], r.rejected["reason"], strict=True))
    assert reasons == {"a": "n: max 3", "b": "n: min 0; c: not allowed", "c": "n: type int"}
    assert r.rejected["n"].to_list() == ["5", "-1", "x"]  # original text, not the coerced value
    assert set(r.rejected["origin"]) == {"f.csv"} and set(r.rejected["batch_id"]) == {"b1"}
    assert r.rejected["position"].to_list() == [1, 2, 3]
    assert r.report.failures == {"n: max 3": 1, "n: min 0": 1, "c: not allowed": 1, "n: type int": 1}


def test_regex_length_required_and_types():
    frame = pl.DataFrame(
        {
            "code": ["AB12", "ab12", "AB1234", None],
            "flag": ["yes", "N", "maybe", "1"],
            "day": ["2024-01-31", "31/01/2024", "2024-02-30", "2024-03-01"],
            "x": ["1.0", "2.5", "3", ""],
        }
    )
    s = spec(
        columns={
            "code": {"type": "string", "regex": "[A-Z]{2}[0-9]+", "max_length": 5, "required": True},
            "flag": {"type": "bool"},
            "day": {"type": "date", "format": "%Y-%m-%d", "min": "2024-01-01"},
            "x": {"type": "int"},
        }
    )
    r = check(frame, s)
    reasons = r.rejected["reason"].to_list()
    assert reasons == [
        "day: type date; x: type int; code: regex [A-Z]{2}[0-9]+",
        "flag: type bool; day: type date; code: max_length 5",
        "code: required",  # a blank number is a missing value, not a type failure
    ]
    assert r.clean.height == 1
    row = r.clean.row(0, named=True)
    assert row["code"] == "AB12" and row["flag"] is True and str(row["day"]) == "2024-01-31" and row["x"] == 1
    assert r.clean.schema["day"] == pl.Date and r.clean.schema["x"] == pl.Int64


def test_trim_null_tokens_impute_records_values():
    frame = pl.DataFrame({"a": [" 1 ", "NA", "3", "?", "5"], "s": [" x", "y ", None, "z", "null"]})
    s = spec(
        columns={
            "a": {"type": "float", "impute": "median"},
            "s": {"type": "string", "impute": {"constant": "u"}},
        },
        cleanse=["trim_strings", "null_tokens"],
    )
    r = check(frame, s)
    assert r.rejected.height == 0
    assert r.clean["a"].to_list() == [1.0, 3.0, 3.0, 3.0, 5.0]
    assert r.clean["s"].to_list() == ["x", "y", "u", "z", "u"]
    assert r.report.imputed == {
        "a": {"strategy": "median", "value": 3.0, "count": 2},
        "s": {"strategy": "constant", "value": "u", "count": 2},
    }


def test_impute_mean_and_mode():
    frame = pl.DataFrame({"a": ["1", "2", None, "6"], "m": ["x", "y", "y", None]})
    r = check(frame, spec(columns={"a": {"type": "float", "impute": "mean"}, "m": {"impute": "mode"}}))
    assert r.clean["a"].to_list() == [1.0, 2.0, 3.0, 6.0]
    assert r.clean["m"].to_list() == ["x", "y", "y", "y"]


def test_blank_and_null_tokens_are_missing_in_typed_columns_by_default():
    frame = pl.DataFrame({"t": ["1.5", " ", "NA", "-", "2", "x"], "s": ["a", " ", "NA", "-", "b", "c"]})
    r = check(frame, spec(columns={"t": {"type": "float", "impute": "median"}}))
    assert r.rejected["reason"].to_list() == ["t: type float"]  # only "x" is not a number
    assert r.clean["t"].to_list() == [1.5, 1.75, 1.75, 1.75, 2.0]
    assert r.report.imputed["t"]["count"] == 3
    # a text column keeps its values unless its rules say null_tokens
    assert r.clean["s"].to_list() == ["a", " ", "NA", "-", "b"]


def test_null_tokens_per_column_replace_the_sources_list():
    frame = pl.DataFrame({"n": ["1", "NA", "missing"], "cat": ["NA", "x", "missing"]})
    s = spec(
        columns={
            "n": {"type": "int", "null_tokens": ["missing"]},
            "cat": {"type": "string", "null_tokens": ["missing"]},
        }
    )
    r = check(frame, s)
    assert r.rejected["reason"].to_list() == ["n: type int"]  # "NA" is a value here, and not an int
    assert r.clean.rows() == [(1, "NA"), (None, None)]


def test_drop_duplicates_counts_rows_and_keeps_first():
    frame = pl.DataFrame({"a": ["1", "1", "2", "1"], "b": ["x", "x", "y", "z"]})
    r = check(frame, spec(cleanse=["drop_duplicates"]))
    assert r.report.duplicates_dropped == 1
    assert r.clean.rows() == [("1", "x"), ("2", "y"), ("1", "z")]


def test_unique_in_batch_against_dataset_and_bad_first_copy():
    frame = pl.DataFrame({"id": ["k1", "k2", "k2", "k3", "k3", "k0"], "n": ["1", "1", "2", "-5", "3", "1"]})
    existing = pl.DataFrame({"id": ["k0"]})
    s = spec(columns={"id": {"unique": True, "required": True}, "n": {"type": "int", "min": 0}})
    r = check(frame, s, existing_keys=existing)
    assert r.clean["id"].to_list() == ["k1", "k2", "k3"]  # the good second k3 gets in
    reasons = dict(zip(r.rejected["position"], r.rejected["reason"], strict=True))
    assert reasons == {3: "id: duplicate in batch", 4: "n: min 0", 6: "id: already in dataset"}


def test_composite_key_and_drop_duplicate_keys():
    frame = pl.DataFrame({"a": ["1", "1", "1"], "b": ["x", "y", "x"], "v": ["p", "q", "r"]})
    r = check(frame, spec(key=["a", "b"], cleanse=["drop_duplicate_keys"]))
    assert r.rejected["reason"].to_list() == ["key (a, b): duplicate in batch"]
    assert r.rejected["v"].to_list() == ["r"]


def test_row_rules_sql_and_polars_null_passes():
    frame = pl.DataFrame({"lo": ["1", "5", None], "hi": ["2", "3", "1"]})
    s = spec(
        columns={"lo": {"type": "int"}, "hi": {"type": "int"}},
        row_rules=[{"name": "ordered", "sql": "lo <= hi"}, {"name": "small", "polars": "pl.col('hi') < 3"}],
    )
    r = check(frame, s)
    assert r.rejected["reason"].to_list() == ["ordered; small"]
    assert r.clean.height == 2


def test_row_rule_with_unknown_column_is_a_config_error():
    s = spec(row_rules=[{"name": "r", "sql": "nope > 1"}])
    with pytest.raises(ConfigError, match="row rule 'r'"):
        check(pl.DataFrame({"a": ["1"]}), s)


@pytest.mark.parametrize("text", ["__import__('os')", "pl.col('a').__class__", "(lambda: 1)()"])
def test_polars_text_is_restricted(text):
    with pytest.raises(ValueError):
        spec(row_rules=[{"name": "r", "polars": text}])


def test_outliers_clip_flag_quarantine():
    values = [str(v) for v in [10, 11, 12, 10, 11, 12, 10, 11, 500]]
    frame = pl.DataFrame({"v": values})
    clip = check(
        frame, spec(columns={"v": {"type": "float", "outliers": {"method": "iqr", "action": "clip"}}})
    )
    assert clip.clean["v"].max() < 20 and clip.report.outliers["v"]["count"] == 1
    flag = check(frame, spec(columns={"v": {"type": "float", "outliers": {"action": "flag"}}}))
    assert flag.clean["v_outlier"].to_list() == [False] * 8 + [True]
    z = check(
        frame,
        spec(
            columns={
                "v": {"type": "int", "outliers": {"method": "zscore", "threshold": 2, "action": "quarantine"}}
            }
        ),
    )
    assert z.rejected["reason"].to_list() == ["v: outlier (zscore)"]


def test_missing_required_column_names_it_and_drift():
    with pytest.raises(DataError, match="required column 'b' missing"):
        check(pl.DataFrame({"a": ["1"]}), spec(columns={"b": {"required": True}}))
    frame = pl.DataFrame({"a": ["1"], "new": ["x"]})
    with pytest.raises(DataError, match="new column 'new'"):
        check(frame, spec(columns={"a": {}}, schema_drift="refuse"))
    assert check(frame, spec(columns={"a": {}}, schema_drift="drop")).clean.columns == ["a"]
    added = check(frame, spec(columns={"a": {}}, schema_drift="add"))
    assert added.clean.columns == ["a", "new"] and added.report.columns_added == ["new"]
    known = check(frame, spec(columns={"a": {}}, schema_drift="refuse"), known_columns=["new"])
    assert known.clean.columns == ["a", "new"]
    absent = check(pl.DataFrame({"a": ["1"]}), spec(columns={"a": {}, "z": {"type": "float"}}))
    assert absent.clean.schema["z"] == pl.Float64


def test_quarantine_meta_name_collision_is_renamed():
    frame = pl.DataFrame({"reason": ["x"], "n": ["bad"]})
    r = check(frame, spec(columns={"n": {"type": "int"}}))
    assert r.rejected["reason__data"].to_list() == ["x"] and r.rejected["reason"].to_list() == ["n: type int"]


def test_yaml_booleans_in_allowed_are_refused():
    with pytest.raises(ValueError, match="quote them"):
        spec(columns={"c": {"type": "string", "allowed": [True, False]}})


def test_planted_defects_exact_counts_and_stats():
    frame, planted = churn_with_defects(3000, seed=5)
    s = FileSource.model_validate(
        {
            "kind": "file",
            "path": "x",
            "dataset": "c",
            "cleanse": ["trim_strings", "null_tokens"],
            "columns": {
                "customerID": {"type": "string", "required": True, "unique": True},
                "tenure": {"type": "int", "required": True, "min": 0, "max": 120},
                "MonthlyCharges": {"type": "float", "required": True, "min": 0},
                "TotalCharges": {"type": "float", "min": 0, "impute": "median"},
                "Contract": {"type": "string", "allowed": ["Month-to-month", "One year", "Two year"]},
            },
        }
    )
    r = check(frame, s)
    assert set((r.rejected["position"] - 1).to_list()) == planted.rejected_rows()
    assert r.report.failures == {
        k: v
        for k, v in {
            "tenure: min 0": len(planted.negative_tenure),
            "Contract: not allowed": len(planted.unknown_contract),
            "MonthlyCharges: type float": len(planted.text_in_number),
            "customerID: duplicate in batch": len(planted.duplicate_id),
        }.items()
        if v
    }
    assert r.report.imputed["TotalCharges"]["count"] == len(planted.blank_total)
    assert r.report.rows_clean + r.report.rows_quarantined == 3000
    assert r.report.columns["tenure"].min == 0 and r.report.columns["customerID"].distinct == r.clean.height
    again = QualityReport.from_dict(r.report.to_dict())
    assert again.merge(r.report).rows_in == 6000


def test_cleansing_of_a_large_batch_matches_row_by_row_cleansing():
    # large enough that columns of few distinct values are examined through those values
    n = 60_000
    cats = [" a", "b ", "NA", "\u00a0c", "d", "?", "e\t"]
    frame = pl.DataFrame(
        {
            "cat": [cats[i % len(cats)] for i in range(n)],
            "tidy": ["x" if i % 3 else "y" for i in range(n)],
            "late": ["p"] * (n - 1) + [" null "],  # the one changed value is past the sampled rows
            "id": [f" k{i}" if i % 1000 == 0 else f"k{i}" for i in range(n)],
        }
    )
    s = spec(cleanse=["trim_strings", "null_tokens"], columns={"id": {"type": "string"}})
    r = check(frame, s)
    tokens = s.null_tokens
    expected = frame.with_columns(pl.all().str.strip_chars()).with_columns(
        [pl.when(pl.col(c).is_in(tokens)).then(None).otherwise(pl.col(c)).alias(c) for c in frame.columns]
    )
    assert r.rejected.height == 0
    assert r.clean.equals(expected)
    assert r.clean["late"].null_count() == 1 and r.clean["tidy"].equals(frame["tidy"])


def test_column_stats_of_a_large_frame_match_direct_aggregates():
    n = 60_000  # large enough that text columns of few values are summarised through those values
    frame = pl.DataFrame(
        {
            "cat": [None if i % 7 == 0 else ["b", "a", "c"][i % 3] for i in range(n)],
            "late": ["m"] * (n - 1) + ["z"],
            "id": [f"k{i}" for i in range(n)],
            "x": [float(i % 100) for i in range(n)],
        }
    )
    stats = column_stats(frame)
    for c in frame.columns:
        col = frame[c]
        assert (stats[c].nulls, stats[c].distinct) == (col.null_count(), col.n_unique()), c
        assert (stats[c].min, stats[c].max) == (col.min(), col.max()), c
    assert stats["x"].mean == pytest.approx(frame["x"].mean())


def test_nan_and_infinities_in_float_columns_are_quarantined_unless_allowed():
    frame = pl.DataFrame(
        {
            "x": [1.0, float("nan"), float("inf"), None, -float("inf")],
            "y": [float("nan"), 1.0, 2.0, 3.0, 4.0],
            "t": ["1.5", "inf", "2", "NaN", "-inf"],  # text: "NaN" is a missing value, "inf" is not
        }
    )
    r = check(frame, spec(columns={"y": {"allow_nan": True}, "t": {"type": "float"}}))
    assert r.rejected["reason"].to_list() == [
        "x: not finite; t: not finite",
        "x: not finite",
        "x: not finite; t: not finite",
    ]
    assert r.clean.height == 2 and r.clean["t"].to_list()[1] is None
    assert r.clean["y"].is_nan().to_list() == [True, False]
