"""Recommenders at catalogue scale: a generated Last.fm-sized data set, timed.

    .venv/bin/python benchmarks/recommend_scale.py [--no-baseline] [--baseline-dtype float64]

The data: 92,834 interactions of 1,892 users with 17,632 items (the size of Last.fm's hetrec-2011
user-artist table), named as there (``userID``, ``artistID``, ``weight``: found without any
column key), no time column (so the random 80/20 protocol). Item popularity follows a power law
(weight ~ 1 / rank), and an item of the two taste groups (of 40) a user likes is 60 times likelier
for them, so there is something to learn; every item has a user, over 40% exactly one.

Timed, each a full ``train_recommender`` (split, the grid tuned on an inner split of the training
part, the tuned model scored on the test part, the refit on every interaction):

- EASE over its lambda grid (l2 100, 300, 1000), with support pruning (items with fewer than
  2 users left out) and without (``min_support: 1``), for their NDCG@10 side by side;
- item-kNN over its neighbour grid (50, 200);
- all three default candidates (popularity, item-kNN, EASE), as ``headrace train`` runs them;

and, in the same run, a hand-written EASE: dense X'X, one numpy inverse, one lambda (the one the
grid chose), fitted on the same training part and scored on the same test part. Also the size of
the registered artifact and the time to serialise it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from headrace.config.models import ModelSpec  # noqa: E402
from headrace.recommend import evaluate_model, split_interactions, train_recommender  # noqa: E402
from headrace.recommend.train import model_columns  # noqa: E402

USERS, ITEMS, INTERACTIONS = 1_892, 17_632, 92_834


def lastfm_like(seed: int = 0, groups: int = 40) -> pl.DataFrame:
    """Last.fm-sized implicit feedback with a power-law popularity and taste groups."""
    rng = np.random.default_rng(seed)
    popularity = (1.0 / np.arange(1, ITEMS + 1))[rng.permutation(ITEMS)]
    genre = rng.integers(0, groups, size=ITEMS)
    sizes = np.full(USERS, INTERACTIONS // USERS)
    sizes[: INTERACTIONS - sizes.sum()] += 1
    users, items = [], []
    for u in range(USERS):
        liked = rng.choice(groups, size=2, replace=False)
        weight = popularity * np.where(np.isin(genre, liked), 60.0, 1.0)
        items.append(rng.choice(ITEMS, size=sizes[u], replace=False, p=weight / weight.sum()))
        users.append(np.full(sizes[u], u))
    user, item = np.concatenate(users), np.concatenate(items)
    # every item of the catalogue has a user: an unseen item takes an interaction of an item seen thrice
    counts = np.bincount(item, minlength=ITEMS)
    missing = iter(np.flatnonzero(counts == 0).tolist())
    nxt = next(missing, None)
    for position in rng.permutation(len(item)):
        if nxt is None:
            break
        if counts[item[position]] >= 3:
            counts[item[position]] -= 1
            item[position] = nxt
            counts[nxt] += 1
            nxt = next(missing, None)
    plays = rng.zipf(1.6, size=len(item)).clip(1, 100_000)
    return pl.DataFrame({"userID": user, "artistID": item, "weight": plays})


def hand_written_ease(X: sp.csr_matrix, l2: float, dtype: Any) -> np.ndarray:
    """EASE as commonly written: dense Gram matrix, one inverse, one lambda."""
    G = np.asarray((X.T @ X).todense(), dtype=dtype)
    G[np.diag_indices_from(G)] += l2
    P = np.linalg.inv(G)
    B = P / (-np.diag(P))
    np.fill_diagonal(B, 0.0)
    return B


class _Dense:
    def __init__(self, B: np.ndarray) -> None:
        self.B = B

    def score(self, X: sp.csr_matrix) -> np.ndarray:
        return np.asarray(X.astype(self.B.dtype) @ self.B)


def _spec(candidates: list[dict[str, Any]] | None) -> ModelSpec:
    doc = {"task": "recommendation", "dataset": "plays", "seed": 0, "candidates": candidates or []}
    return ModelSpec.model_validate(doc)


def _run(label: str, frame: pl.DataFrame, spec: ModelSpec, k: int) -> Any:
    def progress(done: int, total: int, step: str) -> None:
        print(f"    [{done}/{total}] {step}", flush=True)

    print(f"\n{label}", flush=True)
    started = time.perf_counter()
    result = train_recommender(spec, frame, protocol="random", k=k, progress=progress)
    seconds = time.perf_counter() - started
    row = ", ".join(f"{kind} {m[f'ndcg@{k}']:.4f}" for kind, m in result.table.items())
    print(f"  {seconds:.1f} s; NDCG@{k}: {row}; chosen {result.chosen} {result.params}")
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--no-baseline", action="store_true", help="skip the hand-written EASE")
    parser.add_argument("--baseline-dtype", choices=["float64", "float32"], default="float64")
    args = parser.parse_args()
    k = args.k
    started = time.perf_counter()
    frame = lastfm_like()
    counts = frame["artistID"].value_counts()["count"]
    print(
        f"generated in {time.perf_counter() - started:.1f} s: {frame.height} interactions, "
        f"{frame['userID'].n_unique()} users, {frame['artistID'].n_unique()} items "
        f"({int((counts == 1).sum())} with one user; the most popular has {counts.max()!s})"
    )
    print(f"columns found: {model_columns(None, frame)}")
    ease, ease_s = _run(
        "EASE, l2 grid 100/300/1000, min_support 2 (items with one user pruned)",
        frame,
        _spec([{"estimator": "ease", "params": {"l2": [100.0, 300.0, 1000.0]}}]),
        k,
    )
    full, full_s = _run(
        "EASE, l2 grid 100/300/1000, min_support 1 (no pruning)",
        frame,
        _spec([{"estimator": "ease", "params": {"l2": [100.0, 300.0, 1000.0], "min_support": 1}}]),
        k,
    )
    knn, knn_s = _run(
        "item-kNN, neighbours 50/200",
        frame,
        _spec([{"estimator": "item_knn", "params": {"neighbors": [50, 200]}}]),
        k,
    )
    every, every_s = _run("all three default candidates (as headrace train)", frame, _spec(None), k)
    started = time.perf_counter()
    artifact = ease.model.to_bytes()
    serialised = time.perf_counter() - started
    print(f"\nEASE artifact: {len(artifact) / 2**20:.0f} MiB, serialised in {serialised:.1f} s")
    base_s: float | None = None
    base_ndcg = float("nan")
    if not args.no_baseline:
        split = split_interactions(frame, "random", seed=0, columns=ease.columns)
        l2 = float(full.params["l2"])
        print(f"\nhand-written EASE (l2={l2:g}, numpy inverse in {args.baseline_dtype}) ...", flush=True)
        started = time.perf_counter()
        B = hand_written_ease(split.train.matrix, l2, np.dtype(args.baseline_dtype))
        base_s = time.perf_counter() - started
        base_ndcg = evaluate_model(_Dense(B), split, k)[f"ndcg@{k}"]
        print(f"  {base_s:.1f} s (one lambda, fit only); NDCG@{k} {base_ndcg:.4f} on the same test part")
    print("\nsummary (seconds, whole train_recommender: tune + test + refit)")
    print(f"  EASE grid, pruned      {ease_s:7.1f}   NDCG@{k} {ease.table['ease'][f'ndcg@{k}']:.4f}")
    print(f"  EASE grid, unpruned    {full_s:7.1f}   NDCG@{k} {full.table['ease'][f'ndcg@{k}']:.4f}")
    print(f"  item-kNN grid          {knn_s:7.1f}   NDCG@{k} {knn.table['item_knn'][f'ndcg@{k}']:.4f}")
    print(f"  all three candidates   {every_s:7.1f}   chosen {every.chosen} {every.params}")
    if base_s is not None:
        print(f"  hand-written EASE      {base_s:7.1f}   NDCG@{k} {base_ndcg:.4f}  (one lambda, fit only)")


if __name__ == "__main__":
    main()
