"""The demo's "serve" stage: the churn champion and a recommender behind a real uvicorn server.

It serves the champion the "train" stage registered (or registers a small one when that stage did
not run), trains a recommender on generated interactions, starts the app on a free local port,
sends one-row predictions and prints their latency, and shows a user's recommendations before and
after one interaction (posted with the write token: the demo makes one for its own run when
``HEADRACE_WRITE_TOKEN`` is unset, so the deployed bundle and the monitor stage use it too).
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

import numpy as np
import polars as pl

__all__ = ["demo_interactions", "demo_stage", "demo_write_token"]

MODEL = "churn"
RECOMMENDER = "recommendations"


def demo_write_token(variable: str = "HEADRACE_WRITE_TOKEN") -> str:
    """The write token of this demo run: the environment's, else a fresh one put there (the servers
    the demo starts, a deployed bundle included, read it from there)."""
    if not os.environ.get(variable):
        os.environ[variable] = secrets.token_urlsafe(24)
    return os.environ[variable]


def demo_interactions(users: int = 300, items: int = 120, seed: int = 0) -> pl.DataFrame:
    """Generated interactions with taste groups (a user mostly likes items of their group)."""
    rng = np.random.default_rng(seed)
    popularity = rng.zipf(1.6, size=items).astype(float)
    rows = []
    for u in range(users):
        group = u % 4
        liked = np.array([i for i in range(items) if i % 4 == group])
        weights = popularity[liked] / popularity[liked].sum()
        count = int(rng.integers(8, 25))
        chosen = rng.choice(liked, size=min(count, len(liked)), replace=False, p=weights)
        extra = rng.choice(items, size=2, replace=False)
        for t, item in enumerate([*chosen.tolist(), *extra.tolist()]):
            rows.append(
                {
                    "user_id": u,
                    "item_id": int(item),
                    "rating": float(rng.integers(1, 6)),
                    "ts": 1_700_000_000 + 3600 * u + t,
                }
            )
    return pl.DataFrame(rows).unique(subset=["user_id", "item_id"], keep="first", maintain_order=True)


def demo_stage(ctx: Any) -> list[str]:
    import httpx

    from ..recommend import train_recommender
    from ..registry import Registry
    from ..serve.app import create_app
    from ..serve.examples import churn_records, register_churn
    from ..serve.runner import serve_in_thread
    from ..store import BatchMeta

    ws = ctx.ws
    registry = Registry(ws.meta, ws.artifacts, actor="demo")
    lines: list[str] = []
    if "champion" not in registry.aliases(MODEL):
        register_churn(registry, MODEL, n=2000, seed=3)
        lines.append(f"no {MODEL} champion from the train stage: registered a small one")
    interactions = demo_interactions()
    version = ws.store.append("interactions", interactions, BatchMeta(source="demo"))
    result = train_recommender(
        None, interactions, registry=registry, name=RECOMMENDER, data_version=version, holdout=3, k=10
    )
    table = ", ".join(f"{kind} {m['ndcg@10']:.3f}" for kind, m in result.table.items())
    lines.append(f"recommender: {result.chosen} chosen by NDCG@10 ({result.protocol}): {table}")
    spec = ws.project.serving.model_copy(
        update={"models": [MODEL, RECOMMENDER], "interactions_dataset": "interactions"}
    )
    write = {"Authorization": f"Bearer {demo_write_token(spec.write_token_env)}"}
    app = create_app(registry, spec, store=ws.store)
    records = churn_records(400, seed=9)
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        lines.append(f"serving at {url} (docs at {url}/docs, metrics at {url}/metrics)")
        lines.append(f"dashboard at {url}/ui/ (after the demo: headrace --project {ws.root} ui)")
        info = client.get("/models").json()["models"]
        for m in info:
            path = "" if m["task"] == "recommendation" else ", fast path" if m["fast_path"] else ", pipeline"
            lines.append(f"  {m['name']} v{m['version']} ({m['task']}{path})")
        latencies = []
        for record in records:
            started = time.perf_counter()
            client.post(f"/models/{MODEL}/predict", json={"records": [record]}).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
        p50, p99 = np.percentile(latencies, [50, 99])
        one = client.post(f"/models/{MODEL}/predict", json={"records": records[:1]}).json()
        lines.append(
            f"{len(latencies)} one-row predictions: p50 {p50:.2f} ms, p99 {p99:.2f} ms (client-measured, "
            f"sequential); first: {one['predictions'][0]} "
            f"(p(Yes)={one['scores'][0]:.3f}, threshold {one['threshold']})"
        )
        user = "100000"
        before = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()["items"]
        client.post(
            "/interactions", json={"user_id": user, "item_id": 6, "weight": 1.0}, headers=write
        ).raise_for_status()
        after = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()["items"]
        lines.append(f"user {user} (new) before: {[i['item_id'] for i in before]} (most popular)")
        lines.append(f"user {user} after one interaction with item 6: {[i['item_id'] for i in after]}")
    ctx.facts["serve"] = {
        "url": url,
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "recommender": result.to_dict(),
    }
    return lines
