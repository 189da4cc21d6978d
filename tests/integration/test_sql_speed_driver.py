"""The PostgreSQL fast path asks ADBC's driver for its built-in type table (no catalog read on a
connection of its own); a driver too old to know the option reads the catalog and the read is the same."""

from __future__ import annotations

import uuid
from decimal import Decimal

import adbc_driver_manager
import adbc_driver_postgresql
import polars as pl
import psycopg
import pytest

from headrace.config.sources_db import SqlSource
from headrace.ingest.sql import SqlReader

pytestmark = pytest.mark.integration

MODE = "adbc.postgresql.type_resolver_mode"


@pytest.fixture
def table(postgres_url):
    name = f"hr_drv_{uuid.uuid4().hex[:10]}"
    conn = psycopg.connect(postgres_url, autocommit=True)
    conn.execute(f"CREATE TABLE {name} (id int8, amount numeric(10, 2), note text, at timestamptz)")
    conn.execute(
        f"""INSERT INTO {name} SELECT g, g * 0.5, 'n' || g,
            TIMESTAMPTZ '2024-01-01 00:00:00+00' + g * INTERVAL '1 s' FROM generate_series(1, 1000) g"""
    )
    yield name
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.close()


def _read(url: str, name: str) -> pl.DataFrame:
    reader = SqlReader("drv", SqlSource(kind="sql", url=url, table=name, dataset="x", fast_path="copy"))
    frame = pl.concat([b.frame for b in reader.read()]).sort("id")
    assert reader.used_fast_path is True
    return frame


def test_the_fast_path_uses_the_builtin_type_table(table, postgres_url, monkeypatch):
    asked: list[dict[str, str] | None] = []
    real = adbc_driver_postgresql.connect

    def spy(uri: str, db_kwargs: dict[str, str] | None = None) -> adbc_driver_manager.AdbcDatabase:
        asked.append(db_kwargs)
        return real(uri, db_kwargs=db_kwargs)

    monkeypatch.setattr(adbc_driver_postgresql, "connect", spy)
    frame = _read(postgres_url, table)
    assert asked == [{MODE: "builtin"}]
    assert frame.height == 1000 and frame.schema["amount"] == pl.Decimal(10, 2)
    assert frame.filter(pl.col("id") == 999)["amount"].item() == Decimal("499.50")


def test_a_driver_that_does_not_know_the_option_reads_the_same(table, postgres_url, monkeypatch):
    expected = _read(postgres_url, table)
    asked: list[dict[str, str] | None] = []
    real = adbc_driver_postgresql.connect

    def old_driver(uri: str, db_kwargs: dict[str, str] | None = None) -> adbc_driver_manager.AdbcDatabase:
        asked.append(db_kwargs)
        if db_kwargs and MODE in db_kwargs:
            raise adbc_driver_manager.NotSupportedError(
                f"NOT_IMPLEMENTED: [libpq] Unknown database option {MODE}"
            )
        return real(uri, db_kwargs=db_kwargs)

    monkeypatch.setattr(adbc_driver_postgresql, "connect", old_driver)
    assert _read(postgres_url, table).equals(expected)
    assert asked == [{MODE: "builtin"}, None]
