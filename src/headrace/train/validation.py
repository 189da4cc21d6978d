"""Model selection and validation: nested cross-validation with joblib or Dask.

The outer folds (the declared strategy) give the estimate. Inside each outer training fold, every
candidate configuration (each estimator with its grid or random draws) is scored by an inner
cross-validation and the best is refitted on that training fold: the outer test fold is never seen
by the selection, so that estimate (the *fully nested* one) is not the selection's own winner's
curse. The model that is kept is one configuration chosen by the inner scores pooled over all outer
folds (:func:`pooled_choice`), so one odd fold cannot swing the choice to a weak candidate; its own
outer-fold estimate is reported beside the fully nested one (``run.py``). With one configuration
there is nothing to select and the outer folds fit it directly.

Outer folds run through joblib (``n_jobs`` processes), or on a Dask cluster when a scheduler address
is given (joblib's dask backend; the same code path).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed, parallel_config
from sklearn.base import clone
from sklearn.inspection import permutation_importance
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    RandomizedSearchCV,
    RepeatedKFold,
    RepeatedStratifiedKFold,
    ShuffleSplit,
    StratifiedKFold,
    StratifiedShuffleSplit,
    TimeSeriesSplit,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from ..config.models import ValidationSpec
from ..errors import ConfigError, ServiceUnavailable
from .estimators import check_int, check_number
from .target import forward, inverse

__all__ = [
    "CandidateConfig",
    "FoldResult",
    "Selector",
    "build_selector",
    "check_validation",
    "inner_splitter",
    "outer_splitter",
    "pooled_choice",
    "run_folds",
    "strip_resampling",
]

log = logging.getLogger("headrace.train.validation")

IMPORTANCE_ROWS = 2000
IMPORTANCE_REPEATS = 3


def check_validation(spec: ValidationSpec, task: str) -> None:
    """Our own parameters, with scikit-learn's message template."""
    check_int("cross_validate", "folds", spec.folds, minimum=2)
    check_int("cross_validate", "inner_folds", spec.inner_folds, minimum=2)
    check_int("cross_validate", "repeats", spec.repeats, minimum=1)
    check_int("cross_validate", "n_iter", spec.n_iter, minimum=1)
    check_number("cross_validate", "test_size", spec.test_size, low=0.0, high=1.0)
    if isinstance(spec.n_jobs, bool) or not isinstance(spec.n_jobs, int) or spec.n_jobs == 0:
        raise ConfigError(
            "The 'n_jobs' parameter of cross_validate must be an int >= 1 or -1. "
            f"Got {spec.n_jobs!r} instead."
        )
    if spec.strategy == "group_kfold" and not spec.group:
        raise ConfigError(
            "validation: strategy group_kfold needs validation.group, the column that groups rows",
            hint="e.g. validation: {strategy: group_kfold, group: customer_id}",
        )
    if spec.strategy == "stratified_kfold" and task == "regression":
        log.info("stratified_kfold on a regression target: using kfold")


def outer_splitter(spec: ValidationSpec, task: str, seed: int) -> Any:
    classification = task == "classification"
    strategy = spec.strategy
    if strategy == "holdout":
        cls = StratifiedShuffleSplit if classification else ShuffleSplit
        return cls(n_splits=1, test_size=spec.test_size, random_state=seed)
    if strategy == "kfold" or (strategy == "stratified_kfold" and not classification):
        return KFold(n_splits=spec.folds, shuffle=True, random_state=seed)
    if strategy == "stratified_kfold":
        return StratifiedKFold(n_splits=spec.folds, shuffle=True, random_state=seed)
    if strategy == "repeated":
        rcls = RepeatedStratifiedKFold if classification else RepeatedKFold
        return rcls(n_splits=spec.folds, n_repeats=spec.repeats, random_state=seed)
    if strategy == "group_kfold":
        return GroupKFold(n_splits=spec.folds)
    return TimeSeriesSplit(n_splits=spec.folds)


def inner_splitter(spec: ValidationSpec, task: str, seed: int) -> Any:
    if spec.strategy == "group_kfold":
        return GroupKFold(n_splits=spec.inner_folds)
    if spec.strategy == "time_series_split":
        return TimeSeriesSplit(n_splits=spec.inner_folds)
    if task == "classification":
        return StratifiedKFold(n_splits=spec.inner_folds, shuffle=True, random_state=seed + 1)
    return KFold(n_splits=spec.inner_folds, shuffle=True, random_state=seed + 1)


