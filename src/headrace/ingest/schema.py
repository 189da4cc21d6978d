"""Column types for what ``columns:`` does not type: inferred from the data, pinned per dataset.

A source whose ``columns:`` names no type for a column still gets a typed column: the first load infers
it from the data (the whole first chunk of the first batch: up to ``chunk_rows`` rows, the whole first
file of most sources), and the type is *pinned* in the metadata database (table ``dataset_schemas``),
so every later batch is converted to the same type. A later value that does not fit is quarantined
with a reason such as ``tenure: type int (inferred)``; nothing is turned into null or text quietly.
A type declared in ``columns:`` always wins over an inferred one.

What inference decides, for a text column (CSV, and text values of JSON, HTTP and stream payloads):
missing values (null tokens, blank text) are left out; then ``int`` when every value is a whole number
(not when one has a leading zero, ``"00501"``, nor when the column is named like an id, nor when one
overflows 64 bits: those are codes and stay text), ``bool`` for ``true``/``false``, ``float`` for
numbers, ``date`` and ``datetime`` for ISO (and a few common) layouts, and ``string`` otherwise, so a
column that mixes numbers and words stays text. Columns that arrive typed (JSON numbers, Parquet, SQL)
keep their type. A column with no value at all in the first load is pinned as ``string``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from sqlalchemy import delete, insert, select

from ..config.sources import ColumnRule, IngestSpec
from ..metadata import SCHEMA, Metadata, utcnow
from .base import POSITION_COLUMN

__all__ = [
    "DatasetSchema",
    "PinnedColumn",
    "SchemaTracker",
    "drop_schema",
    "infer_column",
    "infer_types",
    "load_schema",
    "save_schema",
    "source_fingerprint",
    "type_of_dtype",
]

log = logging.getLogger("headrace.ingest.schema")

_ID_WORDS = {"id", "ids", "uuid", "guid", "key", "code", "zip", "zipcode", "postcode", "phone", "sku", "ssn"}
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}")
_WHOLE = re.compile(r"^[+-]?\d+$")
_SAMPLE_ROWS = 20_000


@dataclass(frozen=True)
class PinnedColumn:
    """One column's pinned type: ``origin`` is ``inferred`` (from the data), ``declared`` (a type in
    ``columns:``) or ``table`` (read off a dataset loaded before types were pinned)."""

    type: str
    origin: str = "inferred"
    format: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": self.type, "origin": self.origin}
        if self.format is not None:
            doc["format"] = self.format
        return doc


@dataclass
class DatasetSchema:
    """A dataset's pinned column types and, per source, the fingerprint of the rules it was loaded with."""

    columns: dict[str, PinnedColumn] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": {c: p.to_dict() for c, p in self.columns.items()}, "sources": dict(self.sources)}


