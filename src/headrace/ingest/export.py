"""Land a dataset (or one version of it) in a PostgreSQL or MariaDB/MySQL table.

- PostgreSQL: ``COPY ... FROM STDIN`` in CSV, fed by polars in chunks; one transaction, so the table
  is either fully loaded or unchanged. ``replace`` drops and recreates it inside that transaction.
- MariaDB/MySQL: batched multi-row ``INSERT`` (PyMySQL's ``executemany``) into a staging table that is
  then swapped in with one atomic ``RENAME TABLE`` (``replace``) or copied over (``append``); DDL
  commits on its own there, so staging is what keeps a failed export from leaving half a table.

The table is created from the dataset's schema when missing: integers, floats, decimals (same
precision and scale), booleans, dates, timestamps (with time zone as ``timestamptz`` / UTC
``DATETIME(6)``), text, and nested values as JSON text.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    Text,
    create_engine,
    inspect,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from ..errors import ConfigError, ServiceUnavailable, SourceError, UsageError
from ..log import redact
from ..store import Store
from .sql import engine_url

__all__ = ["ExportResult", "export_dataset"]

log = logging.getLogger("headrace.ingest.export")

IfExists = Literal["append", "replace", "fail"]


@dataclass(frozen=True)
class ExportResult:
    dataset: str
    version: int
    url: str
    table: str
    rows: int
    seconds: float
    mode: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "version": self.version,
            "url": self.url,
            "table": self.table,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows / self.seconds) if self.seconds > 0 else None,
            "mode": self.mode,
        }


def _sql_type(dtype: pl.DataType, dialect: str) -> Any:
    if dtype == pl.Boolean:
        return Boolean()
    if dtype in (pl.Int8, pl.Int16, pl.UInt8):
        return SmallInteger()
    if dtype in (pl.Int32, pl.UInt16):
        return Integer()
    if dtype.is_integer():
        return BigInteger()
    if dtype == pl.Float32:
        return Float(precision=24)
    if dtype.is_float():
        return Float(precision=53)
    if isinstance(dtype, pl.Decimal):
        return Numeric(dtype.precision or 38, dtype.scale or 0)
    if dtype == pl.Date:
        return Date()
    if isinstance(dtype, pl.Datetime):
        if dialect == "mysql":
            return mysql.DATETIME(fsp=6)
        return DateTime(timezone=dtype.time_zone is not None)
    if dtype == pl.Binary:
        return LargeBinary()
    if dialect == "mysql":
        return mysql.LONGTEXT()
    return Text()


def _prepare(frame: pl.DataFrame) -> pl.DataFrame:
    """Nested values as JSON text, time zones as UTC, durations as text: what a SQL table holds."""
    exprs = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Struct | pl.List | pl.Array):
            exprs.append(col.map_elements(_json_text, return_dtype=pl.String))
        elif isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            exprs.append(col.dt.convert_time_zone("UTC"))
        elif isinstance(dtype, pl.Duration | pl.Time | pl.Categorical | pl.Enum) or dtype == pl.Null:
            exprs.append(col.cast(pl.String))
        else:
            exprs.append(col)
    return frame.select(exprs)


def _json_text(value: Any) -> str:
    if isinstance(value, pl.Series):
        value = value.to_list()
    return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


def export_dataset(
    store: Store,
    dataset: str,
    url: str,
    table: str,
    *,
    version: int | None = None,
    if_exists: IfExists = "append",
    chunk_rows: int = 100_000,
) -> ExportResult:
    """Write ``dataset`` (at ``version``, the latest by default) into ``table`` at ``url``."""
    if if_exists not in ("append", "replace", "fail"):
        raise UsageError(f"if_exists {if_exists!r} is not one of append, replace, fail")
    started = time.perf_counter()
    at = version if version is not None else store.version(dataset)
    lazy = store.scan(dataset, at)
    schema = lazy.collect_schema()
    engine = _engine(url)
    dialect = engine.dialect.name
    if dialect not in ("postgresql", "mysql"):
        raise UsageError(
            f"export to {dialect} is not supported",
            hint="give a postgresql:// or mysql:// (MariaDB) URL",
        )
    schema_name, _, name = table.rpartition(".")
    probe = _prepare(pl.DataFrame(schema=schema))
    columns = [Column(c, _sql_type(t, dialect)) for c, t in probe.schema.items()]
    rows = 0
    try:
        exists = inspect(engine).has_table(name, schema=schema_name or None)
        if exists and if_exists == "fail":
            raise UsageError(
                f"table {table} already exists at {redact(url)}",
                hint="use --if-exists append or --if-exists replace",
            )
        # Chunks of the dataset, never all of it in memory at once.
        frames = (_prepare(f) for f in lazy.collect_batches(chunk_size=chunk_rows))
        if dialect == "postgresql":
            rows = _to_postgres(engine, schema_name or None, name, columns, frames, exists, if_exists)
        else:
            rows = _to_mysql(engine, schema_name or None, name, columns, frames, exists, if_exists)
    except sa_exc.OperationalError as exc:
        raise ServiceUnavailable(
            f"export to {redact(url)} failed: the database is unreachable ({_first(exc)})",
            hint="check that it is running and the URL is right; the table was left unchanged",
        ) from exc
    except (sa_exc.SQLAlchemyError, OSError) as exc:
        raise SourceError(
            f"export of {dataset} into {table} failed ({_first(exc)})",
            hint="the table was left unchanged; check that its columns match the dataset's "
            "(or use --if-exists replace)",
        ) from exc
    finally:
        engine.dispose()
    seconds = time.perf_counter() - started
    log.info("exported %s@%s to %s %s: %d rows in %.2fs", dataset, at, redact(url), table, rows, seconds)
    return ExportResult(dataset, at, redact(url), table, rows, seconds, if_exists)


def _engine(url: str) -> Engine:
    full = engine_url(url)
    try:
        return create_engine(full, poolclass=NullPool)
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError, ValueError) as exc:
        raise ConfigError(
            f"database URL {redact(url)} is not usable ({_first(exc)})",
            hint="use postgresql://USER@HOST/DB or mysql://USER@HOST/DB",
        ) from exc


def _to_postgres(
    engine: Engine,
    schema: str | None,
    name: str,
    columns: list[Column[Any]],
    frames: Any,
    exists: bool,
    if_exists: IfExists,
) -> int:
    meta = MetaData()
    target = Table(name, meta, *columns, schema=schema)
    rows = 0
    with engine.begin() as conn:  # one transaction: all rows or none, DDL included
        if exists and if_exists == "replace":
            target.drop(conn)
            exists = False
        if not exists:
            target.create(conn)
        preparer = engine.dialect.identifier_preparer
        qualified = preparer.format_table(target)
        names = ", ".join(preparer.quote(c.name) for c in columns)
        raw: Any = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY {qualified} ({names}) FROM STDIN (FORMAT csv)") as copy:
            for frame in frames:
                buffer = io.BytesIO()
                _csv(frame).write_csv(buffer, include_header=False, null_value="", quote_style="non_numeric")
                copy.write(buffer.getvalue())
                rows += frame.height
    return rows


def _csv(frame: pl.DataFrame) -> pl.DataFrame:
    """Values as COPY's CSV reads them: an empty string quoted, null unquoted, binary as \\x hex."""
    exprs = []
    for name, dtype in frame.schema.items():
        if dtype == pl.Binary:
            exprs.append(pl.lit("\\x") + pl.col(name).bin.encode("hex"))
        else:
            exprs.append(pl.col(name))
    return frame.select(exprs)


