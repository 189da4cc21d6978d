"""Training a tabular model: a dataset version in, a validated and registered model version out.

:func:`fit_and_validate` is the pure part (a frame and a spec to a model and its scorecard);
:func:`train_model` adds the store (which data version), the registry (the new version, with its
lineage) and the training-run log; :func:`reproduce` retrains a registered version from its recorded
data version, spec and seed and compares the metrics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import logging
import math
import platform
import subprocess
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV
from threadpoolctl import threadpool_limits

from ..config.models import Candidate, ModelSpec
from ..errors import ConfigError, DataError, NotFound, UsageError
from ..metadata import finish_training_run, start_training_run
from ..registry import ModelVersion, Registry
from ..store import Store
from . import metrics as M
from .estimators import make_estimator, validate_candidate
from .features import FeaturePlan, build_features, build_pca, plan_features, prepare
from .imbalance import class_ratio, make_sampler
from .tabular import TabularModel
from .target import forward
from .thresholds import ThresholdChoice, choose_threshold, threshold_spec
from .validation import (
    CandidateConfig,
    DataRef,
    Expected,
    FoldResult,
    Recipe,
    Selector,
    build_selector,
    check_validation,
    dask_client,
    inner_splitter,
    labels_digest,
    outer_splitter,
    pooled_choice,
    prefetch,
    run_folds,
    run_nested_on_dask,
    splits_digest,
    strip_resampling,
)

__all__ = [
    "Reproduction",
    "TrainResult",
    "check_spec",
    "code_version",
    "fit_and_validate",
    "package_versions",
    "reproduce",
    "train_model",
]

log = logging.getLogger("headrace.train")

TABULAR_TASKS = ("classification", "regression")
_POSITIVE_NAMES = ("yes", "y", "true", "1", "positive", "pos")

# 300 trees without early stopping (which holds back a tenth of the rows): on California housing, 5-fold
# RMSE 45,430 against 46,214 with early stopping and 47,892 for scikit-learn's defaults. One learning
# rate: a grid of two doubled the time (10,000 rows x 20 columns: 68 s, 37 s with one) for no gain here.
_BOOSTING: dict[str, Any] = {
    "learning_rate": 0.1,
    "max_iter": 300,
    "early_stopping": False,
    "l2_regularization": 1.0,
}
DEFAULT_CANDIDATES: dict[str, list[dict[str, Any]]] = {
    "classification": [
        {"estimator": "logistic_regression", "params": {"C": [0.1, 1.0]}},
        {"estimator": "hist_gradient_boosting", "params": _BOOSTING},
    ],
    "regression": [
        {"estimator": "ridge", "params": {"alpha": [1.0, 10.0]}},
        {"estimator": "hist_gradient_boosting", "params": _BOOSTING},
    ],
}
"""What a model that names no ``candidates`` is trained with: a linear model and gradient boosting,
each with a small grid, chosen between by the pooled inner cross-validation."""
DEFAULT_MIN_FREQUENCY = 5  # a category seen in fewer training rows joins the one "infrequent" category
_NEAR_UNIQUE = 0.5  # a text column with more distinct values than this share of rows: an identifier


@dataclass
class TrainResult:
    name: str
    model: TabularModel
    scorecard: dict[str, Any]
    oof: pl.DataFrame
    data_version: int | None = None
    version: ModelVersion | None = None
    seconds: float = 0.0
    promoted: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float]:
        return flat_metrics(self.scorecard)


def flat_metrics(scorecard: dict[str, Any]) -> dict[str, float]:
    """``{metric: mean, metric_std: std}`` across folds: what the registry records."""
    out: dict[str, float] = {}
    for name, stats in scorecard["summary"].items():
        out[name] = stats["mean"]
        out[f"{name}_std"] = stats["std"]
    return out


def check_spec(name: str, spec: ModelSpec) -> list[CandidateConfig]:
    """Every check that needs no data: the task, target, validation parameters, candidates and
    their parameters. Returns the candidates, built."""
    where = f"models.{name}"
    if spec.task not in TABULAR_TASKS:
        raise ConfigError(
            f"{where}: task {spec.task!r} is not trained by the tabular trainer",
            hint="use classification or regression here",
        )
    if not spec.target:
        raise ConfigError(f"{where}.target: required for {spec.task}", hint="name the column to predict")
    if spec.target_transform != "none" and spec.task != "regression":
        raise ConfigError(
            f"{where}.target_transform: only for regression", hint="remove it, or set task: regression"
        )
    check_validation(spec.validation, spec.task)
    if spec.validation.metric is not None:
        M.scorer(spec.validation.metric, spec.task)
    if spec.task == "classification":
        threshold_spec(spec.validation.threshold)
    if spec.imbalance is not None and spec.task != "classification":
        raise ConfigError(f"{where}.imbalance: only for classification", hint="remove it")
    out = []
    declared = [c.model_dump() for c in spec.candidates] or DEFAULT_CANDIDATES[spec.task]
    for i, raw in enumerate(declared):
        candidate = Candidate.model_validate(raw)
        cwhere = f"{where}.candidates[{i}]"
        fixed, searched = validate_candidate(
            candidate.estimator, spec.task, candidate.params, search=spec.validation.search, where=cwhere
        )
        estimator = make_estimator(
            candidate.estimator,
            spec.task,
            fixed,
            seed=spec.seed,
            class_weight=spec.imbalance == "class_weight",
            where=cwhere,
        )
        out.append(CandidateConfig(candidate.estimator, estimator, fixed, searched))
    return out


def _positive(classes: list[Any], counts: dict[Any, int], spec: ModelSpec) -> Any:
    if spec.positive is not None:
        for c in classes:
            if c == spec.positive or str(c) == str(spec.positive):
                return c
        raise ConfigError(
            f"positive: {spec.positive!r} is not a class of {spec.target}",
            hint=f"its classes: {', '.join(map(str, classes))}",
        )
    for c in classes:
        if str(c).lower() in _POSITIVE_NAMES:
            return c
    return min(classes, key=lambda c: (counts[c], str(c)))  # the minority class


def _target(frame: pl.DataFrame, spec: ModelSpec) -> tuple[pl.DataFrame, np.ndarray, list[Any] | None]:
    target = spec.target
    assert target is not None
    if target not in frame.columns:
        raise DataError(
            f"dataset {spec.dataset!r} has no target column {target!r}",
            hint=f"its columns: {', '.join(frame.columns)}",
        )
    missing = frame[target].null_count()
    if missing:
        log.warning("%s: %d rows without a target value left out", spec.dataset, missing)
        frame = frame.filter(pl.col(target).is_not_null())
    if frame.height < 2 * max(spec.validation.folds, 2):
        raise DataError(
            f"dataset {spec.dataset!r} has {frame.height} labelled rows: too few to validate",
            hint="ingest more data or use fewer folds",
        )
    if spec.task == "regression":
        try:
            y = frame[target].cast(pl.Float64).to_numpy()
        except pl.exceptions.InvalidOperationError:
            raise DataError(
                f"regression target {target!r} is not numeric", hint="use classification"
            ) from None
        return frame, y, None
    values = frame[target].to_list()
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    try:
        classes = sorted(counts)
    except TypeError:
        classes = sorted(counts, key=str)
    if len(classes) < 2:
        raise DataError(f"target {target!r} has one class only ({classes[0]!r})", hint="check the data")
    if len(classes) == 2:
        positive = _positive(classes, counts, spec)
        classes = [c for c in classes if c != positive] + [positive]
    index = {c: i for i, c in enumerate(classes)}
    y = np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    return frame, y, classes


def _candidates_table(fitted: Any, selector: Selector) -> list[dict[str, Any]]:
    if not isinstance(fitted, GridSearchCV | RandomizedSearchCV):
        return []
    res = fitted.cv_results_
    rows = []
    for i, params in enumerate(res["params"]):
        model = params["model"]
        name = next(
            (c.name for c in selector.candidates if type(c.estimator) is type(model)),
            type(model).__name__,
        )
        shown = {k.removeprefix("model__"): _plain(v) for k, v in params.items() if k != "model"}
        rows.append(
            {
                "estimator": name,
                "params": shown,
                "inner_mean": float(res["mean_test_score"][i]),
                "inner_std": float(res["std_test_score"][i]),
                "rank": int(res["rank_test_score"][i]),
            }
        )
    return sorted(rows, key=lambda r: r["rank"])


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _pooled_table(
    results: Sequence[FoldResult], scores: np.ndarray, selector: Selector
) -> list[dict[str, Any]]:
    """Every configuration with its inner score pooled over the outer folds (mean, spread across
    folds), best first, and how many folds' own selection chose it."""
    means, stds = np.nanmean(scores, axis=0), np.nanstd(scores, axis=0)
    order = np.argsort(-means)
    wins = np.bincount(
        [int(r.extra.get("best", -1)) for r in results if r.extra.get("best") is not None],
        minlength=scores.shape[1],
    )
    rows = []
    for rank, i in enumerate(order, start=1):
        described = selector.describe_params(results[0].extra["inner"][int(i)]["params"])
        estimator = described.pop("estimator")
        rows.append(
            {
                "estimator": estimator,
                "params": described,
                "inner_mean": float(means[i]),
                "inner_std": float(stds[i]),
                "rank": rank,
                "chosen_in_folds": int(wins[i]),
            }
        )
    return rows


