"""A PostgreSQL connection killed in the middle of a load (pg_terminate_backend): the run retries and
resumes after the last committed batch, or fails cleanly; the next run ends with every row once."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from headrace.config.sources_db import SqlSource
from headrace.ingest.runner import ingest
from headrace.ingest.sql import SqlReader
from headrace.metadata import Metadata
from headrace.store import Store

pytestmark = pytest.mark.integration

ROWS = 120_000


@pytest.fixture
def table(postgres_url):
    name = f"hr_kill_{uuid.uuid4().hex[:10]}"
    conn = psycopg.connect(postgres_url, autocommit=True)
    conn.execute(
        f"CREATE TABLE {name} (id int PRIMARY KEY, pad text NOT NULL, updated_at timestamptz NOT NULL)"
    )
    # Wide rows, so the COPY stream is still flowing (not all buffered) when the backend is killed.
    conn.execute(
        f"""INSERT INTO {name} SELECT g, repeat(md5(g::text), 6),
            TIMESTAMPTZ '2024-01-01 00:00:00+00' + (g / 3) * INTERVAL '1 second'
            FROM generate_series(1, {ROWS}) g"""
    )
    yield conn, name
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.close()


def _kill_reader(conn: psycopg.Connection, source: str) -> int:
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (f"headrace {source}",),
    ).fetchall()
    return len(rows)


@pytest.mark.parametrize("fast_path", ["copy", "off"])
def test_killed_connection_mid_load_is_retried_and_every_row_lands_once(
    table, postgres_url, tmp_path, fast_path
):
    conn, name = table
    source = f"events-{uuid.uuid4().hex[:8]}"  # the reader's application_name, unique to this test
    store = Store(tmp_path / "lake")
    meta = Metadata(f"sqlite:///{tmp_path / 'meta.db'}")
    spec = SqlSource(
        kind="sql",
        url=postgres_url,
        table=name,
        dataset="events",
        cursor="updated_at",
        cursor_key=["id"],
        chunk_size=10_000,
        fast_path=fast_path,
        backoff=0.05,
    )
    killed: list[int] = []

    def kill_once(_origin: str, _rows: int) -> None:
        if not killed:  # while the first batch is being committed, the reader's backend dies
            killed.append(_kill_reader(conn, source))

    reader = SqlReader(source, spec)
    first = ingest(reader, spec, store=store, meta=meta, source_name=source, progress=kill_once)
    assert killed == [1]
    # Retried within the run, resuming after the last committed batch...
    assert reader.retried >= 1
    assert first.status == "succeeded", first.error
    data = store.read("events")
    assert data.height == ROWS and data["id"].n_unique() == ROWS
    # ... and a second run finds nothing new.
    second = ingest(SqlReader(source, spec), spec, store=store, meta=meta, source_name=source)
    assert second.rows_read == 0
    assert store.read("events").height == ROWS
    meta.dispose()


def test_killed_connection_with_no_retries_fails_cleanly_then_the_next_run_completes(
    table, postgres_url, tmp_path
):
    conn, name = table
    source = f"events-{uuid.uuid4().hex[:8]}"  # the reader's application_name, unique to this test
    store = Store(tmp_path / "lake")
    meta = Metadata(f"sqlite:///{tmp_path / 'meta.db'}")
    spec = SqlSource(
        kind="sql",
        url=postgres_url,
        table=name,
        dataset="events",
        cursor="updated_at",
        chunk_size=10_000,
        retries=0,
        fast_path="off",
    )
    killed: list[int] = []

    def kill_once(_origin: str, _rows: int) -> None:
        if not killed:
            killed.append(_kill_reader(conn, source))

    first = ingest(
        SqlReader(source, spec), spec, store=store, meta=meta, source_name=source, progress=kill_once
    )
    assert killed == [1]
    assert first.status == "partial"
    assert "failed mid-read" in (first.error or "")
    committed = first.rows_committed
    assert 0 < committed < ROWS
    assert first.cursor_after is not None and first.cursor_after != first.cursor_before

    second = ingest(SqlReader(source, spec), spec, store=store, meta=meta, source_name=source)
    assert second.status == "succeeded", second.error
    assert second.cursor_before == first.cursor_after
    data = store.read("events")
    assert data.height == ROWS and data["id"].n_unique() == ROWS
    meta.dispose()
