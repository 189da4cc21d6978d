"""The closed loop on the real stack: a uvicorn server on loopback, Delta datasets, PostgreSQL metadata.

1. The churn simulator shifts tenure and charges: drift is reported, a retrain runs, the new version
   passes the gate and the canary, and becomes champion.
2. A broken version (it raises) reaches canary: it is rolled back within the window, and no request
   fails (the champion answers for the canary share).
3. Retention retires old versions (artifacts removed) and the ledger stays whole.
"""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import uvicorn
import yaml
from broken_models import broken_trainer
from sqlalchemy import select

from headrace.datagen import churn
from headrace.errors import RegistryError
from headrace.metadata import SCHEMA
from headrace.monitor.loop import apply_retention, check, cycle
from headrace.monitor.metrics import latest_reports
from headrace.monitor.routing import bucket
from headrace.registry import Registry
from headrace.serve.project import app_from_workspace
from headrace.store import BatchMeta
from headrace.train.run import train_model
from headrace.train.tabular import TabularModel
from headrace.workspace import Workspace

pytestmark = pytest.mark.integration

FEATURES_DROP = ["customerID", "Churn"]


def _project(tmp_path: Path, metadata: str, **monitoring: Any) -> Workspace:
    doc = {
        "project": "monitor-it",
        "metadata": metadata,
        "models": {
            "churn": {
                "task": "classification",
                "dataset": "customers",
                "target": "Churn",
                "features": {"drop": ["customerID"]},
                "candidates": [{"estimator": "logistic_regression", "params": {"C": 1.0}}],
                "validation": {
                    "strategy": "stratified_kfold",
                    "folds": 3,
                    "metric": "roc_auc",
                    "importance": False,
                },
                "promote_if": {"metric": "roc_auc", "at_least": 0.6, "beat_champion_by": -0.02},
            }
        },
        "serving": {
            "models": ["churn"],
            "reload_seconds": 0.3,
            "prediction_log": {"flush_seconds": 0.2},
        },
        "monitoring": {
            "window": "10m",
            "min_rows": 100,
            "drift_share": 0.1,
            "retrain_on": ["drift"],
            "cooldown": 1,
            "performance_windows": ["1h"],
            **monitoring,
        },
    }
    (tmp_path / "headrace.yaml").write_text(yaml.safe_dump(doc))
    return Workspace.open(tmp_path)


class Server:
    """The project's serving app under a real uvicorn on a free loopback port, in a thread."""

    def __init__(self, ws: Workspace) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app_from_workspace(ws),
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "uvicorn did not start"
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        return self.client

    def __exit__(self, *exc: Any) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)


def _records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.drop(FEATURES_DROP).to_dicts()


def _send(client: httpx.Client, frame: pl.DataFrame, tag: str) -> list[dict[str, Any]]:
    """One request per customer, sticky by X-User-ID; returns each answer with its status."""
    out = []
    ids = frame["customerID"].to_list()
    for cid, record in zip(ids, _records(frame), strict=True):
        response = client.post(
            "/models/churn/predict", json={"records": [record]}, headers={"X-User-ID": f"{tag}-{cid}"}
        )
        out.append(
            {"status": response.status_code, **(response.json() if response.status_code == 200 else {})}
        )
    return out


def _until_routed(client: httpx.Client, version: int, share: float, sample: dict[str, Any]) -> None:
    """Wait until the server routes a canary-bound user to ``version`` (it polls the registry)."""
    user = next(f"probe-{i}" for i in range(10_000) if bucket(f"x-user-id=probe-{i}") < share)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = client.post("/models/churn/predict", json={"records": [sample]}, headers={"X-User-ID": user})
        if answer.json().get("version") == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"the server never routed to v{version}")


def _wait_logged(ws: Workspace, rows: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            ws.store.exists("predictions")
            and ws.store.scan("predictions").select(pl.len()).collect().item() >= rows
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"the prediction log did not reach {rows} rows")


def _seed(ws: Workspace) -> tuple[Registry, int]:
    ws.store.append("customers", churn(3000, seed=1), BatchMeta(source="simulator"))
    registry = Registry(ws.meta, ws.artifacts, actor="test")
    result = train_model("churn", ws.project.model("churn"), store=ws.store, registry=registry, promote=True)
    assert result.version is not None and result.promoted
    return registry, result.version.version