def _sensible_features(spec: ModelSpec, frame: pl.DataFrame, exclude: Sequence[str]) -> tuple[Any, list[str]]:
    """The feature spec with what no careful data scientist would feed a model left out, and notes
    saying so: text columns that are near-unique per row (identifiers, free text: one-hot encoding them
    would make thousands of columns), and integer columns named like ids holding a distinct value per
    row. Rare categories are grouped (``min_frequency``, unless the spec sets it)."""
    from ..ingest.schema import id_like

    features = spec.features
    named = set(features.drop) | set(features.numeric) | set(features.categorical) | set(exclude)
    rows = frame.height
    notes: list[str] = []
    drop: list[str] = []
    if rows >= 50:
        for c, dtype in frame.schema.items():
            if c in named:
                continue
            if dtype == pl.String:
                distinct = frame[c].n_unique()
                if distinct > _NEAR_UNIQUE * rows:
                    drop.append(c)
                    notes.append(
                        f"{c}: left out, text with {distinct:,} distinct values in {rows:,} rows "
                        "(an identifier or free text); name it in features.categorical to keep it"
                    )
            elif dtype.is_integer() and id_like(c) and frame[c].n_unique() == rows:
                drop.append(c)
                notes.append(
                    f"{c}: left out, an id (one distinct value per row); "
                    "name it in features.numeric to keep it"
                )
    for note in notes:
        log.info("%s", note)
    update: dict[str, Any] = {}
    if drop:
        update["drop"] = [*features.drop, *drop]
    if features.min_frequency is None and features.encode == "onehot":
        update["min_frequency"] = DEFAULT_MIN_FREQUENCY
    return (features.model_copy(update=update) if update else features), notes


