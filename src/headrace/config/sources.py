"""Spec classes for ingestion sources (``sources:`` in headrace.yaml).

:class:`IngestSpec` holds what every kind of source shares: the target dataset, the rules per column,
the cleansing steps, row-level rules, schema drift, the key, and the reject ratio that fails a batch.
Each kind subclasses it and adds how to reach its data (:class:`FileSource` here; SQL and HTTP in
``sources_db``, MQTT and NATS in ``sources_stream``) and joins the ``SourceSpec`` union below.

Order of the work, per batch (``headrace.ingest.validate.check``): schema (required columns, drift),
``trim_strings`` and ``null_tokens``, type coercion (a value that does not convert is a ``type``
failure, never a silent null), ``drop_duplicates``, imputation of values that were missing in the
input, outliers (clip or flag), then every rule; a row failing any rule is quarantined with all its
failures.
"""

from __future__ import annotations

import ast
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .base import ProjectPath, Spec

__all__ = [
    "DEFAULT_NULL_TOKENS",
    "CleanseStep",
    "ColumnRule",
    "CsvOptions",
    "FileSource",
    "ImputeConstant",
    "IngestSpec",
    "JsonOptions",
    "OutlierRule",
    "RowRule",
    "SourceSpec",
]

DEFAULT_NULL_TOKENS: tuple[str, ...] = (
    *("", "NA", "N/A", "n/a", "None", "null", "NULL", "NaN", "nan", "-", "?"),
)
"""Values that mean "missing" in a typed (not text) column, as are blank and whitespace-only values."""

CleanseStep = Literal["trim_strings", "null_tokens", "drop_duplicates", "drop_duplicate_keys"]
"""``trim_strings``: strip surrounding whitespace from every string column. ``null_tokens``: values equal
to one of ``null_tokens`` become null in text columns too (in typed columns they always do).
``drop_duplicates``: whole-row duplicates within a batch are dropped (counted in the report; the kept
row is identical). ``drop_duplicate_keys``: rows repeating a ``key`` already seen in the batch are
quarantined with the reason ``duplicate key``."""


class ImputeConstant(Spec):
    """``impute: {constant: VALUE}``: missing values become VALUE."""

    constant: str | int | float | bool


class OutlierRule(Spec):
    """Outliers by the batch's own distribution: ``iqr`` (outside Q1 - k·IQR, Q3 + k·IQR, k=1.5 by
    default) or ``zscore`` (|z| > k, k=3 by default). ``clip`` moves them to the bound; ``flag`` keeps
    them and adds a boolean column ``<column>_outlier``; ``quarantine`` rejects the row."""

    method: Literal["iqr", "zscore"] = "iqr"
    action: Literal["clip", "flag", "quarantine"] = "clip"
    threshold: float | None = Field(default=None, gt=0)

    @property
    def k(self) -> float:
        if self.threshold is not None:
            return self.threshold
        return 1.5 if self.method == "iqr" else 3.0


class ColumnRule(Spec):
    """Rules and cleansing for one column.

    ``type`` coerces the column (strings such as "12", "1.5", "yes", "2024-01-31" convert; a value that
    does not is a failure); ``format`` is the strftime format of ``date``/``datetime`` values.
    ``required``: the column must be present in every input and no value may be missing (after
    imputation). ``unique``: no two rows share a value, within the batch and against the dataset.
    ``min``/``max`` bound numbers (and dates, as ISO strings); ``allowed`` lists the permitted values;
    ``regex`` must match the whole value; ``min_length``/``max_length`` bound the string length.
    ``impute``: ``mean``, ``median``, ``mode`` or ``{constant: VALUE}`` fill values missing in the input
    (the values used are recorded in the quality report). ``outliers``: see :class:`OutlierRule`.
    ``null_tokens``: the values that mean "missing" in this column, instead of the source's list (``[]``
    for a column where ``NA`` is a real value). A column without ``type`` gets one inferred from the
    data on the first load, pinned for the loads after it.
    """

    type: Literal["string", "int", "float", "bool", "date", "datetime"] | None = None
    required: bool = False
    unique: bool = False
    min: float | int | str | None = None
    max: float | int | str | None = None
    allowed: list[str | int | float | bool] | None = None
    regex: str | None = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    format: str | None = None
    true_values: list[str] = Field(default_factory=lambda: ["true", "t", "yes", "y", "1"])
    false_values: list[str] = Field(default_factory=lambda: ["false", "f", "no", "n", "0"])
    impute: Literal["mean", "median", "mode"] | ImputeConstant | None = None
    outliers: OutlierRule | None = None
    null_tokens: list[str] | None = None
    allow_nan: bool = Field(
        default=False,
        description="keep NaN and infinite values in this float column; by default a row holding one is "
        "quarantined (`not finite`).",
    )

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"a valid regular expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ColumnRule:
        if self.impute in ("mean", "median") and self.type not in ("int", "float", None):
            raise ValueError(f"impute {self.impute} needs a numeric type (int or float)")
        if self.outliers is not None and self.type not in ("int", "float"):
            raise ValueError("outliers needs type int or float")
        if self.type == "string" and any(isinstance(v, bool) for v in self.allowed or []):
            raise ValueError(
                "text values in 'allowed' (YAML reads unquoted Yes/No/On/Off as booleans: quote them)"
            )
        if self.format is not None and self.type not in ("date", "datetime"):
            raise ValueError("format applies to type date or datetime")
        return self


