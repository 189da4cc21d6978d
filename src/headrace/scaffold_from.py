"""``headrace init DIR --from PATH...``: a headrace.yaml that ingests the user's own files as they stand.

Each PATH (a file, a folder or a glob; CSV, JSON, JSONL or Parquet, gzip-compressed or not) becomes one
source, read here by the same reader ``headrace ingest`` uses (:class:`~headrace.ingest.files.FileReader`),
so the profile sees exactly the rows ingest will see: every file, up to :data:`PROFILE_ROWS` rows per
source. From that profile each column gets:

* ``type``: the type ingest would infer (:func:`~headrace.ingest.schema.infer_column`), written out so it
  is visible and editable;
* ``required: true`` where no value is missing (blank text and the null tokens count as missing, as they
  do with the ``trim_strings`` and ``null_tokens`` cleansing the source is given);
* ``unique: true`` for key columns: every value present and distinct, and the column named like an id
  (:func:`~headrace.ingest.schema.id_like`) or a text column of codes;
* ``allowed`` for text columns of at most :data:`FEW_VALUES` values, each seen at least twice;
* the range (numbers, dates) and the count of missing values as comments, not as rules.

The model block at the end is commented out: its target and task are guesses (a column named like a
target, else the last one), and a model cannot be declared without them. Its ``features.drop`` lists the
id-like columns: named like ids, unique per row (text), or a row counter (consecutive integers).

Past :data:`PROFILE_ROWS` rows, no ``required``, ``unique`` or ``allowed`` is written (the rest of the
data is unseen); types still are.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import yaml

from .config import PROJECT_FILE, load_project, parse_project
from .config.sources import DEFAULT_NULL_TOKENS, FileSource
from .errors import ConfigError, DataError, HeadraceError, UsageError
from .ingest.base import POSITION_COLUMN
from .ingest.files import FileReader, detect_format, expand_paths
from .ingest.schema import id_like, infer_column
from .scaffold import _project_name

__all__ = [
    "FEW_VALUES",
    "PROFILE_ROWS",
    "SCHEMA_URL",
    "ColumnProfile",
    "Scaffold",
    "SourceProfile",
    "read_summary",
    "scaffold_from",
    "scaffold_project_from",
]

SCHEMA_URL = "https://headrace.dev/schema/headrace.json"
PROFILE_ROWS = 1_000_000
"""Rows read per source to profile it; past them, only types are written."""
FEW_VALUES = 12
"""A text column of at most this many distinct values (each seen twice or more) gets ``allowed``."""

_TOKENS = list(DEFAULT_NULL_TOKENS)
_DELIMITERS = (",", ";", "\t", "|")
_SNIFF_BYTES = 1 << 20  # the sample the delimiter and header are read from
_ENCODING_BYTES = 64 << 20  # the bytes checked for the encoding
_JSON_WHOLE_BYTES = 256 << 20  # a JSON document this small is parsed whole to find its records
# names (lower case, letters and digits only) that suggest the column to predict
_TARGET_NAMES = frozenset(
    {"target", "label", "labels", "class", "y", "churn", "churned", "outcome", "survived", "default"}
    | {"fraud", "isfraud", "response", "price", "saleprice", "medianhousevalue"}
)
_KNOWN_SUFFIXES = {".csv", ".tsv", ".txt", ".json", ".jsonl", ".ndjson", ".parquet", ".pq"}
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_ENV_REF = re.compile(r"\$\{")
_COMMENT_AT = 62


@dataclass
class ColumnProfile:
    """What the data says about one column, and the rules decided from it."""

    name: str
    type: str | None  # None: a kind headrace passes through as it is (nested values, decimals)
    dtype: str = ""
    format: str | None = None
    missing: int = 0
    distinct: int | None = None  # distinct values present (None: not countable)
    counts: list[tuple[str, int]] | None = None  # text columns of few values: (value, rows)
    low: Any = None
    high: Any = None
    consecutive: bool = False  # whole numbers, each once, from min to max: a row counter
    code_like: bool = False  # text without spaces, at most 64 characters
    required: bool = False
    unique: bool = False
    allowed: list[str] | None = None
    drop: bool = False


@dataclass
class SourceProfile:
    """One ``--from`` PATH: the files it names, how they are read, and their columns."""

    name: str
    given: str
    pattern: str  # absolute
    files: list[Path]
    format: str  # the format the files are read as
    write_format: bool = False  # the extension does not say it: ``format:`` is written
    csv: dict[str, Any] = field(default_factory=dict)  # CSV options that differ from the defaults
    json_records: str | None = None
    rows: int = 0
    failures: int = 0  # records the reader cannot parse (ingest quarantines them)
    truncated: bool = False
    columns: list[ColumnProfile] = field(default_factory=list)

    def type_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.columns:
            key = c.type or "as is"
            out[key] = out.get(key, 0) + 1
        return out


@dataclass
class Scaffold:
    """What ``scaffold_project_from`` wrote."""

    path: Path
    sources: list[SourceProfile]
    model: dict[str, Any] | None


def scaffold_from(paths: list[str], folder: Path, *, name: str | None = None, force: bool = False) -> Path:
    """Write ``folder/headrace.yaml`` for the files ``paths`` name; returns its path."""
    return scaffold_project_from(paths, folder, name=name, force=force).path


def scaffold_project_from(
    paths: list[str], folder: Path, *, name: str | None = None, force: bool = False, cwd: Path | None = None
) -> Scaffold:
    """Profile the files ``paths`` name (relative ones from ``cwd``, default the current folder) and
    write a headrace.yaml in ``folder`` that ingests them as they stand. The data is not copied."""
    if not paths:
        raise UsageError("--from needs at least one file, folder or glob")
    folder = folder.absolute()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file, not a folder", hint="name the project folder before --from")
    target = folder / PROJECT_FILE
    if target.exists() and not force:
        raise UsageError(f"{target} already exists", hint="pass --force to overwrite it")
    base = (cwd or Path.cwd()).absolute()
    used: set[str] = set()
    profiles = []
    for given in paths:
        pattern = os.path.normpath(str(base / os.path.expanduser(given)))
        source = _source_name(pattern, used)
        used.add(source)
        profiles.append(_profile(given, pattern, source))
    model = _suggest_model(profiles[0])
    project_name = name or _project_name(folder.name)
    text = _render(project_name, folder, profiles, model)
    try:
        parse_project(yaml.safe_load(text), root=folder, origin=PROJECT_FILE)
    except (ConfigError, yaml.YAMLError) as exc:  # a bug here, not in the user's data
        raise ConfigError(f"the scaffold is not a valid project ({exc})", hint="report it") from None
    folder.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    load_project(target)
    return Scaffold(target, profiles, model)


# -- names and paths ----------------------------------------------------------------------------------
def _source_name(pattern: str, used: set[str]) -> str:
    path = Path(pattern)
    if path.is_dir():
        stem = path.name
    else:
        stem = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
        suffix = Path(stem).suffix
        if suffix.lower() in _KNOWN_SUFFIXES:
            stem = stem[: -len(suffix)]
    cleaned = re.sub(r"[^A-Za-z0-9_\-]+", "_", stem).strip("_-")
    if not cleaned:  # a glob such as data/*.csv: its folder's name
        parent = re.sub(r"[^A-Za-z0-9_\-]+", "_", path.parent.name).strip("_-")
        cleaned = parent or "data"
    if not cleaned[0].isalpha():
        cleaned = f"data_{cleaned}"
    if cleaned.endswith("__quarantine"):
        cleaned = cleaned[: -len("__quarantine")] or "data"
    out, k = cleaned, 2
    while out in used:
        out = f"{cleaned}_{k}"
        k += 1
    return out


def _path_text(pattern: str, folder: Path) -> str:
    """The path as written in headrace.yaml: relative to the project folder when it is nearby (at most
    two levels up), absolute otherwise (the project can then move without breaking it)."""
    try:
        rel = os.path.relpath(pattern, folder)
    except ValueError:  # another drive
        return pattern
    ups = 0
    for part in Path(rel).parts:
        if part != "..":
            break
        ups += 1
    return rel if ups <= 2 else pattern


# -- reading ------------------------------------------------------------------------------------------
def _profile(given: str, pattern: str, name: str) -> SourceProfile:
    files = expand_paths(pattern)
    if not files:
        raise UsageError(
            f"--from {given}: no file matches", hint="check the path (globs like data/*.csv work)"
        )
    found = [detect_format(p, None) for p in files]
    known = sorted({fmt for fmt, _ in found if fmt})
    if len(known) > 1:
        raise UsageError(
            f"--from {given}: files of several formats ({', '.join(known)})",
            hint="give each format its own --from (a glob such as data/*.csv)",
        )
    unknown = [p.name for p, (f, _) in zip(files, found, strict=True) if f is None]
    if known and unknown:  # a folder with a README beside its data: not CSV
        raise UsageError(
            f"--from {given}: {', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''} beside "
            f"{known[0]} files",
            hint=f"name the data files alone (a glob such as {given.rstrip('/')}/*.{known[0]})",
        )
    fmt = known[0] if known else "csv"
    profile = SourceProfile(name, given, pattern, files, fmt, write_format=bool(unknown))
    first, gz = files[0], found[0][1]
    try:
        if fmt == "csv":
            profile.csv = _sniff_csv(first, gz)
        elif fmt == "json":
            profile.json_records = _json_records_path(first, gz)
    except OSError as exc:
        raise DataError(f"{first}: cannot be read ({exc.strerror or exc})") from None
    spec = FileSource.model_validate(
        {
            "kind": "file",
            "path": pattern,
            "dataset": name,
            "format": fmt,
            "csv": profile.csv,
            "json": {"records": profile.json_records},
        }
    )
    frame = _read_all(profile, spec)
    profile.columns = _columns(frame, profile.truncated)
    return profile


def _read_all(profile: SourceProfile, spec: FileSource) -> pl.DataFrame:
    """Every row of every file (up to PROFILE_ROWS), as the ingest reader gives them, in one frame."""
    frames: list[pl.DataFrame] = []
    rows = 0
    for batch in FileReader(profile.name, spec).read():
        if batch.error:
            raise DataError(f"{batch.origin}: {batch.error}", hint="fix the file, or leave it out of --from")
        chunks: Iterator[pl.DataFrame] = itertools.chain([batch.frame], batch.chunks or iter(()))
        try:
            for frame in chunks:
                frames.append(frame.drop(POSITION_COLUMN, strict=False))
                rows += frame.height
                if rows >= PROFILE_ROWS:
                    profile.truncated = True
                    break
        except HeadraceError as exc:
            raise DataError(f"{batch.origin}: {exc.message}", hint=exc.hint) from None
        finally:
            if batch.chunks is not None and hasattr(batch.chunks, "close"):
                batch.chunks.close()
        profile.failures += len(batch.failures)
        if profile.truncated:
            break
    frames = [f for f in frames if f.width]
    if not frames:
        profile.rows = 0
        return pl.DataFrame()
    frame = _concat(frames)
    if frame.width and frame.height:
        frame = frame.filter(~pl.all_horizontal(pl.all().is_null()))  # blank lines: ingest drops them
    profile.rows = frame.height
    return frame


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    if len(frames) == 1:
        return frames[0]
    try:
        return pl.concat(frames, how="diagonal_relaxed")
    except (pl.exceptions.PolarsError, TypeError, ValueError):
        # no common type (a list in one file, text in another): those columns as text
        kinds: dict[str, set[pl.DataType]] = {}
        for f in frames:
            for c, t in f.schema.items():
                kinds.setdefault(c, set()).add(t)
        mixed = [c for c, ts in kinds.items() if len(ts) > 1]
        fixed = [f.with_columns([_as_text(f.get_column(c)) for c in mixed if c in f.columns]) for f in frames]
        return pl.concat(fixed, how="diagonal_relaxed")


def _as_text(series: pl.Series) -> pl.Series:
    if series.dtype == pl.String:
        return series
    if series.dtype.is_nested() or isinstance(series.dtype, pl.Struct):
        values = [None if v is None else orjson.dumps(v, default=str).decode() for v in series.to_list()]
        return pl.Series(series.name, values, dtype=pl.String)
    return series.cast(pl.String, strict=False)


def _head(path: Path, gz: bool, size: int) -> bytes:
    with path.open("rb") as raw:
        if gz:
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return f.read(size)
        return raw.read(size)


# -- CSV dialect --------------------------------------------------------------------------------------
def _sniff_csv(path: Path, gz: bool) -> dict[str, Any]:
    """The CSV options (only those not at their default) the file needs: encoding, delimiter, header."""
    raw = _head(path, gz, _ENCODING_BYTES)
    whole = len(raw) < _ENCODING_BYTES
    encoding = _encoding(raw, final=whole)
    sample = raw[:_SNIFF_BYTES].decode(encoding, errors="replace").lstrip("\ufeff")
    if len(raw) > _SNIFF_BYTES or not whole:
        cut = sample.rfind("\n")
        sample = sample[: cut + 1] if cut > 0 else sample
    delimiter = _delimiter(sample)
    options: dict[str, Any] = {}
    if encoding != "utf-8":
        options["encoding"] = encoding
    if delimiter != ",":
        options["delimiter"] = delimiter
    if not _has_header(sample, delimiter):
        options["header"] = False
    return options


def _encoding(raw: bytes, *, final: bool) -> str:
    for encoding in ("utf-8", "cp1252"):
        try:
            codecs.getincrementaldecoder(encoding)().decode(raw, final=final)
            return encoding
        except UnicodeDecodeError:
            continue
    return "latin-1"


def _records(sample: str, delimiter: str, limit: int = 200) -> list[list[str]]:
    reader = csv.reader(io.StringIO(sample), delimiter=delimiter, quotechar='"')
    out: list[list[str]] = []
    try:
        for record in reader:
            if record:
                out.append(record)
            if len(out) >= limit:
                break
    except csv.Error:
        pass
    return out


def _delimiter(sample: str) -> str:
    """The candidate that splits the first records into the same number (above one) of fields, the
    most fields winning; a comma when none does."""
    best, best_fields = ",", 1
    for delimiter in _DELIMITERS:
        records = _records(sample, delimiter)
        if not records:
            continue
        widths = [len(r) for r in records]
        width = widths[0]
        agree = sum(w == width for w in widths) / len(widths)
        if width > best_fields and agree >= 0.9:
            best, best_fields = delimiter, width
    return best


def _is_number(text: str) -> bool:
    value = text.strip()
    if not value or value.lower().lstrip("+-") in ("nan", "inf", "infinity"):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _has_header(sample: str, delimiter: str) -> bool:
    """Whether the first record names the columns. It does unless it looks like data: a number where
    the column holds numbers, and no word in a column of numbers (which only a header puts there)."""
    records = _records(sample, delimiter)
    if len(records) < 2:
        return True
    first, rest = records[0], [r for r in records[1:] if len(r) == len(records[0])]
    if not rest:
        return True
    numbers_first = False
    for j, value in enumerate(first):
        column = [r[j] for r in rest if r[j].strip() and r[j].strip() not in _TOKENS]
        numeric = bool(column) and all(_is_number(v) for v in column)
        if numeric and value.strip() and not _is_number(value) and value.strip() not in _TOKENS:
            return True  # a word atop a column of numbers
        if numeric and _is_number(value):
            numbers_first = True
    return not numbers_first


# -- JSON records -------------------------------------------------------------------------------------
def _json_records_path(path: Path, gz: bool) -> str | None:
    """For a JSON document that is an object, the dotted path to its (first) list of records."""
    head = _head(path, gz, 4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"{"):
        return None
    if path.stat().st_size > _JSON_WHOLE_BYTES:
        raise DataError(
            f"{path}: a JSON object, too large to look for its records",
            hint="write the source by hand with json.records, the dotted path of the list of records",
        )
    try:
        doc = orjson.loads(_head(path, gz, _JSON_WHOLE_BYTES * 4))
    except orjson.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})", hint="fix or re-export the file") from None
    found = _find_records(doc, "", 0)
    if found is None:
        raise DataError(
            f"{path}: a JSON object with no list of records in it",
            hint="headrace reads a list of objects (or JSON lines)",
        )
    return found


def _find_records(doc: Any, where: str, depth: int) -> str | None:
    if not isinstance(doc, dict) or depth > 4:
        return None
    for key, value in doc.items():
        if "." in str(key):
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value[:100]):
            return f"{where}{key}"
    for key, value in doc.items():
        if "." not in str(key):
            inner = _find_records(value, f"{where}{key}.", depth + 1)
            if inner is not None:
                return inner
    return None


# -- columns ------------------------------------------------------------------------------------------
def _columns(frame: pl.DataFrame, truncated: bool) -> list[ColumnProfile]:
    rows = frame.height
    out = []
    for c in frame.columns:
        col = _column(frame.get_column(c), rows)
        _decide(col, rows)
        if truncated:  # the rows not read may break them
            col.required, col.unique, col.allowed = False, False, None
        out.append(col)
    return out


def _cleansed(series: pl.Series) -> pl.Series:
    """The values as ingest sees them after ``trim_strings`` and ``null_tokens`` (text trimmed, blank
    text and null tokens missing)."""
    if series.dtype != pl.String:
        return series
    text = series.str.strip_chars()
    return pl.select(pl.when(text.is_in(_TOKENS)).then(None).otherwise(text).alias(series.name)).to_series()


def _typed(clean: pl.Series, kind: str, fmt: str | None) -> pl.Series:
    if clean.dtype != pl.String:
        return clean
    if kind == "int":
        whole = clean.cast(pl.Int64, strict=False)
        return whole if whole.null_count() == clean.null_count() else clean.cast(pl.Float64, strict=False)
    if kind == "float":
        return clean.cast(pl.Float64, strict=False)
    if kind == "date":
        return clean.str.to_date(fmt, strict=False)
    if kind == "datetime":
        return clean.str.to_datetime(strict=False, time_unit="us")
    return clean


def _column(series: pl.Series, rows: int) -> ColumnProfile:
    kind, fmt = infer_column(series, _TOKENS)
    col = ColumnProfile(series.name, kind, dtype=str(series.dtype), format=fmt)
    if kind is None:
        col.missing = series.null_count()
        return col
    clean = _cleansed(series)
    col.missing = clean.null_count()
    present = clean.drop_nulls()
    try:
        col.distinct = present.n_unique()
    except pl.exceptions.PolarsError:
        col.distinct = None
    if kind in ("int", "float", "date", "datetime") and present.len():
        try:
            values = _typed(present, kind, fmt)
            if values.dtype.is_float():
                values = values.filter(values.is_finite())
            if values.len():
                col.low, col.high = values.min(), values.max()
        except pl.exceptions.PolarsError:
            pass
        if kind == "int" and col.distinct == rows and rows >= 3 and col.low is not None:
            col.consecutive = int(col.high) - int(col.low) + 1 == rows
    if kind == "string" and present.dtype == pl.String and present.len():
        if col.distinct is not None and col.distinct <= FEW_VALUES:
            counts = present.alias("value").value_counts(sort=True)
            col.counts = [(str(v), int(n)) for v, n in counts.iter_rows()]
        longest = present.str.len_chars().max()
        col.code_like = isinstance(longest, int) and longest <= 64 and not present.str.contains(r"\s").any()
    return col


def _decide(col: ColumnProfile, rows: int) -> None:
    if col.type is None or rows == 0:
        return
    col.required = col.missing == 0
    every_distinct = col.required and col.distinct == rows and rows >= 2
    named_id = id_like(col.name)
    col.unique = every_distinct and (named_id or (col.type == "string" and col.code_like and rows >= 20))
    if col.type == "string" and col.counts and all(n >= 2 for _, n in col.counts):
        values = sorted(v for v, _ in col.counts)
        if not any(_ENV_REF.search(v) for v in values):
            col.allowed = values
    present = rows - col.missing
    text_per_row = (
        col.type == "string" and col.distinct is not None and present >= 2 and col.distinct == present
    )
    col.drop = (named_id and col.allowed is None) or col.unique or text_per_row or col.consecutive


# -- the model ----------------------------------------------------------------------------------------
def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _suggest_model(profile: SourceProfile) -> dict[str, Any] | None:
    """A model for the first source: a guessed target (named like one, else the last usable column)
    and the task its values suggest."""
    usable = [
        c
        for c in profile.columns
        if c.type in ("string", "int", "float", "bool") and not c.drop and c.missing < profile.rows
    ]
    if not usable:
        return None
    named = [
        c for c in usable if _norm(c.name) in _TARGET_NAMES or _norm(c.name).endswith(("target", "label"))
    ]
    target = named[-1] if named else usable[-1]
    why = "named like a target" if named else "the last column"
    values = target.distinct or 0
    if target.type in ("string", "bool") or (target.type == "int" and values <= 10):
        task = "classification"
        how = f"{values} values"
        metric = "roc_auc" if values <= 2 else "balanced_accuracy"
        validation = {"strategy": "stratified_kfold", "folds": 5, "metric": metric}
        candidates = [
            "{estimator: logistic_regression, params: {C: [0.1, 1.0]}}",
            "{estimator: hist_gradient_boosting}",
        ]
    else:
        task = "regression"
        how = f"{target.type} values"
        validation = {"strategy": "kfold", "folds": 5, "metric": "rmse"}
        candidates = [
            "{estimator: ridge, params: {alpha: [1.0, 10.0]}}",
            "{estimator: hist_gradient_boosting}",
        ]
    drop = [c.name for c in profile.columns if c.drop and c.name != target.name]
    return {
        "name": profile.name,
        "dataset": profile.name,
        "target": target.name,
        "task": task,
        "why": f"{why}; {how}",
        "drop": drop,
        "candidates": candidates,
        "validation": validation,
    }


# -- YAML text ----------------------------------------------------------------------------------------
def _quoted(value: str) -> str:
    """``value`` as a double-quoted YAML scalar (every character escaped as YAML needs)."""
    text = yaml.safe_dump(value, default_style='"', allow_unicode=True, width=math.inf)
    return str(text).rstrip("\n")


def _scalar(value: str) -> str:
    """``value`` plain where YAML reads it back as this very text, in a block and in a flow; quoted
    otherwise (spaces, punctuation, ``Yes``, ``null``, ``1e3``...)."""
    if _PLAIN.match(value):
        try:
            if yaml.safe_load(f"[{value}]") == [value]:
                return value
        except yaml.YAMLError:
            pass
    return _quoted(value)


def _key(value: str) -> str:
    text = _scalar(value)
    return f"? {text}\n      :" if len(text) > 1000 else f"{text}:"  # YAML's simple keys stop at 1024


def _number(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def _line(text: str, comment: str | None) -> str:
    if not comment:
        return text
    return f"{text.ljust(_COMMENT_AT)}  # {comment}" if len(text) < _COMMENT_AT else f"{text}  # {comment}"


def _column_line(col: ColumnProfile, rows: int) -> str:
    parts: list[str] = []
    notes: list[str] = []
    if col.type is not None:
        parts.append(f"type: {col.type}")
    else:
        notes.append(f"{col.dtype}: kept as it arrives")
    if col.format:
        parts.append(f"format: {_quoted(col.format)}")
    if col.required:
        parts.append("required: true")
    if col.unique:
        parts.append("unique: true")
    if col.allowed is not None:
        parts.append("allowed: [" + ", ".join(_quoted(v) for v in col.allowed) + "]")
    if col.low is not None:
        notes.append(f"range {_number(col.low)} .. {_number(col.high)}")
    if col.type is not None and rows:
        if col.missing == rows:
            notes.append("no value in the data")
        elif col.missing:
            share = 100 * col.missing / rows
            note = f"{col.missing} missing ({share:.2g}%)"
            if col.type in ("int", "float"):
                note += "; impute: median would fill them"
            notes.append(note)
    if col.unique or (col.distinct is not None and col.distinct > FEW_VALUES and col.type == "string"):
        notes.append(f"{col.distinct} distinct")
    return _line(f"      {_key(col.name)} {{{', '.join(parts)}}}", "; ".join(notes) or None)


def _render(name: str, folder: Path, profiles: list[SourceProfile], model: dict[str, Any] | None) -> str:
    out = [
        f"# yaml-language-server: $schema={SCHEMA_URL}",
        "# (that JSON Schema is what 'headrace schema > headrace.schema.json' prints: point $schema at",
        "# the file to check this one offline)",
        "#",
        "# Scaffolded by 'headrace init --from' from the files below, read as 'headrace ingest' reads them:",
        "# each column's type, 'required' where no value is missing, 'allowed' for text of few values,",
        "# 'unique' for key columns. Ranges are comments, not rules. Check them, then: headrace ingest",
        f"project: {name}",
        "store: .headrace/lake                          # Delta Lake tables (or s3://bucket/prefix)",
        "metadata: sqlite:///.headrace/headrace.db      # or postgresql://user@host/db",
        "artifacts: .headrace/artifacts",
        "",
        "sources:",
    ]
    for p in profiles:
        files = f"{len(p.files)} file{'s' if len(p.files) != 1 else ''}"
        seen = f"the first {p.rows:,} rows profiled" if p.truncated else f"{p.rows:,} rows"
        out.append(f"  {p.name}:")
        out.append("    kind: file")
        out.append(_line(f"    path: {_quoted(_path_text(p.pattern, folder))}", f"{files}, {seen}"))
        if p.write_format:
            out.append(f"    format: {p.format}")
        if p.csv:
            opts = ", ".join(
                f"{k}: {_quoted(v) if isinstance(v, str) else str(v).lower()}" for k, v in p.csv.items()
            )
            out.append(f"    csv: {{{opts}}}")
        if p.json_records:
            out.append(f"    json: {{records: {_quoted(p.json_records)}}}")
        out.append(f"    dataset: {p.name}")
        if p.failures:
            out.append(f"    # {p.failures} record(s) cannot be parsed: ingest quarantines them")
        if p.truncated:
            out.append(
                f"    # only the first {p.rows:,} rows were read: types are written, but no required, unique "
                "or allowed"
            )
        if p.columns:
            out.append("    columns:")
            out.extend(_column_line(c, p.rows) for c in p.columns)
        out.append("    cleanse: [trim_strings, null_tokens]")
        out.append("")
    out.extend(_model_lines(model))
    return "\n".join(out).rstrip("\n") + "\n"


def _model_lines(model: dict[str, Any] | None) -> list[str]:
    if model is None:
        return ["# No column of the first source suggests itself as a target: add a model under 'models:'."]
    v = model["validation"]
    drop = ", ".join(_scalar(c) for c in model["drop"])
    block = [
        "models:",
        f"  {model['name']}:",
        _line(f"    task: {model['task']}", f"a guess: {model['why']}"),
        f"    dataset: {model['dataset']}",
        _line(f"    target: {_scalar(model['target'])}", "a guess: check it"),
        f"    features: {{drop: [{drop}]}}",
        "    candidates:",
        *(f"      - {c}" for c in model["candidates"]),
        f"    validation: {{strategy: {v['strategy']}, folds: {v['folds']}, metric: {v['metric']}}}",
    ]
    return [
        "# A model, commented out because its target and task are guesses: check them, remove the '# '",
        "# in front of each line from 'models:' down, then: headrace ingest && headrace train",
        *(f"# {line}" for line in block),
    ]


def read_summary(profile: SourceProfile) -> str:
    """One line on what was profiled, for the CLI."""
    files = f"{len(profile.files)} file{'s' if len(profile.files) != 1 else ''}"
    types = ", ".join(f"{n} {t}" for t, n in sorted(profile.type_counts().items(), key=lambda kv: -kv[1]))
    rows = f"the first {profile.rows:,} rows (of more)" if profile.truncated else f"{profile.rows:,} rows"
    line = f"{profile.name}: {files}, {rows}, {len(profile.columns)} columns ({types})"
    if profile.failures:
        line += f"; {profile.failures} unparseable record(s) will be quarantined"
    return line
