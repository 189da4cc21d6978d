"""Metadata: ingestion runs and cursors, training runs, model versions, the ledger, deployments.

SQLAlchemy Core over SQLite (WAL, the default) or PostgreSQL (by URL). The schema is versioned: each
entry of ``MIGRATIONS`` moves it one version forward and ``Metadata.migrate()`` applies those not yet
applied, in order, each in its own transaction (PostgreSQL and SQLite both have transactional DDL).

The runner is the loop in ``migrate`` (no scripts folder or alembic.ini to ship); version 1 creates the
tables as they were then, and every later step is written with Alembic's operations (``_ops``), so a
database migrated from any version ends equal to the tables declared here (a test checks it, on SQLite
and PostgreSQL).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from .errors import ConfigError, ServiceUnavailable

__all__ = ["MIGRATIONS", "SCHEMA", "Metadata", "utcnow"]

SCHEMA = MetaData()


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(name: str, **kw: Any) -> Column[Any]:
    return Column(name, DateTime(timezone=True), **kw)


schema_version = Table(
    "schema_version",
    SCHEMA,
    Column("version", Integer, primary_key=True),
    _ts("applied_at", nullable=False),
)

ingestion_runs = Table(
    "ingestion_runs",
    SCHEMA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(200), nullable=False, index=True),
    Column("dataset", String(200), nullable=False, index=True),
    Column("kind", String(20), nullable=False),
    Column("batch_id", String(64)),
    _ts("started_at", nullable=False),
    _ts("finished_at"),
    # running | succeeded | partial | failed | failed_checks | interrupted
    Column("status", String(20), nullable=False),
    Column("rows_read", Integer, default=0),
    Column("rows_committed", Integer, default=0),
    Column("rows_quarantined", Integer, default=0),
    Column("version", Integer),
    Column("cursor_before", Text),
    Column("cursor_after", Text),
    Column("error", Text),
    Column("details", JSON),
)

ingested_files = Table(
    "ingested_files",
    SCHEMA,
    Column("fingerprint", String(64), primary_key=True),
    Column("source", String(200), nullable=False, index=True),
    Column("path", Text, nullable=False),
    Column("size", Integer),
    Column("batch_id", String(64)),
    Column("version", Integer),
    _ts("loaded_at", nullable=False),
)

cursors = Table(
    "cursors",
    SCHEMA,
    Column("source", String(200), primary_key=True),
    Column("value", Text),
    _ts("updated_at", nullable=False),
)

quality_reports = Table(
    "quality_reports",
    SCHEMA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, index=True),
    Column("dataset", String(200), nullable=False, index=True),
    Column("batch_id", String(64)),
    _ts("created_at", nullable=False),
    Column("report", JSON, nullable=False),
)

training_runs = Table(
    "training_runs",
    SCHEMA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False, index=True),
    _ts("started_at", nullable=False),
    _ts("finished_at"),
    Column("status", String(20), nullable=False),
    Column("version", Integer),
    Column("dataset", String(200)),
    Column("data_version", Integer),
    Column("metrics", JSON),
    Column("params", JSON),
    Column("error", Text),
    Column("details", JSON),
)

model_versions = Table(
    "model_versions",
    SCHEMA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("task", String(40), nullable=False),
    _ts("created_at", nullable=False),
    Column("status", String(20), nullable=False),  # registered | retired
    Column("artifact_sha256", String(64)),
    Column("artifact_format", String(20)),
    Column("dataset", String(200)),
    Column("data_version", Integer),
    Column("metrics", JSON),
    Column("params", JSON),
    Column("signature", JSON),
    Column("threshold", Float),
    Column("code_version", String(80)),
    Column("packages", JSON),
    Column("run_id", Integer),
    Column("details", JSON),
    UniqueConstraint("model", "version", name="uq_model_version"),
)

aliases = Table(
    "aliases",
    SCHEMA,
    Column("model", String(200), primary_key=True),
    Column("alias", String(40), primary_key=True),
    Column("version", Integer, nullable=False),
    _ts("updated_at", nullable=False),
)

ledger = Table(
    "ledger",
    SCHEMA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _ts("ts", nullable=False, index=True),
    Column("model", String(200), nullable=False, index=True),
    Column("action", String(40), nullable=False),
    Column("version", Integer),
    Column("alias", String(40)),
    Column("previous_version", Integer),
    Column("reason", Text),
    Column("actor", String(80)),
    Column("details", JSON),
)

deployments = Table(
    "deployments",
    SCHEMA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("target", String(40), nullable=False),
    # live | replaced | rolled_back | failed | planned (manifests written, not applied) | stopped
    Column("status", String(20), nullable=False),
    _ts("created_at", nullable=False),
    Column("endpoint", Text),
    Column("details", JSON),
)

monitor_reports = Table(
    "monitor_reports",
    SCHEMA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _ts("created_at", nullable=False),
    Column("model", String(200), nullable=False, index=True),
    Column("version", Integer),
    Column("kind", String(40), nullable=False),  # drift | performance | decision
    Column("status", String(20)),
    Column("report", JSON, nullable=False),
)


dataset_schemas = Table(
    "dataset_schemas",
    SCHEMA,
    Column("dataset", String(200), primary_key=True),
    Column("columns", JSON, nullable=False),  # {column: {"type", "origin", "format"}}
    Column("sources", JSON),  # {source: fingerprint of the rules it last loaded with}
    _ts("updated_at", nullable=False),
)

source_leases = Table(
    "source_leases",
    SCHEMA,
    Column("source", String(200), primary_key=True),
    Column("holder", String(300), nullable=False),  # host:pid:token of the run that holds it
    Column("run_id", Integer),
    _ts("acquired_at", nullable=False),
    _ts("expires_at", nullable=False),
)

_V1_TABLES = (
    "ingestion_runs",
    "ingested_files",
    "cursors",
    "quality_reports",
    "training_runs",
    "model_versions",
    "aliases",
    "ledger",
    "deployments",
    "monitor_reports",
)


def _v1(conn: Connection) -> None:
    # The tables as version 1 had them. Their definitions above are frozen: a change to one of them is a
    # new migration (tests/unit/test_metadata_migrations.py holds their DDL and fails on a change).
    SCHEMA.create_all(conn, tables=[SCHEMA.tables[name] for name in _V1_TABLES])


def _ops(conn: Connection) -> Any:
    """Alembic's operations on ``conn``: add_column, alter_column, create_table... with SQLite's
    limits handled by batch_alter_table; no scripts folder or alembic.ini needed."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    return Operations(MigrationContext.configure(conn))


