"""Inferred column types: what inference decides, pinning across runs, null tokens, honest outcomes."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import insert, select

from headrace.config.sources import FileSource
from headrace.ingest.runner import ingest, open_source
from headrace.ingest.schema import id_like, infer_column, load_schema
from headrace.metadata import SCHEMA, Metadata, utcnow
from headrace.store import Store


@pytest.fixture
def env(tmp_path: Path):
    store = Store(tmp_path / "lake")
    meta = Metadata(f"sqlite:///{tmp_path / 'meta.db'}")
    yield tmp_path, store, meta
    meta.dispose()


def source(path: Path | str, **kw) -> FileSource:
    return FileSource.model_validate({"kind": "file", "path": str(path), "dataset": "d", **kw})


def run(env, spec: FileSource, **kw):
    _, store, meta = env
    return ingest(open_source("src", spec), spec, store=store, meta=meta, source_name="src", **kw)


def kind(values: list[str | None], name: str = "x") -> str | None:
    return infer_column(pl.Series(name, values, dtype=pl.String), ["NA", "N/A", "-"])[0]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", " 2", "-3", "NA", "", None, "  "], "int"),
        (["00501", "10001", "02134"], "string"),  # leading zeros: codes, kept as written
        (["0", "10", "3"], "int"),  # a lone zero is a number
        (["1.5", "2", "1e3", "-"], "float"),
        (["1", "2", "three"], "string"),  # mixed: text
        (["true", "False", "TRUE"], "bool"),
        (["Yes", "No"], "string"),  # categories, not flags
        (["2024-01-31", "2023-12-01"], "date"),
        (["01/31/2024", "12/01/2023"], "date"),
        (["01-Jan-1995", "24-Dec-1997"], "date"),
        (["2024-01-31T10:00:00", "2024-02-01 11:30:15.250"], "datetime"),
        (["2024-01-31", "soon"], "string"),
        (["123456789012345678901234567890", "1"], "string"),  # past 64 bits: an identifier
        (["9223372036854775807", "-9223372036854775808"], "int"),
        (["inf", "nan", "1"], "string"),
        (["NA", "", None], "string"),  # no value at all
    ],
)
def test_inference_of_a_text_column(values, expected):
    assert kind(values) == expected


def test_integers_in_a_column_named_like_an_id_stay_text():
    assert kind(["101", "102"], "customerID") == "string"
    assert kind(["101", "102"], "user_id") == "string"
    assert kind(["101", "102"], "zip") == "string"
    assert kind(["101", "102"], "paid") == "int" and kind(["101", "102"], "tenure") == "int"
    assert id_like("accountId") and id_like("postal-code") and not id_like("valid")


def test_typed_columns_keep_their_type():
    assert infer_column(pl.Series("n", [1, 2]))[0] == "int"
    assert infer_column(pl.Series("f", [1.0, None]))[0] == "float"
    assert infer_column(pl.Series("b", [True]))[0] == "bool"
    assert infer_column(pl.Series("l", [[1], [2]]))[0] is None  # nested values pass through


def test_csv_columns_typed_on_the_first_load_and_pinned_for_the_next(env):
    tmp, store, meta = env
    (tmp / "a.csv").write_text(
        "customerID,zip,SeniorCitizen,tenure,TotalCharges,joined,Churn,paperless\n"
        "7590-VHVEG,00501,0,1,29.85,2024-01-02,No,true\n"
        "5575-GNVDE,10001,1,34, ,2024-02-03,Yes,false\n"
        "3668-QPYBK,02134,0,NA,108.15,2024-03-04,No,TRUE\n"
    )
    first = run(env, source(tmp / "a.csv", columns={"TotalCharges": {"impute": "median"}}))
    assert first.ok and first.rows_committed == 3, first.error
    data = store.read("d")
    assert dict(data.schema) == {
        "customerID": pl.String,
        "zip": pl.String,
        "SeniorCitizen": pl.Int64,
        "tenure": pl.Int64,
        "TotalCharges": pl.Float64,
        "joined": pl.Date,
        "Churn": pl.String,
        "paperless": pl.Boolean,
    }
    assert data["zip"].to_list() == ["00501", "10001", "02134"]
    assert data["TotalCharges"].to_list() == [29.85, 69.0, 108.15]  # blank imputed
    assert data["tenure"].to_list() == [1, 34, None]
    pinned = load_schema(meta, "d")
    assert pinned is not None and pinned.columns["tenure"].type == "int"
    assert pinned.columns["tenure"].origin == "inferred" and pinned.columns["joined"].format == "%Y-%m-%d"

    # a later file whose values do not fit the pinned types: quarantined with the reason, never text
    (tmp / "b.csv").write_text(
        "customerID,zip,SeniorCitizen,tenure,TotalCharges,joined,Churn,paperless\n"
        "9999-AAAAA,90210,0,twelve,10.5,2024-05-06,No,false\n"
        "9998-BBBBB,90211,0,12,10.5,2024-05-06,No,false\n"
    )
    second = run(env, source(tmp / "*.csv", max_quarantine_ratio=1.0))
    assert [b.status for b in second.batches] == ["skipped", "committed"]
    q = store.read("d__quarantine")
    assert q.select("customerID", "tenure", "reason").rows() == [
        ("9999-AAAAA", "twelve", "tenure: type int (inferred)")
    ]
    assert store.read("d").schema["tenure"] == pl.Int64 and store.read("d").height == 4


def test_a_declared_type_wins_and_is_recorded_as_declared(env):
    tmp, store, meta = env
    (tmp / "a.csv").write_text("code,n\n1,2\n3,4\n")
    assert run(env, source(tmp / "a.csv", columns={"code": {"type": "string"}, "n": {"required": True}})).ok
    assert dict(store.read("d").schema) == {"code": pl.String, "n": pl.Int64}
    pinned = load_schema(meta, "d")
    assert pinned is not None
    assert pinned.columns["code"].origin == "declared" and pinned.columns["n"].origin == "inferred"


def test_a_typed_column_null_tokens_can_be_turned_off_per_column(env):
    tmp, store, _ = env
    (tmp / "a.csv").write_text("alley,area\nNA,1\nPave,NA\nGrvl,3\n")
    spec = source(tmp / "a.csv", columns={"alley": {"null_tokens": []}}, max_quarantine_ratio=0.5)
    assert run(env, spec).ok
    data = store.read("d")
    assert data["alley"].to_list() == ["NA", "Pave", "Grvl"] and data["area"].to_list() == [1, None, 3]


def test_more_than_five_percent_quarantined_fails_the_run_with_the_top_rules(env):
    tmp, store, _ = env
    lines = [f"{i},{'x' if i % 4 == 0 else i}" for i in range(1000)]  # m was pinned int
    (tmp / "a.csv").write_text("n,m\n" + "\n".join(f"{i},{i}" for i in range(1000)) + "\n")
    assert run(env, source(tmp / "a.csv")).ok
    (tmp / "b.csv").write_text("n,m\n" + "\n".join(lines) + "\n")
    result = run(env, source(tmp / "*.csv"))
    assert result.status == "failed_checks" and not result.ok
    assert "250 of 1,000 rows quarantined (25.0%)" in (result.error or "")
    assert "top rules: m: type int (inferred) (250)" in (result.error or "")
    assert store.read("d").height == 1000  # nothing of the failing file committed


def test_a_run_whose_process_was_killed_is_recorded_as_interrupted_by_the_next(env):
    tmp, _, meta = env
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    runs = SCHEMA.tables["ingestion_runs"]
    with meta.begin() as conn:
        for pid in (gone.pid, 1):  # 1 is alive: a run of a live process is left alone
            conn.execute(
                insert(runs).values(
                    source="src",
                    dataset="d",
                    kind="file",
                    started_at=utcnow(),
                    status="running",
                    details={"host": socket.gethostname(), "pid": pid},
                )
            )
    (tmp / "a.csv").write_text("n\n1\n")
    assert run(env, source(tmp / "a.csv")).ok
    with meta.begin() as conn:
        rows = conn.execute(select(runs.c.status, runs.c.error).order_by(runs.c.id)).all()
    assert [r[0] for r in rows] == ["interrupted", "running", "succeeded"]
    assert "killed" in (rows[0][1] or "")
