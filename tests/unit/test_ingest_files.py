"""File sources through the runner: formats, failures, idempotency, atomic chunks, replay, reports."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import select

from headrace.config.sources import FileSource
from headrace.datagen import churn_with_defects
from headrace.errors import ConfigError
from headrace.ingest.base import Batch, Source
from headrace.ingest.files import file_fingerprint
from headrace.ingest.replay import replay_quarantine
from headrace.ingest.report import latest_reports, report_html
from headrace.ingest.runner import SOURCE_FACTORIES, ingest, open_source, register_source
from headrace.metadata import SCHEMA, Metadata
from headrace.store import Store

RULES = {
    "id": {"type": "string", "required": True, "unique": True},
    "n": {"type": "int", "required": True, "min": 0},
}


@pytest.fixture
def env(tmp_path: Path):
    store = Store(tmp_path / "lake")
    meta = Metadata(f"sqlite:///{tmp_path / 'meta.db'}")
    yield tmp_path, store, meta
    meta.dispose()


def file_spec(path: Path | str, **kw) -> FileSource:
    """A file source with ``RULES``; these tests plant defects in small files, so any share of a file
    may be quarantined unless a test says otherwise."""
    doc = {"kind": "file", "path": str(path), "dataset": "d", "columns": RULES, "max_quarantine_ratio": 1.0}
    return FileSource.model_validate({**doc, **kw})


def ingest_alone(folder: Path, spec: FileSource):
    """One ingestion into a store and metadata of its own in ``folder``: the result and the store."""
    store = Store(folder / "lake")
    meta = Metadata(f"sqlite:///{folder / 'meta.db'}")
    try:
        return ingest(open_source("s", spec), spec, store=store, meta=meta, source_name="s"), store
    finally:
        meta.dispose()


def run(env, spec: FileSource, **kw):
    _, store, meta = env
    return ingest(open_source("src", spec), spec, store=store, meta=meta, source_name="src", **kw)


def test_formats_gzip_and_glob(env):
    tmp, store, _ = env
    data = tmp / "in"
    data.mkdir()
    (data / "a.csv").write_text("id,n\na1,1\na2,-1\n")
    with gzip.open(data / "b.csv.gz", "wt") as f:
        f.write("id,n\nb1,2\n")
    (data / "c.json").write_text(
        json.dumps({"data": {"items": [{"id": "c1", "n": 3}, {"id": "c2", "n": "x"}]}})
    )
    (data / "d.jsonl").write_text('{"id": "d1", "n": 4}\n\n{"id": "d2", "n": 5}\n')
    pl.DataFrame({"id": ["e1"], "n": [6]}).write_parquet(data / "e.parquet")
    result = run(env, file_spec(data / "*", json={"records": "data.items"}))
    assert result.status == "succeeded", result.error
    assert sorted(store.read("d")["id"].to_list()) == ["a1", "b1", "c1", "d1", "d2", "e1"]
    q = store.read("d__quarantine")
    assert sorted(q["reason"].to_list()) == ["n: min 0", "n: type int"]
    assert dict(zip(q["id"], q["position"], strict=True)) == {"a2": 3, "c2": 2}
    positions = store.read("d")  # JSONL line numbers skip the blank line
    assert store.read("d").schema["n"] == pl.Int64 and positions.height == 6


def test_csv_options_delimiter_quote_encoding_no_header(env):
    tmp, store, _ = env
    path = tmp / "x.csv"
    path.write_bytes("a1;'caf\xe9; ok';1\na2;'b';2\n".encode("latin-1"))
    spec = FileSource.model_validate(
        {
            "kind": "file",
            "path": str(path),
            "dataset": "d",
            "csv": {"delimiter": ";", "quote": "'", "encoding": "latin-1", "header": False},
            "columns": {"column_3": {"type": "int"}},
        }
    )
    assert run(env, spec).ok
    assert sorted(store.read("d").rows()) == [("a1", "café; ok", 1), ("a2", "b", 2)]


@pytest.mark.parametrize(
    ("head", "rest", "skip"),
    [
        (
            "\ufeffid,n\r\n",
            "k1,1\r\nk2\r\n\r\nk3,3",
            0,
        ),  # BOM, CRLF, short line, blank line, no final newline
        ('title line\n"i,d",n\n', 'k1,1\n"k\n2",2\nk3,3,3\n', 1),  # skip_rows, quoted header and newline
        ("id,n\n", "", 0),  # the header alone
    ],
)
def test_a_file_read_whole_and_one_streamed_give_the_same_rows(tmp_path, head, rest, skip):
    # a small file is read once and parsed in place; with a tiny chunk_rows the same file is streamed
    padding = "".join(f"p{i},{i}\r\n" if "\r" in head else f"p{i},{i}\n" for i in range(300)) if rest else ""
    results = []
    for chunk_rows in (500_000, 2):
        folder = tmp_path / str(chunk_rows)
        folder.mkdir()
        path = folder / "x.csv"
        path.write_bytes((head + padding + rest).encode())
        spec = FileSource.model_validate(
            {
                "kind": "file",
                "path": str(path),
                "dataset": "d",
                "csv": {"skip_rows": skip},
                "chunk_rows": chunk_rows,
            }
        )
        result, store = ingest_alone(folder, spec)
        assert result.ok, result.error
        rows = sorted(store.read("d").rows()) if store.exists("d") else []
        q = store.read("d__quarantine") if store.exists("d__quarantine") else None
        held = [] if q is None else sorted(zip(q["position"], q["reason"], q["raw"], strict=True))
        report = result.batches[0].report
        results.append((rows, held, report.empty_rows_dropped))
    assert results[0] == results[1]
    assert not rest or len(head + padding + rest) > 2 * 512  # over what chunk_rows=2 reads whole
    if head.startswith("\ufeff"):
        assert ("k1", 1) in results[0][0] and ("k3", 3) in results[0][0]  # n inferred int
        assert [h[:2] for h in results[0][1]] == [(303, "expected 2 fields, found 1")]


@pytest.mark.parametrize("records", [None, "data.items"])
def test_a_json_document_read_whole_and_one_streamed_give_the_same_rows(tmp_path, records):
    # over min(256 MB, chunk_rows * 512) bytes a JSON document is streamed by ijson, chunk by chunk
    items = [{"id": f"r{i}", "n": i % 7 - 1, "tags": {"a": i % 3}} for i in range(400)]
    items[150] = [1, 2]  # not an object: quarantined with its record number
    doc = {"data": {"items": items}} if records else items
    results = []
    for chunk_rows in (500_000, 10):
        folder = tmp_path / str(chunk_rows)
        folder.mkdir()
        (folder / "x.json").write_text(json.dumps(doc))
        spec = file_spec(folder / "x.json", json={"records": records}, chunk_rows=chunk_rows)
        batch = next(iter(open_source("s", spec).read()))
        chunks = 1 + sum(1 for _ in batch.chunks or ())
        result, store = ingest_alone(folder, spec)
        assert result.ok, result.error
        q = store.read("d__quarantine")
        results.append((sorted(store.read("d").rows()), sorted(zip(q["position"], q["reason"], strict=True))))
        assert chunks == (1 if chunk_rows == 500_000 else 40)
    assert results[0] == results[1]
    assert (151, "a JSON list, not an object") in results[0][1]


def test_an_integer_past_64_bits_midway_through_a_streamed_document_loses_nothing(tmp_path):
    items = [{"id": f"r{i}", "n": i, "big": 2**70 if i == 150 else i} for i in range(400)]
    loaded: list[tuple[list[str], list[str]]] = []
    for chunk_rows in (500_000, 10):  # read whole, then streamed (the C parser stops at record 151)
        folder = tmp_path / str(chunk_rows)
        folder.mkdir()
        (folder / "x.json").write_text(json.dumps(items))
        spec = file_spec(folder / "x.json", chunk_rows=chunk_rows)
        result, store = ingest_alone(folder, spec)
        assert result.ok, result.error
        q = store.read("d__quarantine") if store.exists("d__quarantine") else None
        held = [] if q is None else q["id"].to_list()
        loaded.append((sorted(store.read("d")["id"].to_list()), sorted(held)))
        if q is not None:
            assert q["reason"].to_list() == ["big: type int (inferred)"]
    for committed, held in loaded:
        assert sorted(committed + held) == sorted(f"r{i}" for i in range(400))  # every record once
    # read whole, the document's numbers make the column float; streamed, the first chunk pins it int
    # and the one integer past 64 bits (a float to JSON readers) is quarantined, not turned into text
    assert loaded[0][1] == [] and loaded[1][1] == ["r150"]


def test_a_streamed_json_document_that_breaks_midway_loads_nothing(env):
    tmp, store, _ = env
    text = json.dumps([{"id": f"r{i}", "n": i} for i in range(400)])
    (tmp / "cut.json").write_text(text[: len(text) * 3 // 4])  # truncated after many whole records
    (tmp / "obj.json").write_text(json.dumps({"data": [{"id": "x", "n": 1}] * 300}))  # records not set
    (tmp / "key.json").write_text(json.dumps({"item": {"id": "x", "n": 1}, "pad": "p" * 6000}))
    for name, why in (
        ("cut.json", "not valid JSON"),
        ("obj.json", "no list of records at the top level"),
        ("key.json", "no list of records at the top level"),  # a key named "item" is not a list
    ):
        result = run(env, file_spec(tmp / name, chunk_rows=10))
        assert not result.ok and why in (result.batches[0].error or ""), result.batches[0].error
    assert not store.exists("d")


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_a_value_that_breaks_the_type_pinned_by_earlier_chunks_is_quarantined(env, fmt):
    tmp, store, _ = env
    records = [{"id": f"r{i}", "n": i, "zip": 1000 + i} for i in range(3000)]
    records[2500]["zip"] = "K1A 0B1"  # numbers in the first chunks (and JSONL blocks), then text
    body = json.dumps(records) if fmt == "json" else "\n".join(json.dumps(r) for r in records)
    (tmp / f"z.{fmt}").write_text(body)
    result = run(env, file_spec(tmp / f"z.{fmt}", chunk_rows=20))
    assert result.ok and result.rows_committed == 2999, result.error
    data = store.read("d").sort("n")
    assert data.schema["zip"] == pl.Int64
    assert data["zip"].to_list() == [1000 + i for i in range(3000) if i != 2500]
    q = store.read("d__quarantine")
    assert q.select("id", "zip", "reason").rows() == [("r2500", "K1A 0B1", "zip: type int (inferred)")]


def test_unreadable_files_fail_alone_with_reasons(env):
    tmp, store, meta = env
    data = tmp / "in"
    data.mkdir()
    (data / "1good.csv").write_text("id,n\ng1,1\n")
    (data / "2truncated.json").write_text('[{"id": "t1", "n": 1}, {"id": ')
    (data / "3binary.csv").write_bytes(b"\xff\xfe\x00\x81garbage\x00\n\x93")
    (data / "4nocol.csv").write_text("x,y\n1,2\n")
    (data / "5empty.csv").write_text("")
    (data / "6.parquet").write_text("not parquet")
    result = run(env, file_spec(data / "*"))
    assert result.status == "partial"
    status = {Path(b.origin).name: b.status for b in result.batches}
    assert status == {
        "1good.csv": "committed",
        "2truncated.json": "failed",
        "3binary.csv": "failed",
        "4nocol.csv": "failed",
        "5empty.csv": "failed",
        "6.parquet": "failed",
    }
    errors = {Path(b.origin).name: b.error for b in result.failed}
    assert "not valid JSON" in errors["2truncated.json"]
    assert "required columns 'id', 'n' missing" in errors["4nocol.csv"]
    assert "empty file" in errors["5empty.csv"]
    assert store.read("d")["id"].to_list() == ["g1"]
    with meta.begin() as conn:
        row = conn.execute(select(SCHEMA.tables["ingestion_runs"])).mappings().one()
    assert row["status"] == "partial" and row["rows_committed"] == 1 and "2truncated.json" in row["error"]


def test_ragged_lines_and_invalid_utf8_go_to_quarantine_with_lines(env):
    tmp, store, _ = env
    path = tmp / "x.csv"
    path.write_bytes(b'id,n\nr1,1\nr2\nr3,3,extra\nr4,\xff4\n"r5\nstill r5",5\nr6,6\nr7,"7\n')
    result = run(env, file_spec(path))
    assert result.ok
    assert sorted(store.read("d")["id"].to_list()) == ["r1", "r5\nstill r5", "r6"]
    q = store.read("d__quarantine").sort("position")
    assert q["position"].to_list() == [3, 4, 5, 9]
    reasons = q["reason"].to_list()
    assert reasons[0] == "expected 2 fields, found 1" and reasons[1] == "expected 2 fields, found 3"
    assert reasons[2].startswith("invalid utf-8") and reasons[3] == "unterminated quote"
    assert q["raw"].to_list()[1] == "r3,3,extra"


@pytest.mark.parametrize("empties", [3, 1500])  # few lines ending in an empty field, and many
def test_short_line_without_quotes_is_caught_among_empty_last_fields(env, empties):
    tmp, store, _ = env
    path = tmp / "x.csv"
    lines = [f"e{i},{i}," for i in range(empties)]  # every field there, the last one empty
    lines[1:1] = ["s1,1", "", "f1,1,x"]  # a short line (the parser pads it), a blank line, a full one
    path.write_text("id,n,note\n" + "\n".join(lines) + "\n")
    spec = file_spec(path, columns={"id": {"required": True}, "n": {"type": "int"}, "note": {}})
    result = run(env, spec)
    assert result.ok and result.rows_committed == empties + 1
    q = store.read("d__quarantine")
    assert q["position"].to_list() == [3] and q["reason"].to_list() == ["expected 3 fields, found 2"]
    assert q["raw"].to_list() == ["s1,1"]
    assert result.batches[0].report.empty_rows_dropped == 1


def test_fingerprint_is_the_same_whether_the_file_was_read_first_or_not(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"id,n\n" + b"".join(b"k%d,%d\n" % (i, i) for i in range(1000)))
    assert file_fingerprint(path, "s") == file_fingerprint(path, "s", path.read_bytes())
    assert file_fingerprint(path, "s") != file_fingerprint(path, "t")


def test_rerun_skips_force_reloads_and_keys_hold_across_runs(env):
    tmp, store, meta = env
    path = tmp / "x.csv"
    path.write_text("id,n\nk1,1\nk2,2\n")
    assert run(env, file_spec(path)).rows_committed == 2
    again = run(env, file_spec(path))
    assert [b.status for b in again.batches] == ["skipped"] and store.read("d").height == 2
    forced = run(env, file_spec(path), force=True)
    assert forced.rows_committed == 0 and forced.rows_quarantined == 2  # keys already in the dataset
    assert set(store.read("d__quarantine")["reason"]) == {"id: already in dataset"}
    with meta.begin() as conn:
        files = conn.execute(select(SCHEMA.tables["ingested_files"])).mappings().all()
    assert len(files) == 1 and files[0]["path"] == str(path)


def test_chunks_commit_once_and_a_crash_mid_file_commits_nothing(env):
    tmp, store, meta = env
    frame, planted = churn_with_defects(3000, seed=2)
    path = tmp / "big.csv"
    frame.write_csv(path)
    spec = file_spec(
        path, chunk_rows=200, columns={"customerID": {"unique": True}, "tenure": {"type": "int", "min": 0}}
    )

    def boom(origin: str, rows: int) -> None:
        if rows > 1000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(env, spec, progress=boom)
    assert not store.exists("d")
    with meta.begin() as conn:
        runs = conn.execute(select(SCHEMA.tables["ingestion_runs"])).mappings().all()
    assert runs[0]["status"] == "interrupted" and "KeyboardInterrupt" in runs[0]["error"]
    result = run(env, spec)
    assert result.ok and len(result.batches) == 1
    assert result.batches[0].report is not None and result.batches[0].report.chunks >= 3
    assert store.version("d") == 0  # one commit for the whole file
    assert store.read("d").height == 3000 - len(set(planted.negative_tenure) | set(planted.duplicate_id))
    assert result.rows_quarantined == len(set(planted.negative_tenure) | set(planted.duplicate_id))
    # the statistics of the chunks (computed beside the commit) merge into those of the whole file
    committed = store.read("d")
    stats = result.batches[0].report.columns
    assert (
        stats["tenure"].min == committed["tenure"].min() and stats["tenure"].max == committed["tenure"].max()
    )
    assert stats["tenure"].mean == pytest.approx(committed["tenure"].mean())
    assert stats["TotalCharges"].nulls == committed["TotalCharges"].null_count()
    assert 0 < stats["customerID"].distinct <= committed["customerID"].n_unique()
    stored = latest_reports(meta, "d")[0]["columns"]
    assert stored["tenure"]["max"] == committed["tenure"].max()


def test_commit_recorded_in_dataset_counts_as_loaded_after_a_crash(env):
    tmp, _store, meta = env
    path = tmp / "x.csv"
    path.write_text("id,n\nk1,1\n")
    run(env, file_spec(path))
    with meta.begin() as conn:  # as if the run died right after the Delta commit
        conn.execute(SCHEMA.tables["ingested_files"].delete())
    assert [b.status for b in run(env, file_spec(path)).batches] == ["skipped"]


def test_more_quarantined_than_max_quarantine_ratio_fails_checks_and_commits_nothing_of_it(env):
    tmp, store, meta = env
    (tmp / "a.csv").write_text("id,n\na,1\nb,-1\nc,-2\n")
    (tmp / "b.csv").write_text("id,n\nd,1\ne,2\nf,-3\n")
    result = run(env, file_spec(tmp / "*.csv", max_quarantine_ratio=0.5))
    assert [b.status for b in result.batches] == ["failed_checks", "committed"]
    assert result.status == "failed_checks" and not result.ok
    error = result.batches[0].error or ""
    assert "source 'src': 2 of 3 rows quarantined (66.7%), more than max_quarantine_ratio 50.0%" in error
    assert "top rules: n: min 0 (2)" in error and "nothing of this batch was committed" in error
    assert sorted(store.read("d")["id"].to_list()) == ["d", "e"]
    assert store.read("d__quarantine")["id"].to_list() == ["f"]
    with meta.begin() as conn:
        row = conn.execute(select(SCHEMA.tables["ingestion_runs"])).mappings().one()
    assert row["status"] == "failed_checks" and "66.7%" in row["error"]


def test_the_default_max_quarantine_ratio_is_five_percent_and_on_excess_commit_commits(env):
    tmp, store, _ = env
    lines = [f"k{i},{-1 if i < 6 else i}" for i in range(100)]  # 6 % negative
    (tmp / "a.csv").write_text("id,n\n" + "\n".join(lines) + "\n")
    doc = {"kind": "file", "path": str(tmp / "a.csv"), "dataset": "d", "columns": RULES}
    spec = FileSource.model_validate(doc)
    assert spec.max_quarantine_ratio == 0.05
    first = run(env, spec)
    assert first.status == "failed_checks" and not store.exists("d")
    committed = run(env, spec.model_copy(update={"on_excess": "commit"}))
    assert committed.status == "failed_checks" and committed.rows_committed == 94
    assert "committed anyway (on_excess: commit)" in (committed.batches[0].excess or "")
    assert store.read("d").height == 94 and store.read("d__quarantine").height == 6


def test_replay_after_rules_change(env):
    tmp, store, meta = env
    path = tmp / "x.csv"
    path.write_text("id,n\na,1\nb,-1\nc,x\nd\n")
    run(env, file_spec(path))
    assert store.read("d__quarantine").height == 3
    relaxed = file_spec(path, columns={**RULES, "n": {"type": "int", "required": True, "min": -5}})
    result, unparsed = replay_quarantine(relaxed, store=store, meta=meta, source_name="src")
    assert result is not None and result.rows_committed == 1 and unparsed == 1
    assert sorted(store.read("d")["id"].to_list()) == ["a", "b"]
    q = store.read("d__quarantine").sort("position")
    assert q["reason"].to_list() == ["n: type int", "expected 2 fields, found 1"]
    assert q["position"].to_list() == [4, 5]


def test_reports_stored_and_html(env):
    tmp, _, meta = env
    path = tmp / "x.csv"
    path.write_text("id,n\na,1\nb,-1\n")
    run(env, file_spec(path))
    reports = latest_reports(meta, "d")
    assert reports[0]["failures"] == {"n: min 0": 1} and reports[0]["columns"]["n"]["max"] == 1
    page = report_html(reports, title="d")
    assert "n: min 0" in page and "<table>" in page


def test_open_source_dispatch_and_custom_kind(env):
    _, store, meta = env
    with pytest.raises(ConfigError, match="no reader for kind"):
        open_source("x", type("S", (), {"kind": "carrier-pigeon"})())

    class Listy:
        name = "listy"

        def __init__(self, _name, _spec) -> None:
            self.acked: list[str] = []

        def read(self):
            yield Batch(pl.DataFrame({"id": ["z1"], "n": ["1"]}), origin="page-1", cursor="10")
            yield Batch(
                pl.DataFrame(), origin="page-2", failures=[{"position": 1, "raw": "??", "reason": "bad"}]
            )

        def ack(self, batch: Batch) -> None:
            self.acked.append(batch.origin)

    register_source("listy", Listy)
    try:
        source = open_source("x", type("S", (), {"kind": "listy"})())
        assert isinstance(source, Source)
        spec = file_spec("unused")
        result = ingest(source, spec, store=store, meta=meta, source_name="listy")
        assert result.ok and result.cursor_after == "10" and source.acked == ["page-1", "page-2"]  # type: ignore[attr-defined]
        assert store.read("d__quarantine")["raw"].to_list() == ["??"]
    finally:
        SOURCE_FACTORIES.pop("listy")


def test_a_crash_between_the_quarantine_and_the_data_commit_leaves_nothing_of_the_batch(env, monkeypatch):
    tmp, store, _ = env
    path = tmp / "x.csv"
    path.write_text("id,n\na,1\nb,-1\nc,3\n")
    real, real_staged = Store.append, Store.commit_staged

    def dies_at_the_data_commit(self, dataset, batch, meta, **kw):
        if dataset == "d":
            raise KeyboardInterrupt
        return real(self, dataset, batch, meta, **kw)

    def staged_dies_at_the_data_commit(self, dataset, files, meta, *args, **kw):
        if dataset == "d":
            raise KeyboardInterrupt
        return real_staged(self, dataset, files, meta, *args, **kw)

    # the clean rows are committed as staged files (a local store) or appended: either dies
    monkeypatch.setattr(Store, "append", dies_at_the_data_commit)
    monkeypatch.setattr(Store, "commit_staged", staged_dies_at_the_data_commit)
    with pytest.raises(KeyboardInterrupt):
        run(env, file_spec(path))
    assert store.read("d__quarantine")["id"].to_list() == ["b"]  # rows of a batch that never was
    assert not list(Path(store.root, "d").glob("*.parquet"))  # the staged file is removed
    monkeypatch.setattr(Store, "append", real)
    monkeypatch.setattr(Store, "commit_staged", real_staged)
    again = run(env, file_spec(path))
    assert again.ok and again.rows_committed == 2
    assert sorted(store.read("d")["id"].to_list()) == ["a", "c"]
    assert store.read("d__quarantine")["id"].to_list() == ["b"]  # once, not twice


def test_a_crash_after_the_commit_point_is_recovered_from_the_log(env, monkeypatch):
    import headrace.ingest.runner as runner

    tmp, store, meta = env
    path = tmp / "x.csv"
    path.write_text("id,n\na,1\nb,-1\n")

    def dies(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_record", dies)  # the run dies before the metadata database hears
    with pytest.raises(KeyboardInterrupt):
        run(env, file_spec(path))
    monkeypatch.undo()
    again = run(env, file_spec(path))
    assert [b.status for b in again.batches] == ["skipped"]
    assert store.read("d")["id"].to_list() == ["a"] and store.read("d__quarantine")["id"].to_list() == ["b"]

    class Paged:
        name = "paged"

        def __init__(self) -> None:
            self.resumed: list[str | None] = []

        def resume(self, cursor: str | None) -> None:
            self.resumed.append(cursor)

        def read(self):
            yield Batch(pl.DataFrame({"id": ["p1"], "n": ["5"]}), "page-1", cursor="10")

    monkeypatch.setattr(runner, "_record", dies)
    with pytest.raises(KeyboardInterrupt):
        ingest(Paged(), file_spec("unused"), store=store, meta=meta, source_name="paged")
    monkeypatch.undo()
    source = Paged()
    ingest(source, file_spec("unused"), store=store, meta=meta, source_name="paged")
    assert source.resumed == ["10"]  # the cursor of the committed batch, read off the dataset's log


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_file_that_grew_is_read_from_where_it_ended(env, fmt):
    tmp, store, _ = env

    def lines(ids):
        if fmt == "csv":
            return "".join(f"k{i},{-1 if i == 7 else i}\n" for i in ids)
        return "".join(json.dumps({"id": f"k{i}", "n": -1 if i == 7 else i}) + "\n" for i in ids)

    path = tmp / f"log.{fmt}"
    head = "id,n\n" if fmt == "csv" else ""
    path.write_text(head + lines(range(5)))
    assert run(env, file_spec(path)).rows_committed == 5
    with path.open("a") as f:
        f.write(lines(range(5, 9)))
    grown = run(env, file_spec(path))
    assert grown.ok and (grown.rows_read, grown.rows_committed, grown.rows_quarantined) == (4, 3, 1)
    assert sorted(store.read("d")["id"].to_list()) == sorted(f"k{i}" for i in range(9) if i != 7)
    q = store.read("d__quarantine")
    offset = 1 if fmt == "csv" else 0  # the header line
    assert q.select("id", "position").rows() == [("k7", 8 + offset)]  # line numbers of the whole file
    assert [b.status for b in run(env, file_spec(path)).batches] == ["skipped"]


def test_a_file_changed_in_the_middle_is_refused_when_appending(env):
    tmp, store, _ = env
    path = tmp / "x.csv"
    path.write_text("id,n\na,1\nb,2\n")
    run(env, file_spec(path))
    path.write_text("id,n\na,1\nB,2\nc,3\n")
    changed = run(env, file_spec(path))
    assert [b.status for b in changed.batches] == ["failed"]
    assert "changed since it was loaded, not only appended to" in (changed.batches[0].error or "")
    assert "--force" in (changed.batches[0].error or "")
    assert store.read("d").height == 2
    forced = run(env, file_spec(path), force=True)  # asked for: read again whole
    assert (forced.rows_committed, forced.rows_quarantined) == (2, 1)  # "a" is in the dataset already
