"""Malformed inputs never crash a run and never lose a good row (hypothesis)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.config.sources import FileSource
from headrace.ingest.runner import ingest, open_source
from headrace.metadata import Metadata
from headrace.store import Store

COLUMNS = {"id": {"type": "string", "required": True}, "n": {"type": "int", "required": True}}
GOOD_IDS = st.lists(st.integers(0, 10**6), min_size=1, max_size=12, unique=True)
JUNK = st.one_of(
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
    st.sampled_from(
        [b"g9;1", b"x,1,2,3", b'"unterminated,1', b"\xff\xfe,1", b"onlyonefield", b"7,seven", b",", b"   "]
    ),
)


def _run(tmp: Path, name: str, body: bytes, fmt: str, chunk_rows: int = 500_000):
    """One ingestion of ``body``; with ``chunk_rows=1`` a file over 512 bytes is streamed, not read whole."""
    path = tmp / name
    path.write_bytes(body)
    spec = FileSource.model_validate(
        {
            "kind": "file",
            "path": str(path),
            "dataset": "d",
            "format": fmt,
            "columns": COLUMNS,
            "chunk_rows": chunk_rows,
            "max_quarantine_ratio": 1.0,  # junk is the point here: every share of it is quarantined
        }
    )
    store = Store(tmp / "lake")
    meta = Metadata(f"sqlite:///{tmp / 'm.db'}")
    try:
        result = ingest(open_source("s", spec), spec, store=store, meta=meta, source_name="s", force=True)
    finally:
        meta.dispose()
    clean = set(store.read("d")["id"].to_list()) if store.exists("d") else set()
    return result, clean


def _quarantined_text(tmp: Path) -> list[str]:
    """Each quarantined record as text: its raw line(s), or its values."""
    store = Store(tmp / "lake")
    if not store.exists("d__quarantine"):
        return []
    q = store.read("d__quarantine")
    return [
        row["raw"] if row.get("raw") is not None else ",".join(str(row.get(c)) for c in ("id", "n"))
        for row in q.iter_rows(named=True)
    ]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=GOOD_IDS, junk=st.lists(st.tuples(st.integers(0, 20), JUNK), max_size=6))
def test_csv_with_junk_lines_keeps_every_good_row(tmp_path_factory, ids, junk):
    tmp = tmp_path_factory.mktemp("csv")
    lines = [f"g{i},{i}".encode() for i in ids]
    for at, bad in junk:
        lines.insert(min(at, len(lines)), bad)
    result, clean = _run(tmp, "x.csv", b"id,n\n" + b"\n".join(lines) + b"\n", "csv")
    assert result.status == "succeeded", result.error
    good = {f"g{i}" for i in ids}
    # a quote opened on one line and closed on a later one makes those lines one record (a quoted
    # field may hold newlines): rows between two such lines may be quarantined with it, never lost
    odd = [k for k, line in enumerate(lines) if line.count(b'"') % 2 == 1]
    maybe_joined = {
        lines[k].split(b",")[0].decode("utf-8", "replace")
        for k in range(len(lines))
        if any(a < k for a in odd) and any(b > k for b in odd)
    }
    assert good - maybe_joined <= clean
    held = _quarantined_text(tmp)
    for g in good - clean:
        assert any(f"{g},{g[1:]}" in text for text in held), f"{g} neither committed nor quarantined"
    report = result.batches[0].report
    assert report is not None
    # every record read is accounted for: committed, quarantined, or a blank line dropped and counted
    assert result.rows_read == result.rows_committed + result.rows_quarantined + report.empty_rows_dropped
    from_junk = {bad.split(b",")[0].decode("utf-8", "replace").strip() for _, bad in junk}
    assert clean <= good | from_junk


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=1500), chunk_rows=st.sampled_from([500_000, 1]))
def test_random_bytes_never_crash(tmp_path_factory, data, chunk_rows):
    tmp = tmp_path_factory.mktemp("bytes")
    for fmt in ("csv", "json", "jsonl", "parquet"):
        result, _clean = _run(tmp, f"x.{fmt}", data, fmt, chunk_rows)
        assert result.status in ("succeeded", "failed", "partial")
        assert all(b.status in ("committed", "failed") for b in result.batches)
        assert all(b.error for b in result.batches if b.status == "failed")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ids=GOOD_IDS,
    cut=st.integers(1, 400),
    bad=st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=4),
    streamed=st.booleans(),
)
def test_json_truncated_or_mixed_types(tmp_path_factory, ids, cut, bad, streamed):
    tmp = tmp_path_factory.mktemp("json")
    records = [{"id": f"g{i}", "n": i} for i in ids] + [{"id": f"b{k}", "n": v} for k, v in enumerate(bad)]
    # streamed: indented past 512 bytes and read one record per chunk by ijson
    body = json.dumps(records, indent=120 if streamed else None).encode()
    chunk_rows = 1 if streamed else 500_000
    truncated = body[: min(cut * len(body) // 401 if streamed else cut, len(body) - 1)]
    result, clean = _run(tmp, "t.json", truncated, "json", chunk_rows)
    assert result.status == "failed" and clean == set()  # the whole file is refused, loudly
    assert "not valid JSON" in (result.batches[0].error or "")
    result, clean = _run(tmp, "m.json", body, "json", chunk_rows)
    assert result.ok and {f"g{i}" for i in ids} <= clean
    q = Store(tmp / "lake").read("d__quarantine") if result.rows_quarantined else None
    held = set() if q is None else set(q["id"].to_list())
    assert clean | held == {r["id"] for r in records} and not clean & held  # every record, exactly once
    lines = b"\n".join(json.dumps(r).encode() for r in records) + b"\n{broken\n"
    result, clean = _run(tmp, "m.jsonl", lines, "jsonl")
    assert result.ok and {f"g{i}" for i in ids} <= clean and result.batches[0].report.rows_unparseable == 1


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_wrong_delimiter_is_a_failed_file_not_a_crash(tmp_path, delimiter):
    body = f"id{delimiter}n\ng1{delimiter}1\n".encode()
    result, clean = _run(tmp_path, "x.csv", body, "csv")
    assert result.status == "failed" and clean == set()
    assert "required columns 'id', 'n' missing" in (result.batches[0].error or "")
