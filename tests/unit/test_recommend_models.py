"""Recommenders: models, the evaluation protocols and metrics, the flavor and live updates."""

from __future__ import annotations

import asyncio

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from headrace.flavors import load_flavor
from headrace.recommend import (
    EASE,
    Interactions,
    ItemKNN,
    MemoryLiveState,
    Popularity,
    RecommenderModel,
    ranking_metrics,
    split_interactions,
    train_recommender,
)


def _interactions(users: int = 60, items: int = 40, seed: int = 0) -> pl.DataFrame:
    """Two taste groups: even users like even items, odd users odd items; item 0 is popular."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        liked = [i for i in range(1, items) if i % 2 == u % 2]
        chosen = [*rng.choice(liked, size=8, replace=False).tolist(), 0]
        for t, item in enumerate(chosen):
            rows.append({"user_id": u, "item_id": int(item), "rating": 4.0, "ts": 1000 * u + t})
    return pl.DataFrame(rows)


def test_leave_last_protocol_holds_out_each_users_latest():
    frame = _interactions()
    split = split_interactions(frame, "leave_last", holdout=2)
    assert split.test.nnz == 2 * frame["user_id"].n_unique()
    latest = frame.sort("ts").group_by("user_id").tail(2)
    for row in latest.iter_rows(named=True):
        u = split.train.user_ids.index(str(row["user_id"]))
        i = split.train.item_ids.index(row["item_id"])
        assert split.test[u, i] == 1 and split.train.matrix[u, i] == 0


def test_random_protocol_is_eighty_twenty_per_user():
    frame = _interactions()
    split = split_interactions(frame, "random", seed=3)
    per_user = np.diff(split.test.indptr)
    assert set(per_user.tolist()) == {2}  # 9 interactions -> round(1.8) = 2
    assert split.train.matrix.multiply(split.test).nnz == 0


def test_metrics_on_a_hand_example():
    test = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 0, 1]]))
    recommended = np.array([[0, 1], [2, 1]])
    m = ranking_metrics(recommended, test, k=2, n_items=4)
    assert m["precision@2"] == pytest.approx(0.25)
    assert m["recall@2"] == pytest.approx(0.25)
    assert m["hit_rate@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx((1 / (1 + 1 / np.log2(3))) / 2)
    assert m["map@2"] == pytest.approx(0.25)
    assert m["coverage@2"] == pytest.approx(3 / 4)


@pytest.mark.parametrize("model", [Popularity(), ItemKNN(neighbors=10), EASE(l2=10.0)])
def test_models_score_every_item(model):
    data = Interactions.from_frame(_interactions())
    model.fit(data.matrix)
    scores = model.score(data.matrix[:3])
    assert scores.shape == (3, data.n_items)
    one = model.score_one(data.matrix[0].indices, data.matrix[0].data)
    assert np.allclose(one, scores[0])


def test_personal_models_find_the_taste_group():
    result = train_recommender(None, _interactions(), protocol="leave_last", holdout=2, k=5)
    assert set(result.table) == {"popularity", "item_knn", "ease"}
    assert result.table["ease"]["ndcg@5"] > result.table["popularity"]["ndcg@5"]
    model = result.model
    for item, _ in model.recommend(2, 5):
        assert item % 2 == 0  # an even user gets even items
    seen = set(model.seen("2"))
    assert not seen & {item for item, _ in model.recommend("2", 20)}


def test_flavor_round_trip_and_new_user_fallback():
    result = train_recommender(None, _interactions(), protocol="random", k=5)
    data = result.model.to_bytes()
    loaded = load_flavor("recommender", data)
    assert isinstance(loaded, RecommenderModel)
    assert loaded.recommend("3", 5) == result.model.recommend("3", 5)
    # an unknown user gets the most popular items; item 0 every user has
    assert loaded.recommend("stranger", 1)[0][0] == 0


def test_live_history_changes_recommendations_and_excludes_seen():
    model = train_recommender(None, _interactions(), protocol="random", k=5).model
    state = MemoryLiveState()
    before = model.recommend("newcomer", 5, live=asyncio.run(state.history("m", "newcomer")))
    asyncio.run(state.add("m", "newcomer", 7, 1.0))
    asyncio.run(state.add("m", "newcomer", 9, 1.0))
    history = asyncio.run(state.history("m", "newcomer"))
    after = model.recommend("newcomer", 5, live=history)
    assert before != after
    assert not {7, 9} & {item for item, _ in after}
    assert sum(item % 2 for item, _ in after) >= 3  # odd items liked: odd items come back
