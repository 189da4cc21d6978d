"""The fast lane (``serving.fast_lane``) answers exactly as FastAPI's routing does: a corpus of good and
bad requests to the lane's routes goes to two real uvicorn servers over one registry, one with the
lane and one without, and every answer is compared byte for byte (status, headers but the date and
the server's name, body; the fresh prediction ids are the one difference and are masked). The
metrics each server counted and the prediction log each wrote are compared too, as is the canary's
choice of version."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from headrace.artifacts import ArtifactStore
from headrace.config.monitoring import CanarySpec
from headrace.config.serving import LimitsSpec, PredictionLogSpec, ServingSpec
from headrace.demo.data import interactions as demo_interactions
from headrace.metadata import Metadata
from headrace.monitor.routing import bucket
from headrace.recommend import train_recommender
from headrace.registry import Registry
from headrace.serve import create_app
from headrace.serve.examples import churn_model, churn_records
from headrace.serve.lane import LANE_ROUTES
from headrace.serve.runner import serve_in_thread
from headrace.store import BatchMeta, Store

pytestmark = pytest.mark.integration

WRITE = "lane-write-token"
WRITER = {"Authorization": f"Bearer {WRITE}"}
_ID = re.compile(rb'"[0-9a-f]{32}"')


def _register(registry: Registry, seed: int, **kw: Any) -> int:
    model = churn_model(n=400, seed=seed, **kw)
    return registry.register(
        "churn",
        task="classification",
        flavor=model.flavor,
        artifact=model.to_bytes(),
        metrics={"roc_auc": 0.8},
        dataset="customers",
        data_version=1,
        signature=model.signature,
        threshold=model.threshold,
    ).version


@pytest.fixture(scope="module")
def registry(tmp_path_factory: Any) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("lane")
    meta = Metadata(f"sqlite:///{root}/meta.db")
    registry = Registry(meta, ArtifactStore(root / "artifacts"), actor="test")
    registry.promote("churn", _register(registry, 1), reason="test: champion")
    registry.set_alias("churn", "challenger", _register(registry, 2, C=0.05), reason="test: canary")
    store = Store(root / "train-lake")
    frame = demo_interactions(users=60, items=40)
    version = store.append("interactions", frame, BatchMeta(source="test"))
    train_recommender(None, frame, registry=registry, name="recs", data_version=version, holdout=2, k=5)
    yield registry
    meta.dispose()


def _app(registry: Registry, store: Store, lane: list[str]) -> Any:
    spec = ServingSpec(
        models=["churn", "recs"],
        write_token=WRITE,
        interactions_dataset="interactions",
        reload_seconds=0.2,
        fast_lane=lane,
        limits=LimitsSpec(max_records=5, max_depth=8, max_string_length=256, max_body_bytes=200_000),
        prediction_log=PredictionLogSpec(flush_seconds=0.1),
        gc_freeze=False,
    )
    return create_app(registry, spec, store=store, canary=CanarySpec(share=0.5, sticky_by="X-User-ID"))


def _corpus() -> list[tuple[str, str, dict[str, str], bytes | None]]:
    """(method, path with query, headers, body): good and bad requests to every lane route."""
    json_type = {"Content-Type": "application/json"}
    one, two, three = churn_records(3, seed=11)
    missing = {k: v for k, v in one.items() if k != "tenure"}
    users = [
        next(f"u{i}" for i in range(1000) if (bucket(f"x-user-id=u{i}") < 0.5) == inside) for inside in (1, 0)
    ]
    out: list[tuple[str, str, dict[str, str], bytes | None]] = []

    def post(path: str, doc: Any, headers: dict[str, str] | None = None) -> None:
        body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
        out.append(("POST", path, {**json_type, **(headers or {})}, body))

    for route in ("/models/churn/predict", "/models/churn/predict/batch"):
        for user in users:  # the canary: one user answered by the challenger, one by the champion
            post(route, {"records": [one]}, {"X-User-ID": user})
        post(route, {"records": [one, two, three]})
        post(route, {"records": [{**one, "tenure": None}]})  # imputed: a note
        post(route, {"records": [{**one, "Contract": "Ten-year"}]})  # unseen category: a note
        post(route, {"records": [missing]})
        post(route, {"records": [{**one, "tenure": "twelve"}]})
        post(route, {"records": [{**one, "extra": 1}]})
        post(route, {"records": [one] * 6})  # over max_records on /predict
        post(route, {"records": []})
        post(route, {"records": {"a": 1}})
        post(route, {"rows": [one]})
        post(route, {"records": [one], "images": []})
        post(route, [one])
        post(route, b'{"records": [')
        post(route, b'{"records": [{"tenure": NaN}]}')
        post(route, b'{"records": [{"tenure": 1e400}]}')
        post(route, b"[" * 20 + b"]" * 20)
        post(route, {"records": [{**one, "gender": "x" * 300}]})
        post(route, b"")
        out.append(("POST", route, {"Content-Type": "text/csv"}, b"a,b\n1,2\n"))
        out.append(("POST", route, {}, orjson.dumps({"records": [one]})))
        out.append(
            (
                "POST",
                route,
                {"Content-Type": "application/json; charset=utf-8"},
                orjson.dumps({"records": [one]}),
            )
        )
        post(route, b" " * 210_000)  # over max_body_bytes
        out.append(("POST", route, {**json_type, "X-Big": "h" * 20_000}, orjson.dumps({"records": [one]})))
    post("/models/nope/predict", {"records": [one]})
    post("/models/recs/predict", {"records": [one]})
    post("/models/churn/predict/", {"records": [one]})
    out.append(("GET", "/models/churn/predict", {}, None))
    out.append(("PUT", "/models/churn/predict", json_type, orjson.dumps({"records": [one]})))
    for query in (
        "",
        "?k=3",
        "?k=1000",
        "?k=0",
        "?k=1001",
        "?k=abc",
        "?k=03",
        "?k=%2B3",
        "?k=3&k=4",
        "?model=recs",
        "?model=churn",
        "?model=nope",
        "?model=",
        "?model=re%63s",
        "?other=1",
        "?k",
    ):
        for user in ("1", "59", "stranger", "%C3%A9t%C3%A9"):
            out.append(("GET", f"/users/{user}/recommendations{query}", {}, None))
    out.append(("GET", "/users//recommendations", {}, None))
    out.append(("POST", "/users/1/recommendations", {}, None))
    post("/interactions", {"user_id": "1", "item_id": 3}, WRITER)
    post("/interactions", {"user_id": 7, "item_id": 5.0, "weight": 2, "ts": 1_700_000_000}, WRITER)
    post("/interactions", {"user_id": "2", "item_id": 1, "ts": "2026-12-01T10:00:00"}, WRITER)
    post("/interactions", {"user_id": "1", "item_id": 3})  # no token
    post("/interactions", {"user_id": "1", "item_id": 3}, {"Authorization": "Bearer wrong"})
    post("/interactions", {"user_id": "1", "item_id": 3}, {**WRITER, "Origin": "https://evil.example"})
    post("/interactions", {"item_id": 3, "weight": "heavy", "ts": []}, WRITER)
    post("/interactions", {"user_id": "1", "item_id": 3, "model": "churn"}, WRITER)
    post("/interactions", [1, 2], WRITER)
    out.append(("POST", "/interactions", {**WRITER, "Content-Type": "text/plain"}, b"x"))
    # the recommendations after the interactions: the live state changed alike in both
    out.append(("GET", "/users/1/recommendations?k=5", {}, None))
    out.append(("GET", "/users/7/recommendations?k=5", {}, None))
    return out


def _answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [  # not the date, the server's name, nor the port a redirect names
        (k, re.sub(r"127\.0\.0\.1:\d+", "HOST", v))
        for k, v in response.headers.multi_items()
        if k not in ("date", "server")
    ]
    return response.status_code, headers, _ID.sub(b'"<id>"', response.content)


def _counted(metrics: str) -> dict[str, float]:
    """The request, error, prediction and note counts of a /metrics text (latencies vary)."""
    out = {}
    for line in metrics.splitlines():
        name = line.split("{", 1)[0]
        if name in (
            "headrace_requests_total",
            "headrace_request_errors_total",
            "headrace_predictions_total",
            "headrace_prediction_notes_total",
            "headrace_interactions_total",
            "headrace_request_duration_seconds_count",
            "headrace_prediction_score_count",
        ):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def _log(store: Store) -> list[tuple[Any, ...]]:
    frame = store.read("predictions").sort("ts", maintain_order=True)
    return frame.select("model", "version", "route", "inputs", "output", "score").rows()


def test_the_lane_answers_byte_for_byte_as_fastapi_does(registry, tmp_path):
    corpus = _corpus()
    answers: dict[str, list[Any]] = {}
    stores: dict[str, Store] = {}
    counts: dict[str, dict[str, float]] = {}
    taken: dict[str, int] = {}
    for name, lane in (("lane", list(LANE_ROUTES)), ("fastapi", [])):
        stores[name] = Store(tmp_path / name)
        app = _app(registry, stores[name], lane)
        assert app.lane is None if not lane else app.lane.routes == sorted(LANE_ROUTES)
        with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            deadline = time.monotonic() + 30  # the challenger loads in the background
            while app.state.serving.router.challenger("churn") is None and time.monotonic() < deadline:
                time.sleep(0.05)
            answers[name] = [  # a request id each: the canary routes by it, alike in both
                _answer(
                    client.request(method, path, headers={"X-Request-ID": f"r{i}", **headers}, content=body)
                )
                for i, (method, path, headers, body) in enumerate(corpus)
            ]
            counts[name] = _counted(client.get("/metrics").text)
            taken[name] = app.lane.taken if app.lane is not None else 0
    # the lane took every request to its routes but the queries FastAPI validates
    assert taken["fastapi"] == 0 and taken["lane"] > 0.6 * len(corpus), (taken, len(corpus))
    statuses = {status for status, _, _ in answers["lane"]}
    assert {200, 202, 400, 401, 403, 404, 405, 413, 415, 422, 431} <= statuses, statuses
    for request, lane, fastapi in zip(corpus, answers["lane"], answers["fastapi"], strict=True):
        assert lane == fastapi, (request[:2], lane[2], fastapi[2])
    # both counted the same requests, errors, predictions (by the version that answered) and notes
    assert counts["lane"] == counts["fastapi"]
    assert any('version="2"' in k for k in counts["lane"] if k.startswith("headrace_predictions_total"))
    # and logged the same predictions
    logs = {name: _log(store) for name, store in stores.items()}
    assert logs["lane"] == logs["fastapi"] and len(logs["lane"]) > 10
    assert {row[1] for row in logs["lane"]} == {1, 2}
    written = {name: store.read("interactions").height for name, store in stores.items()}
    assert written["lane"] == written["fastapi"] == 3


def test_the_lane_is_taken_only_where_it_matches(registry, tmp_path):
    """The lane's match: its routes on their method, nothing else; a query FastAPI validates goes
    to FastAPI."""
    app = _app(registry, Store(tmp_path / "lake"), ["predict", "recommendations"])
    lane = app.lane
    assert lane is not None and lane.routes == ["predict", "recommendations"]

    def scope(method: str, path: str, query: bytes = b"", root: str = "") -> dict[str, Any]:
        return {"type": "http", "method": method, "path": path, "query_string": query, "root_path": root}

    route, arguments = lane.match(scope("POST", "/models/churn/predict"))
    assert route.path == "/models/{name}/predict" and arguments == {"name": "churn"}
    assert lane.match(scope("POST", "/models/churn/predict/batch")) is None  # not chosen
    assert lane.match(scope("POST", "/interactions")) is None  # not chosen
    assert lane.match(scope("GET", "/models/churn/predict")) is None
    assert lane.match(scope("POST", "/models//predict")) is None
    assert lane.match(scope("POST", "/models/a/b/predict")) is None
    assert lane.match(scope("POST", "/models/churn/predict", root="/api")) is None
    route, arguments = lane.match(scope("GET", "/users/u1/recommendations", b"k=7&model=recs"))
    assert route.path == "/users/{user_id}/recommendations"
    assert arguments == {"user_id": "u1", "k": 7, "model": "recs"}
    for query in (b"k=0", b"k=abc", b"k=07", b"k=1001", b"k=3&k=3", b"k", b"x=1", b"model=r%20s"):
        assert lane.match(scope("GET", "/users/u1/recommendations", query)) is None, query
