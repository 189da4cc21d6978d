"""One router for every route, one gate for every promotion, over a real uvicorn server.

The canary (``monitoring.canary``, the ``challenger`` alias) answers plain, batch, Open Inference
Protocol v2 and SageMaker ``/invocations`` requests alike, and the prediction log records the version
that answered and the route; a versioned v2 request is answered by exactly that version. The admin
promote goes through the model's ``promote_if`` gate (409 with its reason), and ``force`` needs the
admin token and is marked in the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import polars as pl
import pytest

from headrace.artifacts import ArtifactStore
from headrace.config.models import PromoteRule
from headrace.config.monitoring import CanarySpec
from headrace.config.serving import PredictionLogSpec, ServingSpec
from headrace.deploy.sagemaker import invocations_router
from headrace.metadata import Metadata
from headrace.monitor.routing import bucket
from headrace.registry import Registry
from headrace.serve import create_app
from headrace.serve.examples import churn_model, churn_records
from headrace.serve.runner import serve_in_thread
from headrace.store import Store

pytestmark = pytest.mark.integration

TOKEN = "routing-admin-token"
ROUTES = ("predict", "batch", "v2_infer", "invocations")


def _register(registry: Registry, seed: int, auc: float, *, promote: bool = False, **kw: Any) -> int:
    model = churn_model(n=400, seed=seed, **kw)
    mv = registry.register(
        "churn",
        task="classification",
        flavor=model.flavor,
        artifact=model.to_bytes(),
        metrics={"roc_auc": auc},
        dataset="customers",
        data_version=1,
        signature=model.signature,
        threshold=model.threshold,
    )
    if promote:
        registry.promote("churn", mv.version, reason="test: first champion")
    return mv.version


@pytest.fixture
def project(tmp_path: Any) -> Iterator[tuple[Registry, Store]]:
    meta = Metadata(f"sqlite:///{tmp_path}/meta.db")
    registry = Registry(meta, ArtifactStore(tmp_path / "artifacts"), actor="test")
    assert _register(registry, 1, 0.80, promote=True) == 1  # champion
    assert _register(registry, 2, 0.51, C=0.05) == 2  # challenger (below the gate's floor)
    assert _register(registry, 3, 0.85, pca=4) == 3  # neither
    registry.set_alias("churn", "challenger", 2, reason="test: canary")
    yield registry, Store(tmp_path / "lake")
    meta.dispose()


def _app(registry: Registry, store: Store | None, canary: Any, **kw: Any) -> Any:
    spec = ServingSpec(
        models=["churn"],
        admin_token=TOKEN,
        reload_seconds=0.2,
        prediction_log=PredictionLogSpec(flush_seconds=0.1),
        gc_freeze=False,
    )
    app = create_app(registry, spec, store=store, canary=canary, **kw)
    host = app.state.host
    app.include_router(  # as the bundle mounts it: /invocations through the app's shared path
        invocations_router(
            columns=lambda: list(host.get("churn").schema.fields),
            kinds=lambda: dict(host.get("churn").schema.fields),
            ready=host.ready,
        )
    )
    return app


def _key(inside: bool, share: float) -> str:
    """A user id the sticky canary sends to the challenger (``inside``) or to the champion."""
    return next(f"u{i}" for i in range(10_000) if (bucket(f"x-user-id=u{i}") < share) == inside)


def _every_route(client: httpx.Client, headers: dict[str, str]) -> dict[str, tuple[int, list[str]]]:
    """The version that answered and the prediction ids, from each of the four route families."""
    one, two = churn_records(2, seed=7)
    out: dict[str, tuple[int, list[str]]] = {}
    doc = client.post("/models/churn/predict", json={"records": [one]}, headers=headers).raise_for_status()
    out["predict"] = (doc.json()["version"], doc.json()["ids"])
    doc = client.post("/models/churn/predict/batch", json={"records": [one, two]}, headers=headers)
    out["batch"] = (doc.raise_for_status().json()["version"], doc.json()["ids"])
    inputs = [
        {"name": k, "datatype": "FP64" if isinstance(v, float) else "BYTES", "shape": [1], "data": [v]}
        for k, v in one.items()
    ]
    doc = client.post("/v2/models/churn/infer", json={"inputs": inputs}, headers=headers).raise_for_status()
    ids = next(o["data"] for o in doc.json()["outputs"] if o["name"] == "prediction_id")
    out["v2_infer"] = (int(doc.json()["model_version"]), ids)
    doc = client.post("/invocations", json={"records": [one, two]}, headers=headers).raise_for_status()
    out["invocations"] = (doc.json()["version"], doc.json()["ids"])
    header = ",".join(one)
    csv = f"{header}\n" + ",".join("" if v is None else str(v) for v in one.values())
    doc = client.post("/invocations", content=csv, headers={**headers, "content-type": "text/csv"})
    assert doc.raise_for_status().json()["version"] == out["invocations"][0]
    return out


def _logged(store: Store) -> dict[str, tuple[int, str]]:
    rows = store.read("predictions").select("id", "version", "route")
    return {r["id"]: (r["version"], r["route"]) for r in rows.iter_rows(named=True)}


def test_the_canary_answers_on_every_route_family_and_the_log_says_who(project):
    registry, store = project
    canary = CanarySpec(mode="canary", share=0.5, sticky_by="x-user-id")
    inside, outside = _key(True, 0.5), _key(False, 0.5)
    with serve_in_thread(_app(registry, store, canary)) as url, httpx.Client(base_url=url) as client:
        routed = _every_route(client, {"X-User-ID": inside})
        stayed = _every_route(client, {"X-User-ID": outside})
    assert {route: v for route, (v, _) in routed.items()} == dict.fromkeys(ROUTES, 2)
    assert {route: v for route, (v, _) in stayed.items()} == dict.fromkeys(ROUTES, 1)
    logged = _logged(store)
    for answered in (routed, stayed):
        for route, (version, ids) in answered.items():
            assert {logged[i] for i in ids} == {(version, route)}, route


@pytest.mark.parametrize(("share", "version"), [(1.0, 2), (0.0, 1)])
def test_a_challenger_at_all_or_none_of_the_traffic(project, share, version):
    """100 %: the challenger answers every request on every route; 0 %: none (random keys)."""
    registry, _ = project
    # monitoring.canary allows 0 < share < 1; the router itself takes the ends as they are
    canary = CanarySpec.model_construct(mode="canary", share=share, sticky_by=None)
    with serve_in_thread(_app(registry, None, canary)) as url, httpx.Client(base_url=url) as client:
        for _ in range(3):
            answered = _every_route(client, {})
            assert {route: v for route, (v, _) in answered.items()} == dict.fromkeys(ROUTES, version)


def test_shadow_scores_every_route_and_only_the_champion_answers(project):
    registry, store = project
    canary = CanarySpec(mode="shadow", share=0.99, sticky_by="x-user-id")
    key = _key(True, 0.99)
    with serve_in_thread(_app(registry, store, canary)) as url, httpx.Client(base_url=url) as client:
        answered = _every_route(client, {"X-User-ID": key})
    assert {route: v for route, (v, _) in answered.items()} == dict.fromkeys(ROUTES, 1)
    rows = store.read("predictions")
    shadow = rows.filter(pl.col("route") == "shadow")
    answered_rows = sum(len(ids) for _, ids in answered.values()) + 1  # the CSV /invocations row
    assert shadow["version"].unique().to_list() == [2] and shadow.height == answered_rows


def test_a_versioned_v2_request_is_answered_by_that_version(project):
    registry, store = project
    canary = CanarySpec(mode="canary", share=0.5, sticky_by="x-user-id")
    record = churn_records(1, seed=3)[0]
    inputs = [
        {"name": k, "datatype": "FP64" if isinstance(v, float) else "BYTES", "shape": [1], "data": [v]}
        for k, v in record.items()
    ]
    headers = {"X-User-ID": _key(True, 0.5)}  # the canary would send it to v2 if it were routed
    with serve_in_thread(_app(registry, store, canary)) as url, httpx.Client(base_url=url) as client:
        answers = {}
        for version in ("1", "2", "3"):  # champion, challenger, and one loaded on demand
            path = f"/v2/models/churn/versions/{version}"
            doc = client.post(f"{path}/infer", json={"inputs": inputs}, headers=headers).raise_for_status()
            assert doc.json()["model_version"] == version
            answers[version] = next(o["data"] for o in doc.json()["outputs"] if o["name"] == "prediction_id")
            assert client.get(path).json()["versions"] == [version]
            assert client.get(f"{path}/ready").json() == {"name": "churn", "ready": True, "version": version}
        for missing in ("9", "latest"):
            refused = client.post(
                f"/v2/models/churn/versions/{missing}/infer", json={"inputs": inputs}, headers=headers
            )
            assert refused.status_code == 404 and missing in refused.json()["detail"]
        assert client.get("/v2/models/churn").json()["versions"] == ["1"]  # the champion still serves
    logged = _logged(store)
    for version, ids in answers.items():
        assert logged[ids[0]] == (int(version), "v2_infer")


# -- one gate for every promotion -------------------------------------------------------------------
GATE = {"churn": PromoteRule(metric="roc_auc", at_least=0.7)}


def _promote(client: httpx.Client, body: dict[str, Any], token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/admin/models/churn/promote", json=body, headers=headers)


def test_the_api_promote_goes_through_the_gate(project):
    registry, _ = project
    with serve_in_thread(_app(registry, None, None, gates=GATE)) as url, httpx.Client(base_url=url) as client:
        refused = _promote(client, {"version": 2})
        assert refused.status_code == 409
        assert refused.json()["detail"].startswith(
            "churn@2 was not promoted: roc_auc 0.51 is below the floor 0.7"
        )
        assert registry.aliases("churn")["champion"] == 1
        entry = registry.history("churn")[-1]
        assert (entry.action, entry.version, entry.actor) == ("promote_refused", 2, "serve-admin")
        passed = _promote(client, {"version": 3, "reason": "better"})
        assert passed.status_code == 200 and passed.json() == {
            "model": "churn",
            "champion": 3,
            "forced": False,
        }
        entry = registry.history("churn")[-1]
        assert (entry.action, entry.version, entry.reason) == ("promote", 3, "better")
        assert entry.details["gate"]["passed"] is True and "forced" not in entry.details


def test_a_forced_promote_needs_the_token_and_is_marked_forced(project):
    registry, _ = project
    with serve_in_thread(_app(registry, None, None, gates=GATE)) as url, httpx.Client(base_url=url) as client:
        assert _promote(client, {"version": 2, "force": True}, token=None).status_code == 401
        assert _promote(client, {"version": 2, "force": True}, token="wrong").status_code == 401
        assert client.post("/admin/models/churn/promote?force=true", json={"version": 2}).status_code == 401
        assert _promote(client, {"version": 2, "force": "yes"}).status_code == 422
        assert registry.aliases("churn")["champion"] == 1
        forced = _promote(client, {"version": 2, "force": True, "reason": "incident override"})
        assert forced.status_code == 200 and forced.json()["forced"] is True
        assert registry.aliases("churn")["champion"] == 2
        entry = next(e for e in reversed(registry.history("churn")) if e.action == "promote")
        assert (entry.version, entry.actor, entry.details["forced"]) == (2, "serve-admin", True)
        assert entry.reason.startswith("forced past the gate (roc_auc 0.51 is below the floor 0.7;")
        assert entry.reason.endswith("): incident override")
        assert entry.details["gate"]["passed"] is False  # what the gate said, kept with the override
        # the server swaps to the forced champion like any other
        assert (
            client.post("/admin/models/churn/reload", headers={"Authorization": f"Bearer {TOKEN}"}).json()[
                "version"
            ]
            == 2
        )


def test_a_failing_champion_is_logged_against_its_version(project):
    """A champion that raises answers 500, and its failure is in the prediction log (route
    predict_error, its version): the monitor's champion error rate counts it."""
    from broken_models import unfitted

    registry, store = project
    good = churn_model(n=400, seed=1)
    broken = unfitted(good)
    mv = registry.register(
        "churn", task="classification", flavor="tabular", artifact=broken.to_bytes(), signature=good.signature
    )
    registry.remove_alias("churn", "challenger", reason="test: no canary")
    registry.promote("churn", mv.version, reason="test: a broken champion")
    with serve_in_thread(_app(registry, store, None)) as url, httpx.Client(base_url=url) as client:
        (record,) = churn_records(1, seed=3)
        answer = client.post("/models/churn/predict", json={"records": [record]})
        assert answer.status_code == 500 and "Traceback" not in answer.text
    failures = store.read("predictions").filter(pl.col("route") == "predict_error")
    assert failures.height == 1 and failures["version"].to_list() == [mv.version]
