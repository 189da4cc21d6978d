"""Chunked file ingestion: blocks of about ``chunk_rows`` rows, read ahead in a thread, each clean chunk
written as a staged Parquet file and all of them committed in one commit; the same rows, reasons and
counts as reading the file whole, and the fallbacks (columns that change between chunks, a table
whose schema differs) still commit everything exactly once."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from headrace.config.sources import FileSource
from headrace.datagen import churn_with_defects
from headrace.ingest.files import FileReader
from headrace.ingest.runner import ingest, open_source
from headrace.metadata import Metadata
from headrace.store import Store

RULES = {
    "customerID": {"type": "string", "required": True, "unique": True},
    "tenure": {"type": "int", "required": True, "min": 0, "max": 120},
    "MonthlyCharges": {"type": "float", "required": True, "min": 0},
    "Churn": {"type": "string", "required": True, "allowed": ["Yes", "No"]},
}


def spec_for(path: Path, **kw) -> FileSource:
    doc = {
        "kind": "file",
        "path": str(path),
        "dataset": "d",
        "columns": RULES,
        "cleanse": ["trim_strings", "null_tokens"],
        "max_quarantine_ratio": 1.0,
    }
    return FileSource.model_validate({**doc, **kw})


def ingest_into(folder: Path, spec: FileSource):
    store = Store(folder / "lake")
    meta = Metadata(f"sqlite:///{folder / 'meta.db'}")
    try:
        return ingest(open_source("s", spec), spec, store=store, meta=meta, source_name="s"), store
    finally:
        meta.dispose()


def data_files(store: Store, dataset: str) -> set[str]:
    return {Path(p).name for p in Path(store.root, dataset).glob("*.parquet")}


def test_a_short_rest_of_a_file_joins_the_chunk_before_it(tmp_path):
    # blocks of about chunk_rows * header length * 1.2 bytes; a rest under a quarter of a block is
    # read into the last block instead of becoming a chunk of its own
    lines = [f"{i:06d},{i % 7}" for i in range(30_000)]  # 9 bytes a line (the header counts as 16)
    path = tmp_path / "x.csv"
    path.write_text("aaaa,bbb\n" + "\n".join(lines) + "\n")
    spec = FileSource.model_validate({"kind": "file", "path": str(path), "dataset": "d", "chunk_rows": 6300})
    batch = next(iter(FileReader("s", spec).read()))
    assert batch.chunks is not None
    heights = [batch.frame.height, *(c.height for c in batch.chunks)]
    assert sum(heights) == 30_000
    # blocks of 6300 * 16 * 1.2 = 120,960 bytes (13,440 lines): the rest, 16,560 lines, is under 1.25
    # blocks, so it is one chunk, not one of 13,440 lines and one of 3,120
    assert heights == [13_440, 16_560]


def test_chunked_ingest_matches_reading_the_file_whole(tmp_path):
    frame, planted = churn_with_defects(6000, seed=3, rate=0.05)
    path = tmp_path / "churn.csv"
    frame.drop("TechSupport").write_csv(path)
    whole, whole_store = ingest_into(tmp_path / "whole", spec_for(path))
    parts, part_store = ingest_into(tmp_path / "parts", spec_for(path, chunk_rows=500))
    assert whole.ok and parts.ok
    assert whole.batches[0].report is not None and parts.batches[0].report is not None
    assert whole.batches[0].report.chunks == 1 and parts.batches[0].report.chunks >= 5
    for result in (whole, parts):
        assert result.rows_read == 6000
    assert parts.rows_committed == whole.rows_committed and parts.rows_quarantined == whole.rows_quarantined
    # one commit for the whole file, made of one staged file per chunk
    assert part_store.version("d") == 0 and whole_store.version("d") == 0
    assert len(data_files(part_store, "d")) == parts.batches[0].report.chunks
    key = "customerID"
    assert part_store.read("d").sort(key).equals(whole_store.read("d").sort(key))
    # the same rows quarantined; a key repeated from an earlier chunk is "already in dataset" there
    cols = ["customerID", "position"]
    parted, whole_q = part_store.read("d__quarantine"), whole_store.read("d__quarantine")
    assert parted.select(cols).sort("position").equals(whole_q.select(cols).sort("position"))
    renamed = pl.col("reason").str.replace("already in dataset", "duplicate in batch", literal=True)
    assert parted.sort("position").select(renamed).equals(whole_q.sort("position").select("reason"))
    assert parts.rows_quarantined >= len(set(planted.duplicate_id) | set(planted.negative_tenure)) > 0


def test_a_failed_batch_leaves_no_staged_file(tmp_path):
    frame, _ = churn_with_defects(4000, seed=5, rate=0.05)
    path = tmp_path / "churn.csv"
    frame.drop("TechSupport").write_csv(path)
    result, store = ingest_into(tmp_path, spec_for(path, chunk_rows=400, max_quarantine_ratio=0.0))
    assert result.status == "failed_checks"
    assert not store.exists("d")
    assert not data_files(store, "d")  # the chunks written before the ratio was known are removed


def test_a_column_appearing_in_a_later_chunk_falls_back_and_keeps_every_row(tmp_path):
    lines = [f'{{"id": "k{i}", "n": {i}}}' for i in range(3000)]
    lines += [f'{{"id": "k{i}", "n": {i}, "extra": "e{i}"}}' for i in range(3000, 6000)]
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(lines) + "\n")
    spec = FileSource.model_validate(
        {
            "kind": "file",
            "path": str(path),
            "dataset": "d",
            "columns": {"id": {"type": "string", "unique": True}, "n": {"type": "int"}},
            "chunk_rows": 300,  # a block of 64 KiB: the first chunks have no "extra"
        }
    )
    result, store = ingest_into(tmp_path, spec)
    assert result.ok and result.rows_committed == 6000
    assert store.version("d") == 0
    data = store.read("d").sort("n")
    assert data["n"].to_list() == list(range(6000))
    assert data["extra"].null_count() == 3000 and data["extra"][5999] == "e5999"
    assert len(data_files(store, "d")) == 1  # written by the store's writer, the staged files removed


def test_staged_files_into_a_table_of_another_schema_go_through_the_writer(tmp_path):
    first = tmp_path / "a.csv"
    first.write_text("customerID,tenure,MonthlyCharges,Churn\nA1,1,2.5,Yes\n")
    result, store = ingest_into(tmp_path, spec_for(first))
    assert result.ok
    frame, _ = churn_with_defects(3000, seed=9, rate=0.0)
    second = tmp_path / "b.csv"
    frame.select("customerID", "tenure", "MonthlyCharges", "Churn", "gender").write_csv(second)
    result, store = ingest_into(tmp_path, spec_for(second, chunk_rows=300))
    assert result.ok and result.batches[0].report is not None and result.batches[0].report.chunks > 1
    assert store.version("d") == 1
    data = store.read("d")
    assert data.height == 1 + result.rows_committed
    assert data.filter(pl.col("customerID") == "A1")["gender"].to_list() == [None]


def test_replace_in_chunks_is_one_commit_of_the_whole_file(tmp_path):
    frame, _ = churn_with_defects(3000, seed=4, rate=0.0)
    path = tmp_path / "c.csv"
    frame.select("customerID", "tenure", "MonthlyCharges", "Churn").write_csv(path)
    spec = spec_for(path, chunk_rows=300, write="replace")
    for _ in range(2):
        result, store = ingest_into(tmp_path, spec)
        assert result.ok
    assert store.read("d").height == result.rows_committed
    assert store.version("d") == 1