def id_like(name: str) -> bool:
    """Whether a column's name says it holds identifiers or codes (``customerID``, ``user_id``, ``zip``)."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).replace("_", " ").replace("-", " ").split()
    return bool(words) and words[-1].lower() in _ID_WORDS


def type_of_dtype(dtype: pl.DataType) -> str | None:
    """The headrace type of a column that arrived typed; None for text and for what has no such type
    (nested values, decimals, binary: they pass through as they are)."""
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return "datetime"
    return None


def _fits(dtype: pl.DataType, kind: str) -> bool:
    return (dtype == pl.String and kind == "string") or type_of_dtype(dtype) == kind


def infer_column(series: pl.Series, tokens: Collection[str] = ()) -> tuple[str | None, str | None]:
    """(type, date format or None) of a column, from all its values (see the module docstring); type
    None for a column of a kind headrace does not convert (nested values, zoned timestamps, decimals),
    which passes through as it is."""
    typed = type_of_dtype(series.dtype)
    if typed is not None:
        return typed, None
    if series.dtype == pl.Null:
        return "string", None
    if series.dtype != pl.String:
        return None, None
    # The first rows first: a value there that fits no type makes the column text whatever follows (the
    # common case, categories), so only columns that look typed (or empty) there are read whole.
    if series.len() > _SAMPLE_ROWS:
        found = _infer_text(series.head(_SAMPLE_ROWS), tokens)
        if found is not None and found[0] == "string":
            return found
    return _infer_text(series, tokens) or ("string", None)


def _infer_text(series: pl.Series, tokens: Collection[str]) -> tuple[str, str | None] | None:
    """What the values of a text column are; None when it holds no value at all."""
    text = series.str.strip_chars()
    text = text.filter(text.is_not_null() & (text != "") & ~text.is_in(list(tokens)))
    if text.is_empty():
        return None
    name = series.name
    whole = text.str.contains(_WHOLE.pattern)
    if whole.all():
        if id_like(name) or text.str.contains(r"^[+-]?0\d").any():
            return "string", None
        if text.cast(pl.Int64, strict=False).null_count():
            return "string", None  # past 64 bits: an identifier, kept exactly
        return "int", None
    if text.str.to_lowercase().is_in(["true", "false"]).all():
        return "bool", None
    floats = text.cast(pl.Float64, strict=False)
    if floats.null_count() == 0 and not text.str.contains(r"^[+-]?0\d").any():
        if text.str.contains(r"^[+-]?(inf|infinity|nan)$", literal=False).any():
            return "string", None  # words that happen to parse as floats, not measured numbers
        return "float", None
    if text.str.contains(r"^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}$").all():
        for fmt in _DATE_FORMATS:
            if text.str.to_date(fmt, strict=False).null_count() == 0:
                return "date", fmt
    if text.str.contains(r"^\d{1,2}[- ][A-Za-z]{3}[- ]\d{4}$").all():  # 01-Jan-1995
        for fmt in ("%d-%b-%Y", "%d %b %Y"):
            if text.str.to_date(fmt, strict=False).null_count() == 0:
                return "date", fmt
    if text.str.contains(_DATETIME.pattern).all():
        try:
            parsed = text.str.to_datetime(strict=False, time_unit="us")
        except pl.exceptions.PolarsError:
            return "string", None
        zoned = isinstance(parsed.dtype, pl.Datetime) and parsed.dtype.time_zone is not None
        if parsed.null_count() == 0 and not zoned:
            return "datetime", None
    return "string", None


def infer_types(
    frame: pl.DataFrame, columns: Sequence[str], tokens: Mapping[str, Collection[str]] | None = None
) -> dict[str, PinnedColumn]:
    """The inferred type of each of ``columns`` in ``frame`` (``tokens``: null tokens per column)."""
    out: dict[str, PinnedColumn] = {}
    for c in columns:
        kind, fmt = infer_column(frame.get_column(c), (tokens or {}).get(c, ()))
        if kind is not None:
            out[c] = PinnedColumn(kind, "inferred", fmt)
    return out


def source_fingerprint(spec: IngestSpec) -> str:
    """A hash of what decides how a source's rows are typed and checked (rules, tokens, cleansing): it
    changes when the spec does, so a change made after a load is noticed."""
    doc = spec.model_dump(
        mode="json",
        include={"columns", "null_tokens", "cleanse", "row_rules", "key", "schema_drift"},
    )
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


# -- stored in the metadata database ---------------------------------------------------------------
def load_schema(meta: Metadata, dataset: str) -> DatasetSchema | None:
    table = SCHEMA.tables["dataset_schemas"]
    with meta.begin() as conn:
        row = conn.execute(select(table.c.columns, table.c.sources).where(table.c.dataset == dataset)).first()
    if row is None:
        return None
    columns = {
        c: PinnedColumn(str(d["type"]), str(d.get("origin", "inferred")), d.get("format"))
        for c, d in (row[0] or {}).items()
    }
    return DatasetSchema(columns, dict(row[1] or {}))


def save_schema(meta: Metadata, dataset: str, schema: DatasetSchema) -> None:
    table = SCHEMA.tables["dataset_schemas"]
    doc = schema.to_dict()
    with meta.begin() as conn:
        conn.execute(delete(table).where(table.c.dataset == dataset))
        conn.execute(
            insert(table).values(
                dataset=dataset, columns=doc["columns"], sources=doc["sources"], updated_at=utcnow()
            )
        )


def drop_schema(meta: Metadata, dataset: str) -> None:
    table = SCHEMA.tables["dataset_schemas"]
    with meta.begin() as conn:
        conn.execute(delete(table).where(table.c.dataset == dataset))


def _from_table(store: Any, dataset: str) -> DatasetSchema:
    """The types of a dataset loaded before types were pinned, read off its table."""
    if not store.exists(dataset):
        return DatasetSchema()
    schema = store.scan(dataset).collect_schema()
    columns = {}
    for c, dtype in schema.items():
        kind = "string" if dtype == pl.String else type_of_dtype(dtype)
        if kind is not None:
            columns[c] = PinnedColumn(kind, "table")
    return DatasetSchema(columns)


class SchemaTracker:
    """The pinned schema of one source's dataset during a run: ``prepare`` gives the spec a chunk is
    checked with (declared types, then pinned ones, then types inferred for columns seen for the first
    time); ``commit`` stores what was pinned, once the batch it came from is committed."""

    def __init__(self, spec: IngestSpec, meta: Metadata | None, store: Any, source_name: str) -> None:
        self.spec = spec
        self.meta = meta
        self.source_name = source_name
        stored = load_schema(meta, spec.dataset) if meta is not None else None
        self.stored = stored is not None
        self.schema = stored if stored is not None else _from_table(store, spec.dataset)
        self.dirty = not self.stored and bool(self.schema.columns)
        self.fingerprint = source_fingerprint(spec)

    def changed(self) -> str | None:
        """Why the data already loaded may not match the current spec (None when it does): the rules
        changed since this source last loaded, or a declared type differs from the pinned one."""
        conflicts = [
            f"{c} is declared {rule.type} but the dataset holds {self.schema.columns[c].type}"
            for c, rule in self.spec.columns.items()
            if rule.type is not None and c in self.schema.columns and self.schema.columns[c].type != rule.type
        ]
        before = self.schema.sources.get(self.source_name)
        if not conflicts and (before is None or before == self.fingerprint):
            return None
        why = "; ".join(conflicts[:3]) or "its rules changed since its data was loaded"
        return (
            f"source {self.source_name!r}: {why}; what is already in {self.spec.dataset!r} was checked "
            f"with the old rules and is not checked again: run 'headrace ingest --reload "
            f"{self.source_name}' to rebuild it with the current ones"
        )

    def tokens(self, column: str) -> list[str]:
        rule = self.spec.columns.get(column)
        if rule is not None and rule.null_tokens is not None:
            return list(rule.null_tokens)
        return list(self.spec.null_tokens)

    def prepare(
        self, frame: pl.DataFrame, known_columns: Collection[str] = ()
    ) -> tuple[IngestSpec, set[str]]:
        """The spec to check ``frame`` with, and the columns whose type is inferred (for reasons)."""
        declared = self.spec.columns
        pinned = self.schema.columns
        add = self.spec.schema_drift == "add"
        fresh = [
            c
            for c in frame.columns
            if c != POSITION_COLUMN
            and c not in pinned
            and (declared[c].type is None if c in declared else add or c in known_columns)
        ]
        if fresh:
            found = infer_types(frame, fresh, {c: self.tokens(c) for c in fresh})
            pinned.update(found)
            self.dirty = True
            log.info(
                "dataset %s: inferred %s",
                self.spec.dataset,
                ", ".join(f"{c} {p.type}" for c, p in found.items()),
            )
        for c, rule in declared.items():
            if rule.type is not None and c in frame.columns:
                want = PinnedColumn(rule.type, "declared", rule.format)
                if pinned.get(c) != want:
                    pinned[c] = want
                    self.dirty = True
        if self.source_name not in self.schema.sources:  # the rules its data was first loaded with
            self.schema.sources[self.source_name] = self.fingerprint
            self.dirty = True
        columns: dict[str, ColumnRule] = {}
        inferred: set[str] = set()
        for c in frame.columns:
            p = pinned.get(c)
            own = declared.get(c)
            if p is None or (own is not None and own.type is not None):
                continue
            if own is None and _fits(frame.schema[c], p.type):
                continue  # already of the pinned type (an Int32 from SQL stays Int32)
            base = own if own is not None else ColumnRule()
            columns[c] = base.model_copy(update={"type": p.type, "format": base.format or p.format})
            inferred.add(c)
        if not columns:
            return self.spec, inferred
        merged = {**declared, **columns}
        return self.spec.model_copy(update={"columns": merged}), inferred

    def commit(self) -> None:
        """Store the pinned schema (after the batch that pinned it was committed)."""
        if self.dirty and self.meta is not None:
            save_schema(self.meta, self.spec.dataset, self.schema)
            self.dirty = False
            self.stored = True
