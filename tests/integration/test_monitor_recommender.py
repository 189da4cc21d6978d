"""A recommender's live hit rate and NDCG@k from interactions that follow the lists it served
(PostgreSQL metadata, Delta datasets, a recommender trained and registered as ``headrace train`` does).

The lists are the champion's own answers for each user (``RecommenderModel.recommend``, as
``GET /users/{id}/recommendations`` computes them), written to the prediction log in the documented
shape (route ``recommend``); the interactions that follow are appended to the model's dataset.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml

from headrace.monitor.loop import check
from headrace.recommend import train_recommender
from headrace.registry import Registry
from headrace.store import BatchMeta
from headrace.workspace import Workspace

pytestmark = pytest.mark.integration

K = 10


def _history(users: int = 90, items: int = 90, seed: int = 0) -> pl.DataFrame:
    """Each user likes one of three item clusters; 12 past interactions each."""
    rng = np.random.default_rng(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows = []
    for u in range(users):
        liked = [i for i in range(items) if i % 3 == u % 3]
        for t, item in enumerate(rng.choice(liked, size=12, replace=False).tolist()):
            rows.append(
                {"user_id": f"u{u}", "item_id": f"i{item}", "ts": start + timedelta(hours=u, minutes=t)}
            )
    return pl.DataFrame(
        rows, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us", "UTC")}
    )


def _workspace(tmp_path: Path, metadata: str, **monitoring: Any) -> Workspace:
    doc = {
        "project": "recommender-monitor",
        "metadata": metadata,
        "models": {
            "recs": {
                "task": "recommendation",
                "dataset": "ratings",
                "user": "user_id",
                "item": "item_id",
                "time": "ts",
                "candidates": [{"estimator": "item_knn", "params": {"neighbors": 30}}],
            }
        },
        "monitoring": {
            "performance_windows": ["2h"],
            "recommendations": {"k": K, "horizon": "30m"},
            "champion": {"window": "1h", "windows": 1, "action": "alert", "metric_floor": 0.6},
            **monitoring,
        },
    }
    (tmp_path / "headrace.yaml").write_text(yaml.safe_dump(doc))
    return Workspace.open(tmp_path)


def test_live_hit_rate_and_ndcg_from_interactions_that_follow_served_lists(tmp_path: Path, pg_db: str):
    ws = _workspace(tmp_path, pg_db)
    history = _history()
    data_version = ws.store.append("ratings", history, BatchMeta(source="test"))
    registry = Registry(ws.meta, ws.artifacts, actor="test")
    trained = train_recommender(
        ws.project.model("recs"),
        history,
        registry=registry,
        name="recs",
        data_version=data_version,
        k=K,
        holdout=2,
    )
    assert trained.promoted and trained.version is not None
    version = trained.version.version
    _, model = registry.load("recs", version)

    served_at = datetime.now(UTC) + timedelta(minutes=1)  # after the promotion
    users = [f"u{u}" for u in range(60)]
    lists = {u: [item for item, _ in model.recommend(u, K)] for u in users}
    follow: list[dict[str, Any]] = []
    for n, user in enumerate(users):
        if n < 15:  # the top item, ten minutes later: a hit at rank 1
            item, after = lists[user][0], timedelta(minutes=10)
        elif n < 30:  # the third item: a hit at rank 3
            item, after = lists[user][2], timedelta(minutes=20)
        elif n < 45:  # an item the list did not hold: a miss
            item = next(f"i{i}" for i in range(90) if f"i{i}" not in lists[user])
            after = timedelta(minutes=10)
        else:  # a listed item, but two hours later (past the 30 min horizon): a miss
            item, after = lists[user][0], timedelta(hours=2)
        follow.append({"user_id": user, "item_id": item, "ts": served_at + after})
    ws.store.append("ratings", pl.DataFrame(follow, schema=history.schema), BatchMeta(source="test"))
    now = served_at + timedelta(hours=1)

    # no lists logged yet: the champion's top k is replayed for the 45 users active in the window
    replayed = check(ws, "recs", registry=registry, now=now)
    assert replayed.signals.metric == f"hit_rate@{K}"
    assert replayed.performance is not None
    (window,) = replayed.performance.windows
    assert window.rows == 45 and window.value == pytest.approx(30 / 45)
    assert any("replayed" in note for note in replayed.champion_watch["notes"])

    log = pl.DataFrame(
        {
            "id": [uuid.uuid4().hex for _ in users],
            "ts": [served_at] * len(users),
            "model": ["recs"] * len(users),
            "version": [version] * len(users),
            "route": ["recommend"] * len(users),
            "inputs": [json.dumps({"user_id": u, "k": K}) for u in users],
            "output": [
                json.dumps({"items": [{"item_id": i, "score": 1.0} for i in lists[u]]}) for u in users
            ],
            "score": [None] * len(users),
            "latency_ms": [2.0] * len(users),
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC"), "score": pl.Float64},
    )
    ws.store.append("predictions", log, BatchMeta(source="test"))

    logged = check(ws, "recs", registry=registry, now=now)
    (window,) = logged.performance.windows
    assert window.rows == 60 and window.value == pytest.approx(0.5)  # 30 of 60 lists followed in time
    assert any("served" in note for note in logged.champion_watch["notes"])
    (health,) = logged.signals.champion_windows
    # judged once their horizon closed, in the window ending now (served just before it opened)
    assert health.feedback_rows == 60 and health.metric == pytest.approx(0.5)
    # below its floor (0.6): the policy says alert, and the champion stays
    assert logged.decision.action == "alert"
    assert f"champion v{version}: live hit_rate@{K} 0.500 is below its floor 0.6" in logged.decision.reason
    assert registry.aliases("recs") == {"champion": version}

    # NDCG@k: rank 1 scores 1, rank 3 scores 1/log2(4) = 0.5, a miss 0: (15 + 7.5) / 60
    ndcg_policy = ws.project.monitoring.model_copy(update={"metric": "ndcg"})
    ndcg = check(ws, "recs", registry=registry, now=now, policy=ndcg_policy, store=False)
    assert ndcg.signals.metric == f"ndcg@{K}"
    assert ndcg.performance.windows[0].value == pytest.approx(22.5 / 60)
    ws.close()
