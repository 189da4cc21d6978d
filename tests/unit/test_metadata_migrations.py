"""Migrations that can change: version 1 is frozen DDL, and a database migrated step by step ends equal
to the tables declared in ``headrace.metadata`` (SQLite here; PostgreSQL in the integration test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from headrace.metadata import _V1_TABLES, MIGRATIONS, SCHEMA, Metadata

FROZEN = Path(__file__).with_name("metadata_v1.sql")


def v1_ddl() -> str:
    out = []
    for name in _V1_TABLES:
        table = SCHEMA.tables[name]
        out.append(str(CreateTable(table).compile(dialect=sqlite.dialect())).strip() + ";")
        for index in sorted(table.indexes, key=lambda i: i.name or ""):
            out.append(str(CreateIndex(index).compile(dialect=sqlite.dialect())).strip() + ";")
    return "\n".join(line.rstrip() for line in "\n".join(out).splitlines()) + "\n"


def shape(url: str) -> dict[str, Any]:
    """Every table's columns (name, type, nullable, primary key), indexes and unique constraints."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        found = inspect(engine)
        out: dict[str, Any] = {}
        for table in sorted(found.get_table_names()):
            pk = set(found.get_pk_constraint(table)["constrained_columns"])
            out[table] = {
                "columns": [
                    (c["name"], str(c["type"]).split("(")[0], c["nullable"] or False, c["name"] in pk)
                    for c in found.get_columns(table)
                ],
                "indexes": sorted((i["name"], tuple(i["column_names"])) for i in found.get_indexes(table)),
                "unique": sorted(tuple(u["column_names"]) for u in found.get_unique_constraints(table)),
            }
        return out
    finally:
        engine.dispose()


def test_the_version_1_tables_are_frozen():
    assert v1_ddl() == FROZEN.read_text(), (
        "a table of metadata version 1 changed: write the change as a new migration with Alembic's "
        "operations (headrace.metadata._ops) and leave the version 1 tables as they were"
    )


def migrated_equals_declared(migrated_url: str, declared_url: str) -> None:
    meta = Metadata(migrated_url)
    assert meta.schema_version() == MIGRATIONS[-1][0]
    meta.dispose()
    engine = create_engine(declared_url.replace("postgresql://", "postgresql+psycopg://"))
    SCHEMA.create_all(engine)
    engine.dispose()
    assert shape(migrated_url) == shape(declared_url)


def test_a_database_migrated_from_version_1_equals_the_declared_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = Metadata(url, migrate=False)
    with old.begin() as conn:  # a database left at version 1, as an earlier release made it
        from headrace.metadata import schema_version, utcnow

        schema_version.create(conn)
        MIGRATIONS[0][2](conn)
        conn.execute(schema_version.insert().values(version=1, applied_at=utcnow()))
    old.dispose()
    migrated_equals_declared(url, f"sqlite:///{tmp_path / 'declared.db'}")
