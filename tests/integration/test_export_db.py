"""``headrace export``: a dataset (or a version) into PostgreSQL (COPY) and MariaDB (batched inserts),
values and types exact, replace/append/fail, all or nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import polars as pl
import psycopg
import pymysql
import pytest

from headrace.cli import main
from headrace.errors import UsageError
from headrace.ingest.export import export_dataset
from headrace.scaffold import init_project
from headrace.store import BatchMeta, Store
from headrace.workspace import Workspace

pytestmark = pytest.mark.integration


def _frame(start: int, n: int) -> pl.DataFrame:
    ids = list(range(start, start + n))
    return pl.DataFrame(
        {
            "id": ids,
            "name": [None if i % 4 == 0 else ("" if i % 4 == 1 else f'n,"{i}"\nx') for i in ids],
            "amount": pl.Series([Decimal(i) / 4 for i in ids], dtype=pl.Decimal(12, 2)),
            "ratio": [i / 3 for i in ids],
            "flag": [i % 2 == 0 for i in ids],
            "day": [dt.date(2024, 1, 1) + dt.timedelta(days=i % 300) for i in ids],
            "at": pl.Series(
                [dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC) + dt.timedelta(seconds=i) for i in ids],
                dtype=pl.Datetime("us", "UTC"),
            ),
            "tags": [[f"t{i}", "x"] for i in ids],
        }
    )


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "lake")
    store.append("sales", _frame(1, 500), BatchMeta("test"))
    store.append("sales", _frame(501, 100), BatchMeta("test"))
    return store


@pytest.fixture
def pg_table(postgres_url):
    name = f"hr_exp_{uuid.uuid4().hex[:10]}"
    conn = psycopg.connect(postgres_url, autocommit=True)
    yield conn, name
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.close()


def test_export_to_postgres_exact_values_versions_and_modes(store, postgres_url, pg_table):
    conn, name = pg_table
    first = export_dataset(store, "sales", postgres_url, name, version=0)
    assert first.rows == 500 and first.version == 0
    rows = conn.execute(
        f"SELECT id, name, amount, ratio, flag, day, at, tags FROM {name} ORDER BY id"
    ).fetchall()
    assert len(rows) == 500
    by_id = {r[0]: r for r in rows}
    assert by_id[4][1] is None and by_id[5][1] == "" and by_id[6][1] == 'n,"6"\nx'
    assert by_id[6][2] == Decimal("1.50") and by_id[6][3] == pytest.approx(2.0)
    assert by_id[6][4] is True and by_id[6][5] == dt.date(2024, 1, 7)
    assert by_id[6][6] == dt.datetime(2024, 1, 1, 12, 0, 6, tzinfo=dt.UTC)
    assert by_id[6][7] == '["t6","x"]'
    types = dict(
        conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s", (name,)
        ).fetchall()
    )
    assert types["amount"] == "numeric" and types["at"] == "timestamp with time zone"

    with pytest.raises(UsageError, match="already exists"):
        export_dataset(store, "sales", postgres_url, name, if_exists="fail")
    export_dataset(store, "sales", postgres_url, name, if_exists="append")
    assert conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == 1100
    export_dataset(store, "sales", postgres_url, name, if_exists="replace", chunk_rows=64)
    assert conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {name}").fetchone() == (600, 600)


def test_export_to_mariadb(store, mariadb_url):
    name = f"hr_exp_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", autocommit=True)
    try:
        export_dataset(store, "sales", mariadb_url, name, chunk_rows=128)
        export_dataset(store, "sales", mariadb_url, name, version=1, if_exists="replace")
        with conn.cursor() as cur:
            cur.execute(f"SELECT id, name, amount, flag, at, tags FROM {name} ORDER BY id")
            rows = cur.fetchall()
            cur.execute("SHOW TABLES LIKE %s", (f"{name}__hr_%",))
            leftovers = cur.fetchall()
        assert len(rows) == 600 and not leftovers
        by_id = {r[0]: r for r in rows}
        assert by_id[4][1] is None and by_id[5][1] == "" and by_id[6][1] == 'n,"6"\nx'
        assert by_id[6][2] == Decimal("1.50") and by_id[6][3] == 1
        assert by_id[6][4] == dt.datetime(2024, 1, 1, 12, 0, 6)  # UTC
        assert by_id[6][5] == '["t6","x"]'
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {name}")
        conn.close()


def test_export_command(tmp_path, postgres_url, pg_table, capsys):
    conn, name = pg_table
    project = init_project(tmp_path / "proj", name="exp", rows=50, force=True)
    ws = Workspace.open(project)
    ws.store.append("sales", _frame(1, 42), BatchMeta("test"))
    ws.close()
    with pytest.raises(SystemExit) as done:
        main(["--project", str(project), "export", "sales", postgres_url, "--table", name, "--json"])
    assert done.value.code in (0, None)
    out = capsys.readouterr().out
    assert '"rows": 42' in out
    assert conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == 42
    with pytest.raises(SystemExit) as failed:
        main(["--project", str(project), "export", "nope", postgres_url, "--table", name])
    assert failed.value.code == 2
