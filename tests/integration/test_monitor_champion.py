"""Champions are watched too, on the real stack (uvicorn on loopback, Delta datasets, PostgreSQL).

A champion promoted over an earlier one serves real traffic; ground truth comes back through
``POST /feedback``. When its live accuracy falls below its validation score (or its measured p99
latency passes the limit) in each of the configured windows, the monitor rolls it back to the
previous champion through the registry, with the numbers in the ledger; under the policy ``alert``
it stays and an alert is stored and exported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from test_monitor_loop import Server, _project, _records

from headrace.datagen import churn
from headrace.monitor.loop import cycle
from headrace.monitor.metrics import families_from_reports, latest_reports
from headrace.registry import Registry
from headrace.store import BatchMeta
from headrace.train.run import train_model
from headrace.train.tabular import TabularModel
from headrace.workspace import Workspace

pytestmark = pytest.mark.integration

WINDOW = 6.0  # seconds: one judged window of the champion


WRITE = "monitor-champion-write-token"


@pytest.fixture(autouse=True)
def _write_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Feedback is a write: the served app reads its token from the environment, as a bundle does."""
    monkeypatch.setenv("HEADRACE_WRITE_TOKEN", WRITE)


def _workspace(tmp_path: Path, pg_db: str, **champion: Any) -> Workspace:
    return _project(
        tmp_path,
        pg_db,
        metric="accuracy",
        champion={"window": f"{WINDOW:g}s", "windows": 2, "min_requests": 20, "min_feedback": 30} | champion,
        rollback_on={"error_rate": 0.05, "metric_drop": 0.1, **champion.pop("rollback_on", {})},
    )


def _two_champions(ws: Workspace) -> tuple[Registry, int, int]:
    """v1 trained and promoted; v2 (the same pipeline at another threshold) promoted over it."""
    ws.store.append("customers", churn(3000, seed=1), BatchMeta(source="simulator"))
    registry = Registry(ws.meta, ws.artifacts, actor="test")
    trained = train_model("churn", ws.project.model("churn"), store=ws.store, registry=registry, promote=True)
    assert trained.version is not None
    v1 = trained.version
    _, model = registry.load("churn", v1.version)
    variant = TabularModel(
        model.pipeline,
        task=model.task,
        plan=model.plan,
        classes=model.classes_,
        threshold=0.45,
        target=model.target,
    )
    v2 = registry.register(
        "churn",
        task="classification",
        flavor="tabular",
        artifact=variant.to_bytes(),
        metrics=v1.metrics,
        dataset="customers",
        data_version=v1.data_version,
        signature=v1.signature,
        threshold=0.45,
        reason="test: a retuned threshold",
    )
    registry.promote("churn", v2.version, reason="test: v2 to champion")
    return registry, v1.version, v2.version


