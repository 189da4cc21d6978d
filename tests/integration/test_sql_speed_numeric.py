"""The PostgreSQL fast path has the server print NUMERIC columns as text (cheaper than the driver's own
conversion): the same exact decimals as the server-side cursor path, NaN and infinities refused, a
value too wide for its decimal refused rather than turned into a null, and the cursor and key columns
left as numbers so that the order (and so every stored mark) stays numeric."""

from __future__ import annotations

import itertools
import uuid
from decimal import Decimal

import polars as pl
import psycopg
import pytest
from polars.testing import assert_frame_equal

from headrace.config.sources_db import SqlSource
from headrace.errors import DataError, SourceError
from headrace.ingest.sql import SqlReader, decode_mark

pytestmark = pytest.mark.integration


@pytest.fixture
def pg(postgres_url):
    name = f"hr_num_{uuid.uuid4().hex[:10]}"
    conn = psycopg.connect(postgres_url, autocommit=True)
    yield conn, name
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.close()


def _read(url: str, fast_path: str, **spec: object) -> tuple[SqlReader, list[pl.DataFrame]]:
    reader = SqlReader("n", SqlSource(kind="sql", url=url, dataset="x", fast_path=fast_path, **spec))
    return reader, [b.frame for b in reader.read()]


def test_numeric_columns_of_every_width_and_quoted_names_match_the_cursor_path(pg, postgres_url):
    conn, name = pg
    conn.execute(
        f"""CREATE TABLE {name} (id int PRIMARY KEY, "Amount" numeric(12, 2), "big one" numeric(38, 10),
            whole numeric(18, 0), bare numeric, neg numeric(6, 3))"""
    )
    conn.execute(
        f"""INSERT INTO {name} SELECT g,
            CASE WHEN g % 9 = 0 THEN NULL ELSE (g * 12345.67) % 9999999999.99 - 5000000 END,
            g * 1234567890.0123456789, g * 99999999999999, g / 7.0, -(g % 999) / 1000.0
            FROM generate_series(1, 500) g"""
    )
    conn.execute(f"INSERT INTO {name} VALUES (0, -9999999999.99, 0, -999999999999999999, 0, -999.999)")
    frames = {}
    for path in ("copy", "off"):
        reader, batches = _read(postgres_url, path, table=name, chunk_size=120)
        assert reader.used_fast_path is (path == "copy")
        frames[path] = pl.concat(batches).sort("id")
    assert_frame_equal(frames["copy"], frames["off"])
    fast = frames["copy"]
    assert fast.schema["Amount"] == pl.Decimal(12, 2) and fast.schema["big one"] == pl.Decimal(38, 10)
    assert fast.schema["bare"] == pl.Decimal(38, 9)
    assert fast["Amount"].null_count() == 55
    row = fast.filter(pl.col("id") == 0).row(0, named=True)
    assert row["Amount"] == Decimal("-9999999999.99") and row["whole"] == -999999999999999999
    assert row["neg"] == Decimal("-999.999")
    truth = conn.execute(f'SELECT "big one" FROM {name} WHERE id = 7').fetchone()[0]
    assert fast.filter(pl.col("id") == 7)["big one"][0] == truth


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("fast_path", ["copy", "off"])
def test_a_non_finite_numeric_among_many_fails_the_read_naming_the_column(pg, postgres_url, value, fast_path):
    conn, name = pg
    declared = "numeric(10, 2)" if value == "NaN" else "numeric"  # a typmod'd NUMERIC cannot be infinite
    conn.execute(f"CREATE TABLE {name} (id int, n {declared})")
    conn.execute(f"INSERT INTO {name} SELECT g, g / 4.0 FROM generate_series(1, 5000) g")
    conn.execute(f"INSERT INTO {name} VALUES (5001, NULL), (5002, %s), (5003, 1)", (value,))
    with pytest.raises(DataError, match=rf"column 'n' holds {value}"):
        _read(postgres_url, fast_path, table=name)


@pytest.mark.parametrize("fast_path", ["copy", "off"])
def test_a_number_too_wide_for_its_decimal_fails_the_read_not_a_silent_null(pg, postgres_url, fast_path):
    conn, name = pg
    conn.execute(f"CREATE TABLE {name} (id int, n numeric)")  # read as decimal(38, 9): 29 whole digits
    conn.execute(f"INSERT INTO {name} VALUES (1, 2.5), (2, NULL), (3, 1e35)")
    with pytest.raises(SourceError, match=r"reading .* failed"):
        _read(postgres_url, fast_path, table=name)


def test_a_numeric_cursor_keeps_numeric_order_and_marks(pg, postgres_url):
    conn, name = pg
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, version numeric(8, 2), price numeric(8, 2))")
    # as text '10.00' < '9.50': a cursor read as text would come out of order and lose rows at a mark
    conn.execute(f"INSERT INTO {name} SELECT g, (g % 40) * 0.75 + 1, g * 1.5 FROM generate_series(1, 400) g")
    spec = {"table": name, "cursor": "version", "cursor_key": ["id"], "chunk_size": 37}
    _, batches = _read(postgres_url, "copy", **spec)
    data = pl.concat(batches)
    assert data.height == 400 and data["id"].n_unique() == 400
    assert data.schema["version"] == pl.Decimal(8, 2) and data.schema["price"] == pl.Decimal(8, 2)
    assert data.select(["version", "id"]).equals(data.select(["version", "id"]).sort(["version", "id"]))
    for before, after in itertools.pairwise(batches):
        assert (before["version"][-1], before["id"][-1]) < (after["version"][0], after["id"][0])
    # a run resumed from the mark after the first batch reads exactly the rest
    reader = SqlReader("n", SqlSource(kind="sql", url=postgres_url, dataset="x", fast_path="copy", **spec))
    first = next(iter(reader.read()))
    mark = decode_mark(first.cursor)
    assert mark is not None and isinstance(mark.value, Decimal)
    rest = SqlReader("n", SqlSource(kind="sql", url=postgres_url, dataset="x", **spec), cursor=first.cursor)
    assert sum(b.frame.height for b in rest.read()) == 400 - first.frame.height


def test_a_query_source_with_numeric_expressions(pg, postgres_url):
    conn, name = pg
    conn.execute(f"CREATE TABLE {name} (id int, amount numeric(12, 2))")
    conn.execute(f"INSERT INTO {name} SELECT g, g * 1.25 FROM generate_series(1, 50) g")
    query = f"SELECT id, amount, amount * 2 AS doubled, amount::numeric(14, 4) AS wider FROM {name}"
    frames = {
        path: pl.concat(_read(postgres_url, path, query=query)[1]).sort("id") for path in ("copy", "off")
    }
    assert_frame_equal(frames["copy"], frames["off"])
    row = frames["copy"].filter(pl.col("id") == 3).row(0, named=True)
    assert row["doubled"] == Decimal("7.5") and row["wider"] == Decimal("3.75")
    assert frames["copy"].schema["wider"] == pl.Decimal(14, 4)