def test_drift_retrain_canary_promote(tmp_path: Path, pg_db: str):
    ws = _project(tmp_path, pg_db, canary={"share": 0.3, "window": "2s", "min_requests": 30})
    registry, v1 = _seed(ws)
    with Server(ws) as client:
        shifted = churn(300, seed=5, shift=1.0, id_offset=100_000)
        answers = _send(client, shifted, "a")
        assert all(a["status"] == 200 and a["version"] == v1 for a in answers)
        # fresh data arrives (the same shift), so the retrain has something new to learn from
        ws.store.append(
            "customers", churn(3000, seed=2, shift=1.0, id_offset=10_000), BatchMeta(source="simulator")
        )
        _wait_logged(ws, 300)

        first = cycle(ws, "churn", registry=registry)
        assert first.check.drift is not None
        assert {"tenure", "MonthlyCharges"} <= set(first.check.drift.drifted)
        assert first.check.drift.dataset_drift
        assert first.decision.action == "retrain" and first.decision.triggers == ["drift"]
        actions = [e["action"] for e in first.events]
        assert actions == ["drift", "retrain", "canary"], first.events
        v2 = first.events[1]["version"]
        assert registry.aliases("churn") == {"champion": v1, "challenger": v2}
        assert registry.get("churn", v2).data_version == ws.store.version("customers")

        _until_routed(client, v2, 0.3, _records(shifted)[0])  # the server noticed the challenger
        later = _send(client, churn(200, seed=6, shift=1.0, id_offset=200_000), "b")
        assert all(a["status"] == 200 for a in later)
        versions = [a["version"] for a in later]
        canary_share = versions.count(v2) / len(versions)
        assert 0.15 < canary_share < 0.45, canary_share
        # sticky: the same users meet the same versions again
        again = _send(client, churn(200, seed=6, shift=1.0, id_offset=200_000), "b")
        assert [a["version"] for a in again] == versions
        _wait_logged(ws, 701)
        time.sleep(2.1)  # the canary window (2 s) has passed

        second = cycle(ws, "churn", registry=registry)
        assert second.decision.action == "promote", second.decision
        assert [e["action"] for e in second.events] == ["promote"]
        assert registry.aliases("churn") == {"champion": v2}

        history = registry.history("churn")
        promote = [e for e in history if e.action == "promote" and e.version == v2][-1]
        assert promote.reason.startswith(f"promoted: canary v{v2} healthy")
        canary_start = [e for e in history if e.action == "set_alias" and e.alias == "challenger"][-1]
        assert "retrained because drift in" in canary_start.reason and "tenure" in canary_start.reason
        assert registry.champion_at("churn", canary_start.ts) == v1

        # the gauges: stored in metadata and exposed on the server's /metrics
        kinds = {r["kind"] for r in latest_reports(ws.meta) if r["model"] == "churn"}
        assert {"drift", "performance", "decision", "canary", "gate"} <= kinds
        time.sleep(0.1)
        metrics = client.get("/metrics").text
        assert 'headrace_drift_psi{feature="tenure",model="churn",version="1"}' in metrics
        assert 'headrace_lifecycle_events_total{action="promote",model="churn"}' in metrics
    ws.close()


