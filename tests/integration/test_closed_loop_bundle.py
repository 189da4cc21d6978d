"""The closed loop on a deployed bundle: a bundle runs as its own process (not ``headrace serve``)
with the project's URLs in its environment, PostgreSQL metadata and the project's Delta store.

Shifted traffic and feedback go to the bundle; the monitor reads what the bundle logged, detects the
drift, retrains, puts the new version on canary (the bundle routes to it by itself), and rolls the
broken canary back; a champion rollback in the registry reaches the bundle within its reload period.
All of it is in the ledger and in the bundle's answers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import yaml
from broken_models import broken_trainer
from sqlalchemy import select

from headrace.datagen import churn
from headrace.deploy import Bundle, build_bundle
from headrace.deploy.local import ensure_env, link_env, start_bundle, stop_process, wait_ready
from headrace.metadata import SCHEMA
from headrace.monitor.loop import cycle
from headrace.monitor.routing import bucket
from headrace.registry import Registry
from headrace.store import BatchMeta
from headrace.train.run import train_model
from headrace.workspace import Workspace

pytestmark = pytest.mark.integration

DROP = ["customerID", "Churn"]


WRITE = "closed-loop-write-token"


def _project(folder: Path, metadata: str) -> Workspace:
    doc = {
        "project": "bundle-loop",
        "metadata": metadata,
        "models": {
            "churn": {
                "task": "classification",
                "dataset": "customers",
                "target": "Churn",
                "features": {"drop": ["customerID"]},
                "candidates": [{"estimator": "logistic_regression", "params": {"C": 1.0}}],
                "validation": {"strategy": "stratified_kfold", "folds": 3, "importance": False},
                "promote_if": {"metric": "roc_auc", "at_least": 0.6, "beat_champion_by": -0.02},
            }
        },
        "serving": {"models": ["churn"], "prediction_log": {"flush_seconds": 0.2}},
        "monitoring": {
            "window": "10m",
            "min_rows": 100,
            "drift_share": 0.1,
            "retrain_on": ["drift"],
            "cooldown": 1,
            "performance_windows": ["1h"],
            "canary": {"share": 0.3, "window": "10m", "min_requests": 40},
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "headrace.yaml").write_text(yaml.safe_dump(doc))
    return Workspace.open(folder)


def _send(client: httpx.Client, frame: pl.DataFrame, tag: str) -> list[dict[str, Any]]:
    out = []
    for cid, record in zip(frame["customerID"].to_list(), frame.drop(DROP).to_dicts(), strict=True):
        r = client.post(
            "/models/churn/predict", json={"records": [record]}, headers={"X-User-ID": f"{tag}-{cid}"}
        )
        out.append({"status": r.status_code, "customer": cid, **(r.json() if r.status_code == 200 else {})})
    return out


def _wait(what: str, ok: Any, timeout: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if ok():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _logged(ws: Workspace) -> int:
    if not ws.store.exists("predictions"):
        return 0
    return int(ws.store.scan("predictions").select(pl.len()).collect().item())


def test_a_bundle_reports_home_and_the_monitor_closes_the_loop_on_it(tmp_path: Path, pg_db: str):
    ws = _project(tmp_path / "project", pg_db)
    ws.store.append("customers", churn(3000, seed=1), BatchMeta(source="simulator"))
    registry = Registry(ws.meta, ws.artifacts, actor="test")
    v1 = train_model("churn", ws.project.model("churn"), store=ws.store, registry=registry, promote=True)
    assert v1.version is not None
    champion = v1.version.version

    # the bundle, copied far from the project: only the URLs tie it to it
    built = build_bundle(ws, "churn")
    elsewhere = tmp_path / "elsewhere" / "churn-bundle"
    shutil.copytree(built.path, elsewhere, symlinks=True)
    bundle = Bundle.open(elsewhere)
    assert "HEADRACE_METADATA_URL" in (elsewhere / "README.md").read_text()
    python, _ = ensure_env(bundle, tmp_path / "envs", "inherit")
    home = link_env(pg_db, str(ws.project.store), str(ws.project.artifacts), alias="champion", target="test")
    home.update({"HEADRACE_RECORD_DEPLOYMENT": "1", "HEADRACE_RELOAD_SECONDS": "0.3"})
    home["HEADRACE_WRITE_TOKEN"] = WRITE  # feedback is a write: the bundle reads its token from here
    slot = start_bundle(bundle, python, tmp_path / "logs", home=home)
    try:
        wait_ready(slot)
        client = httpx.Client(base_url=slot.url, timeout=30)
        # it recorded itself as a live deployment of the project
        deployments = SCHEMA.tables["deployments"]
        with ws.meta.begin() as conn:
            row = conn.execute(select(deployments).where(deployments.c.target == "test")).mappings().one()
        assert (row["version"], row["status"]) == (champion, "live")
        assert row["details"]["follows"] == "champion" and row["details"]["reports_home"]

        # shifted traffic, on two route families, and feedback
        shifted = churn(300, seed=5, shift=1.0, id_offset=100_000)
        answers = _send(client, shifted[:250], "a")
        assert {a["status"] for a in answers} == {200} and {a["version"] for a in answers} == {champion}
        invocations = client.post("/invocations", json={"records": shifted[250:].drop(DROP).to_dicts()})
        assert invocations.status_code == 200
        truth = dict(zip(shifted["customerID"].to_list(), shifted["Churn"].to_list(), strict=True))
        feedback = client.post(
            "/feedback",
            json={
                "feedback": [
                    {"prediction_id": a["ids"][0], "actual": truth[a["customer"]]} for a in answers[:120]
                ]
            },
            headers={"Authorization": f"Bearer {WRITE}"},
        )
        assert feedback.status_code == 202, feedback.text
        assert feedback.json()["accepted"] == 120 and feedback.json()["stored"] is True
        _wait("the bundle's prediction log", lambda: _logged(ws) >= 300)
        _wait(
            "the bundle's feedback",
            lambda: (
                ws.store.exists("predictions__feedback")
                and ws.store.read("predictions__feedback").height >= 120
            ),
        )
        ws.store.append(
            "customers", churn(1000, seed=3, shift=1.0, id_offset=20_000), BatchMeta(source="simulator")
        )

        # the monitor: drift in what the bundle served, a retrain, a canary on the bundle
        first = cycle(ws, "churn", registry=registry, trainer=broken_trainer(champion))
        assert first.check.drift is not None and first.check.drift.dataset_drift
        assert [e["action"] for e in first.events] == ["drift", "retrain", "canary"], first.events
        bad = first.events[1]["version"]
        assert registry.aliases("churn") == {"champion": champion, "challenger": bad}

        # the bundle routes the canary share by itself; the broken challenger fails, the champion answers
        canary_user = next(f"probe-{i}" for i in range(10_000) if bucket(f"x-user-id=probe-{i}") < 0.3)
        record = shifted.drop(DROP).row(0, named=True)

        def tried_canary() -> bool:
            client.post(
                "/models/churn/predict", json={"records": [record]}, headers={"X-User-ID": canary_user}
            )
            log = ws.store.read("predictions") if _logged(ws) else None
            return log is not None and log.filter(pl.col("version") == bad).height > 0

        _wait("the bundle to try the challenger", tried_canary)
        later = _send(client, churn(200, seed=8, shift=1.0, id_offset=400_000), "d")
        assert {a["status"] for a in later} == {200} and {a["version"] for a in later} == {champion}
        _wait(
            "the canary's errors in the log",
            lambda: ws.store.read("predictions").filter(pl.col("version") == bad).height >= 40,
        )
        second = cycle(ws, "churn", registry=registry)
        assert second.decision.action == "rollback", second.decision
        assert second.decision.reason.startswith(f"canary v{bad}: error rate 100.0%")
        assert registry.aliases("churn") == {"champion": champion}
        errors = ws.store.read("predictions").filter(pl.col("route") == "canary_error")
        assert set(errors["version"].to_list()) == {bad}

        # a champion rollback decided in the project reaches the running bundle
        v3 = registry.register(
            "churn",
            task=v1.version.task,
            flavor="tabular",
            artifact=ws.artifacts.get_bytes(v1.version.artifact_sha256),
            signature=v1.version.signature,
            threshold=v1.version.threshold,
            dataset=v1.version.dataset,
            data_version=v1.version.data_version,
            reason="a copy of v1, promoted then rolled back",
        )
        registry.promote("churn", v3.version, reason="test: a new champion")

        def answered_by(version: int) -> bool:
            return bool(
                client.post("/models/churn/predict", json={"records": [record]}).json()["version"] == version
            )

        _wait("the bundle to follow the promotion", lambda: answered_by(v3.version))
        decided = time.monotonic()
        registry.rollback("churn", reason="test: roll the champion back")
        _wait("the bundle to follow the rollback", lambda: answered_by(champion))
        took = time.monotonic() - decided
        print(f"rollback decision to the old version answering on the bundle: {took:.2f} s (reload 0.3 s)")
        ledger = [(e.action, e.version) for e in registry.history("churn")]
        assert ("remove_alias", None) in ledger and ("rollback", champion) in ledger
        metrics = client.get("/metrics").text
        assert "headrace_prediction_log_rows_total" in metrics
        # the monitor lists the deployments it watches, whichever target serves them
        shown = subprocess.run(
            [sys.executable, "-m", "headrace", "--project", str(tmp_path / "project"), "monitor", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        (watched,) = json.loads(shown.stdout)["deployments"]
        assert watched["target"] == "test" and watched["follows"] == "champion" and watched["reports_home"]
        client.close()
    finally:
        stop_process(slot)
    with ws.meta.begin() as conn:
        status = conn.execute(select(deployments.c.status).where(deployments.c.target == "test")).scalar_one()
    assert status == "stopped"
    ws.close()


def test_a_bundle_never_fails_a_prediction_because_the_log_is_down(tmp_path: Path):
    """The project's store is unwritable (a file where the prediction log's table should be): every
    prediction still answers 200, the bounded buffer drops what it cannot hold and counts it in
    /metrics; once the store is back, what the buffer kept is written."""
    from headrace.deploy.runtime import ProjectLink, create_bundle_app, load_model_dir
    from headrace.serve.runner import serve_in_thread

    _project(tmp_path / "project", "sqlite:///" + str(tmp_path / "meta.db"))
    doc = yaml.safe_load((tmp_path / "project" / "headrace.yaml").read_text())
    doc["serving"]["prediction_log"] = {"flush_seconds": 0.05, "batch_rows": 5, "max_queue": 20}
    (tmp_path / "project" / "headrace.yaml").write_text(yaml.safe_dump(doc))
    ws = Workspace.open(tmp_path / "project")
    ws.store.append("customers", churn(800, seed=1), BatchMeta(source="simulator"))
    registry = Registry(ws.meta, ws.artifacts, actor="test")
    train_model("churn", ws.project.model("churn"), store=ws.store, registry=registry, promote=True)
    bundle = load_model_dir(build_bundle(ws, "churn").model_dir)
    lake = Path(ws.project.store)
    (lake / "predictions").write_text("not a table")  # the log's table cannot be written
    link = ProjectLink(metadata_url=ws.project.metadata, store_url=str(lake), record=False)
    records = churn(60, seed=2).drop(DROP).to_dicts()
    with serve_in_thread(create_bundle_app(bundle, link)) as url, httpx.Client(base_url=url) as client:
        codes = [client.post("/models/churn/predict", json={"records": [r]}).status_code for r in records]
        assert codes == [200] * 60
        _wait(
            "dropped rows to be counted",
            lambda: "headrace_prediction_log_dropped_total" in client.get("/metrics").text,
        )
        metrics = client.get("/metrics").text
        dropped = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("headrace_prediction_log_dropped_total")
        )
        assert 0 < dropped <= 60
        (lake / "predictions").unlink()  # the store is back: the kept rows are written
        _wait("the kept rows to be written", lambda: _logged(ws) > 0)
        assert _logged(ws) <= 20 + 5  # never more than the buffer held
    ws.close()
