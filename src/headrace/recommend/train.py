"""Training for ``task: recommendation``: tune, compare and register popularity, item-kNN and EASE.

The steps, each stated in the result so the numbers can be reproduced:

1. split the interactions by the protocol (``leave_last``: each user's last ``holdout`` by time;
   ``random``: 80/20 per user);
2. for each candidate, choose its parameters on an inner split of the training part (same protocol),
   by NDCG@k, so the test part never picks a parameter;
3. score each tuned candidate on the test part (precision, recall, NDCG, hit rate, MAP, coverage);
4. refit the best by NDCG@k on every interaction and register it (flavor ``recommender``).

Candidates come from ``spec.candidates`` (``estimator``: popularity | item_knn | ease; a list value in
``params`` is a grid); without any, all three with default grids.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from ..config.models import ModelSpec
from ..errors import ConfigError, DataError, GateRefused
from .evaluate import evaluate_model, split_interactions
from .flavor import RecommenderModel
from .interactions import Interactions, detect_columns
from .models import MODELS, make_model

__all__ = ["DEFAULT_GRIDS", "RecommenderTraining", "train_recommender"]

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
    tuning: dict[str, list[dict[str, Any]]]  # candidate -> [{params, ndcg}] on the inner split
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
) -> RecommenderTraining:
    """Tune and compare the candidates, refit the best on all interactions, register it if asked."""
    started = time.perf_counter()
    if frame.height == 0:
        raise DataError("the interactions dataset is empty", hint="ingest interactions before training")
    seed = spec.seed if seed is None and spec is not None else (seed or 0)
    cols = detect_columns(frame, user=user_col, item=item_col, weight=weight_col, ts=ts_col)
    if protocol == "leave_last" and cols["ts"] is None:
        log.warning("no timestamp column: using the random 80/20 protocol instead of leave-last")
        protocol = "random"
    split = split_interactions(frame, protocol, holdout=holdout, seed=seed, columns=cols)
    inner = split_interactions(split.train_frame, protocol, holdout=holdout, seed=seed + 1, columns=cols)
    candidates = _candidates(spec)
    metric = f"ndcg@{k}"
    table: dict[str, dict[str, float]] = {}
    tuning: dict[str, list[dict[str, Any]]] = {}
    best_params: dict[str, dict[str, Any]] = {}
    for kind, grid in candidates.items():
        trials: list[dict[str, Any]] = []
        for params in grid:
            if len(grid) == 1:
                trials.append({"params": params, metric: None})
                break
            fitted = make_model(kind, **params).fit(inner.train.matrix)
            trials.append({"params": params, metric: evaluate_model(fitted, inner, k)[metric]})
        tuning[kind] = trials
        chosen = max(trials, key=lambda t: t[metric] if t[metric] is not None else 0.0)
        best_params[kind] = chosen["params"]
        fitted = make_model(kind, **chosen["params"]).fit(split.train.matrix)
        table[kind] = evaluate_model(fitted, split, k)
        log.info("%s %s: %s=%.4f", kind, chosen["params"], metric, table[kind][metric])
    winner = max(table, key=lambda kind: table[kind][metric])
    everything = Interactions.from_frame(frame, columns=cols)
    final = make_model(winner, **best_params[winner]).fit(everything.matrix)
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