def score_folds(
    results: Sequence[FoldResult],
    y: np.ndarray,
    task: str,
    n_classes: int,
    threshold: float | None,
) -> list[dict[str, float]]:
    scores = []
    for r in results:
        y_test = y[r.test_index]
        if task == "regression":
            scores.append(M.regression_scores(y_test, r.prediction))
            continue
        labels = _decide(r.prediction, n_classes, threshold)
        scores.append(M.classification_scores(y_test, r.prediction, labels, n_classes))
    return scores


def _decide(prediction: np.ndarray, n_classes: int, threshold: float | None) -> np.ndarray:
    if n_classes == 2:
        return (prediction >= (0.5 if threshold is None else threshold)).astype(np.int64)
    return np.asarray(prediction.argmax(axis=1), dtype=np.int64)


def _oof(results: Sequence[FoldResult], y: np.ndarray, task: str, n_classes: int) -> pl.DataFrame:
    rows = np.concatenate([r.test_index for r in results])
    folds = np.concatenate([np.full(len(r.test_index), r.fold) for r in results])
    columns: dict[str, Any] = {"row": rows, "fold": folds, "y": y[rows]}
    if task == "classification" and n_classes > 2:
        stacked = np.vstack([r.prediction for r in results])
        for k in range(n_classes):
            columns[f"p_{k}"] = stacked[:, k]
    else:
        columns["prediction"] = np.concatenate([r.prediction for r in results])
    return pl.DataFrame(columns)


def _importance(results: Sequence[FoldResult]) -> list[dict[str, Any]]:
    found = [r.importance for r in results if r.importance]
    if not found:
        return []
    names = list(found[0])
    table = np.array([[f[n] for n in names] for f in found])
    order = np.argsort(-table.mean(axis=0))
    return [
        {"feature": names[i], "mean": float(table[:, i].mean()), "std": float(table[:, i].std())}
        for i in order
    ]


def _labelled(
    spec: ModelSpec, frame: pl.DataFrame
) -> tuple[pl.DataFrame, np.ndarray, list[Any] | None, np.ndarray | None]:
    """The rows training uses, in its order, with the encoded target, its classes and the groups:
    the driver's and every Dask worker's rows alike."""
    vspec = spec.validation
    if vspec.strategy == "time_series_split":
        if vspec.time_column is None:
            log.info("time_series_split without validation.time_column: rows are taken in stored order")
        elif vspec.time_column not in frame.columns:
            raise DataError(f"validation.time_column {vspec.time_column!r} is not in the dataset")
        else:
            frame = frame.sort(vspec.time_column)
    frame, y, classes = _target(frame, spec)
    groups = None
    if vspec.group:
        if vspec.group not in frame.columns:
            raise DataError(f"validation.group {vspec.group!r} is not in the dataset")
        groups = frame[vspec.group].cast(pl.String).to_numpy()
    return frame, y, classes, groups