@dataclass
class CandidateConfig:
    """One candidate: a catalog estimator (fixed params set) and the params searched for it."""

    name: str
    estimator: Any
    fixed: dict[str, Any]
    searched: dict[str, Any]

    def grid_size(self) -> float:
        sizes = [len(v) if isinstance(v, list) else math.inf for v in self.searched.values()]
        return float(np.prod(sizes)) if sizes else 1.0


@dataclass
class Selector:
    """An unfitted estimator that selects among the candidates when fitted (or a plain pipeline)."""

    estimator: Any
    candidates: list[CandidateConfig]
    configurations: float
    scoring: str
    target_transform: str | None = None

    def describe(self, fitted: Any) -> tuple[dict[str, Any], float | None]:
        """The configuration ``fitted`` chose, as ``{"estimator": name, **params}``, and its inner score."""
        if not isinstance(fitted, GridSearchCV | RandomizedSearchCV):
            only = self.candidates[0]
            return {"estimator": only.name, **_plain(only.fixed)}, None
        return self.describe_params(fitted.best_params_), float(fitted.best_score_)

    def describe_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """A configuration of the search (``{"model": estimator, "model__C": 1.0}``) as
        ``{"estimator": name, **fixed, **searched}``."""
        model = params["model"]
        searched = {k.removeprefix("model__"): v for k, v in params.items() if k != "model"}

        def same(candidate: Any) -> bool:  # the searched parameters aside
            if type(candidate) is not type(model):
                return False
            mine, theirs = candidate.get_params(), model.get_params()
            return all(mine[k] == theirs.get(k) for k in mine if k not in searched)

        chosen = next((c for c in self.candidates if same(c.estimator)), self.candidates[0])
        return {"estimator": chosen.name, **_plain(chosen.fixed), **_plain(searched)}

    def fixed(self, params: dict[str, Any]) -> Selector:
        """A selector that fits the one configuration ``params`` of this selector's search."""
        search = self.estimator
        pipe = clone(search.estimator if isinstance(search, GridSearchCV | RandomizedSearchCV) else search)
        pipe.set_params(**clone(params, safe=False))  # the search's own objects stay as they were
        return Selector(pipe, self.candidates, 1, self.scoring, self.target_transform)


def build_selector(
    steps: list[tuple[str, Any]],
    candidates: list[CandidateConfig],
    *,
    resampler: Any,
    spec: ValidationSpec,
    scoring: str,
    task: str,
    seed: int,
    target_transform: str | None = None,
) -> Selector:
    """The pipeline ``steps + [resample] + [model]``, wrapped in a grid or random search when there is
    more than one configuration to choose from. ``target_transform``: regression models are fitted
    to the transformed target, their predictions turned back."""
    first = candidates[0].estimator
    if resampler is not None:
        from imblearn.pipeline import Pipeline as ImbPipeline

        pipe: Any = ImbPipeline([*steps, ("resample", resampler), ("model", first)])
    else:
        pipe = Pipeline([*steps, ("model", first)])
    total = sum(c.grid_size() for c in candidates)
    if total == 1:
        return Selector(pipe, candidates, 1, scoring, target_transform)
    grid = [{"model": [c.estimator], **{f"model__{k}": v for k, v in c.searched.items()}} for c in candidates]
    inner = inner_splitter(spec, task, seed)
    if spec.search == "random":
        n_iter = int(min(spec.n_iter, total))
        search: Any = RandomizedSearchCV(
            pipe,
            grid,
            n_iter=n_iter,
            scoring=scoring,
            cv=inner,
            refit=True,
            n_jobs=1,
            random_state=seed,
            error_score="raise",
        )
        return Selector(search, candidates, n_iter, scoring, target_transform)
    search = GridSearchCV(pipe, grid, scoring=scoring, cv=inner, refit=True, n_jobs=1, error_score="raise")
    return Selector(search, candidates, total, scoring, target_transform)


def strip_resampling(fitted: Any) -> Pipeline:
    """The fitted pipeline without its sampler step, as a plain scikit-learn Pipeline.

    Samplers only act in ``fit``; the fitted transformers and estimator are the same objects, so the
    result predicts exactly as the imbalanced-learn pipeline does.
    """
    if isinstance(fitted, GridSearchCV | RandomizedSearchCV):
        fitted = fitted.best_estimator_
    steps = [(n, s) for n, s in fitted.steps if n != "resample"]
    if isinstance(fitted, Pipeline) and not any(n == "resample" for n, _ in fitted.steps):
        return fitted
    return Pipeline(steps)


