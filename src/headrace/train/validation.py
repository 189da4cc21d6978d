"""Model selection and validation: nested cross-validation with joblib or Dask.

The outer folds (the declared strategy) give the estimate. Inside each outer training fold, every
candidate configuration (each estimator with its grid or random draws) is scored by an inner
cross-validation and the best is refitted on that training fold: the outer test fold is never seen
by the selection, so that estimate (the *fully nested* one) is not the selection's own winner's
curse. The model that is kept is one configuration chosen by the inner scores pooled over all outer
folds (:func:`pooled_choice`), so one odd fold cannot swing the choice to a weak candidate; its own
outer-fold estimate is reported beside the fully nested one (``run.py``). With one configuration
there is nothing to select and the outer folds fit it directly.

Outer folds run through joblib (``n_jobs`` processes) in one machine. On a Dask cluster
(:func:`run_nested_on_dask`) nothing but small task descriptions leaves the driver: each worker reads the
pinned dataset version from the store itself (:class:`DataRef`, once per worker, cached) and prepares
the same rows, folds and inner folds the driver has; the tasks are one inner fit of one configuration
(outer fold x inner fold x configuration), then the outer-fold fits of each fold's winner and of the
pooled choice, beside the final fit on every row. Each task is the very computation the one-process
search runs (the same clone, slices, scorer and mean), so the results are the same.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import pickle
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.inspection import permutation_importance
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    ParameterGrid,
    ParameterSampler,
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
from ..errors import ConfigError, DataError, ServiceUnavailable
from .estimators import check_int, check_number
from .target import forward, inverse

__all__ = [
    "CandidateConfig",
    "DataRef",
    "Expected",
    "FoldResult",
    "Recipe",
    "Selector",
    "build_selector",
    "check_validation",
    "inner_splitter",
    "outer_splitter",
    "pooled_choice",
    "prefetch",
    "run_folds",
    "run_nested_on_dask",
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
    return _pooled([r.extra.get("inner") for r in results])


def _pooled(tables: Sequence[list[dict[str, Any]] | None]) -> tuple[int, np.ndarray] | None:
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
    folds: Sequence[int] | None = None,
    progress: Any = None,
) -> list[FoldResult]:
    """Fit and score every outer fold in parallel (joblib processes). ``folds``: the numbers of the
    given splits (0, 1, ... by default); ``progress(done, total)`` is called as each fold ends. On a
    Dask cluster: :func:`run_nested_on_dask`."""
    numbers = list(folds) if folds is not None else list(range(len(splits)))
    results: list[FoldResult] = []
    jobs = min(n_jobs, len(splits)) if n_jobs > 0 else n_jobs
    parallel = Parallel(n_jobs=jobs, return_as="generator_unordered")
    for result in parallel(
        delayed(_fit_fold)(i, selector, X, y, groups, train, test, task, n_classes, importance, seed)
        for i, (train, test) in zip(numbers, splits, strict=True)
    ):
        results.append(result)
        if progress is not None:
            progress(len(results), len(splits))
    return sorted(results, key=lambda r: r.fold)


# -- Dask: the rows read by the workers, the search spread over the cluster ------------------------


@dataclass(frozen=True)
class DataRef:
    """A pinned dataset version in a store: all a Dask worker needs to read the training rows itself.

    ``storage_options`` travel with the tasks (the workers open the store with them); a local store is
    named by its absolute path, which every worker must see (one machine, or a shared file system)."""

    store: str
    dataset: str
    version: int
    storage_options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, store: Any, dataset: str, version: int) -> DataRef:
        root = str(store.root)
        if "://" not in root:
            root = str(Path(root).resolve())
        options = tuple(sorted((str(k), str(v)) for k, v in (store.storage_options or {}).items()))
        return cls(root, dataset, int(version), options)

    def read(self) -> Any:
        from ..store import Store

        return Store(self.store, dict(self.storage_options)).read(self.dataset, self.version)

    def __str__(self) -> str:
        return f"{self.store}/{self.dataset}@{self.version}"


@dataclass(frozen=True)
class Recipe:
    """How a worker makes the training rows of the dataset it reads: ``prepare(frame, *args)`` (a
    module-level function, pickled by name: the driver's own code) gives ``(X, y, groups, plan
    fingerprint)``; ``outer`` and ``inner`` are the splitters. Known before the driver has read the
    data, so that the workers start at once (:func:`prefetch`)."""

    source: DataRef
    prepare: Callable[..., tuple[pd.DataFrame, np.ndarray, np.ndarray | None, str]]
    args: tuple[Any, ...]
    outer: Any
    inner: Any
    target_transform: str | None = None

    @property
    def key(self) -> str:
        blob = pickle.dumps((self.source, self.prepare.__qualname__, self.args, self.outer, self.inner))
        return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class Expected:
    """The driver's rows, folds and feature plan, fingerprinted: a worker's must be the same."""

    rows: int
    labels: str
    splits: str
    plan: str


def labels_digest(y: np.ndarray) -> str:
    """A fingerprint of the labels: the worker's rows must be the driver's."""
    return hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest()[:32]


def splits_digest(splits: Sequence[tuple[np.ndarray, np.ndarray]]) -> str:
    """A fingerprint of the outer folds: the worker's must be the driver's."""
    h = hashlib.sha256()
    for train, test in splits:
        h.update(np.asarray(train, dtype=np.int64).tobytes())
        h.update(b"|")
        h.update(np.asarray(test, dtype=np.int64).tobytes())
        h.update(b"/")
    return h.hexdigest()[:32]


@dataclass
class _Rows:
    X: pd.DataFrame
    y: np.ndarray
    groups: np.ndarray | None
    splits: list[tuple[np.ndarray, np.ndarray]]
    expected: Expected  # what this worker made, fingerprinted
    outer: dict[int, tuple[pd.DataFrame, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]] = field(
        default_factory=dict
    )


# Per worker process, the rows of the run at hand (a new run's replace them): the table is read and
# the rows made once per worker, not once per task, from the moment the run starts (prefetch). Reads
# are counted so that a test can see each worker read the table once.
_ROWS: dict[str, _Rows] = {}
_READS: Counter[str] = Counter()
_PREPARED: Counter[str] = Counter()
_LOCK = threading.Lock()


def worker_loads() -> dict[str, dict[str, int]]:
    """How many times this process read each dataset version from the store (``reads``) and made a
    run's rows of it (``prepared``), by ``store/dataset@version``."""
    return {"reads": dict(_READS), "prepared": dict(_PREPARED)}


