"""The fast path: a fitted scikit-learn pipeline compiled into precomputed arithmetic for one record.

A pandas DataFrame and a ColumnTransformer cost milliseconds per call whatever the row count; the
arithmetic they do for one row costs microseconds. ``compile_pipeline`` reads the fitted state
(imputer fill values, scaler centres and scales, one-hot category maps, PCA matrices, linear
coefficients) and folds every linear step into one affine map, so a prediction becomes

    decision = constant + sum(weight[c] * value[c] for numeric c) + sum(table[c][value[c]] for categorical c)

followed by the estimator's link (logistic, softmax or identity). Trees (HistGradientBoosting) keep
the transformed feature vector and walk the fitted trees' node arrays.

What cannot be compiled (an unknown transformer, a non-linear estimator) raises ``NotCompilable`` and
the caller keeps the pipeline. ``compile_pipeline`` also checks the compiled model against the
pipeline on probe records built from the fitted state (every category, unseen ones, empty strings,
missing values, numbers up to ±:data:`FAST_PATH_MAX_ABS`), and refuses (``NotEquivalent``) if any
answer differs by more than ``tolerance``: a wrong fast path is never used.

The fast path answers only records it was checked on: numbers within ±``FAST_PATH_MAX_ABS``
(:meth:`CompiledPipeline.accepts`). Beyond that, folding the scaler into the weights no longer rounds
as the pipeline does, and the pipeline's own arithmetic may overflow (1e308 / a scale < 1 is
infinity), so such a record goes to the pipeline, which answers or refuses it on every route alike.
Non-finite numbers never get here: the input schema refuses them (``serve.schema``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError

__all__ = [
    "FAST_PATH_MAX_ABS",
    "CompiledPipeline",
    "NotCompilable",
    "NotEquivalent",
    "compile_pipeline",
    "edge_records",
    "probe_records",
]

# The largest magnitude of a number the fast path answers (the probe checks up to it); a float still
# holds every integer up to 2**53 (9.007e15) exactly.
FAST_PATH_MAX_ABS = 1e15


class NotCompilable(Exception):
    """This pipeline has a step the fast path does not know; serve it with the pipeline itself."""


class NotEquivalent(NotCompilable):
    """The compiled arithmetic answered a probe record differently from the pipeline."""


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass
class _NumericColumn:
    name: str
    fill: float | None  # None: no imputer, a missing value is an error
    # the column's part of the pre-estimator vector: base value -> scale * value + shift
    scale: float = 1.0
    shift: float = 0.0


@dataclass
class _CategoricalColumn:
    name: str
    fill: Any  # the imputer's fill value (a missing value becomes this), or None
    table: dict[Any, np.ndarray]  # category -> encoded vector
    unknown: np.ndarray | None  # encoded vector for an unseen category; None: unseen is an error
    missing_is_category: bool = False  # the encoder has NaN/None as a category of its own


@dataclass
class _Branch:
    columns: list[_NumericColumn | _CategoricalColumn]
    A: np.ndarray  # (out, base) affine map applied after the column encoders
    b: np.ndarray  # (out,)


def _affine_of(step: Any, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted vector-to-vector step as (A, b): y = A @ x + b; NotCompilable if it is not affine."""
    from sklearn.decomposition import PCA, TruncatedSVD
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    eye = np.eye(width)
    if step is None or step == "passthrough":
        return eye, np.zeros(width)
    if isinstance(step, StandardScaler):
        mean = step.mean_ if step.with_mean and step.mean_ is not None else np.zeros(width)
        scale = step.scale_ if step.with_std and step.scale_ is not None else np.ones(width)
        return np.diag(1.0 / scale), -mean / scale
    if isinstance(step, RobustScaler):
        center = step.center_ if step.with_centering else np.zeros(width)
        scale = step.scale_ if step.with_scaling else np.ones(width)
        return np.diag(1.0 / scale), -center / scale
    if isinstance(step, MinMaxScaler):
        if step.clip:
            raise NotCompilable("MinMaxScaler(clip=True) is not affine")
        return np.diag(step.scale_), np.asarray(step.min_, dtype=np.float64)
    if isinstance(step, MaxAbsScaler):
        return np.diag(1.0 / step.scale_), np.zeros(width)
    if isinstance(step, PCA):
        components = step.components_
        mean = step.mean_ if step.mean_ is not None else np.zeros(width)
        A = components.copy()
        if step.whiten:
            A = A / np.sqrt(step.explained_variance_)[:, None]
        return A, -(A @ mean)
    if isinstance(step, TruncatedSVD):
        return step.components_.copy(), np.zeros(step.components_.shape[0])
    if _is_sampler(step):
        return eye, np.zeros(width)  # resampling happens only in fit
    raise NotCompilable(f"{type(step).__name__} is not a step the fast path knows")