def _feature_plan(spec: ModelSpec, frame: pl.DataFrame) -> tuple[FeaturePlan, list[str]]:
    """What the model reads of the labelled rows, and notes on the columns left out."""
    exclude = [spec.target or ""]
    if spec.validation.group:
        exclude.append(spec.validation.group)
    features, notes = _sensible_features(spec, frame, exclude)
    return plan_features(features, frame.schema, exclude=exclude), notes


def plan_fingerprint(plan: FeaturePlan) -> str:
    return hashlib.sha256(repr(dataclasses.asdict(plan)).encode()).hexdigest()[:32]


def worker_rows(
    frame: pl.DataFrame, spec: ModelSpec
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None, str]:
    """What a Dask worker makes of the dataset version it read, by the driver's own steps: ``X``,
    ``y``, the groups, and the feature plan's fingerprint (checked against the driver's)."""
    frame, y, _, groups = _labelled(spec, frame)
    plan, _ = _feature_plan(spec, frame)
    return prepare(frame, plan), y, groups, plan_fingerprint(plan)


def dask_recipe(spec: ModelSpec, source: DataRef) -> Recipe:
    """How the Dask workers make the training rows of ``source`` for ``spec``."""
    return Recipe(
        source,
        worker_rows,
        (spec,),
        outer=outer_splitter(spec.validation, spec.task, spec.seed),
        inner=inner_splitter(spec.validation, spec.task, spec.seed),
        target_transform=spec.target_transform if spec.task == "regression" else None,
    )


def fit_and_validate(
    name: str,
    spec: ModelSpec,
    frame: pl.DataFrame,
    *,
    n_jobs: int | None = None,
    scheduler: Any = None,
    source: DataRef | None = None,
    importance: bool | None = None,
    progress: Any = None,
) -> TrainResult:
    """Validate the spec's candidates on ``frame`` by nested cross-validation, choose one
    configuration by the inner scores pooled over the outer folds, choose the threshold on its
    out-of-fold predictions, and fit it on all rows. ``progress(done, total, label)`` is called as
    each outer fold ends.

    ``scheduler`` (a Dask address or client): the search, the folds and the final fit run on that
    cluster, whose workers read ``source`` (the dataset version ``frame`` is) from the store
    themselves; the results are the one-process run's."""
    if scheduler is None:
        return _fit_and_validate(name, spec, frame, n_jobs, None, None, importance, progress)
    check_spec(name, spec)  # before connecting
    if source is None:
        raise UsageError(
            "a Dask run needs the dataset's place in the store (source=DataRef...): its workers read "
            "the rows themselves",
            hint="use train_model (or 'headrace train --scheduler'), which passes it",
        )
    with dask_client(scheduler) as client:
        prefetch(client, dask_recipe(spec, source))  # the workers make their rows as the driver does
        return _fit_and_validate(name, spec, frame, n_jobs, client, source, importance, progress)