# Only these names may appear in a polars expression written as text (no imports, no dunders).
_POLARS_NAMES = {"pl", "col", "lit", "when", "all_horizontal", "any_horizontal", "True", "False", "None"}


class RowRule(Spec):
    """A rule over a whole row, named so its failures can be counted and reported.

    ``sql``: a SQL boolean expression (``"tenure = 0 OR TotalCharges > 0"``). ``polars``: a polars
    expression as text (``"pl.col('a') <= pl.col('b')"``; only ``pl``, ``col``, ``lit`` and ``when``
    are in scope). A row fails when the expression is false; null (unknown) passes, as in a SQL CHECK
    constraint.
    """

    name: str
    sql: str | None = None
    polars: str | None = None

    @model_validator(mode="after")
    def _one(self) -> RowRule:
        if (self.sql is None) == (self.polars is None):
            raise ValueError("exactly one of 'sql' or 'polars'")
        if self.polars is not None:
            _check_polars_text(self.polars)
        return self


def _check_polars_text(text: str) -> None:
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"a polars expression ({exc.msg})") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in _POLARS_NAMES:
            raise ValueError(f"a polars expression using pl, col, lit, when (found name {node.id!r})")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ValueError("a polars expression without private attributes")
        if isinstance(node, ast.Lambda | ast.NamedExpr | ast.comprehension):
            raise ValueError("a polars expression (no lambdas, comprehensions or assignments)")


