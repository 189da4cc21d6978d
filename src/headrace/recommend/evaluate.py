"""Offline evaluation of recommenders under a stated protocol.

Protocols (per user, so every evaluated user has history to score from and items to find):

- ``leave_last``: each user's last ``holdout`` interactions by timestamp are the test set, the rest
  the training set (users with no more than ``holdout`` interactions stay wholly in training);
- ``random``: each user's interactions split at random, ``test_fraction`` (0.2) to the test set.

Metrics at cut-off k, averaged over test users, items the user had in training never recommended:
precision@k, recall@k (hits / test items), NDCG@k (binary relevance), hit rate (at least one hit),
MAP@k (average precision normalised by min(k, test items)), and catalogue coverage (distinct items
recommended to anyone / catalogue size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp

from ..errors import ConfigError, DataError
from .interactions import Interactions, detect_columns

__all__ = ["Split", "evaluate_model", "ranking_metrics", "split_interactions", "top_k"]

Protocol = Literal["leave_last", "random"]


@dataclass
class Split:
    train: Interactions
    test: sp.csr_matrix  # same users and items as train
    protocol: str
    description: str
    train_frame: pl.DataFrame  # the training rows, for an inner split (parameter tuning)


def split_interactions(
    frame: pl.DataFrame,
    protocol: Protocol = "leave_last",
    *,
    holdout: int = 10,
    test_fraction: float = 0.2,
    seed: int = 0,
    columns: dict[str, str | None] | None = None,
) -> Split:
    """Split interactions per user by ``protocol``; the catalogue is every item in ``frame``."""
    cols = columns or detect_columns(frame)
    user_col, item_col, ts_col = cols["user"], cols["item"], cols["ts"]
    assert user_col is not None and item_col is not None
    if frame.height == 0:
        raise DataError("no interactions to split", hint="ingest the interactions dataset first")
    rng = np.random.default_rng(seed)
    work = frame.with_row_index("_row")
    if protocol == "leave_last":
        if ts_col is None:
            raise DataError(
                "the leave_last protocol needs a time column",
                hint="set `time:` on the model in headrace.yaml to the column that holds the time",
            )
        # a random tiebreak so interactions with equal timestamps are not split by file order
        work = work.with_columns(pl.Series("_tie", rng.random(work.height)))
        work = work.sort([user_col, ts_col, "_tie"])
        position = work.select(pl.int_range(pl.len()).over(user_col).alias("p"))["p"]
        size = work.select(pl.len().over(user_col).alias("n"))["n"]
        is_test = (position >= size - holdout) & (size > holdout)
        description = f"leave the last {holdout} interactions per user out, by time"
    elif protocol == "random":
        if not 0.0 < test_fraction < 1.0:
            raise ConfigError(f"test_fraction must be in (0, 1); got {test_fraction}")
        work = work.with_columns(pl.Series("_r", rng.random(work.height))).sort([user_col, "_r"])
        position = work.select(pl.int_range(pl.len()).over(user_col).alias("p"))["p"]
        size = work.select(pl.len().over(user_col).alias("n"))["n"]
        n_test = (size.cast(pl.Float64) * test_fraction).round().cast(pl.Int64)
        is_test = (position < n_test) & (size >= 2)
        description = f"random {round((1 - test_fraction) * 100)}/{round(test_fraction * 100)} per user"
    else:
        raise ConfigError(f"unknown protocol {protocol!r}", hint="use 'leave_last' or 'random'")
    work = work.with_columns(pl.Series("_test", is_test.to_list()))
    catalogue = Interactions.from_frame(frame, columns=cols).item_ids
    train_frame = work.filter(~pl.col("_test")).select(frame.columns)
    test_frame = work.filter(pl.col("_test"))
    train = Interactions.from_frame(train_frame, item_ids=catalogue, columns=cols)
    test_all = Interactions.from_frame(test_frame, item_ids=catalogue, columns=cols)
    # align the test users to the training users (every test user has training rows by construction)
    index = {u: i for i, u in enumerate(train.user_ids)}
    coo = test_all.matrix.tocoo()
    rows = np.array([index[test_all.user_ids[r]] for r in coo.row], dtype=np.int64)
    test = sp.csr_matrix((coo.data, (rows, coo.col)), shape=train.matrix.shape)
    return Split(train=train, test=test, protocol=protocol, description=description, train_frame=train_frame)


def top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """Indices of the k best-scored items per row, best first, never an excluded (seen) item."""
    scores = np.array(scores, dtype=np.result_type(scores, np.float32), copy=True)  # float32 stays
    if exclude is not None:
        coo = exclude.tocoo()
        scores[coo.row, coo.col] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def ranking_metrics(recommended: np.ndarray, test: sp.csr_matrix, k: int, n_items: int) -> dict[str, float]:
    """The metrics at k for the users with at least one test item."""
    test = test.tocsr()
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    precision, recall, ndcg, hit, ap = [], [], [], [], []
    shown: set[int] = set()
    for u in users:
        relevant = set(test.indices[test.indptr[u] : test.indptr[u + 1]].tolist())
        recs = recommended[u, :k].tolist()
        shown.update(recs)
        hits = np.array([1.0 if r in relevant else 0.0 for r in recs])
        n_hits = hits.sum()
        precision.append(n_hits / k)
        recall.append(n_hits / len(relevant))
        ideal = discounts[: min(len(relevant), k)].sum()
        ndcg.append(float((hits * discounts[: len(hits)]).sum() / ideal))
        hit.append(1.0 if n_hits > 0 else 0.0)
        cumulative = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        ap.append(float((cumulative * hits).sum() / min(len(relevant), k)))
    return {
        f"precision@{k}": float(np.mean(precision)),
        f"recall@{k}": float(np.mean(recall)),
        f"ndcg@{k}": float(np.mean(ndcg)),
        f"hit_rate@{k}": float(np.mean(hit)),
        f"map@{k}": float(np.mean(ap)),
        f"coverage@{k}": len(shown) / max(n_items, 1),
        "users": float(len(users)),
    }


def evaluate_model(model: Any, split: Split, k: int = 10, batch: int = 2048) -> dict[str, float]:
    """Fit-free evaluation: score every test user from their training history, rank, measure."""
    X = split.train.matrix
    users = np.flatnonzero(np.diff(split.test.indptr) > 0)
    recommended = np.zeros((X.shape[0], k), dtype=np.int64)
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        scores = model.score(X[chunk])
        recommended[chunk] = top_k(scores, k, exclude=X[chunk])
    return ranking_metrics(recommended, split.test, k, split.train.n_items)