def _wait_rows(ws: Workspace, dataset: str, rows: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ws.store.exists(dataset) and ws.store.scan(dataset).select(pl.len()).collect().item() >= rows:
            return
        time.sleep(0.1)
    raise AssertionError(f"{dataset} did not reach {rows} rows")


def _traffic(client: httpx.Client, frame: pl.DataFrame, *, wrong: float) -> list[dict[str, Any]]:
    """One request per customer; ground truth sent back for each, the opposite of the prediction for
    the first ``wrong`` share of them (the world changed under the model)."""
    answers = []
    for record in _records(frame):
        response = client.post("/models/churn/predict", json={"records": [record]})
        assert response.status_code == 200
        answers.append(response.json())
    flip = round(wrong * len(answers))
    items = [
        {
            "prediction_id": a["ids"][0],
            "actual": ({"Yes": "No", "No": "Yes"}[a["predictions"][0]] if i < flip else a["predictions"][0]),
        }
        for i, a in enumerate(answers)
    ]
    fed = client.post("/feedback", json={"feedback": items}, headers={"Authorization": f"Bearer {WRITE}"})
    assert fed.status_code == 202, fed.text
    return answers


def _until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def test_a_champion_whose_live_accuracy_falls_is_rolled_back_with_the_numbers(tmp_path: Path, pg_db: str):
    ws = _workspace(tmp_path, pg_db)
    registry, v1, v2 = _two_champions(ws)
    validation = registry.get("churn", v2).metrics["accuracy"]
    validation = validation["mean"] if isinstance(validation, dict) else validation
    with Server(ws) as client:
        t0 = time.time()
        _traffic(client, churn(40, seed=11, id_offset=600_000), wrong=0.8)
        _wait_rows(ws, "predictions", 40)
        _wait_rows(ws, "predictions__feedback", 40)
        assert time.time() < t0 + WINDOW, "the first burst must fit in one window"
        # one window of bad feedback is not yet a verdict: the champion stays
        first = cycle(ws, "churn", registry=registry, now=datetime.fromtimestamp(t0 + WINDOW - 0.01, UTC))
        assert first.decision.action == "none", first.decision
        newest, older = first.check.signals.champion_windows
        assert newest.version == v2 and newest.requests == 40 and newest.feedback_rows == 40
        assert newest.metric == pytest.approx(0.2) and older.requests == 0
        assert first.check.champion_watch is not None
        assert first.check.champion_watch["unhealthy"] == {
            "error_rate": False,
            "p99_latency": False,
            "metric": False,
        }

        _until(t0 + WINDOW + 0.05)
        _traffic(client, churn(40, seed=12, id_offset=700_000), wrong=0.75)
        _wait_rows(ws, "predictions", 80)
        _wait_rows(ws, "predictions__feedback", 80)
        assert time.time() < t0 + 2 * WINDOW, "the second burst must fit in the next window"
        second = cycle(
            ws, "churn", registry=registry, now=datetime.fromtimestamp(t0 + 2 * WINDOW - 0.01, UTC)
        )
    decision = second.decision
    assert decision.action == "rollback" and decision.version == v2 and decision.triggers == ["champion"]
    assert registry.aliases("churn") == {"champion": v1}
    expected = (
        f"champion v{v2}: live accuracy 0.250 is {validation - 0.25:.3f} below its validation score "
        f"{validation:.3f} (limit 0.1), in each of the last 2 windows of {WINDOW:g} s "
        f"(newest first: 0.250, 0.200); back to v{v1}"
    )
    assert decision.reason == expected
    entry = registry.history("churn")[-1]
    assert (entry.action, entry.version, entry.previous_version) == ("rollback", v1, v2)
    assert entry.reason == f"rolled back: {expected}"
    assert second.events == [{"action": "rollback", "version": v2, "reason": expected}]
    # the stored report holds every window's numbers
    report = next(r for r in latest_reports(ws.meta) if r["kind"] == "champion")
    assert report["status"] == "rolled_back" and report["report"]["to"] == v1
    assert [w["feedback_rows"] for w in report["report"]["windows"]] == [40, 40]
    ws.close()


def test_a_champion_over_its_p99_latency_limit_is_rolled_back(tmp_path: Path, pg_db: str):
    ws = _workspace(tmp_path, pg_db, windows=1)
    registry, v1, v2 = _two_champions(ws)
    with Server(ws) as client:
        _traffic(client, churn(30, seed=13, id_offset=800_000), wrong=0.0)
        _wait_rows(ws, "predictions", 30)
        _wait_rows(ws, "predictions__feedback", 30)
        log = ws.store.read("predictions")
        measured = float(log["latency_ms"].quantile(0.99, "linear"))  # what the server measured
        now = datetime.now(UTC)
        generous = ws.project.monitoring.model_copy(
            update={
                "rollback_on": ws.project.monitoring.rollback_on.model_copy(update={"p99_latency_ms": 10_000})
            }
        )
        relaxed = cycle(ws, "churn", registry=registry, now=now, policy=generous)
        assert relaxed.decision.action == "none" and registry.aliases("churn") == {"champion": v2}
        (window,) = relaxed.check.signals.champion_windows
        assert window.requests == 30 and window.p99_ms == pytest.approx(measured)
        limit = measured / 2
        tight = generous.model_copy(
            update={"rollback_on": generous.rollback_on.model_copy(update={"p99_latency_ms": limit})}
        )
        strict = cycle(ws, "churn", registry=registry, now=now, policy=tight)
    assert strict.decision.action == "rollback"
    assert strict.decision.reason.startswith(f"champion v{v2}: p99 latency ")
    assert f"ms is above {limit:g} ms in the last {WINDOW:g} s; back to v{v1}" in strict.decision.reason
    assert registry.aliases("churn") == {"champion": v1}
    assert registry.history("churn")[-1].reason == f"rolled back: {strict.decision.reason}"
    ws.close()


def test_policy_alert_leaves_the_champion_in_place_and_raises_an_alert(tmp_path: Path, pg_db: str):
    ws = _workspace(tmp_path, pg_db, action="alert", windows=1, window="2m")
    registry, _, v2 = _two_champions(ws)
    before = registry.history("churn")
    with Server(ws) as client:
        _traffic(client, churn(40, seed=14, id_offset=900_000), wrong=0.9)
        _wait_rows(ws, "predictions", 40)
        _wait_rows(ws, "predictions__feedback", 40)
        result = cycle(ws, "churn", registry=registry, now=datetime.now(UTC) + timedelta(seconds=0.5))
    assert result.decision.action == "alert" and result.decision.version == v2
    assert "live accuracy 0.100 is" in result.decision.reason
    assert result.decision.reason.endswith("policy: alert only")
    assert [e["action"] for e in result.events] == ["alert"]
    assert registry.aliases("churn") == {"champion": v2}
    assert registry.history("churn") == before  # nothing changed in the registry
    reports = {r["kind"]: r for r in latest_reports(ws.meta)}
    assert reports["alert"]["status"] == "alert" and reports["alert"]["version"] == v2
    assert reports["champion"]["report"]["unhealthy"]["metric"] is True
    (gauge,) = [
        f for f in families_from_reports(list(reports.values())) if f.name == "headrace_champion_unhealthy"
    ]
    assert {s.labels["check"]: s.value for s in gauge.samples} == {
        "error_rate": 0.0,
        "p99_latency": 0.0,
        "metric": 1.0,
    }
    # the CLI shows the champion's windows and what it crossed
    shown = subprocess.run(
        [sys.executable, "-m", "headrace", "--format", "table", "monitor", "-m", "churn"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert shown.returncode == 0, shown.stderr
    words = " ".join(shown.stdout.split())  # rich wraps a table's title to its width
    assert f"champion v{v2}: last 1 windows of 120 s (policy: alert; crossed: metric)" in words
    assert f"churn: champion v{v2} — alert: champion v{v2}: live accuracy 0.100 is" in words
    assert "│ newest │ 40 │ 0 │" in words
    ws.close()