@dataclass
class FoldResult:
    fold: int
    train_index: np.ndarray
    test_index: np.ndarray
    prediction: (
        np.ndarray
    )  # P(positive) for binary, class probabilities for multiclass, values for regression
    chosen: dict[str, Any]
    inner_score: float | None
    seconds: float
    importance: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _predict(fitted: Any, X: pd.DataFrame, task: str, n_classes: int) -> np.ndarray:
    if task == "regression":
        return np.asarray(fitted.predict(X), dtype=np.float64)
    proba = np.asarray(fitted.predict_proba(X), dtype=np.float64)
    seen = np.asarray(fitted.classes_, dtype=np.int64)
    full = np.zeros((len(X), n_classes))
    full[:, seen] = proba
    return full[:, 1] if n_classes == 2 else full


def _fit_fold(
    fold: int,
    selector: Selector,
    X: pd.DataFrame,
    y: np.ndarray,
    groups: np.ndarray | None,
    train: np.ndarray,
    test: np.ndarray,
    task: str,
    n_classes: int,
    importance: bool,
    seed: int,
) -> FoldResult:
    started = time.perf_counter()
    estimator = clone(selector.estimator)
    X_train, y_train = X.iloc[train], forward(selector.target_transform, y[train])
    # One thread per fold: folds run in parallel instead, and OpenMP (HistGradientBoosting) on a busy
    # machine is many times slower than one thread (measured: 36 s against 0.9 s for one fit).
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # e.g. a category unseen in a fold
        if groups is not None and isinstance(estimator, GridSearchCV | RandomizedSearchCV):
            estimator.fit(X_train, y_train, groups=groups[train])
        else:
            estimator.fit(X_train, y_train)
        prediction = _predict(estimator, X.iloc[test], task, n_classes)
        if task == "regression":
            prediction = inverse(selector.target_transform, prediction)
        chosen, inner = selector.describe(estimator)
        imp: dict[str, float] | None = None
        if importance:
            rng = np.random.default_rng(seed + fold)
            rows = test if len(test) <= IMPORTANCE_ROWS else rng.choice(test, IMPORTANCE_ROWS, replace=False)
            y_rows = forward(selector.target_transform, y[rows])
            imp = column_importance(estimator, X.iloc[rows], y_rows, selector.scoring, seed + fold)
    extra: dict[str, Any] = {}
    if isinstance(estimator, GridSearchCV | RandomizedSearchCV):
        res = estimator.cv_results_
        extra["inner"] = [
            {"params": params, "score": float(score)}
            for params, score in zip(res["params"], res["mean_test_score"], strict=True)
        ]
        extra["best"] = int(estimator.best_index_)
    return FoldResult(
        fold=fold,
        train_index=train,
        test_index=test,
        prediction=prediction,
        chosen=chosen,
        inner_score=inner,
        seconds=time.perf_counter() - started,
        importance=imp,
        extra=extra,
    )


def pooled_choice(results: Sequence[FoldResult]) -> tuple[int, np.ndarray] | None:
    """The configuration with the best inner-CV score averaged over every outer fold (each fold's
    inner scores are of its own training rows only), and that score matrix (folds x configurations);
    None when there was no search."""
    tables = [r.extra.get("inner") for r in results]
    if not tables or any(t is None for t in tables):
        return None
    width = {len(t) for t in tables if t is not None}
    if len(width) != 1:
        return None
    scores = np.array([[row["score"] for row in t] for t in tables if t is not None], dtype=np.float64)
    means = np.nanmean(scores, axis=0)
    return int(np.nanargmax(means)), scores