def _prepare(recipe: Recipe) -> _Rows:
    """Read and make the run's rows; call with ``_LOCK`` held."""
    rows = _ROWS.get(recipe.key)
    if rows is not None:
        return rows
    started = time.perf_counter()
    _ROWS.clear()  # the previous run's rows: one run's are kept
    frame = recipe.source.read()
    _READS[str(recipe.source)] += 1
    X, y, groups, plan = recipe.prepare(frame, *recipe.args)
    del frame
    splits = [(np.asarray(a), np.asarray(b)) for a, b in recipe.outer.split(X, y, groups)]
    made = Expected(len(y), labels_digest(y), splits_digest(splits), plan)
    rows = _ROWS[recipe.key] = _Rows(X, y, groups, splits, made)
    _PREPARED[str(recipe.source)] += 1
    log.info("%s read and prepared on this worker in %.1f s", recipe.source, time.perf_counter() - started)
    return rows


def _prepare_ahead(recipe: Recipe) -> None:
    with _LOCK:
        _prepare(recipe)


def prefetch(client: Any, recipe: Recipe) -> None:
    """Have every worker read the table and make the rows now, while the driver reads and prepares:
    the tasks that follow find them made. Returns at once (a failure here is met again, and raised,
    by the first task)."""
    from distributed import fire_and_forget

    for worker in client.scheduler_info().get("workers", {}):
        fire_and_forget(client.submit(_prepare_ahead, recipe, workers=[worker], pure=False, priority=10))


def _rows(recipe: Recipe, expected: Expected) -> _Rows:
    with _LOCK:
        rows = _prepare(recipe)
    made = rows.expected
    if made.rows != expected.rows or made.labels != expected.labels:
        raise DataError(
            f"a Dask worker read {recipe.source} as {made.rows} labelled rows that are not the "
            f"driver's {expected.rows}",
            hint="the workers must open the driver's store (the same URL and storage_options)",
        )
    if made.plan != expected.plan or made.splits != expected.splits:
        what = "feature plan" if made.plan != expected.plan else "folds"
        raise DataError(
            f"a Dask worker made a {what} of {recipe.source} that is not the driver's",
            hint="the workers and the driver must run the same headrace and scikit-learn versions",
        )
    return rows