def _to_mysql(
    engine: Engine,
    schema: str | None,
    name: str,
    columns: list[Column[Any]],
    frames: Any,
    exists: bool,
    if_exists: IfExists,
) -> int:
    staging_name = f"{name}__hr_{uuid.uuid4().hex[:8]}"
    meta = MetaData()
    staging = Table(staging_name, meta, *[c._copy() for c in columns], schema=schema)
    target = Table(name, MetaData(), *[c._copy() for c in columns], schema=schema)
    preparer = engine.dialect.identifier_preparer
    rows = 0
    with engine.connect() as conn:
        staging.create(conn)
        conn.commit()
        try:
            placeholders = ", ".join(["%s"] * len(columns))
            names = ", ".join(preparer.quote(c.name) for c in columns)
            sql = f"INSERT INTO {preparer.format_table(staging)} ({names}) VALUES ({placeholders})"
            raw: Any = conn.connection.driver_connection
            with raw.cursor() as cur:
                for frame in frames:
                    local = frame.with_columns(
                        pl.col(c).dt.replace_time_zone(None)
                        for c, t in frame.schema.items()
                        if isinstance(t, pl.Datetime) and t.time_zone is not None
                    )
                    # PyMySQL turns executemany of one INSERT ... VALUES into multi-row statements.
                    cur.executemany(sql, local.rows())
                    rows += frame.height
            raw.commit()
            qualified = preparer.format_table(target)
            if not exists or if_exists == "replace":
                old = f"{name}__hr_old_{uuid.uuid4().hex[:8]}"
                if exists:
                    old_table = Table(old, MetaData(), schema=schema)
                    conn.exec_driver_sql(
                        f"RENAME TABLE {qualified} TO {preparer.format_table(old_table)}, "
                        f"{preparer.format_table(staging)} TO {qualified}"
                    )
                    conn.exec_driver_sql(f"DROP TABLE {preparer.format_table(old_table)}")
                else:
                    conn.exec_driver_sql(f"RENAME TABLE {preparer.format_table(staging)} TO {qualified}")
            else:
                conn.exec_driver_sql(
                    f"INSERT INTO {qualified} ({names}) SELECT {names} FROM {preparer.format_table(staging)}"
                )
                conn.commit()
                staging.drop(conn)
            conn.commit()
        except BaseException:
            conn.rollback()
            with engine.connect() as cleanup:
                staging.drop(cleanup, checkfirst=True)
                cleanup.commit()
            raise
    return rows


def _first(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return redact(lines[0][:200]) if lines else type(exc).__name__