def _is_sampler(step: Any) -> bool:
    return hasattr(step, "fit_resample") and not hasattr(step, "transform")


def _steps(transformer: Any) -> list[Any]:
    from sklearn.pipeline import Pipeline

    if isinstance(transformer, Pipeline) or hasattr(transformer, "steps"):
        out: list[Any] = []
        for _, step in transformer.steps:
            out.extend(_steps(step))
        return out
    return [transformer]


def _encode_table(encoder: Any, j: int, offset: int, width: int, n_features: int) -> dict[Any, np.ndarray]:
    """category -> the encoder's output columns for input feature j, from the encoder itself."""
    categories = list(encoder.categories_[j])
    firsts = [encoder.categories_[i][0] for i in range(n_features)]
    rows = np.empty((len(categories), n_features), dtype=object)
    for i in range(n_features):
        rows[:, i] = firsts[i]
    rows[:, j] = categories
    encoded = _dense(encoder.transform(_frame_like(encoder, rows)))
    return {_key(c): encoded[r, offset : offset + width].astype(np.float64) for r, c in enumerate(categories)}


def _frame_like(encoder: Any, rows: np.ndarray) -> Any:
    names = getattr(encoder, "feature_names_in_", None)
    if names is None:
        return rows
    import pandas as pd

    return pd.DataFrame(rows, columns=list(names))


def _dense(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x)