def _v2(conn: Connection) -> None:
    _ops(conn).create_table(
        "dataset_schemas",
        Column("dataset", String(200), primary_key=True),
        Column("columns", JSON, nullable=False),
        Column("sources", JSON),
        _ts("updated_at", nullable=False),
    )


def _v3(conn: Connection) -> None:
    _ops(conn).create_table(
        "source_leases",
        Column("source", String(200), primary_key=True),
        Column("holder", String(300), nullable=False),
        Column("run_id", Integer),
        _ts("acquired_at", nullable=False),
        _ts("expires_at", nullable=False),
    )


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial schema: runs, cursors, files, reports, models, aliases, ledger, deployments", _v1),
    (2, "dataset_schemas: column types pinned per dataset (inferred or declared)", _v2),
    (3, "source_leases: one writer per source", _v3),
]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Metadata:
    """A connection to the metadata database, migrated to the newest schema on open."""

    tables = SCHEMA.tables

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.engine = _engine(url)
        if migrate:
            self.migrate()

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction: committed when the block ends, rolled back on an exception."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise ServiceUnavailable(
                f"metadata database {_redact(self.url)} is unreachable ({_first(exc)})",
                hint="check that the database is running and the URL in headrace.yaml is right",
            ) from exc

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("schema_version"):
                return 0
            rows = conn.execute(select(schema_version.c.version)).scalars().all()
            return max(rows, default=0)

    def migrate(self) -> int:
        """Apply the migrations not yet applied; return the schema version reached. Two processes
        opening a new database at once take turns (a file lock beside a SQLite database, an advisory
        lock on PostgreSQL), so the second finds the schema made instead of failing half-way."""
        with self._migration_lock():
            with self.begin() as conn:
                schema_version.create(conn, checkfirst=True)
            current = self.schema_version()
            for number, _title, step in MIGRATIONS:
                if number <= current:
                    continue
                with self.begin() as conn:
                    step(conn)
                    conn.execute(schema_version.insert().values(version=number, applied_at=utcnow()))
                current = number
            return current

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        dialect = self.engine.dialect.name
        if dialect == "sqlite" and self.url.startswith("sqlite:///") and not self.url.endswith(":memory:"):
            import fcntl

            path = Path(self.url[len("sqlite:///") :] + ".migrate.lock")
            with path.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return
        if dialect == "postgresql":
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(7340301)"))  # any fixed number of ours
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(7340301)"))
                    conn.commit()
            return
        yield

    def dispose(self) -> None:
        self.engine.dispose()


def start_training_run(meta: Metadata | None, model: str, dataset: str) -> int | None:
    """Record a training run as started (tabular and image trainers alike); its id, or None
    without a metadata database."""
    if meta is None:
        return None
    with meta.begin() as conn:
        result = conn.execute(
            SCHEMA.tables["training_runs"]
            .insert()
            .values(model=model, started_at=utcnow(), status="running", dataset=dataset)
        )
        key = result.inserted_primary_key
        return int(key[0]) if key is not None else None


def finish_training_run(meta: Metadata | None, run_id: int | None, **values: Any) -> None:
    """Close the run ``start_training_run`` opened, with its status and what else ``values`` holds."""
    if meta is None or run_id is None:
        return
    table = SCHEMA.tables["training_runs"]
    with meta.begin() as conn:
        conn.execute(update(table).where(table.c.id == run_id).values(finished_at=utcnow(), **values))


def _engine(url: str) -> Engine:
    if url.startswith("sqlite:///") and not url.endswith(":memory:"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    elif url.startswith("mysql://") or url.startswith("mariadb://"):
        url = "mysql+pymysql://" + url.split("://", 1)[1]
    try:
        engine = create_engine(url, pool_pre_ping=True, json_serializer=_json_dumps)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise ConfigError(
            f"metadata URL {_redact(url)} is not usable ({_first(exc)})",
            hint="use sqlite:///PATH or postgresql://USER@HOST/DB",
        ) from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _json_dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _redact(url: str) -> str:
    """A URL with any password replaced, for messages and logs."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