def _fit_and_validate(
    name: str,
    spec: ModelSpec,
    frame: pl.DataFrame,
    n_jobs: int | None,
    client: Any,
    source: DataRef | None,
    importance: bool | None,
    progress: Any,
) -> TrainResult:
    started = time.perf_counter()
    candidates = check_spec(name, spec)
    vspec = spec.validation
    frame, y, classes, groups = _labelled(spec, frame)
    task = spec.task
    transform = spec.target_transform if task == "regression" else None
    forward(transform, y, target=spec.target or "target")  # a value the transform cannot take: say so now
    n_classes = len(classes) if classes is not None else 0
    plan, notes = _feature_plan(spec, frame)
    # on Dask the workers prepare the rows; the driver only needs their number to split
    X = prepare(frame, plan) if client is None else np.empty((len(y), 0))
    metric = vspec.metric or M.default_metric(task)
    scoring = M.scorer(metric, task, max(n_classes, 2))
    minority = None
    if classes is not None:
        counts = np.bincount(y, minlength=n_classes)
        shrink = (1 - 1 / vspec.folds) * (1 - 1 / vspec.inner_folds)
        minority = int(counts.min() * shrink)
    sampler = make_sampler(spec.imbalance, spec.seed, minority=minority)
    steps: list[tuple[str, Any]] = [("features", build_features(plan))]
    pca = build_pca(plan, spec.seed)
    if pca is not None:
        steps.append(("pca", pca))
    selector = build_selector(
        steps,
        candidates,
        resampler=sampler,
        spec=vspec,
        scoring=scoring,
        task=task,
        seed=spec.seed,
        target_transform=transform,
    )
    splitter = outer_splitter(vspec, task, spec.seed)
    splits = [(np.asarray(a), np.asarray(b)) for a, b in splitter.split(X, y, groups)]
    jobs = vspec.n_jobs if n_jobs is None else n_jobs
    do_importance = vspec.importance if importance is None else importance
    log.info(
        "%s: %d rows, %d features, %d configurations, %s with %d folds",
        name,
        len(X),
        len(plan.feature_columns),
        int(selector.configurations),
        vspec.strategy,
        len(splits),
    )
    fold_args: dict[str, Any] = {
        "task": task,
        "n_classes": n_classes,
        "groups": groups,
        "importance": do_importance,
        "seed": spec.seed,
        "n_jobs": jobs,
    }

    def folds_done(label: str) -> Any:
        return None if progress is None else lambda done, total: progress(done, total, label)

    final: Any = None
    if client is not None:
        assert source is not None
        recipe = dask_recipe(spec, source)
        expected = Expected(len(y), labels_digest(y), splits_digest(splits), plan_fingerprint(plan))
        ran = run_nested_on_dask(
            client,
            recipe,
            expected,
            selector,
            splits,
            task=task,
            n_classes=n_classes,
            importance=do_importance,
            seed=spec.seed,
            progress=progress,
        )
        nested, results, pooled, final_selector, final = (
            ran.nested,
            ran.results,
            ran.pooled,
            ran.final_selector,
            ran.final,
        )
        if pooled is not None:
            pick, inner_scores = pooled
            params = nested[0].extra["inner"][pick]["params"]
    else:
        stage = f"{len(splits)} folds x {int(selector.configurations)} configurations"
        nested = run_folds(selector, X, y, splits, progress=folds_done(stage), **fold_args)
        # One configuration for the model that is kept: the best by the inner scores pooled over every
        # outer fold. Its outer-fold predictions are those of each fold whose own winner it was, and a
        # refit on the others' training rows.
        pooled = pooled_choice(nested)
        final_selector = selector
        results = nested
        if pooled is not None:
            pick, inner_scores = pooled
            params = nested[0].extra["inner"][pick]["params"]
            final_selector = selector.fixed(params)
            redo = [r.fold for r in nested if r.extra.get("best") != pick]
            if redo:
                refit = run_folds(
                    final_selector,
                    X,
                    y,
                    [splits[i] for i in redo],
                    folds=redo,
                    progress=folds_done(f"{len(redo)} folds refitted with the chosen configuration"),
                    **fold_args,
                )
                again = {r.fold: r for r in refit}
                results = [again.get(r.fold, r) for r in nested]
    oof = _oof(results, y, task, n_classes)
    choice: ThresholdChoice | None = None
    if task == "classification" and n_classes == 2:
        choice = choose_threshold(
            oof["y"].to_numpy(), oof["prediction"].to_numpy(), threshold_spec(vspec.threshold)
        )
    threshold = choice.value if choice is not None else None
    fold_scores = score_folds(results, y, task, n_classes, threshold)
    nested_scores = score_folds(nested, y, task, n_classes, threshold) if pooled is not None else None

    if final is None:  # fitted on the cluster beside the folds on Dask
        final = clone(final_selector.estimator)
        with threadpool_limits(max(1, jobs)), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            if groups is not None and isinstance(final, GridSearchCV | RandomizedSearchCV):
                final.fit(X, forward(transform, y), groups=groups)
            else:
                final.fit(X, forward(transform, y))
    chosen, inner = final_selector.describe(final)
    candidates_table: list[dict[str, Any]] = []
    if pooled is not None:
        chosen = selector.describe_params(params)
        inner = float(np.nanmean(inner_scores[:, pick]))
        candidates_table = _pooled_table(nested, inner_scores, selector)
    pipeline = strip_resampling(final)
    model = TabularModel(
        pipeline,
        task=task,
        plan=plan,
        classes=classes,
        threshold=threshold,
        target=spec.target,
        target_transform=transform,
    )
    scorecard: dict[str, Any] = {
        "model": name,
        "task": task,
        "metric": metric,
        "strategy": vspec.strategy,
        "rows": len(X),
        "features": plan.feature_columns,
        "inputs": plan.input_names,
        "classes": [_plain(c) for c in classes] if classes is not None else None,
        "folds": [
            {
                "fold": r.fold,
                "n_train": len(r.train_index),
                "n_test": len(r.test_index),
                "scores": s,
                "chosen": n.chosen,  # what this fold's own inner cross-validation chose
                "inner_score": n.inner_score,
                "nested_scores": nested_scores[i] if nested_scores is not None else None,
                "seconds": round(r.seconds, 3),
                "train_ratio": class_ratio(y[r.train_index], classes)["shares"] if classes else None,
                "test_ratio": class_ratio(y[r.test_index], classes)["shares"] if classes else None,
            }
            for i, (r, n, s) in enumerate(zip(results, nested, fold_scores, strict=True))
        ],
        # the kept configuration's outer-fold estimate; "nested_summary": the fully nested one (each
        # fold scored with its own inner winner), the estimate no choice has seen
        "summary": M.summarize(fold_scores),
        "nested_summary": M.summarize(nested_scores) if nested_scores is not None else None,
        "selection": "pooled inner cross-validation over the outer folds" if pooled is not None else None,
        "target_transform": transform,
        "notes": notes,
        "threshold": choice.to_dict() if choice is not None else None,
        "chosen": chosen,
        "chosen_inner_score": inner,
        "configurations": int(selector.configurations),
        "candidates": candidates_table or _candidates_table(final, selector),
        "importance": _importance(results),
        "imbalance": spec.imbalance,
        "seed": spec.seed,
    }
    if classes is not None:
        labels = _decide(_oof_scores(oof, n_classes), n_classes, threshold)
        scorecard["class_ratio"] = class_ratio(y, classes)
        scorecard["confusion"] = M.confusion(oof["y"].to_numpy(), labels, n_classes)
        scorecard["per_class"] = M.per_class_report(oof["y"].to_numpy(), labels, classes)
        scorecard["oof_scores"] = M.classification_scores(
            oof["y"].to_numpy(), _oof_scores(oof, n_classes), labels, n_classes
        )
    else:
        scorecard["oof_scores"] = M.regression_scores(oof["y"].to_numpy(), oof["prediction"].to_numpy())
    seconds = time.perf_counter() - started
    scorecard["seconds"] = round(seconds, 3)
    return TrainResult(name, model, scorecard, oof, seconds=seconds)


