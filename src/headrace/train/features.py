"""From a dataset's schema and a :class:`FeatureSpec` to model inputs.

Two halves, both used at training and at prediction:

- :func:`plan_features` decides, from the schema, which raw columns are inputs and how each is read
  (number, category, date), and checks the derived-column expressions. The plan is plain data,
  stored inside the model, so a prediction prepares its rows exactly as training did.
- :func:`prepare` applies a plan to a polars frame (derived columns, date parts, casts) and hands the
  pandas frame a ColumnTransformer takes; :func:`build_features` is that ColumnTransformer (impute,
  scale, one-hot with rare categories grouped and unknown ones ignored, or ordinal).

Derived columns are SQL expressions parsed by polars (``pl.sql_expr``), never ``eval``: a project
file cannot run code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, RobustScaler, StandardScaler

from ..config.models import FeatureSpec
from ..errors import ConfigError, DataError

__all__ = ["FeaturePlan", "build_features", "build_pca", "column_kind", "plan_features", "prepare"]

log = logging.getLogger("headrace.train.features")

MISSING = "__missing__"
_DATE_PARTS = {
    "year": lambda e: e.dt.year(),
    "month": lambda e: e.dt.month(),
    "day": lambda e: e.dt.day(),
    "dayofweek": lambda e: e.dt.weekday(),
    "dayofyear": lambda e: e.dt.ordinal_day(),
    "hour": lambda e: e.dt.hour(),
}


def column_kind(dtype: pl.DataType) -> str:
    """number | bool | string | date | datetime | other."""
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_numeric():
        return "number"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum | pl.Categorical):
        return "string"
    return "other"


@dataclass
class FeaturePlan:
    """What a model reads and how: plain data, stored with the model."""

    inputs: list[dict[str, str]]  # raw columns a record must carry: name, type, kind
    derive: dict[str, str]  # name -> SQL expression, computed in order
    dates: dict[str, list[str]]  # date column -> parts taken from it
    numeric: list[str]  # model columns read as numbers (after derive and date parts)
    categorical: list[str]  # model columns read as categories
    scale: str = "standard"
    impute_numeric: str = "median"
    impute_categorical: str = "constant"
    encode: str = "onehot"
    min_frequency: int | float | None = None
    pca: int | float | None = None
    dropped: list[str] = field(default_factory=list)

    @property
    def feature_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def input_names(self) -> list[str]:
        return [c["name"] for c in self.inputs]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeaturePlan:
        return cls(**dict(data))


def _parse_expr(name: str, text: str) -> pl.Expr:
    try:
        return pl.sql_expr(text)
    except Exception as exc:  # polars raises several kinds for a bad SQL expression
        raise ConfigError(
            f"features.derive.{name}: {text!r} is not a valid expression ({str(exc).splitlines()[0]})",
            hint="write SQL arithmetic over column names, e.g. total_rooms / households",
        ) from None


def plan_features(
    spec: FeatureSpec, schema: Mapping[str, pl.DataType], *, exclude: Iterable[str] = ()
) -> FeaturePlan:
    """Decide the model's inputs from the dataset ``schema`` (``frame.schema``); ``exclude`` holds
    the target and any grouping column, which are never inputs."""
    excluded = set(exclude)
    known = dict(schema)
    for name in [*spec.drop, *spec.numeric, *spec.categorical]:
        if name not in known and name not in spec.derive:
            raise ConfigError(
                f"features: column {name!r} is not in the dataset",
                hint=f"its columns: {', '.join(known)}",
            )
    needed: set[str] = set()
    derived_kinds: dict[str, str] = {}
    for name, text in spec.derive.items():
        expr = _parse_expr(name, text)
        roots = expr.meta.root_names()
        missing = [r for r in roots if r not in known and r not in derived_kinds]
        if missing:
            raise ConfigError(
                f"features.derive.{name}: {text!r} names unknown column(s) {', '.join(missing)}",
                hint=f"the dataset's columns: {', '.join(known)}",
            )
        needed.update(r for r in roots if r in known)
        try:  # learn the derived column's type from an empty frame with the dataset's schema
            probe = pl.DataFrame(schema={k: v for k, v in known.items()}).with_columns(
                *(pl.lit(None).alias(d) for d in derived_kinds)
            )
            dtype = probe.select(expr.alias(name)).schema[name]
        except Exception as exc:
            raise ConfigError(
                f"features.derive.{name}: {text!r} cannot be computed ({str(exc).splitlines()[0]})",
                hint="check the column types the expression uses",
            ) from None
        derived_kinds[name] = column_kind(dtype) if dtype != pl.Null else "number"

    dropped = set(spec.drop) | excluded
    columns: dict[str, str] = {}
    for name, dtype in known.items():
        if name in dropped:
            continue
        columns[name] = column_kind(dtype)
    for name, kind in derived_kinds.items():
        if name not in dropped:
            columns[name] = kind

    numeric: list[str] = []
    categorical: list[str] = []
    dates: dict[str, list[str]] = {}
    for name, kind in columns.items():
        if name in spec.categorical:
            categorical.append(name)
        elif name in spec.numeric or kind in ("number", "bool"):
            numeric.append(name)
        elif kind == "string":
            categorical.append(name)
        elif kind in ("date", "datetime"):
            parts: list[str] = [p for p in spec.date_parts if kind == "datetime" or p != "hour"]
            dates[name] = parts
            numeric.extend(f"{name}_{p}" for p in parts)
        else:
            log.warning("column %r (%s) is neither number, text nor date: left out", name, known.get(name))
    if not numeric and not categorical:
        raise ConfigError(
            "features: no column is left to learn from",
            hint="drop fewer columns, or check that the dataset holds the columns you expect",
        )
    raw_inputs = [n for n in known if (n in columns or n in needed) and n not in excluded]
    inputs = [{"name": n, "type": str(known[n]), "kind": _input_kind(n, known[n], spec)} for n in raw_inputs]
    return FeaturePlan(
        inputs=inputs,
        derive=dict(spec.derive),
        dates=dates,
        numeric=numeric,
        categorical=categorical,
        scale=spec.scale,
        impute_numeric=spec.impute_numeric,
        impute_categorical=spec.impute_categorical,
        encode=spec.encode,
        min_frequency=spec.min_frequency,
        pca=spec.pca,
        dropped=sorted(dropped - excluded),
    )


def _input_kind(name: str, dtype: pl.DataType, spec: FeatureSpec) -> str:
    if name in spec.numeric:
        return "number"
    if name in spec.categorical:
        return "string"
    return column_kind(dtype)


_CASTS: dict[str, pl.DataType] = {
    "number": pl.Float64(),
    "bool": pl.Boolean(),
    "string": pl.String(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us"),
}


def prepare(frame: pl.DataFrame, plan: FeaturePlan, *, strict: bool = False) -> pd.DataFrame:
    """The plan applied to ``frame``: the pandas frame (model columns only) the pipeline takes.

    ``strict`` (prediction) refuses a value that does not fit its column's type, naming the column;
    training (not strict) reads such values as missing, as the ``numeric`` option promises.
    """
    missing = [n for n in plan.input_names if n not in frame.columns]
    if missing:
        raise DataError(
            f"input is missing column(s) {', '.join(missing)}",
            hint=f"send every column the model reads: {', '.join(plan.input_names)}",
        )
    casts = []
    for col in plan.inputs:
        target = _CASTS.get(col["kind"])
        if target is None or frame.schema[col["name"]] == target:
            continue
        if col["kind"] == "number" and not strict and frame.schema[col["name"]] == pl.String:
            casts.append(pl.col(col["name"]).str.strip_chars().cast(pl.Float64, strict=False))
        elif col["kind"] == "string" and frame.schema[col["name"]].is_numeric():
            # a category code sent as a JSON number (0.0 for "0"): whole numbers read as integers
            c = pl.col(col["name"])
            whole = c.cast(pl.Float64).round() == c.cast(pl.Float64)
            as_int = pl.when(whole).then(c.cast(pl.Int64, strict=False).cast(pl.String))
            casts.append(as_int.otherwise(c.cast(pl.String)).alias(col["name"]))
        else:
            casts.append(pl.col(col["name"]).cast(target, strict=strict))
    try:
        data = frame.select(plan.input_names).with_columns(casts) if casts else frame.select(plan.input_names)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
        raise DataError(
            f"input has a value that does not fit its column's type ({str(exc).splitlines()[0]})",
            hint="send numbers for numeric columns and dates as ISO strings",
        ) from None
    for name, text in plan.derive.items():
        try:
            data = data.with_columns(pl.sql_expr(text).alias(name))
        except Exception as exc:
            raise DataError(f"derived column {name!r} ({text}) failed: {str(exc).splitlines()[0]}") from None
    parts = [
        _DATE_PARTS[p](pl.col(name)).cast(pl.Float64).alias(f"{name}_{p}")
        for name, ps in plan.dates.items()
        for p in ps
    ]
    if parts:
        data = data.with_columns(parts)
    exprs: list[pl.Expr] = []
    for name in plan.numeric:
        expr = pl.col(name).cast(pl.Float64, strict=False)
        exprs.append(pl.when(expr.is_infinite()).then(None).otherwise(expr).alias(name))
    exprs.extend(pl.col(name).cast(pl.String).alias(name) for name in plan.categorical)
    selected = data.select(exprs)
    out = pd.DataFrame(
        {name: selected[name].to_numpy().astype(np.float64, copy=False) for name in plan.numeric},
        index=pd.RangeIndex(selected.height),
    )
    for name in plan.categorical:
        values = selected[name].to_numpy().astype(object)
        values[pd.isna(values)] = np.nan
        out[name] = values
    return out[plan.feature_columns]


def _scaler(kind: str) -> Any:
    return {"standard": StandardScaler(), "robust": RobustScaler(), "minmax": MinMaxScaler()}.get(kind)


def build_features(plan: FeaturePlan) -> ColumnTransformer:
    """The ColumnTransformer for ``plan``: numbers imputed and scaled, categories imputed and encoded."""
    parts: list[tuple[str, Any, list[str]]] = []
    if plan.numeric:
        strategy = "constant" if plan.impute_numeric == "zero" else plan.impute_numeric
        steps: list[tuple[str, Any]] = [
            ("impute", SimpleImputer(strategy=strategy, fill_value=0.0, keep_empty_features=True))
        ]
        scaler = _scaler(plan.scale)
        if scaler is not None:
            steps.append(("scale", scaler))
        parts.append(("num", Pipeline(steps), list(plan.numeric)))
    if plan.categorical:
        impute = SimpleImputer(strategy=plan.impute_categorical, fill_value=MISSING, keep_empty_features=True)
        if plan.encode == "onehot":
            encoder: Any = OneHotEncoder(
                handle_unknown="infrequent_if_exist" if plan.min_frequency else "ignore",
                min_frequency=plan.min_frequency,
                sparse_output=False,
            )
        else:
            encoder = OrdinalEncoder(
                handle_unknown="use_encoded_value",
                unknown_value=-1,
                encoded_missing_value=-1,
                min_frequency=plan.min_frequency,
            )
        parts.append(("cat", Pipeline([("impute", impute), ("encode", encoder)]), list(plan.categorical)))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def build_pca(plan: FeaturePlan, seed: int) -> PCA | None:
    if plan.pca is None:
        return None
    if isinstance(plan.pca, float) and not plan.pca.is_integer() and not 0 < plan.pca < 1:
        raise ConfigError(
            f"features.pca must be a count of components or a variance share in (0, 1); got {plan.pca}",
            hint="e.g. pca: 10 or pca: 0.95",
        )
    n = int(plan.pca) if float(plan.pca).is_integer() and plan.pca >= 1 else float(plan.pca)
    return PCA(n_components=n, random_state=seed)