def test_broken_canary_is_rolled_back_and_no_request_fails(tmp_path: Path, pg_db: str):
    ws = _project(tmp_path, pg_db, canary={"share": 0.25, "window": "10m", "min_requests": 50})
    registry, v1 = _seed(ws)
    with Server(ws) as client:
        answers = _send(client, churn(300, seed=7, shift=1.0, id_offset=300_000), "c")
        ws.store.append(
            "customers", churn(1000, seed=3, shift=1.0, id_offset=20_000), BatchMeta(source="simulator")
        )
        _wait_logged(ws, 300)
        first = cycle(ws, "churn", registry=registry, trainer=broken_trainer(v1))
        assert [e["action"] for e in first.events] == ["drift", "retrain", "canary"]
        bad = first.events[1]["version"]
        assert registry.aliases("churn")["challenger"] == bad

        _until_routed(client, v1, 0.25, _records(churn(1, seed=8))[0])  # the champion answers for it
        time.sleep(1.0)  # ... once the server has tried to load the challenger
        answers = _send(client, churn(160, seed=8, id_offset=400_000), "d")
        # no request fails: the champion answers for the canary share
        assert [a["status"] for a in answers] == [200] * len(answers)
        assert {a["version"] for a in answers} == {v1}
        _wait_logged(ws, 300 + 160 + 20)
        second = cycle(ws, "churn", registry=registry)
        assert second.decision.action == "rollback", second.decision
        reason = second.decision.reason
        assert reason.startswith(f"canary v{bad}: error rate 100.0% (")
        assert registry.aliases("churn") == {"champion": v1}
        started = second.check.signals.canary_started
        assert started is not None and second.check.signals.now - started < timedelta(minutes=10)
        removed = [e for e in registry.history("churn") if e.action == "remove_alias"][-1]
        assert removed.version is None and removed.previous_version == bad
        assert removed.reason == f"rolled back: {reason}"
        # the errors were logged against the canary's version, and every routed request met them
        log = ws.store.read("predictions")
        errors = log.filter(pl.col("route") == "canary_error")
        assert errors.height > 10 and set(errors["version"].to_list()) == {bad}
        assert 0.1 < errors.height / len(answers) < 0.4
        # after the rollback the canary gets no more traffic
        time.sleep(0.8)
        after = _send(client, churn(40, seed=9, id_offset=500_000), "e")
        assert {a["version"] for a in after} == {v1} and all(a["status"] == 200 for a in after)
    ws.close()


def test_retention_retires_old_versions_and_keeps_the_ledger(tmp_path: Path, pg_db: str):
    ws = _project(tmp_path, pg_db, retention={"keep_last": 2})
    registry, v1 = _seed(ws)
    _, model = registry.load("churn", v1)
    base = registry.get("churn", v1)
    made = []
    for i in range(4):  # four more versions, each a distinct artifact (another threshold)
        variant = TabularModel(
            model.pipeline,
            task=model.task,
            plan=model.plan,
            classes=model.classes_,
            threshold=0.3 + i / 10,
            target=model.target,
        )
        made.append(
            registry.register(
                "churn",
                task="classification",
                flavor="tabular",
                artifact=variant.to_bytes(),
                metrics=base.metrics,
                dataset="customers",
                data_version=base.data_version,
                signature=base.signature,
                reason=f"variant {i}",
            ).version
        )
    registry.promote("churn", made[1], reason="test: v3 to champion")
    before = registry.history("churn")
    shas = {v: registry.get("churn", v).artifact_sha256 for v in [v1, *made]}

    retired = apply_retention(ws, registry, "churn", ws.project.monitoring)
    # newest two (v4, v5) kept, champion v3 kept; v1 and v2 retired
    assert [v for v, _ in retired] == [v1, made[0]]
    assert all(why == "retention: older than the newest 2 versions" for _, why in retired)
    for version in (v1, made[0]):
        assert registry.get("churn", version).status == "retired"
        assert not ws.artifacts.exists(shas[version])
        with pytest.raises(RegistryError, match="retired"):
            registry.load("churn", version)
    for version in made[1:]:
        assert ws.artifacts.exists(shas[version])
    after = registry.history("churn")
    assert after[: len(before)] == before  # nothing rewritten
    assert [(e.action, e.version) for e in after[len(before) :]] == [("retire", v1), ("retire", made[0])]
    assert registry.champion_at("churn", before[2].ts) == v1  # history still answers for retired versions
    with ws.meta.begin() as conn:
        rows = conn.execute(select(SCHEMA.tables["model_versions"].c.version)).scalars().all()
    assert sorted(rows) == [v1, *made]  # version rows kept

    # by days unused: a month later, the versions that never served go too (the champion stays)
    month = check(ws, "churn", registry=registry).signals.now + timedelta(days=31)
    policy = ws.project.monitoring.model_copy(
        update={
            "retention": ws.project.monitoring.retention.model_copy(
                update={"keep_last": 5, "unused_days": 30}
            )
        }
    )
    later = apply_retention(ws, registry, "churn", policy, now=month)
    assert [v for v, _ in later] == [made[2], made[3]]
    assert all("never served" in why for _, why in later)
    assert registry.aliases("churn") == {"champion": made[1]}
    ws.close()
