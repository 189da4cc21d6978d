"""``kind: sql``: rows from a table or a query of PostgreSQL, MariaDB/MySQL or SQLite.

How it reads:
- The statement is built with SQLAlchemy Core; the high-water mark is a bound parameter, never text
  formatted into the SQL.
- Rows are streamed: a server-side cursor (psycopg named cursor, PyMySQL ``SSCursor``) fetched in
  chunks, or, on PostgreSQL, a binary ``COPY (SELECT ...) TO STDOUT`` read straight into Arrow by
  ADBC's libpq driver (the fast path, several times faster than fetching Python rows; see
  benchmarks/ingest_sql.py). There the server prints NUMERIC columns as text, which is parsed into
  the declared decimal (the driver's own NUMERIC conversion costs several times more), and the
  driver uses its built-in type table. COPY cannot take server-side parameters, so there psycopg
  binds them client-side with its own quoting, still never our formatting. Either way memory holds
  one chunk, not the table.
- Column types come from the database's result description, so every batch has the same schema:
  NUMERIC(p, s) stays a decimal of that scale, timestamps with a time zone are UTC instants, JSON is
  kept as JSON text, NULL stays null and an empty string stays an empty string.
- Incremental (``cursor:``): rows with the cursor column past the stored mark. With a ``key`` the
  order is (cursor, key) and the mark is that pair (``(c, k) > (:c, :k)``), so rows sharing a cursor
  value are never lost at a batch boundary, and updates (which move the cursor forward) are read on
  the next run. Without a key a batch only ends where the cursor value changes, so the stored mark
  always means "every row up to and including this value was committed".
- Each batch carries the mark reached by its last row (``Batch.cursor``); the runner stores it only
  after the batch is committed. A transient error (a dropped connection, a restarted server) is
  retried with exponential backoff, resuming after the last batch handed out, so a retried run never
  reads a row twice; a full load without a key cannot resume mid-way and fails cleanly instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NoReturn

import polars as pl
import pyarrow as pa
from sqlalchemy import (
    ColumnElement,
    Select,
    Text,
    bindparam,
    cast,
    column,
    create_engine,
    event,
    literal_column,
    select,
    table,
    text,
    tuple_,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from ..config.sources_db import SqlSource
from ..errors import ConfigError, DataError, HeadraceError, ServiceUnavailable, SourceError
from ..log import redact
from .base import Batch

__all__ = ["Mark", "SqlReader", "decode_mark", "encode_mark", "engine_url", "open_sql_source"]

log = logging.getLogger("headrace.ingest.sql")

# Used when a NUMERIC column has no declared scale (PostgreSQL's bare ``numeric``).
_DEFAULT_DECIMAL = (38, 9)


# ----------------------------------------------------------------------------------- URL, engine
def engine_url(url: str) -> str:
    """The SQLAlchemy URL with the drivers headrace ships: psycopg 3 and PyMySQL."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith(("mysql://", "mariadb://")):
        return "mysql+pymysql://" + url.split("://", 1)[1]
    return url


def _engine(url: str, connect_timeout: float, application_name: str = "headrace") -> Engine:
    full = engine_url(url)
    connect_args: dict[str, Any] = {}
    if full.startswith("postgresql+psycopg"):
        connect_args = {
            "connect_timeout": max(1, int(connect_timeout)),
            "options": "-c TimeZone=UTC",
            "application_name": application_name[:63],  # shows in pg_stat_activity
        }
    elif full.startswith(("mysql+pymysql", "mariadb+pymysql")):
        # TIMESTAMP columns are instants: have the server give them in UTC.
        connect_args = {
            "connect_timeout": max(1, int(connect_timeout)),
            "init_command": "SET time_zone='+00:00'",
        }
    try:
        # One connection per read, nothing pooled: a connection the server killed is never reused.
        engine = create_engine(full, poolclass=NullPool, connect_args=connect_args)
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError, ValueError) as exc:
        raise ConfigError(
            f"SQL source URL {redact(url)} is not usable ({_first(exc)})",
            hint="use postgresql://USER@HOST/DB, mysql://USER@HOST/DB or sqlite:///PATH",
        ) from exc
    if engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _pg_text_loaders)
    return engine


