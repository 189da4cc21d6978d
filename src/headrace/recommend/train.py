"""Training for ``task: recommendation``: tune, compare and register popularity, item-kNN and EASE.

The steps, each stated in the result so the numbers can be reproduced:

1. split the interactions by the protocol (``leave_last``: each user's last ``holdout`` by time;
   ``random``: 80/20 per user);
2. for each candidate, choose its parameters on an inner split of the training part (same protocol),
   by NDCG@k, so the test part never picks a parameter (``choose_params`` is handed the training
   part alone); a grid shares its expensive step (``fit_grid``: one eigendecomposition for every
   EASE lambda, one similarity for every item-kNN neighbour count);
3. score each tuned candidate on the test part (precision, recall, NDCG, hit rate, MAP, coverage);
4. refit the best by NDCG@k on every interaction and register it (flavor ``recommender``).

Candidates come from ``spec.candidates`` (``estimator``: popularity | item_knn | ease; a list value in
``params`` is a grid); without any, all three with default grids. The columns are the model's
``user:``, ``item:``, ``weight:`` and ``time:`` keys, else detected by name (``model_columns``).
Each fit is logged at INFO as it ends, and passed to ``progress(done, total, label)`` when given.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from ..config.models import ModelSpec
from ..errors import ConfigError, DataError, GateRefused
from .evaluate import evaluate_model, split_interactions
from .flavor import RecommenderModel
from .interactions import Interactions, detect_columns
from .models import MODELS, fit_grid, make_model

__all__ = ["DEFAULT_GRIDS", "RecommenderTraining", "choose_params", "model_columns", "train_recommender"]

log = logging.getLogger("headrace.recommend")

DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "popularity": {},
    "item_knn": {"neighbors": [50, 200]},
    "ease": {"l2": [100.0, 300.0, 1000.0]},
}


@dataclass
class RecommenderTraining:
    """What a training run found: the table of every candidate, the one chosen, its registration."""

    model: RecommenderModel
    chosen: str
    params: dict[str, Any]
    table: dict[str, dict[str, float]]  # candidate -> metrics on the test part
    tuning: dict[str, list[dict[str, Any]]]  # candidate -> [{params, ndcg, seconds}] on the inner split
    protocol: str
    k: int
    seconds: float
    version: Any = None  # the registered ModelVersion, when a registry was given
    columns: dict[str, str | None] = field(default_factory=dict)
    promoted: bool = False

    @property
    def metrics(self) -> dict[str, float]:
        return self.table[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "params": self.params,
            "protocol": self.protocol,
            "k": self.k,
            "table": self.table,
            "tuning": self.tuning,
            "seconds": round(self.seconds, 3),
            "version": getattr(self.version, "version", None),
            "promoted": self.promoted,
        }


def _grid(params: dict[str, Any]) -> list[dict[str, Any]]:
    keys = list(params)
    values = [v if isinstance(v, list) else [v] for v in params.values()]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)] or [{}]


def _candidates(spec: ModelSpec | None) -> dict[str, list[dict[str, Any]]]:
    if spec is None or not spec.candidates:
        return {kind: _grid(grid) for kind, grid in DEFAULT_GRIDS.items()}
    out: dict[str, list[dict[str, Any]]] = {}
    for candidate in spec.candidates:
        if candidate.estimator not in MODELS:
            raise ConfigError(
                f"models: estimator {candidate.estimator!r} is not a recommendation estimator",
                hint=f"use one of: {', '.join(MODELS)}",
            )
        out[candidate.estimator] = _grid(dict(candidate.params) or DEFAULT_GRIDS[candidate.estimator])
    return out


def model_columns(spec: ModelSpec | None, frame: pl.DataFrame, **given: str | None) -> dict[str, str | None]:
    """The interactions' columns: those named by ``given`` (user, item, weight, ts), then by the
    model's ``user:``, ``item:``, ``weight:`` and ``time:`` keys in headrace.yaml, then detected."""
    named = {
        "user": spec.user if spec is not None else None,
        "item": spec.item if spec is not None else None,
        "weight": spec.weight if spec is not None else None,
        "ts": spec.time if spec is not None else None,
    }
    for role, value in given.items():
        if value is not None:
            named[role] = value
    return detect_columns(frame, **named)


class _Steps:
    """Counts the fits of a training run, logs each (INFO) and calls ``progress(done, total, label)``."""

    def __init__(self, total: int, progress: Callable[[int, int, str], Any] | None) -> None:
        self.done, self.total, self.progress = 0, total, progress

    def __call__(self, label: str) -> None:
        self.done += 1
        log.info("[%d/%d] %s", self.done, self.total, label)
        if self.progress is not None:
            self.progress(self.done, self.total, label)


def _shown(kind: str, params: dict[str, Any]) -> str:
    return kind + "".join(f" {key}={value}" for key, value in params.items())


