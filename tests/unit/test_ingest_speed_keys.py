"""Keys already in the dataset: found through 64-bit hashes first, then checked exactly. The same rows
are rejected as by an exact check of every key, for text, integer, date and composite keys, with nulls
and with keys stored under another type than the chunk's."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from headrace.config.sources import IngestSpec
from headrace.ingest.validate import check


def spec(**kw) -> IngestSpec:
    return IngestSpec.model_validate({"dataset": "d", **kw})


def exact(frame: pl.DataFrame, existing: pl.DataFrame, cols: list[str]) -> list[bool]:
    known = set(existing.select(cols).rows())
    return [all(v is not None for v in row) and row in known for row in frame.select(cols).rows()]


@pytest.mark.parametrize(
    ("values", "known", "kind"),
    [
        (["a", "b", None, "c", "a2"], ["c", "zz", "a"], "string"),
        (["1", "2", "3", None, "40"], [3, 40, 99], "int"),
        (["2024-01-01", "2024-01-02", None, "2024-02-01"], [date(2024, 1, 2)], "date"),
    ],
)
def test_already_in_dataset_matches_an_exact_check(values, known, kind):
    frame = pl.DataFrame({"id": values, "v": [str(i) for i in range(len(values))]})
    existing = pl.DataFrame({"id": known})
    r = check(frame, spec(columns={"id": {"type": kind, "unique": True}}), existing_keys=existing)
    typed = check(frame, spec(columns={"id": {"type": kind}})).clean
    expected = exact(typed, existing.with_columns(pl.col("id").cast(typed.schema["id"])), ["id"])
    rejected = sorted(r.rejected["position"].to_list())
    assert rejected == [i + 1 for i, bad in enumerate(expected) if bad] and rejected
    assert set(r.rejected["reason"]) == {"id: already in dataset"}


def test_composite_key_already_in_dataset_with_nulls_and_another_stored_type():
    frame = pl.DataFrame(
        {"a": ["1", "1", "2", None, "3"], "b": ["x", "y", "x", "x", None], "v": list("pqrst")}
    )
    existing = pl.DataFrame({"a": [1, 2, 3], "b": ["y", "x", None]})  # stored as integers
    r = check(frame, spec(key=["a", "b"]), existing_keys=existing)
    assert sorted(r.rejected["position"].to_list()) == [2, 3]  # (1, y) and (2, x); nulls never match
    assert set(r.rejected["reason"]) == {"key (a, b): already in dataset"}


def test_a_key_type_without_a_hash_path_is_still_checked():
    frame = pl.DataFrame({"id": ["1.5", "2.5", "3.5"]})
    existing = pl.DataFrame({"id": [2.5]})
    r = check(frame, spec(columns={"id": {"type": "float", "unique": True}}), existing_keys=existing)
    assert r.rejected["position"].to_list() == [2]


def test_no_known_key_in_the_chunk_rejects_nothing():
    frame = pl.DataFrame({"id": [f"k{i}" for i in range(1000)]})
    existing = pl.DataFrame({"id": [f"j{i}" for i in range(1000)]})
    r = check(frame, spec(columns={"id": {"unique": True}}), existing_keys=existing)
    assert r.rejected.height == 0 and r.clean.height == 1000