def _oof_scores(oof: pl.DataFrame, n_classes: int) -> np.ndarray:
    if n_classes > 2:
        return oof.select([f"p_{k}" for k in range(n_classes)]).to_numpy()
    return oof["prediction"].to_numpy()


def rescore(
    champion: TabularModel,
    spec: ModelSpec | None,
    frame: pl.DataFrame,
    candidate: TrainResult,
    *,
    n_jobs: int = 1,
) -> dict[str, float] | None:
    """The champion's configuration cross-validated on the candidate's data and folds."""
    if champion.task != candidate.model.task or champion.classes_ != candidate.model.classes_:
        return None
    target = candidate.model.target
    assert target is not None
    frame = frame.filter(pl.col(target).is_not_null())
    if spec is not None and spec.validation.time_column and spec.validation.time_column in frame.columns:
        frame = frame.sort(spec.validation.time_column)
    try:
        X = prepare(frame, champion.plan)
    except DataError as exc:
        log.warning("the champion cannot read the new data (%s): not re-scored", exc)
        return None
    y = _encode(frame[target].to_list(), champion.classes_) if champion.classes_ else frame[target].to_numpy()
    pipe: Any = clone(champion.pipeline)
    sampler = make_sampler(spec.imbalance if spec else None, spec.seed if spec else 0)
    if sampler is not None:
        from imblearn.pipeline import Pipeline as ImbPipeline

        pipe = ImbPipeline([*pipe.steps[:-1], ("resample", sampler), pipe.steps[-1]])
    metric = candidate.scorecard["metric"]
    n_classes = len(champion.classes_ or [])
    selector = Selector(
        pipe, [CandidateConfig("champion", pipe.steps[-1][1], {}, {})], 1, M.scorer(metric, champion.task)
    )
    splits = _splits_of(candidate)
    results = run_folds(
        selector, X, y, splits, task=champion.task, n_classes=n_classes, importance=False, n_jobs=n_jobs
    )
    scores = score_folds(results, y, champion.task, n_classes, champion.threshold)
    return {k: v["mean"] for k, v in M.summarize(scores).items()}