def choose_params(
    candidates: dict[str, list[dict[str, Any]]],
    train_frame: pl.DataFrame,
    *,
    protocol: Literal["leave_last", "random"],
    holdout: int,
    seed: int,
    columns: dict[str, str | None],
    k: int,
    step: Callable[[str], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Each candidate's trials (``params``, NDCG@k, seconds) on an inner split of ``train_frame``.

    ``train_frame`` is the training part of the reported split and nothing else: the test part never
    picks a parameter. Candidates with one configuration are not tried (their NDCG is None)."""
    metric = f"ndcg@{k}"
    tuning: dict[str, list[dict[str, Any]]] = {
        kind: [{"params": grid[0], metric: None, "seconds": None}] for kind, grid in candidates.items()
    }
    to_tune = {kind: grid for kind, grid in candidates.items() if len(grid) > 1}
    if not to_tune:
        return tuning
    inner = split_interactions(train_frame, protocol, holdout=holdout, seed=seed, columns=columns)
    if inner.test.nnz == 0:
        log.warning("no user has interactions left to hold out for tuning: the first configurations are kept")
        return tuning
    for kind, grid in to_tune.items():
        trials: list[dict[str, Any]] = []
        started = time.perf_counter()
        for params, fitted in fit_grid(kind, inner.train.matrix, grid):
            score = evaluate_model(fitted, inner, k)[metric]
            seconds = time.perf_counter() - started
            trials.append({"params": params, metric: score, "seconds": round(seconds, 3)})
            if step is not None:
                step(f"{_shown(kind, params)} on the inner split: {metric}={score:.4f} ({seconds:.1f} s)")
            started = time.perf_counter()
        tuning[kind] = trials
    return tuning


def _best(trials: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    best: dict[str, Any] = max(trials, key=lambda t: t[metric] if t[metric] is not None else 0.0)["params"]
    return best


def train_recommender(
    spec: ModelSpec | None,
    frame: pl.DataFrame,
    *,
    registry: Any = None,
    name: str | None = None,
    data_version: int | None = None,
    protocol: Literal["leave_last", "random"] = "leave_last",
    holdout: int = 10,
    k: int = 10,
    seed: int | None = None,
    user_col: str | None = None,
    item_col: str | None = None,
    weight_col: str | None = None,
    ts_col: str | None = None,
    promote: bool = True,
    progress: Callable[[int, int, str], Any] | None = None,
) -> RecommenderTraining:
    """Tune and compare the candidates, refit the best on all interactions, register it if asked.

    The columns come from ``user_col`` ... ``ts_col`` when given, else from the model's ``user:``,
    ``item:``, ``weight:`` and ``time:`` keys, else they are detected. ``progress(done, total,
    label)`` is called after each fit (each is also logged at INFO)."""
    started = time.perf_counter()
    if frame.height == 0:
        raise DataError("the interactions dataset is empty", hint="ingest interactions before training")
    seed = spec.seed if seed is None and spec is not None else (seed or 0)
    cols = model_columns(spec, frame, user=user_col, item=item_col, weight=weight_col, ts=ts_col)
    if protocol == "leave_last" and cols["ts"] is None:
        log.warning(
            "no time column: using the random 80/20 protocol instead of leave-last "
            "(set `time:` on the model in headrace.yaml to split by time)"
        )
        protocol = "random"
    split = split_interactions(frame, protocol, holdout=holdout, seed=seed, columns=cols)
    if split.test.nnz == 0:
        raise DataError(
            f"no user has enough interactions to hold any out ({split.description})",
            hint="train on more interactions per user",
        )
    candidates = _candidates(spec)
    metric = f"ndcg@{k}"
    total = sum(len(grid) for grid in candidates.values() if len(grid) > 1) + len(candidates) + 1
    step = _Steps(total, progress)
    log.info(
        "%d interactions, %d users, %d items (%s); candidates: %s",
        frame.height,
        split.train.n_users,
        split.train.n_items,
        split.description,
        ", ".join(f"{kind} ({len(grid)})" for kind, grid in candidates.items()),
    )
    tuning = choose_params(
        candidates,
        split.train_frame,
        protocol=protocol,
        holdout=holdout,
        seed=seed + 1,
        columns=cols,
        k=k,
        step=step,
    )
    table: dict[str, dict[str, float]] = {}
    best_params: dict[str, dict[str, Any]] = {}
    for kind in candidates:
        fit_started = time.perf_counter()
        best_params[kind] = _best(tuning[kind], metric)
        _, fitted = next(fit_grid(kind, split.train.matrix, [best_params[kind]]))
        table[kind] = evaluate_model(fitted, split, k)
        del fitted  # one model's factors held at a time
        step(
            f"{_shown(kind, best_params[kind])} on the test split: {metric}={table[kind][metric]:.4f} "
            f"({time.perf_counter() - fit_started:.1f} s)"
        )
    winner = max(table, key=lambda kind: table[kind][metric])
    everything = Interactions.from_frame(frame, columns=cols)
    fit_started = time.perf_counter()
    final = make_model(winner, **best_params[winner]).fit(everything.matrix)
    seconds = time.perf_counter() - fit_started
    step(f"{_shown(winner, best_params[winner])} refitted on every interaction ({seconds:.1f} s)")
    model = RecommenderModel.from_fitted(final, everything, metrics=table[winner])
    result = RecommenderTraining(
        model=model,
        chosen=winner,
        params=best_params[winner],
        table=table,
        tuning=tuning,
        protocol=split.description,
        k=k,
        seconds=time.perf_counter() - started,
        columns=cols,
    )
    if registry is not None:
        model_name = name or "recommendations"
        result.version = registry.register(
            model_name,
            task="recommendation",
            flavor=RecommenderModel.flavor,
            artifact=model.to_bytes(),
            metrics={**table[winner], "candidates": table},
            params={"estimator": winner, **best_params[winner]},
            dataset=spec.dataset if spec is not None else None,
            data_version=data_version,
            signature={
                "user": cols["user"],
                "item": cols["item"],
                "weight": cols["weight"],
                "ts": cols["ts"],
            },
            details={"protocol": split.description, "k": k, "tuning": tuning, "columns": cols},
        )
        if promote:
            try:
                registry.promote(
                    model_name,
                    result.version.version,
                    reason=f"trained: {winner} {metric}={table[winner][metric]:.4f}",
                    gate=spec.promote_if if spec is not None else None,
                )
                result.promoted = True
            except GateRefused as exc:
                log.warning("%s", exc.one_line())
    result.seconds = time.perf_counter() - started
    return result