def _pg_text_loaders(dbapi_connection: Any, _record: Any) -> None:
    """JSON and UUID values as the server's text, exactly what the COPY path reads."""
    from psycopg.types.string import TextLoader

    for name in ("json", "jsonb", "uuid"):
        dbapi_connection.adapters.register_loader(name, TextLoader)


# --------------------------------------------------------------------------------- the mark (state)
@dataclass(frozen=True)
class Mark:
    """Where an incremental load stands: the cursor value, and the key of the last row at it."""

    value: Any
    key: tuple[Any, ...] | None = None


def _tag(value: Any) -> tuple[str, Any]:
    if value is None:
        return "null", None
    if isinstance(value, bool):
        return "bool", value
    if isinstance(value, int):
        return "int", value
    if isinstance(value, float):
        return "float", value
    if isinstance(value, Decimal):
        return "decimal", str(value)
    if isinstance(value, dt.datetime):
        return "datetime", value.isoformat()
    if isinstance(value, dt.date):
        return "date", value.isoformat()
    if isinstance(value, dt.time):
        return "time", value.isoformat()
    return "str", str(value)


def _untag(kind: str, value: Any) -> Any:
    if kind == "decimal":
        return Decimal(value)
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "time":
        return dt.time.fromisoformat(value)
    return value


def encode_mark(mark: Mark) -> str:
    """The mark as the text stored in the ``cursors`` table: readable JSON that keeps the type."""
    kind, value = _tag(mark.value)
    doc: dict[str, Any] = {"value": value, "type": kind}
    if mark.key is not None:
        tagged = [_tag(k) for k in mark.key]
        doc["key"] = [v for _, v in tagged]
        doc["key_types"] = [t for t, _ in tagged]
    return json.dumps(doc, separators=(", ", ": "))


def decode_mark(text_: str | None) -> Mark | None:
    if text_ is None or text_ == "":
        return None
    try:
        doc = json.loads(text_)
        value = _untag(doc["type"], doc["value"])
        key = None
        if "key" in doc:
            key = tuple(_untag(t, v) for t, v in zip(doc["key_types"], doc["key"], strict=True))
        return Mark(value, key)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"stored SQL cursor {text_[:80]!r} cannot be read ({exc})",
            hint="reset the source's cursor (delete its row in the 'cursors' table) to reload",
        ) from exc