def _column_blocks(pipeline: Any, columns: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Which output columns of the ``features`` step each input column becomes, when every step
    between the ColumnTransformer and the estimator is absent (no PCA): then permuting an input
    column is permuting its block of transformed columns, and the features need transforming once."""
    steps = [n for n, _ in pipeline.steps if n != "resample"]
    if steps != ["features", "model"]:
        return None
    ct = pipeline.named_steps["features"]
    blocks: dict[str, np.ndarray] = {}
    for name, transformer, cols in ct.transformers_:
        if name == "remainder":
            continue
        where = ct.output_indices_[name]
        start = where.start
        encoder = transformer.steps[-1][1] if hasattr(transformer, "steps") else transformer
        if isinstance(encoder, OneHotEncoder):
            infrequent = getattr(encoder, "infrequent_categories_", None) or [None] * len(cols)
            widths = [
                len(cats) - (len(rare) - 1 if rare is not None and len(rare) else 0)
                for cats, rare in zip(encoder.categories_, infrequent, strict=True)
            ]
        else:
            widths = [1] * len(cols)
        if sum(widths) != where.stop - where.start:
            return None
        for col, width in zip(cols, widths, strict=True):
            blocks[str(col)] = np.arange(start, start + width)
            start += width
    return blocks if set(blocks) == set(map(str, columns)) else None


def column_importance(
    fitted: Any, X: pd.DataFrame, y: np.ndarray, scoring: str, seed: int
) -> dict[str, float]:
    """Permutation importance of each input column on held-out rows: the mean drop of the score when
    the column's values are shuffled."""
    from sklearn.metrics import get_scorer

    pipeline = fitted.best_estimator_ if isinstance(fitted, GridSearchCV | RandomizedSearchCV) else fitted
    blocks = _column_blocks(pipeline, list(X.columns))
    if blocks is None:
        result = permutation_importance(
            pipeline, X, y, scoring=scoring, n_repeats=IMPORTANCE_REPEATS, random_state=seed, n_jobs=1
        )
        return {str(c): float(v) for c, v in zip(X.columns, result.importances_mean, strict=True)}
    score = get_scorer(scoring)
    model = pipeline.named_steps["model"]
    Xt = np.asarray(pipeline.named_steps["features"].transform(X), dtype=np.float64)
    base = score(model, Xt, y)
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for column, block in blocks.items():
        drops = []
        for _ in range(IMPORTANCE_REPEATS):
            shuffled = Xt.copy()
            shuffled[:, block] = Xt[rng.permutation(len(Xt))][:, block]
            drops.append(base - score(model, shuffled, y))
        out[column] = float(np.mean(drops))
    return {str(c): out[str(c)] for c in X.columns}


@contextmanager
def _backend(scheduler: Any, n_jobs: int) -> Iterator[int]:
    """joblib's backend for the folds: loky processes, or the Dask cluster at ``scheduler``."""
    if scheduler is None:
        yield n_jobs
        return
    try:
        from distributed import Client
    except ImportError as exc:
        raise ConfigError(
            "--scheduler needs dask.distributed, which is not installed",
            hint="pip install 'headrace[dask]'",
        ) from exc
    own = not hasattr(scheduler, "submit")
    try:
        client = Client(scheduler, timeout="10s", set_as_default=False) if own else scheduler
    except (OSError, TimeoutError) as exc:
        raise ServiceUnavailable(
            f"Dask scheduler {scheduler} is unreachable ({exc})",
            hint="start it with 'dask scheduler' and workers, or leave out --scheduler",
        ) from exc
    try:
        with client.as_current(), parallel_config(backend="dask"):
            yield -1
    finally:
        if own:
            client.close()


def run_folds(
    selector: Selector,
    X: pd.DataFrame,
    y: np.ndarray,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    task: str,
    n_classes: int,
    groups: np.ndarray | None = None,
    importance: bool = True,
    seed: int = 0,
    n_jobs: int = 1,
    scheduler: Any = None,
    folds: Sequence[int] | None = None,
    progress: Any = None,
) -> list[FoldResult]:
    """Fit and score every outer fold, in parallel (joblib) or on a Dask cluster. ``folds``: the
    numbers of the given splits (0, 1, ... by default); ``progress(done, total)`` is called as each
    fold ends."""
    numbers = list(folds) if folds is not None else list(range(len(splits)))
    results: list[FoldResult] = []
    with _backend(scheduler, n_jobs) as jobs:
        # folds as they end (for progress), except on Dask, whose joblib backend returns them at once
        order = "list" if scheduler is not None else "generator_unordered"
        parallel = Parallel(n_jobs=min(jobs, len(splits)) if jobs > 0 else jobs, return_as=order)
        for result in parallel(
            delayed(_fit_fold)(i, selector, X, y, groups, train, test, task, n_classes, importance, seed)
            for i, (train, test) in zip(numbers, splits, strict=True)
        ):
            results.append(result)
            if progress is not None:
                progress(len(results), len(splits))
    return sorted(results, key=lambda r: r.fold)


def grid_configurations(candidates: Sequence[CandidateConfig]) -> list[dict[str, Any]]:
    """Every configuration of a grid (for reports)."""
    out: list[dict[str, Any]] = []
    for c in candidates:
        keys = list(c.searched)
        lists = [v if isinstance(v, list) else [v] for v in c.searched.values()]
        for values in itertools.product(*lists):
            out.append({"estimator": c.name, **c.fixed, **dict(zip(keys, values, strict=True))})
    return out


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