def _splits_of(result: TrainResult) -> list[tuple[np.ndarray, np.ndarray]]:
    oof = result.oof
    n = result.scorecard["rows"]
    out = []
    for fold in sorted(set(oof["fold"].to_list())):
        test = np.sort(oof.filter(pl.col("fold") == fold)["row"].to_numpy())
        mask = np.ones(n, dtype=bool)
        mask[test] = False
        if result.scorecard["strategy"] == "time_series_split":
            mask[test.min() :] = False
        out.append((np.flatnonzero(mask), test))
    return out


def _encode(values: list[Any], classes: list[Any]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    index.update({str(c): i for i, c in enumerate(classes)})
    return np.fromiter((index.get(v, index.get(str(v), -1)) for v in values), dtype=np.int64)


def package_versions() -> dict[str, str]:
    """Python's version and those of the packages a tabular model depends on."""
    return {"python": platform.python_version(), **installed_versions(_TABULAR_PACKAGES)}


def installed_versions(names: Sequence[str]) -> dict[str, str]:
    """The installed version of each of ``names`` that is installed."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


_TABULAR_PACKAGES = (
    "headrace",
    "scikit-learn",
    "numpy",
    "scipy",
    "pandas",
    "polars",
    "imbalanced-learn",
    "skops",
    "joblib",
    "lightgbm",
    "xgboost",
)


def _git_describe(folder: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = done.stdout.strip()
    return text if done.returncode == 0 and text else None


def code_version(project_root: Path | None = None) -> tuple[str, dict[str, str | None]]:
    """``git describe`` of the headrace source (an editable checkout), else the package version;
    with the project folder's own ``git describe`` when it is a repository."""
    here = Path(__file__).resolve().parents[3]
    own = _git_describe(here) if (here / ".git").exists() else None
    version = importlib.metadata.version("headrace")
    project = _git_describe(project_root) if project_root is not None else None
    return (f"git:{own}" if own else f"headrace {version}"), {"headrace": version, "project_git": project}


def train_model(
    name: str,
    spec: ModelSpec,
    *,
    store: Store,
    registry: Registry | None = None,
    data_version: int | None = None,
    n_jobs: int | None = None,
    scheduler: Any = None,
    register: bool = True,
    promote: bool = False,
    reason: str | None = None,
    project_root: Path | None = None,
    progress: Any = None,
    lineage: Any = None,  # a headrace.lineage.LineageEmitter: OpenLineage run events
) -> TrainResult:
    """Read ``spec.dataset`` at ``data_version`` (the latest when None), validate and fit, register
    a new version with its lineage, and (``promote``) put it through the gate to champion. A run
    stopped by Ctrl-C or SIGTERM is recorded as ``interrupted``."""
    check_spec(name, spec)  # before reading any data
    version = store.version(spec.dataset) if data_version is None else data_version
    meta = registry.meta if registry is not None else None
    run_id = start_training_run(meta, name, spec.dataset)
    events = (
        None
        if lineage is None
        else lineage.start(f"train.{name}", inputs=[lineage.dataset(spec.dataset, version)])
    )
    try:
        frame, result = _read_and_fit(name, spec, store, version, n_jobs, scheduler, progress)
        result.data_version = version
        if registry is None or not register:
            finish_training_run(
                meta, run_id, status="succeeded", data_version=version, metrics=result.metrics
            )
            if events is not None:
                events.complete()
            return result
        details: dict[str, Any] = {
            "spec": spec.model_dump(mode="json"),
            "seed": spec.seed,
            "scorecard": result.scorecard,
            "rows": result.scorecard["rows"],
        }
        champion = _champion(registry, name)
        if champion is not None and (champion.dataset, champion.data_version) != (spec.dataset, version):
            details["champion_rescored"] = _rescore_champion(registry, champion, frame, result, n_jobs)
        # every training row's out-of-fold prediction (the kept configuration's, target units): the
        # report's curves, and the prediction-drift reference (monitor.drift.reference_scores)
        oof_sha = registry.artifacts.put_bytes(_parquet(result.oof))
        details["oof_sha256"] = oof_sha
        code, versions = code_version(project_root)
        details["versions"] = versions
        mv = registry.register(
            name,
            task=spec.task,
            flavor=TabularModel.flavor,
            artifact=result.model.to_bytes(),
            artifact_format="skops",
            metrics=result.metrics,
            params=result.scorecard["chosen"],
            dataset=spec.dataset,
            data_version=version,
            signature=result.model.signature,
            threshold=result.model.threshold,
            details=details,
            code_version=code,
            packages=package_versions(),
            run_id=run_id,
            reason=reason or "trained",
        )
        result.version = mv
        finish_training_run(
            meta,
            run_id,
            status="succeeded",
            version=mv.version,
            data_version=version,
            metrics=result.metrics,
            params=result.scorecard["chosen"],
            details={"seconds": round(result.seconds, 3)},
        )
    except Exception as exc:
        finish_training_run(meta, run_id, status="failed", data_version=version, error=str(exc)[:2000])
        if events is not None:
            events.fail(exc)
        raise
    except BaseException as exc:  # Ctrl-C, SIGTERM (raised as KeyboardInterrupt by the CLI)
        why = f"interrupted: {type(exc).__name__}"
        finish_training_run(meta, run_id, status="interrupted", data_version=version, error=why)
        if events is not None:
            events.fail(why)
        raise
    if events is not None:
        events.complete(outputs=[lineage.model(name, mv.version)])
    if promote:
        registry.promote(
            name, mv.version, reason=reason or "trained and passed the gate", gate=spec.promote_if
        )
        result.promoted = True
        result.version = registry.get(name, mv.version)
    return result


def _read_and_fit(
    name: str, spec: ModelSpec, store: Store, version: int, n_jobs: int | None, scheduler: Any, progress: Any
) -> tuple[pl.DataFrame, TrainResult]:
    """The dataset version, read, and the model trained on it. On Dask the workers start reading the
    same version from the store before the driver does."""
    if scheduler is None:
        frame = store.read(spec.dataset, version)
        return frame, fit_and_validate(name, spec, frame, n_jobs=n_jobs, progress=progress)
    source = DataRef.of(store, spec.dataset, version)
    with dask_client(scheduler) as client:
        prefetch(client, dask_recipe(spec, source))
        frame = store.read(spec.dataset, version)
        result = fit_and_validate(
            name, spec, frame, n_jobs=n_jobs, scheduler=client, source=source, progress=progress
        )
    return frame, result


def _champion(registry: Registry, name: str) -> ModelVersion | None:
    try:
        mv = registry.get(name, "champion")
    except NotFound:
        return None
    return mv if mv.status != "retired" and mv.flavor == TabularModel.flavor else None


def _rescore_champion(
    registry: Registry, champion: ModelVersion, frame: pl.DataFrame, result: TrainResult, n_jobs: int | None
) -> dict[str, Any] | None:
    _, model = registry.load(champion.name, champion.version)
    champion_spec = champion.details.get("spec")
    spec = ModelSpec.model_validate(champion_spec) if champion_spec else None
    scores = rescore(model, spec, frame, result, n_jobs=n_jobs or 1)
    if scores is None:
        return None
    return {"version": champion.version, "metrics": {k: v for k, v in scores.items() if not math.isnan(v)}}


def _parquet(frame: pl.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd")
    return buffer.getvalue()


@dataclass
class Reproduction:
    name: str
    version: int
    data_version: int | None
    rows: list[dict[str, Any]]  # metric, recorded, reproduced, same

    @property
    def same(self) -> bool:
        return all(r["same"] for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "version": self.version,
            "data_version": self.data_version,
            "same": self.same,
            "metrics": self.rows,
        }


def reproduce(
    name: str,
    version: int | str,
    *,
    store: Store,
    registry: Registry,
    n_jobs: int | None = None,
    scheduler: Any = None,
    tolerance: float = 1e-9,
) -> tuple[Reproduction, TrainResult]:
    """Retrain ``name@version`` from its recorded data version, spec and seed; compare the metrics."""
    mv = registry.get(name, version)
    recorded = mv.details.get("spec")
    if not recorded:
        raise NotFound(f"{mv.ref} records no training spec", hint="it was not trained by 'headrace train'")
    spec = ModelSpec.model_validate(recorded)
    result = train_model(
        name,
        spec,
        store=store,
        registry=registry,
        data_version=mv.data_version,
        n_jobs=n_jobs,
        scheduler=scheduler,
        register=False,
    )
    rows = []
    for metric, value in mv.metrics.items():
        new = result.metrics.get(metric)
        same = (
            new is not None
            and value is not None
            and (
                (math.isnan(new) and math.isnan(value))
                or abs(new - value) <= tolerance * max(1.0, abs(value))
            )
        )
        rows.append({"metric": metric, "recorded": value, "reproduced": new, "same": bool(same)})
    return Reproduction(name, mv.version, mv.data_version, rows), result