# ------------------------------------------------------------------------------------ type mapping
_PG_ARROW: dict[int, pa.DataType] = {
    16: pa.bool_(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    26: pa.int64(),
    700: pa.float32(),
    701: pa.float64(),
    25: pa.string(),
    18: pa.string(),
    19: pa.string(),
    1042: pa.string(),
    1043: pa.string(),
    114: pa.string(),  # json: kept as JSON text
    3802: pa.string(),  # jsonb
    2950: pa.string(),  # uuid
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", "UTC"),
}
_PG_NUMERIC = 1700
_PG_POLARS_EXTRA: dict[int, pl.DataType] = {
    17: pl.Binary(),  # bytea
    1083: pl.Time(),
    1186: pl.Duration("us"),  # interval
}
_PG_JSON = {114, 3802}
_PG_UUID = {2950}

_MY_INT = {1, 2, 3, 8, 9, 13}
_MY_DECIMAL = {0, 246}
_MY_STRING = {15, 245, 247, 248, 249, 250, 251, 252, 253, 254}


@dataclass(frozen=True)
class ColumnType:
    name: str
    dtype: pl.DataType | None  # None: inferred from the values (SQLite, unknown types)
    arrow: pa.DataType | None = None  # set when COPY's CSV text can be parsed faithfully
    json: bool = False  # values may arrive as parsed JSON (dict/list): keep them as JSON text
    text: bool = False  # values of another Python type (UUID) shown as text
    via_text: bool = False  # parsed from text then cast to dtype (a NUMERIC of no declared scale)


def _polars_of(arrow: pa.DataType) -> pl.DataType:
    """The polars type of an Arrow type, without building a frame (whose first use imports pandas)."""
    if pa.types.is_timestamp(arrow):
        return pl.Datetime(arrow.unit, arrow.tz)
    return _ARROW_POLARS[arrow]


_ARROW_POLARS: dict[pa.DataType, pl.DataType] = {
    pa.bool_(): pl.Boolean(),
    pa.int16(): pl.Int16(),
    pa.int32(): pl.Int32(),
    pa.int64(): pl.Int64(),
    pa.float32(): pl.Float32(),
    pa.float64(): pl.Float64(),
    pa.string(): pl.String(),
    pa.date32(): pl.Date(),
}


def _pg_column(name: str, oid: int, precision: int | None, scale: int | None) -> ColumnType:
    if oid == _PG_NUMERIC:
        if precision:
            p, s = min(precision, 38), scale or 0
            return ColumnType(name, pl.Decimal(p, s), pa.decimal128(p, s))
        # No declared scale: digits past the 9th decimal are cut, alike on both paths.
        return ColumnType(name, pl.Decimal(*_DEFAULT_DECIMAL), pa.string(), via_text=True)
    if oid in _PG_ARROW:
        arrow = _PG_ARROW[oid]
        return ColumnType(name, _polars_of(arrow), arrow, json=oid in _PG_JSON, text=oid in _PG_UUID)
    return ColumnType(name, _PG_POLARS_EXTRA.get(oid))


def _mysql_column(name: str, code: int, scale: int | None) -> ColumnType:
    if code in _MY_INT:
        return ColumnType(name, pl.Int64())
    if code in _MY_DECIMAL:
        return ColumnType(name, pl.Decimal(38, scale or 0))
    if code == 4:
        return ColumnType(name, pl.Float32())
    if code == 5:
        return ColumnType(name, pl.Float64())
    if code == 7:  # TIMESTAMP, given in UTC by the session time zone set on connect
        return ColumnType(name, pl.Datetime("us", "UTC"))
    if code == 12:
        return ColumnType(name, pl.Datetime("us"))
    if code in (10, 14):
        return ColumnType(name, pl.Date())
    if code == 11:
        return ColumnType(name, pl.Duration("us"))
    if code in _MY_STRING:
        return ColumnType(name, None, json=code == 245)  # TEXT or BLOB: the values say which
    return ColumnType(name, None)


def _describe(dialect: str, description: Sequence[Any]) -> list[ColumnType]:
    out = []
    for d in description:
        name = str(d[0])
        if dialect == "postgresql":
            out.append(_pg_column(name, int(d[1]), d[4], d[5]))
        elif dialect in ("mysql", "mariadb"):
            out.append(_mysql_column(name, int(d[1]), d[5]))
        else:
            out.append(ColumnType(name, None))
    return out


def _to_text(value: Any, as_json: bool) -> Any:
    if value is None or isinstance(value, str):
        return value
    if as_json:
        return json.dumps(value, default=str)
    return str(value)


# Values polars cannot hold in the type asked for; a NaN NUMERIC even panics in its Decimal builder.
_UNFIT = (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError, pl.exceptions.PanicException)


def _not_a_decimal(column: str, value: str) -> DataError:
    return DataError(
        f"column {column!r} holds {value} ('{value}'::numeric), which a decimal column cannot hold",
        hint=f"map it in a query, e.g. NULLIF({column}, 'NaN'), or read it as float8",
    )


def _series(col: ColumnType, values: Sequence[Any], prior: pl.DataType | None) -> pl.Series:
    """One column of Python values as a typed Series; the declared type wins, inference otherwise."""
    if col.json or col.text or any(isinstance(v, dict | list) for v in values[:1000]):
        values = [_to_text(v, col.json or not col.text) for v in values]
    target = col.dtype or prior
    if isinstance(target, pl.Decimal):
        odd = next((v for v in values if isinstance(v, Decimal) and not v.is_finite()), None)
        if odd is not None:
            raise _not_a_decimal(col.name, str(odd))
    if col.via_text and target is not None:
        text_values = pl.Series(col.name, [None if v is None else str(v) for v in values], dtype=pl.String())
        return text_values.cast(target)
    if target is not None:
        try:
            return pl.Series(col.name, values, dtype=target, strict=True)
        except _UNFIT:
            log.debug("column %s: values do not fit %s; inferring", col.name, target)
    try:
        return pl.Series(col.name, values, strict=False)
    except _UNFIT:
        return pl.Series(col.name, [None if v is None else str(v) for v in values], dtype=pl.String())


# ------------------------------------------------------------------------------------------ errors
_TRANSIENT: tuple[type[BaseException], ...] = (sa_exc.OperationalError, sa_exc.InterfaceError)
try:  # raw psycopg errors reach us from the describe step, ADBC's from the fast path
    import adbc_driver_manager
    import psycopg

    _TRANSIENT += (
        psycopg.OperationalError,
        psycopg.InterfaceError,
        adbc_driver_manager.OperationalError,
        adbc_driver_manager.InterfaceError,
    )
except ImportError:  # pragma: no cover - both are dependencies
    psycopg = None  # type: ignore[assignment]


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, _TRANSIENT):
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and isinstance(cause, _TRANSIENT)


