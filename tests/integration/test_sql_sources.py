"""SQL sources against the real PostgreSQL and MariaDB: full and incremental loads through the runner,
exact counts and values, types round-trip, ties at batch boundaries, both PostgreSQL read paths."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from decimal import Decimal

import polars as pl
import psycopg
import pymysql
import pytest
from polars.testing import assert_frame_equal
from sqlalchemy import select

from headrace.config.sources_db import SqlSource
from headrace.errors import DataError, SourceError
from headrace.ingest.runner import ingest, open_source
from headrace.ingest.sql import SqlReader, decode_mark
from headrace.metadata import SCHEMA, Metadata
from headrace.store import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def pg(postgres_url):
    name = f"hr_sql_{uuid.uuid4().hex[:10]}"
    conn = psycopg.connect(postgres_url, autocommit=True)
    yield conn, name
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.close()


@pytest.fixture
def maria(mariadb_url):
    name = f"hr_sql_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", autocommit=True)
    yield conn, name
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
    conn.close()


@pytest.fixture
def home(tmp_path):
    store = Store(tmp_path / "lake")
    meta = Metadata(f"sqlite:///{tmp_path / 'meta.db'}")
    yield store, meta
    meta.dispose()


def _seed_pg(conn, name: str, rows: int) -> None:
    conn.execute(
        f"""CREATE TABLE {name} (
            id int PRIMARY KEY, amount numeric(12,2), ratio numeric, note text, doc jsonb,
            flag boolean, day date, score float8, seen_at timestamptz, updated_at timestamptz NOT NULL)"""
    )
    conn.execute(
        f"""INSERT INTO {name}
            SELECT g, g * 1.25, g / 8.0,
                   CASE WHEN g %% 5 = 0 THEN NULL WHEN g %% 5 = 1 THEN ''
                        ELSE 'note, "' || g || E'"\\nline' END,
                   jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g)),
                   g %% 2 = 0, DATE '2024-01-01' + g, g * 0.1,
                   CASE WHEN g %% 7 = 0 THEN NULL
                        ELSE TIMESTAMPTZ '2024-03-01 10:00:00+02' + g * INTERVAL '1 minute' END,
                   TIMESTAMPTZ '2024-01-01 00:00:00+00' + (g / 10) * INTERVAL '1 hour'
            FROM generate_series(1, %s) g""",
        (rows,),
    )


def _pg_truth(conn, name: str) -> pl.DataFrame:
    cur = conn.execute(
        f"SELECT id, amount, note, doc::text, flag, day, seen_at, updated_at FROM {name} ORDER BY id"
    )
    rows = cur.fetchall()
    return pl.DataFrame(
        rows,
        schema={
            "id": pl.Int32,
            "amount": pl.Decimal(12, 2),
            "note": pl.String,
            "doc": pl.String,
            "flag": pl.Boolean,
            "day": pl.Date,
            "seen_at": pl.Datetime("us", "UTC"),
            "updated_at": pl.Datetime("us", "UTC"),
        },
        orient="row",
    )


def _latest(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    return frame.sort("updated_at").unique("id", keep="last").sort("id").select(columns)


def test_postgres_full_then_incremental_after_inserts_and_updates(pg, postgres_url, home):
    conn, name = pg
    store, meta = home
    _seed_pg(conn, name, 1000)
    spec = SqlSource(
        kind="sql",
        url=postgres_url,
        table=name,
        dataset="orders",
        cursor="updated_at",
        cursor_key=["id"],
        chunk_size=300,
    )
    first = ingest(open_source("pg_orders", spec), spec, store=store, meta=meta, source_name="pg_orders")
    assert first.status == "succeeded", first.error
    assert (first.rows_read, first.rows_committed, first.rows_quarantined) == (1000, 1000, 0)
    assert len(first.batches) == 4  # 300, 300, 300, 100
    assert first.cursor_before is None
    mark = decode_mark(first.cursor_after)
    assert (
        mark is not None and mark.value == dt.datetime(2024, 1, 5, 4, tzinfo=dt.UTC) and mark.key == (1000,)
    )

    columns = ["id", "amount", "note", "doc", "flag", "day", "seen_at", "updated_at"]
    data = store.read("orders")
    assert data.height == 1000
    assert_frame_equal(_latest(data, columns), _pg_truth(conn, name))
    assert data.schema["ratio"] == pl.Decimal(38, 9)
    assert data.filter(pl.col("id") == 3)["ratio"][0] == Decimal("0.375")
    assert data.filter(pl.col("id") == 5)["note"][0] is None
    assert data.filter(pl.col("id") == 6)["note"][0] == ""
    assert json.loads(data.filter(pl.col("id") == 2)["doc"][0]) == {"g": 2, "tags": ["a", 2]}

    # New rows, and updates that move the cursor forward; one of them to exactly the old mark.
    conn.execute(
        f"""INSERT INTO {name} (id, amount, note, updated_at)
            SELECT g, g, 'new', TIMESTAMPTZ '2024-02-01 00:00:00+00' FROM generate_series(1001, 1050) g"""
    )
    conn.execute(
        f"UPDATE {name} SET amount = -1, note = 'updated', updated_at = TIMESTAMPTZ '2024-02-02 00:00:00+00' "
        "WHERE id IN (1, 2, 500)"
    )
    second = ingest(open_source("pg_orders", spec), spec, store=store, meta=meta, source_name="pg_orders")
    assert second.status == "succeeded", second.error
    assert second.cursor_before == first.cursor_after
    assert second.rows_committed == 53
    data = store.read("orders")
    assert data.height == 1053
    assert_frame_equal(_latest(data, columns), _pg_truth(conn, name))
    assert data.filter(pl.col("id") == 500).sort("updated_at")["note"].to_list()[-1] == "updated"

    third = ingest(open_source("pg_orders", spec), spec, store=store, meta=meta, source_name="pg_orders")
    assert third.rows_read == 0 and store.read("orders").height == 1053
    runs = SCHEMA.tables["ingestion_runs"]
    with meta.begin() as c:
        recorded = c.execute(select(runs).where(runs.c.source == "pg_orders").order_by(runs.c.id)).all()
    assert [r.status for r in recorded] == ["succeeded"] * 3
    assert recorded[1].cursor_before == recorded[0].cursor_after
    assert recorded[1].rows_committed == 53 and recorded[1].cursor_after == second.cursor_after


@pytest.mark.parametrize("fast_path", ["copy", "off"])
def test_postgres_ties_at_batch_boundaries_without_a_key(pg, postgres_url, fast_path):
    conn, name = pg
    _seed_pg(conn, name, 995)  # 10 rows share each updated_at value
    spec = SqlSource(
        kind="sql",
        url=postgres_url,
        table=name,
        dataset="x",
        cursor="updated_at",
        chunk_size=25,
        fast_path=fast_path,
    )
    reader = SqlReader("ties", spec)
    batches = list(reader.read())
    assert reader.used_fast_path is (fast_path == "copy")
    ids = pl.concat([b.frame for b in batches])["id"]
    assert ids.len() == 995 and ids.n_unique() == 995
    # A batch never ends inside a run of equal cursor values, so each stored mark is complete.
    for before, after in itertools.pairwise(batches):
        assert before.frame["updated_at"].max() < after.frame["updated_at"].min()
    # Resuming from a mark taken in the middle reads exactly the rows past it.
    middle = batches[len(batches) // 2]
    rest = list(SqlReader("ties", spec, cursor=middle.cursor).read())
    seen = sum(b.frame.height for b in batches[: len(batches) // 2 + 1])
    assert sum(b.frame.height for b in rest) == 995 - seen


def test_postgres_copy_and_cursor_paths_agree_on_every_type(pg, postgres_url):
    conn, name = pg
    _seed_pg(conn, name, 300)
    frames = {}
    for path in ("copy", "off"):
        spec = SqlSource(kind="sql", url=postgres_url, table=name, dataset="x", fast_path=path, chunk_size=70)
        frames[path] = pl.concat([b.frame for b in SqlReader("p", spec).read()]).sort("id")
    assert_frame_equal(frames["copy"], frames["off"])
    assert frames["copy"].schema["seen_at"] == pl.Datetime("us", "UTC")
    assert frames["copy"].schema["amount"] == pl.Decimal(12, 2)


def test_postgres_fast_path_reads_every_type_it_claims_like_the_cursor_path(pg, postgres_url):
    conn, name = pg
    conn.execute(
        f"""CREATE TABLE {name} (id int8, sm int2, f4 real, v varchar(5), c char(3), j json, u uuid,
            ts timestamp, big numeric(30, 10), oid_ oid, nm name)"""
    )
    conn.execute(
        f"""INSERT INTO {name} SELECT g, g % 100, g / 7.0, 'v' || g % 10, CASE WHEN g % 4 = 0 THEN '' END,
            ('{{"k": ' || g || ', "s": "a\\"b"}}')::json,
            CASE WHEN g % 3 = 0 THEN NULL ELSE md5(g::text)::uuid END,
            TIMESTAMP '2024-02-29 23:59:59.999999' + g * INTERVAL '1 minute',
            g * 12345.6789012345, g, 'n' || g FROM generate_series(1, 400) g"""
    )
    frames = {}
    for path in ("copy", "off"):
        spec = SqlSource(kind="sql", url=postgres_url, table=name, dataset="x", fast_path=path, chunk_size=90)
        reader = SqlReader("t", spec)
        frames[path] = pl.concat([b.frame for b in reader.read()]).sort("id")
        assert reader.used_fast_path is (path == "copy")
    assert_frame_equal(frames["copy"], frames["off"])
    row = frames["copy"].row(0, named=True)
    assert row["u"] == conn.execute("SELECT md5('1')::uuid::text").fetchone()[0]
    assert json.loads(row["j"]) == {"k": 1, "s": 'a"b'}
    assert row["big"] == Decimal("12345.6789012345")
    assert frames["copy"].schema["c"] == pl.String() and frames["copy"]["c"].null_count() == 300


def test_postgres_query_source(pg, postgres_url):
    conn, name = pg
    _seed_pg(conn, name, 100)
    spec = SqlSource(
        kind="sql",
        url=postgres_url,
        dataset="x",
        cursor="updated_at",
        query=f"SELECT id, note, updated_at FROM {name} WHERE note LIKE 'note%'",
        initial_cursor="2024-01-01T05:00:00+00:00",
    )
    frame = pl.concat([b.frame for b in SqlReader("q", spec).read()])
    expected = conn.execute(
        f"SELECT count(*) FROM {name} WHERE note LIKE 'note%%' AND updated_at > '2024-01-01T05:00:00+00:00'"
    ).fetchone()[0]
    assert frame.height == expected > 0
    assert frame["note"].str.starts_with("note").all()


def test_a_hostile_cursor_value_is_bound_not_executed(pg, postgres_url):
    conn, name = pg
    _seed_pg(conn, name, 20)
    hostile = "x'; DROP TABLE " + name + "; --"
    spec = SqlSource(
        kind="sql", url=postgres_url, table=name, dataset="x", cursor="note", initial_cursor=hostile
    )
    list(SqlReader("h", spec).read())
    assert conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == 20


def _seed_maria(conn, name: str, rows: int) -> None:
    with conn.cursor() as cur:
        cur.execute(
            f"""CREATE TABLE {name} (
                id INT PRIMARY KEY, amount DECIMAL(12,2), note TEXT NULL, doc JSON NULL, flag BOOLEAN,
                day DATE, score DOUBLE, created TIMESTAMP(6) NULL, updated_at DATETIME(6) NOT NULL)"""
        )
        values = []
        for g in range(1, rows + 1):
            note = None if g % 5 == 0 else ("" if g % 5 == 1 else f'note, "{g}"\nline')
            values.append(
                (
                    g,
                    Decimal(g) * Decimal("1.25"),
                    note,
                    json.dumps({"g": g}),
                    g % 2 == 0,
                    dt.date(2024, 1, 1) + dt.timedelta(days=g),
                    g * 0.1,
                    dt.datetime(2024, 3, 1, 8, 0, 0, 123456) + dt.timedelta(minutes=g),
                    dt.datetime(2024, 1, 1) + dt.timedelta(hours=g // 10),
                )
            )
        cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", values)


def test_mariadb_full_then_incremental_types_round_trip(maria, mariadb_url, home):
    conn, name = maria
    store, meta = home
    _seed_maria(conn, name, 600)
    spec = SqlSource(
        kind="sql", url=mariadb_url, table=name, dataset="m", cursor="updated_at", chunk_size=250
    )
    first = ingest(open_source("maria", spec), spec, store=store, meta=meta, source_name="maria")
    assert first.status == "succeeded", first.error
    assert first.rows_committed == 600
    data = store.read("m")
    assert data.schema["amount"] == pl.Decimal(38, 2)
    assert data.schema["created"] == pl.Datetime("us", "UTC")  # a TIMESTAMP is an instant
    assert data.schema["updated_at"] == pl.Datetime("us")
    row = data.filter(pl.col("id") == 7).row(0, named=True)
    assert row["amount"] == Decimal("8.75") and row["note"] == 'note, "7"\nline'
    assert json.loads(row["doc"]) == {"g": 7}
    assert row["created"] == dt.datetime(2024, 3, 1, 8, 7, 0, 123456, tzinfo=dt.UTC)
    assert data.filter(pl.col("id") == 6)["note"][0] == ""
    assert data.filter(pl.col("id") == 5)["note"][0] is None
    assert data["id"].n_unique() == 600

    with conn.cursor() as cur:
        cur.execute(f"UPDATE {name} SET note = 'updated', updated_at = '2024-06-01' WHERE id IN (3, 4)")
        cur.execute(f"INSERT INTO {name} (id, amount, flag, updated_at) VALUES (601, 1.5, 1, '2024-06-02')")
    second = ingest(open_source("maria", spec), spec, store=store, meta=meta, source_name="maria")
    assert second.status == "succeeded", second.error
    assert second.rows_committed == 3
    data = store.read("m")
    assert data.height == 603
    latest = data.sort("updated_at").unique("id", keep="last")
    assert latest.height == 601
    assert latest.filter(pl.col("id").is_in([3, 4]))["note"].to_list() == ["updated", "updated"]


def test_postgres_fast_path_takes_a_password_with_spaces(pg, postgres_url):
    conn, name = pg
    conn.execute(f"CREATE TABLE {name} (id int)")
    conn.execute(f"INSERT INTO {name} VALUES (1), (2)")
    # trust auth ignores the password: what matters is that the address is built and quoted right
    url = postgres_url.replace("postgres@", "postgres:s3cret%20p'w@", 1)
    assert url != postgres_url
    reader = SqlReader("pw", SqlSource(kind="sql", url=url, table=name, dataset="x", fast_path="copy"))
    assert pl.concat([b.frame for b in reader.read()])["id"].sort().to_list() == [1, 2]
    assert reader.used_fast_path is True


@pytest.mark.parametrize("column", ["timestamptz", "timestamp", "date"])
def test_postgres_infinity_is_refused_not_stored_as_a_wrong_instant(pg, postgres_url, column):
    conn, name = pg
    conn.execute(f"CREATE TABLE {name} (id int, at {column})")
    conn.execute(f"INSERT INTO {name} VALUES (1, 'epoch'), (2, 'infinity'), (3, '-infinity')")
    spec = SqlSource(kind="sql", url=postgres_url, table=name, dataset="x", fast_path="copy")
    with pytest.raises(DataError, match="column 'at' holds 'infinity'"):
        list(SqlReader("inf", spec).read())


def test_postgres_error_mid_stream_is_terminal_not_retried(postgres_url):
    query = "SELECT x, 1 / (x - 150000) AS y FROM generate_series(1, 300000) x"
    spec = SqlSource(kind="sql", url=postgres_url, query=query, dataset="x", retries=3, backoff=0.01)
    reader = SqlReader("div", spec)
    with pytest.raises(SourceError, match="division by zero"):
        list(reader.read())
    assert reader.retried == 0 and reader.used_fast_path is True


@pytest.mark.parametrize("fast_path", ["auto", "off"])
@pytest.mark.parametrize("declared", ["numeric(10, 2)", "numeric"])
def test_postgres_nan_numeric_fails_the_read_cleanly(pg, postgres_url, fast_path, declared):
    conn, name = pg
    conn.execute(f"CREATE TABLE {name} (n {declared})")
    conn.execute(f"INSERT INTO {name} VALUES (2.5), ('NaN')")
    spec = SqlSource(kind="sql", url=postgres_url, table=name, dataset="x", fast_path=fast_path)
    with pytest.raises(DataError, match=r"column 'n' holds (?i:nan)"):  # both paths, one clear line
        list(SqlReader("nan", spec).read())