def _outer_rows(
    recipe: Recipe, rows: _Rows, fold: int
) -> tuple[pd.DataFrame, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """An outer fold's training rows as the search inside it sees them (``X.iloc[train]``, the
    transformed target) and its inner splits; the last two folds' are kept."""
    with _LOCK:
        hit = rows.outer.get(fold)
        if hit is None:
            train = rows.splits[fold][0]
            X_train = rows.X.iloc[train]
            y_train = forward(recipe.target_transform, rows.y[train])
            g_train = rows.groups[train] if rows.groups is not None else None
            inner = [(np.asarray(a), np.asarray(b)) for a, b in recipe.inner.split(X_train, y_train, g_train)]
            hit = (X_train, y_train, inner)
            while len(rows.outer) >= 2:
                rows.outer.pop(next(iter(rows.outer)))
            rows.outer[fold] = hit
        return hit


def _inner_task(
    recipe: Recipe, expected: Expected, search: Any, fold: int, split: int, params: dict[str, Any]
) -> tuple[float, float]:
    """One configuration fitted on one inner training fold of one outer fold, scored on its inner test
    fold by the search's own code (a one-point grid on that one split): the score the one-process
    search computes. Returns the score and the seconds."""
    started = time.perf_counter()
    X_train, y_train, inner = _outer_rows(recipe, _rows(recipe, expected), fold)
    one = GridSearchCV(
        search.estimator,
        [{k: [v] for k, v in params.items()}],
        scoring=search.scoring,
        cv=[inner[split]],
        refit=False,
        n_jobs=1,
        error_score="raise",
    )
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        one.fit(X_train, y_train)
    return float(one.cv_results_["split0_test_score"][0]), time.perf_counter() - started


def _outer_task(
    recipe: Recipe,
    expected: Expected,
    selector: Selector,
    fold: int,
    task: str,
    n_classes: int,
    importance: bool,
    seed: int,
) -> FoldResult:
    """One configuration fitted on an outer training fold and scored on its test fold: the one-process
    :func:`_fit_fold` on the worker's own rows (the indices go back empty: the driver has them)."""
    rows = _rows(recipe, expected)
    train, test = rows.splits[fold]
    result = _fit_fold(
        fold, selector, rows.X, rows.y, rows.groups, train, test, task, n_classes, importance, seed
    )
    result.train_index = result.test_index = np.empty(0, dtype=np.int64)
    return result


def _final_task(recipe: Recipe, expected: Expected, selector: Selector) -> Any:
    """The kept configuration fitted on every row, as the driver fits it in one process."""
    rows = _rows(recipe, expected)
    final = clone(selector.estimator)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        final.fit(rows.X, forward(selector.target_transform, rows.y))
    return final


def configurations(selector: Selector) -> list[dict[str, Any]] | None:
    """The configurations the selector's search evaluates, in its order (None: no search)."""
    search = selector.estimator
    if isinstance(search, RandomizedSearchCV):
        sampler = ParameterSampler(
            search.param_distributions, search.n_iter, random_state=search.random_state
        )
        return list(sampler)
    if isinstance(search, GridSearchCV):
        return list(ParameterGrid(search.param_grid))
    return None


def _best_index(means: np.ndarray) -> int:
    """The search's ``best_index_``: the first of the best means, a NaN ranked below every score."""
    if np.isnan(means).all():
        return 0
    return int(np.argmax(np.nan_to_num(means, nan=np.nanmin(means) - 1)))


@contextmanager
def dask_client(scheduler: Any) -> Iterator[Any]:
    """A client of the Dask cluster at ``scheduler`` (an address, or a client already made)."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise ConfigError(
            "--scheduler needs dask.distributed, which is not installed",
            hint="pip install 'headrace[dask]'",
        ) from exc
    if hasattr(scheduler, "submit"):
        yield scheduler
        return
    try:
        client = Client(scheduler, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ServiceUnavailable(
            f"Dask scheduler {scheduler} is unreachable ({exc})",
            hint="start it with 'dask scheduler' and workers, or leave out --scheduler",
        ) from exc
    try:
        yield client
    finally:
        client.close()


@dataclass
class NestedRun:
    """The nested cross-validation: each fold with its own winner (``nested``), each fold with the
    kept configuration (``results``), the pooled choice, and the kept configuration fitted on every
    row (``final``, by ``final_selector``)."""

    nested: list[FoldResult]
    results: list[FoldResult]
    pooled: tuple[int, np.ndarray] | None
    final_selector: Selector
    final: Any


def run_nested_on_dask(
    client: Any,
    recipe: Recipe,
    expected: Expected,
    selector: Selector,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    task: str,
    n_classes: int,
    importance: bool,
    seed: int,
    progress: Any = None,
) -> NestedRun:
    """The nested cross-validation of :func:`run_folds`, the pooled choice and the final fit, spread
    over a Dask cluster whose workers read the rows themselves (``recipe``).

    Two rounds of tasks: every (outer fold, inner fold, configuration) inner fit; then, the inner
    scores known, the outer-fold fit of each fold's winner and of the pooled choice, with the final fit
    on every row beside them. With one configuration the first round is empty and the final fit runs
    beside the folds. ``splits``: the driver's, for the indices (the workers make the same).
    ``progress(done, total, label)`` as tasks end."""
    from distributed import as_completed

    def gather(futures: dict[Any, Any], label: str) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        where = {f.key: k for k, f in futures.items()}
        for done, future in enumerate(as_completed(list(futures.values()), loop=client.loop), start=1):
            out[where[future.key]] = future.result()
            if progress is not None:
                progress(done, len(futures), label)
        return out

    configs = configurations(selector)
    folds = len(splits)
    tables: list[list[dict[str, Any]]] = []
    best: list[int] = []
    inner_seconds = [0.0] * folds
    if configs is not None:
        search = selector.estimator
        n_inner = recipe.inner.get_n_splits()
        futures = {
            (f, k, c): client.submit(_inner_task, recipe, expected, search, f, k, configs[c], pure=False)
            for f in range(folds)
            for c in range(len(configs))
            for k in range(n_inner)
        }
        scores = gather(futures, f"{folds} folds x {n_inner} inner folds x {len(configs)} configurations")
        for f in range(folds):
            # the search's own layout (configurations x splits) and mean: the means are its own
            grid = np.array(
                [scores[f, k, c][0] for c in range(len(configs)) for k in range(n_inner)], dtype=np.float64
            ).reshape(len(configs), n_inner)
            means = np.average(grid, axis=1)
            tables.append([{"params": p, "score": float(m)} for p, m in zip(configs, means, strict=True)])
            best.append(_best_index(means))
            inner_seconds[f] = sum(v[1] for (ff, _, _), v in scores.items() if ff == f)
    pooled = _pooled(tables) if configs is not None else None
    pick = pooled[0] if pooled is not None else None
    fixed: dict[int | None, Selector] = {None: selector}
    if configs is not None:
        fixed.update({c: selector.fixed(configs[c]) for c in {*best, *([] if pick is None else [pick])}})
    final_selector = fixed[pick]

    # the final fit is the longest task: first, so that the folds fill the other workers meanwhile
    jobs: dict[Any, Any] = {
        "final": client.submit(_final_task, recipe, expected, final_selector, pure=False, priority=1)
    }
    for f in range(folds):
        for c in {best[f], pick} if configs is not None else {None}:
            jobs[f, c] = client.submit(
                _outer_task, recipe, expected, fixed[c], f, task, n_classes, importance, seed, pure=False
            )
    label = f"{folds} folds" + (" (each fold's winner, the pooled choice)" if configs is not None else "")
    done = gather(jobs, label + " and the final fit")
    final = done.pop("final")
    for (f, _), r in done.items():
        r.train_index, r.test_index = splits[f]
    nested: list[FoldResult] = []
    results: list[FoldResult] = []
    for f in range(folds):
        if configs is None:
            nested.append(done[f, None])
            results.append(done[f, None])
            continue
        own = done[f, best[f]]
        winner = FoldResult(
            fold=f,
            train_index=own.train_index,
            test_index=own.test_index,
            prediction=own.prediction,
            chosen=selector.describe_params(configs[best[f]]),
            inner_score=tables[f][best[f]]["score"],
            seconds=own.seconds + inner_seconds[f],
            importance=own.importance,
            extra={"inner": tables[f], "best": best[f]},
        )
        nested.append(winner)
        results.append(winner if best[f] == pick else done[f, pick])
    return NestedRun(nested, results, pooled, final_selector, final)


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
