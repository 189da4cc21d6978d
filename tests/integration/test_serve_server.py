"""The prediction API over a real uvicorn server: equal answers, hot swap under load, admin token.
Schemathesis against the app's own OpenAPI document is in test_serve_hardening.py."""

from __future__ import annotations

import gc
import threading
import time

import httpx
import numpy as np
import polars as pl
import pytest

from headrace.artifacts import ArtifactStore
from headrace.config.serving import PredictionLogSpec, ServingSpec
from headrace.metadata import Metadata
from headrace.registry import Registry
from headrace.serve import create_app
from headrace.serve.examples import churn_records, register_churn
from headrace.serve.runner import serve_in_thread
from headrace.store import Store

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}

TOKEN = "test-admin-token"
WRITE = "test-write-token"
WRITER = {"Authorization": f"Bearer {WRITE}"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    meta = Metadata(f"sqlite:///{root}/meta.db")
    registry = Registry(meta, ArtifactStore(root / "artifacts"), actor="test")
    register_churn(registry, n=800, seed=1)  # v1, champion
    register_churn(registry, n=800, seed=2, C=0.05, pca=5, promote=False)  # v2, waiting
    yield registry, Store(root / "lake")
    meta.dispose()


def _spec(**kw):
    base = {
        "models": ["churn"],
        "admin_token": TOKEN,
        "write_token": WRITE,
        "reload_seconds": 0.2,
        "prediction_log": PredictionLogSpec(flush_seconds=0.2),
        "gc_freeze": False,  # freezing is process-wide: only the test below asks for it
    }
    return ServingSpec(**{**base, **kw})


def test_what_is_loaded_at_start_is_frozen_out_of_the_collector(project):
    registry, store = project
    gc.unfreeze()
    try:
        with serve_in_thread(create_app(registry, _spec(), store=store)) as url:
            assert httpx.get(f"{url}/health/ready").status_code == 200
            assert gc.get_freeze_count() == 0
        with serve_in_thread(create_app(registry, _spec(gc_freeze=True), store=store)) as url:
            assert httpx.get(f"{url}/health/ready").status_code == 200
            assert gc.get_freeze_count() > 10_000  # the libraries and the model, at least
    finally:
        gc.unfreeze()


def test_predictions_over_http_equal_the_in_process_model(project):
    registry, store = project
    _, model = registry.load("churn")
    records = churn_records(120, seed=11, missing=0.03)
    frame = pl.DataFrame(
        records,
        schema={c["name"]: pl.Float64 if c["kind"] == "number" else pl.String for c in model.plan.inputs},
    )
    want_proba = model.predict_proba(frame)
    want_labels = model.predict(frame).predictions
    with (
        serve_in_thread(create_app(registry, _spec(), store=store)) as url,
        httpx.Client(base_url=url) as client,
    ):
        got_proba, got_labels, ids = [], [], []
        for record in records[:100]:  # one row at a time: the fast path
            doc = client.post("/models/churn/predict", json={"records": [record]}).raise_for_status().json()
            assert doc["version"] == 1 and doc["model"] == "churn"
            got_proba.append([doc["probabilities"][0]["No"], doc["probabilities"][0]["Yes"]])
            got_labels += doc["predictions"]
            ids += doc["ids"]
        batch = client.post("/models/churn/predict/batch", json={"records": records[100:]}).json()
        got_proba += [[p["No"], p["Yes"]] for p in batch["probabilities"]]
        got_labels += batch["predictions"]
        assert np.abs(np.array(got_proba) - want_proba).max() <= 1e-9
        assert got_labels == want_labels
        # feedback for an earlier prediction, then the log and the feedback reach the store
        fed = client.post("/feedback", json={"prediction_id": ids[0], "actual": "Yes"}, headers=WRITER)
        assert fed.status_code == 202
        assert client.get("/models").json()["models"][0]["fast_path"] is True
        metrics = client.get("/metrics").text
        assert (
            'headrace_requests_total{model="churn",route="/models/{name}/predict",status="200",version="1"}'
            in metrics
        )
    logged = store.read("predictions")
    assert set(ids) <= set(logged["id"].to_list())
    assert store.read("predictions__feedback")["prediction_id"].to_list() == [ids[0]]


def test_an_answer_that_fell_back_says_so_per_record_and_is_counted(project):
    registry, store = project
    _, model = registry.load("churn")
    numeric = next(c["name"] for c in model.plan.inputs if c["kind"] == "number")
    text = next(c["name"] for c in model.plan.inputs if c["kind"] == "string")
    plain, odd = churn_records(2, seed=5, missing=0.0)
    odd = {**odd, numeric: None, text: "Never seen"}
    with (
        serve_in_thread(create_app(registry, _spec(), store=store)) as url,
        httpx.Client(base_url=url) as client,
    ):
        for route in ("/models/churn/predict", "/models/churn/predict/batch"):  # fast path, pipeline
            doc = client.post(route, json={"records": [plain, odd]}).raise_for_status().json()
            said = [
                f"{numeric}: missing, imputed (median)",
                f"{text}: 'Never seen' was not seen in training, ignored",
            ]
            assert doc["notes"][0] == [] and sorted(doc["notes"][1]) == sorted(said)
        clean = client.post("/models/churn/predict", json={"records": [plain]}).json()
        assert "notes" not in clean
        metrics = client.get("/metrics").text
    assert 'headrace_prediction_notes_total{kind="imputed",model="churn",version="1"} 2.0' in metrics
    assert 'headrace_prediction_notes_total{kind="unseen_category",model="churn",version="1"} 2.0' in metrics


def test_validation_names_the_field_and_limits_the_body(project):
    registry, _ = project
    record = churn_records(1, seed=2)[0]
    app = create_app(registry, _spec(max_body_bytes=4096), store=None)
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        missing = {k: v for k, v in record.items() if k != "tenure"}
        cases = [
            ({**record, "colour": "red"}, "colour"),
            (missing, "tenure"),
            ({**record, "MonthlyCharges": "lots"}, "MonthlyCharges"),
            ({**record, "Contract": 2}, "Contract"),
        ]
        for body, field in cases:
            r = client.post("/models/churn/predict", json={"records": [body]})
            assert r.status_code == 422
            assert field in r.json()["detail"][0]["msg"]
        big = client.post("/models/churn/predict", json={"records": [record] * 60})
        assert big.status_code == 413
        assert client.post("/models/nope/predict", json={"records": []}).status_code == 404
        assert client.post("/models/churn/predict", content=b"{not json", headers=JSON).status_code == 422


def test_admin_routes_refuse_without_the_token(project):
    registry, _ = project
    with serve_in_thread(create_app(registry, _spec())) as url, httpx.Client(base_url=url) as client:
        for path in ("/admin/models/churn/reload", "/admin/models/churn/rollback"):
            assert client.post(path).status_code == 401
            assert client.post(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = client.post(
            "/admin/models/churn/promote", json={"version": 2}, headers={"Authorization": "Basic x"}
        )
        assert r.status_code == 401
        assert registry.aliases("churn")["champion"] == 1  # nothing changed
        ok = client.post("/admin/models/churn/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["version"] == 1
    no_token = ServingSpec(models=["churn"], admin_token_env="HEADRACE_TEST_UNSET_TOKEN")
    with serve_in_thread(create_app(registry, no_token)) as url:
        r = httpx.post(f"{url}/admin/models/churn/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 403


def _wait_for(what: str, condition, timeout: float = 120.0) -> None:
    """Poll ``condition`` until it holds; the timeout only bounds a hung test (no race on speed)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}"
        time.sleep(0.02)


def test_champion_swap_under_load_fails_no_request(project):
    """Counts and events, not sleeps: each phase waits for requests to have happened, however slow
    the machine (this once failed on a loaded machine when it slept fixed times)."""
    registry, _ = project
    records = churn_records(50, seed=5)
    outcomes: list[tuple[int, int | None, bool]] = []  # status, version, sent after the rollback
    lock = threading.Lock()
    stop, saw_v2, rolled_back = threading.Event(), threading.Event(), threading.Event()

    def load(url: str, offset: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            i = offset
            while not stop.is_set():
                after = rolled_back.is_set()  # read before sending: the answer must be v1 then
                try:
                    r = client.post("/models/churn/predict", json={"records": [records[i % 50]]})
                    outcome = (r.status_code, r.json().get("version"), after)
                except httpx.HTTPError:
                    outcome = (0, None, after)
                with lock:
                    outcomes.append(outcome)
                if outcome[1] == 2:
                    saw_v2.set()
                i += 1

    def answered(after_rollback: bool = False) -> int:
        with lock:
            return sum(1 for o in outcomes if o[2] or not after_rollback)

    app = create_app(registry, _spec(gc_freeze=True))  # the swapped-out model is thawed and collected
    with serve_in_thread(app) as url:
        threads = [threading.Thread(target=load, args=(url, k)) for k in range(4)]
        for t in threads:
            t.start()
        try:
            _wait_for("requests before the swap", lambda: answered() >= 40)
            registry.promote("churn", 2, reason="test: swap under load")  # the watcher picks it up
            _wait_for("an answer from v2", saw_v2.is_set)
            swapped_at = answered()
            _wait_for("requests after the swap", lambda: answered() >= swapped_at + 40)
            r = httpx.post(
                f"{url}/admin/models/churn/rollback",
                headers={"Authorization": f"Bearer {TOKEN}"},
                json={"reason": "test: roll back under load"},
                timeout=120,
            )
            assert r.json()["champion"] == 1
            rolled_back.set()  # the route swapped before answering: every later request gets v1
            _wait_for("requests after the rollback", lambda: answered(after_rollback=True) >= 40)
            _wait_for("the collector frozen again after the swaps", lambda: gc.get_freeze_count() > 10_000)
        finally:
            stop.set()
            for t in threads:
                t.join()
            gc.unfreeze()
    statuses = {s for s, _, _ in outcomes}
    assert statuses == {200}, f"failed requests: {[o for o in outcomes if o[0] != 200][:5]}"
    assert 2 in {v for _, v, _ in outcomes}
    assert {v for _, v, after in outcomes if after} == {1}
    assert registry.aliases("churn")["champion"] == 1
    print(f"{len(outcomes)} requests, {sum(1 for o in outcomes if o[1] == 2)} answered by v2")
