"""Recommenders: models, the evaluation protocols and metrics, the flavor and live updates."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from pydantic import ValidationError

from headrace.config.models import ModelSpec
from headrace.errors import DataError
from headrace.flavors import load_flavor
from headrace.recommend import (
    EASE,
    Interactions,
    ItemKNN,
    MemoryLiveState,
    Popularity,
    RecommenderModel,
    detect_columns,
    models,
    ranking_metrics,
    split_interactions,
    train_recommender,
)
from headrace.recommend import train as recommend_train
from headrace.recommend.models import fit_grid


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


# -- column keys, catalogue-scale EASE and item-kNN, tuning on the inner split only ---------------


def _renamed(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.rename({"user_id": "listener", "item_id": "artist", "rating": "plays", "ts": "when"})


def test_the_column_keys_name_the_columns():
    spec = ModelSpec.model_validate(
        {
            "task": "recommendation",
            "dataset": "plays",
            "user": "listener",
            "item": "artist",
            "weight": "plays",
            "time": "when",
        }
    )
    result = train_recommender(spec, _renamed(_interactions()), holdout=2, k=5)
    assert result.columns == {"user": "listener", "item": "artist", "weight": "plays", "ts": "when"}
    assert result.protocol.endswith("by time")  # `time:` found the time: leave-last, not random
    assert all(item % 2 == 0 for item, _ in result.model.recommend(2, 5))


def test_the_column_keys_are_for_recommendation_models_only():
    with pytest.raises(ValidationError, match="only with task: recommendation"):
        ModelSpec.model_validate({"task": "regression", "dataset": "d", "target": "y", "user": "u"})


@pytest.mark.parametrize(
    ("user", "item"),
    [("userID", "artistID"), ("user_id", "itemId"), ("UserId", "movie_id"), ("customer", "product")],
)
def test_usual_column_names_are_detected(user, item):
    frame = pl.DataFrame({user: [1, 2], item: [3, 4], "weight": [1.0, 2.0]})
    found = detect_columns(frame)
    assert (found["user"], found["item"], found["weight"], found["ts"]) == (user, item, "weight", None)


def test_undetected_columns_are_named_by_the_yaml_key():
    frame = _interactions().rename({"user_id": "who", "item_id": "what"})
    with pytest.raises(DataError) as caught:
        train_recommender(None, frame)
    text = f"{caught.value} {caught.value.hint}"
    assert "set `user:` on the model in headrace.yaml" in text
    assert "who" in text  # the columns there are, to choose from
    assert "user_col" not in text and "_col=" not in text
    wrong = ModelSpec(task="recommendation", dataset="plays", user="whoo", item="what")
    with pytest.raises(DataError) as caught:
        train_recommender(wrong, frame)
    assert "`user:`" in caught.value.hint and "'who'" in caught.value.hint
    assert "_col" not in f"{caught.value} {caught.value.hint}"


def _direct_ease(X: sp.csr_matrix, l2: float) -> np.ndarray:
    gram = (X.T @ X).toarray()
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    B = precision / (-np.diag(precision))
    np.fill_diagonal(B, 0.0)
    return B


@pytest.mark.parametrize("shape", [(40, 70), (90, 30)])  # fewer users than items (Woodbury), more
@pytest.mark.parametrize("float32", [False, True])
def test_one_eigendecomposition_gives_ease_for_every_lambda(shape, float32, monkeypatch):
    if float32:
        monkeypatch.setattr(models, "FLOAT32_ABOVE", 0)
    rng = np.random.default_rng(1)
    X = sp.csr_matrix((rng.random(shape) < 0.25).astype(np.float64))
    gram = models.Gram(X)  # every item, one decomposition
    assert gram.dual == (shape[0] < shape[1])
    for l2 in (0.5, 10.0, 300.0):
        expected = _direct_ease(X, l2)
        assert np.abs(gram.weights(l2) - expected).max() < 1e-4
        assert np.abs(gram.scores(X, l2) - X @ expected).max() < 1e-4
        # one lambda alone: a Cholesky factor, the same B
        assert np.abs(EASE(l2=l2, min_support=1).fit(X).B_ - expected).max() < 1e-4


def test_grid_fits_share_the_decomposition(monkeypatch):
    data = Interactions.from_frame(_interactions())
    built = []
    original = models.Gram.__init__

    def counting(self, *args, **kwargs):
        built.append(kwargs.get("l2"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(models.Gram, "__init__", counting)
    grid = [{"l2": l2} for l2 in (1.0, 10.0, 100.0)]
    scored = {p["l2"]: m.score(data.matrix) for p, m in fit_grid("ease", data.matrix, grid)}
    assert built == [None]  # one eigendecomposition for the three lambdas
    for l2, scores in scored.items():
        assert np.allclose(scores, EASE(l2=l2).fit(data.matrix).score(data.matrix), atol=1e-6)
    knn = {
        p["neighbors"]: m for p, m in fit_grid("item_knn", data.matrix, [{"neighbors": 3}, {"neighbors": 9}])
    }
    assert np.diff(knn[3].B_.indptr).max() == 3 and np.diff(knn[9].B_.indptr).max() == 9
    assert np.allclose(knn[9].B_.toarray(), ItemKNN(neighbors=9).fit(data.matrix).B_.toarray())


def test_items_below_the_support_are_scored_zero_and_survive_the_artifact():
    frame = pl.concat(
        [_interactions(), pl.DataFrame({"user_id": [0], "item_id": [99], "rating": [4.0], "ts": [5]})]
    )
    data = Interactions.from_frame(frame)
    rare = data.item_ids.index(99)
    model = EASE(l2=10.0, min_support=2).fit(data.matrix)
    assert model.support_ is not None and rare not in model.support_
    assert model.B_.shape == (data.n_items - 1, data.n_items - 1)
    scores = model.score(data.matrix)
    assert np.all(scores[:, rare] == 0.0)
    one = model.score_one(data.matrix[0].indices, data.matrix[0].data)
    assert np.allclose(one, scores[0])
    flavor = RecommenderModel.from_fitted(model, data)
    loaded = RecommenderModel.from_bytes(flavor.to_bytes())
    assert loaded.recommend("3", 5) == flavor.recommend("3", 5)
    assert np.allclose(loaded._score(data.matrix[3].indices, np.ones(data.matrix[3].nnz)), scores[3])


def test_item_knn_keeps_each_items_best_neighbours():
    data = Interactions.from_frame(_interactions())
    binary = data.matrix.toarray() > 0
    co = binary.T.astype(float) @ binary
    norms = np.sqrt(np.diag(co))
    cosine = co / norms[:, None] / norms[None, :]
    np.fill_diagonal(cosine, 0.0)
    B = ItemKNN(neighbors=5).fit(data.matrix).B_.toarray()
    for row in range(len(B)):
        kept = np.flatnonzero(B[row])
        assert len(kept) == min(5, np.count_nonzero(cosine[row]))
        assert np.allclose(B[row, kept], cosine[row, kept])
        assert cosine[row, kept].min() >= np.sort(cosine[row])[-5] - 1e-12


@pytest.mark.parametrize("protocol", ["leave_last", "random"])
def test_parameters_are_chosen_without_the_reported_test_part(protocol, monkeypatch):
    frame = _interactions(users=80)
    seen: list[pl.DataFrame] = []
    original = recommend_train.choose_params

    def spy(candidates, train_frame, **kwargs):
        seen.append(train_frame)
        return original(candidates, train_frame, **kwargs)

    monkeypatch.setattr(recommend_train, "choose_params", spy)
    spec = ModelSpec(
        task="recommendation",
        dataset="d",
        seed=5,
        candidates=[{"estimator": "ease", "params": {"l2": [1.0, 30.0, 1000.0]}}],
    )
    result = train_recommender(spec, frame, protocol=protocol, holdout=2, k=5)
    assert len(seen) == 1 and len(result.tuning["ease"]) == 3
    assert all(t["ndcg@5"] is not None for t in result.tuning["ease"])
    reported = split_interactions(frame, protocol, holdout=2, seed=5)  # the split the table is on
    test_pairs = {
        (reported.train.user_ids[u], reported.train.item_ids[i])
        for u, i in zip(*reported.test.nonzero(), strict=True)
    }
    chooser_pairs = set(zip(seen[0]["user_id"].cast(pl.String), seen[0]["item_id"], strict=True))
    assert test_pairs and not test_pairs & chooser_pairs  # no test interaction reached the choice
    assert seen[0].height == frame.height - reported.test.nnz


def test_each_fit_is_reported_as_it_ends(caplog):
    calls: list[tuple[int, int, str]] = []
    with caplog.at_level(logging.INFO, logger="headrace.recommend"):
        train_recommender(None, _interactions(), holdout=2, k=5, progress=lambda *a: calls.append(a))
    # 2 kNN and 3 EASE configurations tuned, 3 candidates scored on the test part, 1 refit
    assert [c[:2] for c in calls] == [(i, 9) for i in range(1, 10)]
    assert "ease l2=300.0 on the inner split" in calls[3][2]
    assert "refitted on every interaction" in calls[-1][2]
    assert sum("[" in r.getMessage() and "/9]" in r.getMessage() for r in caplog.records) == 9