class IngestSpec(Spec):
    """What every source shares: where rows go and the rules they must pass.

    ``dataset``: the target dataset; rejected rows go to ``<dataset>__quarantine``. ``columns``: rules
    per column; a column without a declared ``type`` (named here or not) gets one inferred from the data
    on the first load and pinned in the dataset. ``null_tokens``: the values that mean "missing" in a
    typed column (blank and whitespace-only values always do); in text columns only with the
    ``null_tokens`` cleansing step. ``key``: the columns that identify a row; a key already in the batch
    or in the dataset is rejected (default: the columns marked ``unique``). ``schema_drift``: what a
    column not named in ``columns`` (and not already in the dataset) does: ``add`` it to the dataset,
    ``refuse`` the batch, or ``drop`` it. ``max_quarantine_ratio``: when more than this share of a
    batch's rows is quarantined, the run ends ``failed_checks`` (exit code 1) and nothing of that batch
    is committed, unless ``on_excess: commit``.
    """

    dataset: str
    columns: dict[str, ColumnRule] = Field(default_factory=dict)
    cleanse: list[CleanseStep] = Field(
        default_factory=list,
        description="cleansing steps: `trim_strings`, `null_tokens` (in text columns too), "
        "`drop_duplicates` (whole rows), `drop_duplicate_keys` (quarantined as `duplicate key`).",
    )
    null_tokens: list[str] = Field(default_factory=lambda: list(DEFAULT_NULL_TOKENS))
    row_rules: list[RowRule] = Field(default_factory=list)
    schema_drift: Literal["add", "refuse", "drop"] = "add"
    key: list[str] = Field(default_factory=list)
    write: Literal["append", "replace", "merge"] | None = Field(
        default=None,
        description="how a run writes: `append` (events, readings), `replace` (a full load replaces the "
        "dataset's rows in one commit, so a rerun never doubles), `merge` on `key` (an updated row "
        "replaces its old copy). Default: replace for a SQL or HTTP source without a cursor, merge for "
        "one with a cursor and a key, append otherwise.",
    )
    deleted: str | None = Field(
        default=None,
        description="write: merge: a boolean column; a row whose value is true deletes its key's row.",
    )
    max_quarantine_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    on_excess: Literal["fail", "commit"] = Field(
        default="fail",
        description="what a batch over `max_quarantine_ratio` does: `fail` commits nothing of it, "
        "`commit` commits its clean rows anyway; the run ends `failed_checks` either way.",
    )

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z][A-Za-z0-9_\-]*$", value) or value.endswith("__quarantine"):
            raise ValueError("a dataset name of letters, digits, '_' or '-', starting with a letter")
        return value

    @model_validator(mode="after")
    def _names(self) -> IngestSpec:
        names = [r.name for r in self.row_rules]
        if len(names) != len(set(names)):
            raise ValueError("row_rules with distinct names")
        if "drop_duplicate_keys" in self.cleanse and not self.key_columns:
            raise ValueError("drop_duplicate_keys needs 'key' (or a column marked unique)")
        if self.write == "merge" and not self.key_columns:
            raise ValueError("write: merge needs 'key' (or a column marked unique)")
        if self.deleted is not None and self.write_mode != "merge":
            raise ValueError("'deleted' applies to write: merge")
        return self

    @property
    def write_mode(self) -> str:
        """``write``, or the default for the kind of source (see ``write``)."""
        if self.write is not None:
            return self.write
        kind = getattr(self, "kind", None)
        if kind == "sql":
            incremental = getattr(self, "cursor", None) is not None
        elif kind == "http":
            incremental = getattr(self, "incremental", None) is not None
        else:
            return "append"
        if not incremental:
            return "replace"
        return "merge" if self.key_columns else "append"

    @property
    def key_columns(self) -> list[str]:
        """``key``, or the columns marked ``unique`` when no key is given."""
        return list(self.key) or [name for name, rule in self.columns.items() if rule.unique]


class CsvOptions(Spec):
    """How to read CSV: ``delimiter``, ``quote`` (null for none), ``encoding`` (any Python codec),
    ``header`` (false: columns are named ``column_1``...), ``skip_rows`` before the header."""

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote: str | None = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf-8"
    header: bool = True
    skip_rows: int = Field(default=0, ge=0)

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        import codecs

        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError("a known text encoding (utf-8, latin-1, cp1252, ...)") from None


class JsonOptions(Spec):
    """How to read JSON: ``records``, a dotted path to the list of records inside the document (for
    ``{"data": {"items": [...]}}`` write ``data.items``); the whole document when null."""

    records: str | None = None


class FileSource(IngestSpec):
    """Files: CSV, JSON (an array, or records under a path), JSONL, Parquet; ``.gz`` decompressed.

    ``path`` is a file, a folder (all its files) or a glob (``data/**/*.csv``). ``format`` defaults to
    the file's extension. Large files are read ``chunk_rows`` rows at a time, so memory stays bounded;
    a file is still committed whole, in one commit, or not at all.
    """

    kind: Literal["file"]
    path: ProjectPath
    format: Literal["csv", "json", "jsonl", "parquet"] | None = None
    csv: CsvOptions = Field(default_factory=CsvOptions)
    json_options: JsonOptions = Field(default_factory=JsonOptions, alias="json")
    compression: Literal["gzip", "none", "auto"] = "auto"
    chunk_rows: int = Field(default=500_000, ge=1)


from .sources_db import HttpSource, SqlSource  # noqa: E402  (they subclass IngestSpec above)
from .sources_stream import MqttSource, NatsSource  # noqa: E402  (they subclass IngestSpec above)

SourceSpec = Annotated[
    FileSource | SqlSource | HttpSource | MqttSource | NatsSource, Field(discriminator="kind")
]
