"""Recommendations from user interactions: popularity, item-kNN and EASE, evaluated under a stated
protocol, served with live per-user state (in process, or in Redis so replicas share it)."""

from __future__ import annotations

from .evaluate import Split, evaluate_model, ranking_metrics, split_interactions, top_k
from .flavor import RecommenderModel
from .interactions import Interactions, detect_columns, read_movielens
from .live import LiveState, MemoryLiveState, RedisLiveState, open_live_state
from .models import EASE, MODELS, Gram, ItemKNN, Popularity, fit_grid, make_model
from .train import RecommenderTraining, train_recommender

__all__ = [
    "EASE",
    "MODELS",
    "Gram",
    "Interactions",
    "ItemKNN",
    "LiveState",
    "MemoryLiveState",
    "Popularity",
    "RecommenderModel",
    "RecommenderTraining",
    "RedisLiveState",
    "Split",
    "detect_columns",
    "evaluate_model",
    "fit_grid",
    "make_model",
    "open_live_state",
    "ranking_metrics",
    "read_movielens",
    "split_interactions",
    "top_k",
    "train_recommender",
]
