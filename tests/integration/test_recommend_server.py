"""Real-time recommendations over a real server: an interaction changes the next answer at once,
seen items never return, events reach the interactions dataset, and Redis state is shared."""

from __future__ import annotations

import json
import uuid

import httpx
import numpy as np
import polars as pl
import pytest

from headrace.artifacts import ArtifactStore
from headrace.config.serving import PredictionLogSpec, ServingSpec
from headrace.metadata import Metadata
from headrace.recommend import train_recommender
from headrace.registry import Registry
from headrace.serve import create_app
from headrace.serve.runner import serve_in_thread
from headrace.store import BatchMeta, Store

pytestmark = pytest.mark.integration

WRITER = {"Authorization": "Bearer recommend-write-token"}  # interactions are writes


def _interactions(users: int = 80, items: int = 60, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        liked = [i for i in range(1, items) if i % 3 == u % 3]
        for t, item in enumerate([*rng.choice(liked, size=10, replace=False).tolist(), 0]):
            rows.append({"user_id": u, "item_id": int(item), "rating": 5.0, "ts": 10_000 * u + t})
    return pl.DataFrame(rows)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("recommend")
    meta = Metadata(f"sqlite:///{root}/meta.db")
    registry = Registry(meta, ArtifactStore(root / "artifacts"), actor="test")
    store = Store(root / "lake")
    frame = _interactions()
    version = store.append("ratings", frame, BatchMeta(source="test"))
    result = train_recommender(
        None, frame, registry=registry, name="recs", data_version=version, k=5, holdout=2
    )
    assert result.promoted
    # the registered dataset name comes from the spec; none here, so tell the server
    yield registry, store
    meta.dispose()


def _spec(**kw):
    return ServingSpec(
        models=["recs"],
        interactions_dataset="ratings",
        write_token="recommend-write-token",
        prediction_log=PredictionLogSpec(flush_seconds=0.1),
        **kw,
    )


def test_an_interaction_changes_the_next_recommendations(project):
    registry, store = project
    rows_before = store.read("ratings").height
    with (
        serve_in_thread(create_app(registry, _spec(), store=store)) as url,
        httpx.Client(base_url=url) as client,
    ):
        user = "100001"  # a new user, with an id of the dataset's type (integers)
        first = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()
        assert first["version"] == 1 and len(first["items"]) == 5
        assert first["items"][0]["item_id"] == 0  # a new user gets the most popular item first
        assert first["notes"] == ["unknown user with no history: the most popular items"]
        assert "notes" not in client.get("/users/5/recommendations").json()  # a known user
        assert 'kind="popular_fallback",model="recs"' in client.get("/metrics").text
        seen: set[int] = set()
        answer = first
        for item in (4, 7, 10):  # items of taste group 1
            r = client.post(
                "/interactions", json={"user_id": user, "item_id": item, "weight": 1.0}, headers=WRITER
            )
            assert r.status_code == 202
            seen.add(item)
            nxt = client.get(f"/users/{user}/recommendations", params={"k": 8}).json()
            assert nxt["items"] != answer["items"] and "notes" not in nxt  # live history now
            assert not seen & {i["item_id"] for i in nxt["items"]}
            answer = nxt
        assert sum(1 for i in answer["items"] if i["item_id"] % 3 == 1) >= 5
        # a known user's training items never come back either
        trained = set(registry.load("recs")[1].seen("5"))
        got = client.get("/users/5/recommendations", params={"k": 30}).json()["items"]
        assert not trained & {i["item_id"] for i in got}
        assert client.get("/users/5/recommendations", params={"k": 0}).status_code == 422
        bad = client.post("/interactions", json={"user_id": user}, headers=WRITER)
        assert bad.status_code == 422 and "item_id" in bad.json()["detail"][0]["msg"]
    ratings = store.read("ratings")
    assert ratings.height == rows_before + 3
    assert ratings.schema["user_id"] == pl.Int64
    events = ratings.filter(pl.col("user_id") == 100001)
    assert sorted(events["item_id"].to_list()) == [4, 7, 10]
    assert events["ts"].min() > 1_600_000_000  # unix seconds, as the dataset holds them
    # every served list is in the prediction log: the monitor's live hit rate and NDCG follow it
    served = store.read("predictions").filter(pl.col("route") == "recommend")
    assert served.height >= 6 and set(served["model"].to_list()) == {"recs"}
    row = served.filter(pl.col("inputs").str.contains('"user_id":"5"')).row(0, named=True)
    assert json.loads(row["inputs"])["k"] in (10, 30)
    assert all("item_id" in item for item in json.loads(row["output"])["items"])


def test_redis_state_is_shared_between_replicas(project, redis_url):
    registry, _ = project
    prefix = f"headrace-test:{uuid.uuid4().hex[:8]}"
    spec = _spec(redis_url=redis_url, redis_prefix=prefix)
    a, b = create_app(registry, spec), create_app(registry, spec)
    try:
        with serve_in_thread(a) as url_a, serve_in_thread(b) as url_b:
            user = "shared-user"
            before = httpx.get(f"{url_b}/users/{user}/recommendations").json()["items"]
            for item in (5, 8, 11):
                assert (
                    httpx.post(
                        f"{url_a}/interactions", json={"user_id": user, "item_id": item}, headers=WRITER
                    ).status_code
                    == 202
                )
            after = httpx.get(f"{url_b}/users/{user}/recommendations").json()["items"]
            assert after != before
            assert not {5, 8, 11} & {i["item_id"] for i in after}
    finally:
        import redis

        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
        client.close()