def _key(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if _is_missing(value):
        return None
    return value


def _unknown_vector(encoder: Any, j: int, offset: int, width: int, n_features: int) -> np.ndarray | None:
    rows = np.empty((1, n_features), dtype=object)
    for i in range(n_features):
        rows[0, i] = encoder.categories_[i][0]
    sentinel = "\x00headrace-unseen-category\x00"
    rows[0, j] = sentinel if isinstance(encoder.categories_[j][0], str) else -987654321.123
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encoded = _dense(encoder.transform(_frame_like(encoder, rows)))
    except ValueError:
        return None  # handle_unknown="error": an unseen category is refused
    return encoded[0, offset : offset + width].astype(np.float64)


def _compile_branch(transformer: Any, names: list[str]) -> _Branch:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    if transformer == "passthrough":
        steps: list[Any] = []
    else:
        steps = _steps(transformer)
    fills: list[Any] = [None] * len(names)
    scale = np.ones(len(names))
    shift = np.zeros(len(names))
    index = 0
    encoder = None
    # phase 1: per-column steps (imputer, then elementwise scalers) up to an encoder
    while index < len(steps):
        step = steps[index]
        if step is None or step == "passthrough" or _is_sampler(step):
            index += 1
            continue
        if isinstance(step, SimpleImputer):
            if step.add_indicator:
                raise NotCompilable("SimpleImputer(add_indicator=True)")
            if not _is_missing(step.missing_values):
                raise NotCompilable(f"SimpleImputer(missing_values={step.missing_values!r})")
            if np.any(scale != 1.0) or np.any(shift != 0.0):
                raise NotCompilable("an imputer after a scaler")
            stats = list(step.statistics_)
            if len(stats) != len(names):
                raise NotCompilable("an imputer that drops all-missing columns")
            fills = [_key(s) if f is None else f for s, f in zip(stats, fills, strict=True)]
            index += 1
            continue
        if isinstance(step, OneHotEncoder | OrdinalEncoder):
            encoder = step
            index += 1
            break
        try:
            A, b = _affine_of(step, len(names))
        except NotCompilable:
            break
        if A.shape != (len(names), len(names)) or np.count_nonzero(A - np.diag(np.diag(A))):
            break  # not elementwise (PCA): the rest is the branch's affine map
        d = np.diag(A)
        scale, shift = scale * d, shift * d + b
        index += 1
    columns: list[_NumericColumn | _CategoricalColumn] = []
    if encoder is None:
        for j, name in enumerate(names):
            fill = fills[j]
            if fill is not None and not isinstance(fill, int | float):
                raise NotCompilable(f"column {name!r} is not numeric and has no encoder")
            columns.append(_NumericColumn(name, None if fill is None else float(fill), scale[j], shift[j]))
        width = len(names)
    else:
        if np.any(scale != 1.0) or np.any(shift != 0.0):
            raise NotCompilable("a scaler before an encoder")
        if isinstance(encoder, OneHotEncoder):
            widths = getattr(encoder, "_n_features_outs", None)
            if widths is None:
                raise NotCompilable("this scikit-learn's OneHotEncoder does not expose its output widths")
        else:
            widths = [1] * len(names)
        offset = 0
        for j, name in enumerate(names):
            table = _encode_table(encoder, j, offset, widths[j], len(names))
            unknown = _unknown_vector(encoder, j, offset, widths[j], len(names))
            missing_is_category = None in table
            columns.append(_CategoricalColumn(name, fills[j], table, unknown, missing_is_category))
            offset += widths[j]
        width = offset
    A_total, b_total = np.eye(width), np.zeros(width)
    for step in steps[index:]:
        A, b = _affine_of(step, A_total.shape[0])
        A_total, b_total = A @ A_total, A @ b_total + b
    return _Branch(columns, A_total, b_total)


def _column_names(ct: Any, columns: Any) -> list[str]:
    names = list(getattr(ct, "feature_names_in_", []))
    if isinstance(columns, str):
        return [columns]
    if isinstance(columns, slice) or callable(columns):
        raise NotCompilable("ColumnTransformer columns given as a slice or callable")
    out = []
    for c in np.atleast_1d(np.asarray(columns, dtype=object)).tolist():
        if isinstance(c, bool):
            raise NotCompilable("ColumnTransformer columns given as a boolean mask")
        if isinstance(c, int):
            if not names:
                raise NotCompilable("a ColumnTransformer fitted on an array without column names")
            out.append(names[c])
        else:
            out.append(str(c))
    return out


@dataclass
class _Link:
    kind: str  # "logistic" | "softmax" | "identity"
    classes: list[Any] | None


@dataclass
class CompiledPipeline:
    """A pipeline as arithmetic: ``decision_one``, ``predict_proba_one`` and ``predict_one``."""

    numeric: list[tuple[str, float | None, np.ndarray]]  # name, fill, weight vector (n_out,)
    categorical: list[tuple[str, Any, dict[Any, np.ndarray], np.ndarray | None]]
    constant: np.ndarray  # (n_out,)
    link: _Link
    columns: list[str]
    features: Callable[[Mapping[str, Any]], np.ndarray] | None = None  # trees: the transformed vector
    trees: Any = None
    _scalar: bool = field(init=False, default=False)
    _num1: list[tuple[str, float | None, float]] = field(init=False, default_factory=list)
    _cat1: list[tuple[str, Any, dict[Any, float], float | None]] = field(init=False, default_factory=list)
    _numbers: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self._numbers = list(dict.fromkeys(n for n, _, _ in self.numeric))
        # one output (binary or regression): plain Python floats beat numpy calls for 20 terms
        self._scalar = self.constant.shape[0] == 1 and self.trees is None
        if self._scalar:
            self._num1 = [(n, f, float(w[0])) for n, f, w in self.numeric]
            self._cat1 = [
                (n, f, {k: float(v[0]) for k, v in t.items()}, None if u is None else float(u[0]))
                for n, f, t, u in self.categorical
            ]
            self._const1 = float(self.constant[0])

    @property
    def classes(self) -> list[Any] | None:
        return self.link.classes

    def accepts(self, record: Mapping[str, Any]) -> bool:
        """Whether every number of ``record`` is within the range the probe checked (±FAST_PATH_MAX_ABS;
        a missing value too); the pipeline answers the others."""
        for name in self._numbers:
            value = record.get(name)
            if value is None:
                continue
            if not isinstance(value, float | int) or not -FAST_PATH_MAX_ABS <= value <= FAST_PATH_MAX_ABS:
                return False  # NaN compares False too
        return True

    def decision_one(self, record: Mapping[str, Any]) -> np.ndarray | float:
        if self.trees is not None:
            assert self.features is not None
            return self.trees.decision(self.features(record))
        if self._scalar:
            total = self._const1
            for name, fill, weight in self._num1:
                value = record.get(name)
                if value is None or value != value:  # NaN != NaN
                    if fill is None:
                        raise DataError(f"field {name!r} needs a value", hint="send a number")
                    value = fill
                total += weight * value
            for name, fill, table, unknown in self._cat1:
                value = record.get(name)
                if (value is None or value != value) and fill is not None:
                    value = fill
                elif value != value:
                    value = None
                hit = table.get(value)
                if hit is None:
                    if unknown is None:
                        raise DataError(
                            f"field {name!r}: unknown category {value!r}", hint="send a known one"
                        )
                    hit = unknown
                total += hit
            return total
        out = self.constant.copy()
        for cname, cfill, cweight in self.numeric:
            raw = record.get(cname)
            if _is_missing(raw):
                if cfill is None:
                    raise DataError(f"field {cname!r} needs a value", hint="send a number")
                raw = cfill
            out += cweight * raw
        for cname, cfill, ctable, cunknown in self.categorical:
            raw = record.get(cname)
            if _is_missing(raw):
                raw = cfill if cfill is not None else None
            vector = ctable.get(raw)
            if vector is None:
                if cunknown is None:
                    raise DataError(f"field {cname!r}: unknown category {raw!r}", hint="send a known one")
                vector = cunknown
            out += vector
        return out

    def predict_proba_one(self, record: Mapping[str, Any]) -> list[float]:
        """Class probabilities in the order of ``classes``."""
        d = self.decision_one(record)
        if self.link.kind == "logistic":
            z = float(d if isinstance(d, float) else d[0])
            p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
            return [1.0 - p, p]
        if self.link.kind == "softmax":
            arr = np.asarray(d, dtype=np.float64)
            e = np.exp(arr - arr.max())
            return list((e / e.sum()).tolist())
        raise TypeError("predict_proba_one needs a classifier")

    def predict_value_one(self, record: Mapping[str, Any]) -> float:
        d = self.decision_one(record)
        return float(d if isinstance(d, float) else d[0])


def _linear_head(estimator: Any) -> tuple[np.ndarray, np.ndarray, _Link]:
    from sklearn.linear_model import (
        ElasticNet,
        Lasso,
        LinearRegression,
        LogisticRegression,
        Ridge,
        SGDClassifier,
        SGDRegressor,
    )

    coef = np.atleast_2d(np.asarray(getattr(estimator, "coef_", None), dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(getattr(estimator, "intercept_", 0.0), dtype=np.float64))
    if isinstance(estimator, LogisticRegression) or (
        isinstance(estimator, SGDClassifier) and estimator.loss == "log_loss"
    ):
        classes = list(estimator.classes_)
        if len(classes) == 2:
            return coef, intercept, _Link("logistic", classes)
        if isinstance(estimator, SGDClassifier):
            raise NotCompilable("multi-class SGDClassifier uses one-vs-rest normalisation")
        return coef, intercept, _Link("softmax", classes)
    if isinstance(estimator, LinearRegression | Ridge | Lasso | ElasticNet | SGDRegressor):
        if intercept.shape[0] != coef.shape[0]:
            intercept = np.broadcast_to(intercept, (coef.shape[0],)).copy()
        return coef, intercept, _Link("identity", None)
    raise NotCompilable(f"estimator {type(estimator).__name__} is not linear")


def compile_pipeline(pipeline: Any, *, tolerance: float = 1e-9, probes: int = 64) -> CompiledPipeline:
    """Compile a fitted ``Pipeline([ColumnTransformer, (linear steps...), estimator])``.

    Raises ``NotCompilable`` when a step is unknown or the compiled answers differ from the
    pipeline's on probe records by more than ``tolerance``.
    """
    from sklearn.compose import ColumnTransformer

    steps = list(getattr(pipeline, "steps", []))
    if len(steps) < 2 or not isinstance(steps[0][1], ColumnTransformer):
        raise NotCompilable("the fast path needs a Pipeline that starts with a ColumnTransformer")
    ct = steps[0][1]
    estimator = steps[-1][1]
    middle = [s for _, s in steps[1:-1]]
    branches: list[tuple[slice, _Branch]] = []
    for name, transformer, columns in ct.transformers_:
        if transformer == "drop":
            continue
        names = _column_names(ct, columns)
        if not names:
            continue
        out = ct.output_indices_[name]
        if out.stop == out.start:
            continue
        branches.append((out, _compile_branch(transformer, names)))
    width = max((s.stop for s, _ in branches), default=0)
    A, b = np.eye(width), np.zeros(width)
    for step in middle:
        Am, bm = _affine_of(step, A.shape[0])
        A, b = Am @ A, Am @ b + bm
    trees = _tree_head(estimator)
    if trees is None:
        coef, intercept, link = _linear_head(estimator)
        W = coef @ A  # (n_out, width): the estimator's weights on the ColumnTransformer's output
        constant = coef @ b + intercept
    else:
        link = trees.link
        W = A  # trees read the transformed vector itself
        constant = b
    numeric: list[tuple[str, float | None, np.ndarray]] = []
    categorical: list[tuple[str, Any, dict[Any, np.ndarray], np.ndarray | None]] = []
    for out, branch in branches:
        M = W[:, out] @ branch.A  # (n_out, base)
        constant = constant + W[:, out] @ branch.b
        position = 0
        for column in branch.columns:
            if isinstance(column, _NumericColumn):
                weight = M[:, position] * column.scale
                constant = constant + M[:, position] * column.shift
                numeric.append((column.name, column.fill, weight))
                position += 1
            else:
                w = len(next(iter(column.table.values()))) if column.table else 0
                Mc = M[:, position : position + w]
                table = {k: Mc @ v for k, v in column.table.items()}
                unknown = None if column.unknown is None else Mc @ column.unknown
                categorical.append((column.name, column.fill, table, unknown))
                position += w
    columns = [n for n, _, _ in numeric] + [n for n, _, _, _ in categorical]
    if trees is not None:
        compiled = CompiledPipeline(
            numeric,
            categorical,
            np.asarray(constant),
            link,
            columns,
            _feature_builder(numeric, categorical, constant),
            trees,
        )
    else:
        compiled = CompiledPipeline(
            numeric, categorical, np.asarray(constant, dtype=np.float64), link, columns
        )
    _check(compiled, pipeline, probe_records(compiled, probes), tolerance)
    return compiled


def _feature_builder(
    numeric: list[tuple[str, float | None, np.ndarray]],
    categorical: list[tuple[str, Any, dict[Any, np.ndarray], np.ndarray | None]],
    constant: np.ndarray,
) -> Callable[[Mapping[str, Any]], np.ndarray]:
    shell = CompiledPipeline(
        numeric, categorical, np.asarray(constant, dtype=np.float64), _Link("identity", None), []
    )
    shell._scalar = False

    def build(record: Mapping[str, Any]) -> np.ndarray:
        return np.asarray(shell.decision_one(record), dtype=np.float64)

    return build


def probe_records(compiled: CompiledPipeline, n: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """Records that exercise every category, missing values, a spread of numbers, extreme numbers the
    fast path answers (±1e9, ±FAST_PATH_MAX_ABS, 0, -0, the smallest subnormal), empty strings and
    unseen categories. Numbers beyond that range are answered by the pipeline (:func:`edge_records`
    probes them through the whole serving path)."""
    rng = np.random.default_rng(seed)
    extremes = (1e9, -1e9, FAST_PATH_MAX_ABS, -FAST_PATH_MAX_ABS, 0.0, -0.0, 5e-324)
    records: list[dict[str, Any]] = []
    for i in range(n):
        record: dict[str, Any] = {}
        for j, (name, fill, _) in enumerate(compiled.numeric):
            if fill is not None and i % 7 == 3:
                record[name] = None
            elif i % 13 == 9 or i % 19 == 11:
                record[name] = extremes[(i + j) % len(extremes)]
            else:
                base = fill if fill is not None else 0.0
                record[name] = float(base + rng.normal(0, 1 + abs(base)))
        for name, fill, table, unknown in compiled.categorical:
            keys = [k for k in table if k is not None]
            if fill is not None and i % 5 == 4:
                record[name] = None
            elif unknown is not None and i % 11 == 6:
                record[name] = "unseen-category"
            elif unknown is not None and i % 17 == 8:
                record[name] = ""
            else:
                record[name] = keys[i % len(keys)] if keys else None
        records.append(record)
    return records


def _check(
    compiled: CompiledPipeline, pipeline: Any, records: Sequence[Mapping[str, Any]], tol: float
) -> None:
    import warnings

    import pandas as pd

    frame = pd.DataFrame(list(records))
    for column in frame.columns:
        if frame[column].dtype == object and all(v is None or isinstance(v, float) for v in frame[column]):
            frame[column] = frame[column].astype("float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = (
                pipeline.predict_proba(frame)
                if compiled.link.kind in ("logistic", "softmax")
                else pipeline.predict(frame)
            )
        except Exception as exc:  # the pipeline itself refuses a probe: nothing to compare against
            raise NotCompilable(f"the pipeline could not score probe records ({exc})") from exc
    for record, want in zip(records, np.asarray(expected), strict=True):
        got = (
            compiled.predict_proba_one(record)
            if compiled.link.kind in ("logistic", "softmax")
            else compiled.predict_value_one(record)
        )
        if not np.allclose(got, want, rtol=1e-9, atol=tol):  # relative: extreme inputs, huge outputs
            raise NotEquivalent(
                f"compiled answers differ from the pipeline's on probe record {_shown(record)} "
                f"({got} vs {want})"
            )


def _shown(record: Mapping[str, Any], limit: int = 160) -> str:
    text = repr(dict(record))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def edge_records(
    fields: Mapping[str, str],
    base: Mapping[str, Any],
    *,
    categories: Mapping[str, Sequence[Any]] | None = None,
) -> list[dict[str, Any]]:
    """``base`` (a valid record) with one field at a time set to what clients send at the edges:
    non-finite numbers (inf, -inf, nan), extreme ones (±1e308, the largest float, just past
    ±FAST_PATH_MAX_ABS, 2**63 and 10**400 as integers), empty and blank strings, unseen categories, a
    known category with different case, null, and the field left out; then every field extreme at
    once. ``fields``: name -> kind, as the input schema has them; ``categories``: known values."""
    numbers: tuple[Any, ...] = (
        math.inf,
        -math.inf,
        math.nan,
        1e308,
        -1e308,
        1.7976931348623157e308,
        FAST_PATH_MAX_ABS * 1.000001,
        -FAST_PATH_MAX_ABS * 1.000001,
        2**63,
        -(2**63),
        10**400,
        None,
    )
    strings: tuple[Any, ...] = ("", " ", "a category never seen", None)
    out: list[dict[str, Any]] = []
    for name, kind in fields.items():
        values = list(numbers if kind == "number" else strings)
        known = [c for c in (categories or {}).get(name, ()) if isinstance(c, str) and c]
        if known:
            values.append(known[0].upper() if known[0].upper() != known[0] else known[0].lower())
        for value in values:
            out.append({**base, name: value})
        out.append({k: v for k, v in base.items() if k != name})
    numeric = [n for n, k in fields.items() if k == "number"]
    for big in (1e308, -1e308, FAST_PATH_MAX_ABS * 10):
        out.append({**base, **{n: big for n in numeric}, **{n: "" for n in fields if n not in numeric}})
    return out


class _Forest:
    """A fitted HistGradientBoosting model's trees as flat lists, walked in Python for one row."""

    def __init__(self, estimator: Any, link: _Link) -> None:
        self.link = link
        self.baseline = np.asarray(estimator._baseline_prediction, dtype=np.float64).ravel()
        self.n_out = self.baseline.shape[0]
        # per output k: a list of trees, each (feature, threshold, missing_left, left, right, leaf, value)
        self.trees: list[
            list[tuple[list[int], list[float], list[bool], list[int], list[int], list[bool], list[float]]]
        ]
        self.trees = [[] for _ in range(self.n_out)]
        for iteration in estimator._predictors:
            for k, predictor in enumerate(iteration):
                nodes = predictor.nodes
                if np.any(nodes["is_categorical"]):
                    raise NotCompilable("HistGradientBoosting with native categorical splits")
                self.trees[k].append(
                    (
                        nodes["feature_idx"].tolist(),
                        nodes["num_threshold"].tolist(),
                        nodes["missing_go_to_left"].astype(bool).tolist(),
                        nodes["left"].tolist(),
                        nodes["right"].tolist(),
                        nodes["is_leaf"].astype(bool).tolist(),
                        nodes["value"].tolist(),
                    )
                )

    def decision(self, x: np.ndarray) -> np.ndarray | float:
        row = x.tolist()
        out = []
        for k in range(self.n_out):
            total = 0.0
            for feature, threshold, missing_left, left, right, leaf, value in self.trees[k]:
                node = 0
                while not leaf[node]:
                    v = row[feature[node]]
                    if v != v:
                        node = left[node] if missing_left[node] else right[node]
                    elif v <= threshold[node]:
                        node = left[node]
                    else:
                        node = right[node]
                total += value[node]
            out.append(total + self.baseline[k])
        return float(out[0]) if self.n_out == 1 else np.asarray(out)


def _tree_head(estimator: Any) -> _Forest | None:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if isinstance(estimator, HistGradientBoostingClassifier):
        classes = list(estimator.classes_)
        return _Forest(estimator, _Link("logistic" if len(classes) == 2 else "softmax", classes))
    if isinstance(estimator, HistGradientBoostingRegressor):
        if estimator.loss != "squared_error":
            raise NotCompilable(f"HistGradientBoostingRegressor(loss={estimator.loss!r})")
        return _Forest(estimator, _Link("identity", None))
    return None