def _first(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return redact(lines[0][:200]) if lines else type(exc).__name__


# ------------------------------------------------------------------------------------------ reader
class SqlReader:
    """A ``Source`` over a SQL table or query (see the module docstring for how it reads)."""

    def __init__(
        self,
        name: str,
        spec: SqlSource,
        *,
        cursor: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.spec = spec
        self.resume(cursor)
        self._sleep = sleep
        self._engine: Engine | None = None
        self.used_fast_path: bool | None = None
        self.retried = 0

    # -- public ---------------------------------------------------------------------------------
    def resume(self, cursor: str | None) -> None:
        """Start after ``cursor``, the mark stored once the last run's last batch was committed."""
        self.cursor_before = cursor
        self._start = decode_mark(cursor)
        if self._start is None and self.spec.cursor and self.spec.initial_cursor is not None:
            self._start = Mark(_typed(self.spec.initial_cursor))
        if self._start is not None and self._start.key is not None and not self._keys:
            self._start = Mark(self._start.value)  # the key was removed from the spec since

    @property
    def display_url(self) -> str:
        return redact(self.spec.url)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = _engine(self.spec.url, self.spec.connect_timeout, f"headrace {self.name}")
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def read(self) -> Iterator[Batch]:
        """Batches of at most about ``chunk_size`` rows, each with the mark reached by its last row.

        In a full load ``Batch.cursor`` stays None (nothing to store), but with a key the position
        is still kept so that a retry resumes after the last batch handed out.
        """
        position = self._start if self.spec.cursor else None
        handed_out = 0
        failures = 0
        try:
            while True:
                try:
                    for frame, reached in self._chunks(position):
                        origin = f"{self._what()} rows {handed_out + 1}-{handed_out + frame.height}"
                        handed_out += frame.height
                        position = reached or position
                        failures = 0  # progress: the retry budget is per stall, not per run
                        stored = encode_mark(position) if self.spec.cursor and position else None
                        yield Batch(frame=frame, origin=origin, cursor=stored or self.cursor_before)
                    return
                except HeadraceError:
                    raise
                except Exception as exc:
                    if not _is_transient(exc):
                        raise self._terminal(exc) from exc
                    failures += 1
                    resumable = self._resumable or handed_out == 0
                    if not resumable or failures > self.spec.retries:
                        why = (
                            "a full load without a key cannot resume mid-way"
                            if not resumable
                            else f"gave up after {self.spec.retries} retries"
                        )
                        raise ServiceUnavailable(
                            f"source {self.name!r}: {self.display_url} failed mid-read "
                            f"({_first(exc)}); {why}",
                            hint="the batches already committed are kept; rerun 'headrace ingest' "
                            "once the database is reachable",
                        ) from exc
                    self.retried += 1
                    wait = min(30.0, self.spec.backoff * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
                    log.warning(
                        "source %s: %s (%s); retry %d/%d in %.1fs",
                        self.name,
                        self.display_url,
                        _first(exc),
                        failures,
                        self.spec.retries,
                        wait,
                    )
                    self._sleep(wait)
        finally:
            self.close()

    def _terminal(self, exc: BaseException) -> SourceError:
        return SourceError(
            f"source {self.name!r}: reading {self._what()} failed ({_first(exc)})",
            hint="check the url, table or query and the column names in headrace.yaml",
        )

    # -- statement ------------------------------------------------------------------------------
    @property
    def _keys(self) -> list[str]:
        """The unique columns that order rows sharing a cursor value (and make a full load resumable)."""
        return list(self.spec.cursor_key or self.spec.key)

    @property
    def _resumable(self) -> bool:
        return bool(self.spec.cursor or self._keys)

    def _what(self) -> str:
        return f"{self.display_url} {'table ' + self.spec.table if self.spec.table else 'query'}"

    def statement(self, mark: Mark | None) -> Select[Any]:
        spec = self.spec
        if mark is not None and self.engine.dialect.name == "sqlite":
            mark = Mark(_sqlite_value(mark.value), mark.key)
        cols: list[Any] = [column(c) for c in spec.select] if spec.select else [literal_column("*")]
        if spec.table is not None:
            schema, _, name = spec.table.rpartition(".")
            source: Any = table(name, schema=schema or None)
        else:
            assert spec.query is not None
            source = text(spec.query.strip().rstrip(";")).columns().subquery("hr_source")
        stmt = select(*cols).select_from(source)
        keys: list[ColumnElement[Any]] = [column(k) for k in self._keys]
        if spec.cursor:
            cur: ColumnElement[Any] = column(spec.cursor)
            stmt = stmt.where(cur.is_not(None))
            if mark is not None:
                stmt = stmt.where(self._after(cur, keys, mark))
            stmt = stmt.order_by(cur, *keys)
        elif keys:
            if mark is not None and mark.key is not None:
                stmt = stmt.where(tuple_(*keys) > tuple_(*_binds("hr_key", mark.key)))
            stmt = stmt.order_by(*keys)
        return stmt

    @staticmethod
    def _after(cur: ColumnElement[Any], keys: list[ColumnElement[Any]], mark: Mark) -> ColumnElement[Any]:
        value: Any = bindparam("hr_cursor", mark.value)
        if keys and mark.key is not None and len(mark.key) == len(keys):
            return tuple_(cur, *keys) > tuple_(value, *_binds("hr_key", mark.key))
        return cur > value

    # -- chunks ---------------------------------------------------------------------------------
    def _chunks(self, mark: Mark | None) -> Iterator[tuple[pl.DataFrame, Mark | None]]:
        """Frames of about chunk_size rows, each with the mark of its last row (cursor mode)."""
        frames = self._frames(mark)
        chunker = _Chunker(self.spec.chunk_size, self.spec.cursor, self._keys)
        for frame in frames:
            yield from chunker.push(frame)
        yield from chunker.finish()

    def _frames(self, mark: Mark | None) -> Iterator[pl.DataFrame]:
        stmt = self.statement(mark)
        dialect = self.engine.dialect.name
        if dialect == "postgresql" and self.spec.fast_path != "off":
            yield from self._frames_copy(stmt)
        else:
            self.used_fast_path = False
            yield from self._frames_fetch(stmt, dialect)

    def _frames_fetch(self, stmt: Select[Any], dialect: str) -> Iterator[pl.DataFrame]:
        chunk = self.spec.chunk_size
        with self.engine.connect() as conn:
            streaming = conn.execution_options(stream_results=True, max_row_buffer=min(chunk, 50_000))
            result = streaming.execute(stmt)
            try:
                description = result.cursor.description if result.cursor is not None else None
                columns = _describe(dialect, description or [])
                if not columns:
                    columns = [ColumnType(k, None) for k in list(result.keys())]
                prior: list[pl.DataType | None] = [None] * len(columns)
                for part in result.partitions(min(chunk, 50_000)):
                    values = list(zip(*part, strict=True)) if part else [() for _ in columns]
                    series = [_series(c, v, p) for c, v, p in zip(columns, values, prior, strict=True)]
                    prior = [s.dtype if s.dtype != pl.Null else p for s, p in zip(series, prior, strict=True)]
                    yield pl.DataFrame(series)
            finally:
                result.close()

    def _frames_copy(self, stmt: Select[Any]) -> Iterator[pl.DataFrame]:
        compiled = stmt.compile(dialect=self.engine.dialect)
        sql_text, params = str(compiled), dict(compiled.params)
        raw: Any = self.engine.raw_connection()
        try:
            conn: Any = raw.driver_connection
            with conn.cursor() as cur:
                # The result's column types, without reading a row.
                cur.execute(f"SELECT * FROM ({sql_text}) AS hr_describe LIMIT 0", params)
                columns = _describe("postgresql", cur.description or [])
            stmt = _numbers_as_text(stmt, columns, keep={*self._keys, self.spec.cursor})
            compiled = stmt.compile(dialect=self.engine.dialect)
            # ADBC reads with binary COPY, which takes no parameters: psycopg binds them client-side
            # with its own quoting (as its Cursor.copy does), never our formatting.
            literal = psycopg.ClientCursor(conn).mogrify(str(compiled), dict(compiled.params))
            conn.rollback()
        finally:
            raw.close()
        copyable = all(c.arrow is not None for c in columns)
        if not copyable and self.spec.fast_path == "copy":
            odd = [c.name for c in columns if c.arrow is None]
            raise ConfigError(
                f"source {self.name!r}: fast_path: copy cannot read columns {odd} faithfully",
                hint="set fast_path: auto (a server-side cursor reads them) or cast them in a query",
            )
        self.used_fast_path = copyable
        if not copyable:
            yield from self._frames_fetch(stmt, "postgresql")
            return
        conninfo = _libpq_conninfo(self.spec.url, f"headrace {self.name}", self.spec.connect_timeout)
        yield from _adbc_frames(conninfo, literal, columns)


def _typed(value: str | int | float) -> Any:
    """A hand-written initial cursor as the value it denotes: an ISO timestamp or date, or as is.

    (Bound as text, PostgreSQL would refuse to compare it with a timestamp column.)
    """
    if isinstance(value, str):
        for parse in (dt.datetime.fromisoformat, dt.date.fromisoformat):
            try:
                return parse(value)
            except ValueError:
                continue
    return value


def _sqlite_value(value: Any) -> Any:
    """SQLite keeps dates and times as ISO text: compare with text, not a Python datetime."""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _binds(prefix: str, values: Sequence[Any]) -> list[Any]:
    return [bindparam(f"{prefix}_{i}", v) for i, v in enumerate(values)]


# ------------------------------------------------------------------------------ the ADBC fast path
def _libpq_conninfo(url: str, application_name: str, connect_timeout: float) -> str:
    """The source URL as a libpq connection string, built from its parts (so a password with spaces
    or quotes is quoted by psycopg), with the options every headrace read sets."""
    from psycopg.conninfo import make_conninfo

    parts = make_url(url)
    given: dict[str, Any] = {k: v if isinstance(v, str) else v[-1] for k, v in parts.query.items()}
    named = {
        "host": parts.host,
        "port": parts.port,
        "user": parts.username,
        "password": parts.password,
        "dbname": parts.database,
    }
    given.update({k: v for k, v in named.items() if v is not None})
    try:
        return make_conninfo(
            "",
            **given,
            application_name=application_name[:63],  # shows in pg_stat_activity
            connect_timeout=max(1, int(connect_timeout)),
            options="-c TimeZone=UTC",
        )
    except psycopg.ProgrammingError:  # its message may quote the password: not shown
        raise ConfigError(
            f"SQL source URL {redact(url)} is not a usable PostgreSQL address",
            hint="use postgresql://USER:PASSWORD@HOST:PORT/DB with URL-escaped parts",
        ) from None


def _numbers_as_text(stmt: Select[Any], columns: list[ColumnType], keep: set[str | None]) -> Select[Any]:
    """The statement with its NUMERIC columns cast to text by the server.

    The driver would turn each NUMERIC's binary form into text itself, at several times the cost of the
    server's own output function (a third of the client's time on a table with one such column); the
    text is the same exact number either way, parsed into a decimal of the declared scale after. The
    cursor and key columns are kept as they are: the statement orders by them.
    """
    names = [c.name for c in columns]
    numbers = [isinstance(c.dtype, pl.Decimal) and c.name not in keep for c in columns]
    if not any(numbers) or len(set(names)) != len(names):
        return stmt
    exprs: list[Any] = [
        cast(column(c.name), Text).label(c.name) if number else column(c.name)
        for c, number in zip(columns, numbers, strict=True)
    ]
    as_text: Select[Any] = stmt.with_only_columns(*exprs)
    return as_text


def _uuid_text(name: str) -> pl.Expr:
    """16 raw bytes as the canonical 8-4-4-4-12 text PostgreSQL prints."""
    hexed = pl.col(name).bin.encode("hex")
    parts = [hexed.str.slice(a, n) for a, n in ((0, 8), (8, 4), (12, 4), (16, 4), (20, 12))]
    return pl.concat_str(parts, separator="-").alias(name)


# PostgreSQL's earliest timestamp and date (4713 BC); ADBC turns 'infinity' and '-infinity' into
# values far below these (its epoch shift overflows), which must not pass for real instants.
_PG_MIN_MICROS = -210_866_803_200_000_000
_PG_MIN_DAYS = -2_440_588
# ADBC writes NUMERIC's NaN and infinities as 'nan', 'inf', '-inf'; a number starts with a digit,
# a sign or a point
_NON_FINITE = r"(?i)^[+-]?(nan|inf)"


def _guards(schema: pl.Schema) -> list[pl.Expr]:
    """One expression per date or time column: true when it holds an infinity, which has no faithful
    place in its type. (A NaN NUMERIC is caught as its text fails to parse: see _refuse_number.)"""
    out = []
    for name, dtype in schema.items():
        if isinstance(dtype, pl.Datetime):
            out.append((pl.col(name).dt.epoch("us") < _PG_MIN_MICROS).any().alias(f"time\0{name}"))
        elif dtype == pl.Date:
            out.append((pl.col(name).cast(pl.Int32) < _PG_MIN_DAYS).any().alias(f"time\0{name}"))
    return out


def _refuse_unfaithful(frame: pl.DataFrame, guards: list[pl.Expr]) -> None:
    if not guards:
        return
    for key, hit in frame.select(guards).row(0, named=True).items():
        if hit is None or hit is False:
            continue
        name = key.split("\0", 1)[1]
        raise DataError(
            f"column {name!r} holds 'infinity' or '-infinity', which is not an instant",
            hint=f"map it in a query, e.g. NULLIF({name}, 'infinity'), or read it as text ({name}::text)",
        )


def _refuse_number(col: ColumnType, text: pl.Series, number: pl.Series) -> NoReturn:
    """A NUMERIC whose text did not parse into its decimal: NaN or an infinity is refused with the
    usual message, anything else with the strict cast's own error."""
    odd = str(text.filter(number.is_null() & text.is_not_null())[0])
    if re.match(_NON_FINITE, odd):
        raise _not_a_decimal(col.name, odd)
    assert col.dtype is not None
    text.cast(col.dtype)  # raises what does not fit
    raise DataError(f"column {col.name!r} holds {odd!r}, which is not a {col.dtype}")


def _adbc_database(conninfo: str) -> Any:
    """The driver's database handle, told to use its built-in type table.

    By default the driver opens a connection of its own to read the server's type catalog (50 ms of a
    read here); every column the fast path takes is a built-in type (see _PG_ARROW), so the built-in
    table knows them all. A driver before 1.13 does not know the option and reads the catalog.
    """
    import adbc_driver_postgresql

    try:
        return adbc_driver_postgresql.connect(
            conninfo, db_kwargs={"adbc.postgresql.type_resolver_mode": "builtin"}
        )
    except adbc_driver_manager.NotSupportedError:
        return adbc_driver_postgresql.connect(conninfo)


def _adbc_frames(conninfo: str, sql_text: str, columns: list[ColumnType]) -> Iterator[pl.DataFrame]:
    """Rows of ``sql_text`` as frames, read by ADBC's libpq driver (binary COPY straight into Arrow).

    Values the driver hands over in an extension type are taken from its storage and cast to the
    column type the result description declared: NUMERIC arrives as its exact text and becomes a
    decimal of the declared scale, JSON stays JSON text, a UUID's 16 bytes become its usual text.
    """
    from adbc_driver_manager._reader import AdbcRecordBatchReader

    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"the SQL result has duplicate column names {names}",
            hint="alias the columns in the query so every name is distinct",
        )
    # The driver manager's own API, not its DB-API module (which imports pandas: 0.3 s at start).
    with contextlib.ExitStack() as held:
        database = held.enter_context(_adbc_database(conninfo))
        connection = held.enter_context(adbc_driver_manager.AdbcConnection(database))
        statement = held.enter_context(adbc_driver_manager.AdbcStatement(connection))
        statement.set_sql_query(sql_text)
        handle, _ = statement.execute_query()
        # ADBC's own reader (what its DB-API uses) raises a failure mid-stream as the typed error
        # the server sent: OperationalError for a killed backend (retried), DataError for 1/0
        reader = held.enter_context(AdbcRecordBatchReader._import_from_c(handle.address))
        casts: list[pl.Expr] | None = None
        guards: list[pl.Expr] = []
        numbers: list[ColumnType] = []  # NUMERIC read as text: what does not parse shows as a new null
        for batch in reader:
            arrays = [a.storage if isinstance(a.type, pa.BaseExtensionType) else a for a in batch.columns]
            frame: pl.DataFrame = pl.from_arrow(  # type: ignore[assignment]
                pa.RecordBatch.from_arrays(arrays, names=names), rechunk=False
            )
            if casts is None:
                numbers = [
                    c
                    for c in columns
                    if isinstance(c.dtype, pl.Decimal) and frame.schema[c.name] == pl.String
                ]
                casts = [
                    _uuid_text(c.name)
                    if c.text and frame.schema[c.name] == pl.Binary()
                    else pl.col(c.name).cast(c.dtype, strict=c not in numbers)
                    for c in columns
                    if c.dtype is not None and frame.schema[c.name] != c.dtype
                ]
                guards = _guards(frame.schema)
            _refuse_unfaithful(frame, guards)
            typed = frame.with_columns(casts) if casts else frame
            for c in numbers:
                if typed[c.name].null_count() != frame[c.name].null_count():
                    _refuse_number(c, frame[c.name], typed[c.name])
            yield typed


# ----------------------------------------------------------------------------------------- chunker
class _Chunker:
    """Re-blocks frames into chunks of about ``size`` rows whose end is a safe mark.

    With a cursor and keys every row boundary is safe (the mark is the (cursor, key) pair). With a
    cursor and no key a chunk may only end where the cursor value changes, so the rows that share
    the last value are held back until a different value (or the end) arrives.
    """

    def __init__(self, size: int, cursor: str | None, keys: list[str]) -> None:
        self.size = size
        self.cursor = cursor
        self.keys = keys
        self.pending: list[pl.DataFrame] = []
        self.rows = 0

    def push(self, frame: pl.DataFrame) -> Iterator[tuple[pl.DataFrame, Mark | None]]:
        if frame.height == 0:
            return
        self.pending.append(frame)
        self.rows += frame.height
        while self.rows >= self.size:
            whole = pl.concat(self.pending, how="vertical_relaxed", rechunk=False)
            cut = self._cut(whole)
            if cut == 0:  # every pending row shares one cursor value: wait for more
                self.pending = [whole]
                return
            head, tail = whole.slice(0, cut), whole.slice(cut)
            self.pending = [tail] if tail.height else []
            self.rows = tail.height
            yield head, self._mark(head)

    def finish(self) -> Iterator[tuple[pl.DataFrame, Mark | None]]:
        if self.pending:
            whole = pl.concat(self.pending, how="vertical_relaxed", rechunk=False)
            self.pending, self.rows = [], 0
            yield whole, self._mark(whole)

    def _cut(self, whole: pl.DataFrame) -> int:
        cut = min(self.size, whole.height)
        if self.cursor is None or self.keys:
            return cut
        # Rows come ordered by the cursor, so the rows sharing the value at the cut are contiguous:
        # end the chunk after that run of rows when more follow, else before it, else wait.
        values = whole.get_column(self.cursor)
        same = (values == values[cut - 1]).arg_true()
        first, end = int(same.min()), int(same.max()) + 1
        if end < whole.height:
            return end
        return first

    def _mark(self, frame: pl.DataFrame) -> Mark | None:
        if frame.height == 0:
            return None
        if self.cursor is not None:
            value = frame.get_column(self.cursor)[-1]
            key = tuple(frame.get_column(k)[-1] for k in self.keys) if self.keys else None
            return Mark(value, key)
        if self.keys:
            return Mark(None, tuple(frame.get_column(k)[-1] for k in self.keys))
        return None


def open_sql_source(name: str, spec: SqlSource) -> SqlReader:
    """The runner's factory for ``kind: sql``."""
    return SqlReader(name, spec)
