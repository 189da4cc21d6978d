"""``headrace demo`` leaves a project like any other: its headrace.yaml declares what the demo ran,
each stage printed the command it ran, and those commands rerun in the demo's folder (a new model
version, an incremental load)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from headrace.config import load_project

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def headrace(folder: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace", "--project", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "80"},
    )


def _listening(url: str) -> bool:
    where = urlsplit(url)
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((where.hostname or "127.0.0.1", where.port or 80)) == 0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("demo")
    done = subprocess.run(
        [sys.executable, "-m", "headrace", "demo", "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "80"},  # piped, as in CI: nothing may be cut at 80 columns
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder, done.stdout


def test_the_demo_writes_a_complete_project_and_prints_each_command(demo: tuple[Path, str]):
    folder, out = demo
    project = load_project(folder / "headrace.yaml")
    kinds = {name: s.kind for name, s in project.sources.items()}
    assert set(kinds.values()) == {"file", "http", "sql", "mqtt"}
    tasks = {m.task for m in project.models.values()}
    assert {"classification", "regression", "recommendation"} <= tasks
    assert project.monitoring.canary.share == 0.3 and project.monitoring.cooldown == 1.0
    for stage, command in [
        ("ingest", "$ headrace ingest customers houses interactions"),
        ("http", "$ headrace ingest orders_api"),
        ("sql", "$ headrace ingest payments_db"),
        ("mqtt", "$ headrace stream sensors"),
        ("train", "$ headrace train price --promote"),
        ("deploy", "$ headrace deploy churn --env inherit --port"),
        ("monitor", "$ headrace monitor --act --model churn"),
        ("serve", "$ headrace serve --port"),
        ("status", "$ headrace status"),
    ]:
        assert f"✓ {stage} (" in out, stage
        assert command in out.split(f"✓ {stage} (", 1)[1], (stage, command)
    # the loop ran against the deployment: drift, retrain, canary promoted, the broken one rolled back
    assert "retrain: v2 trained" in out and "promote: canary v2" in out and "rollback: canary v3" in out
    # piped output keeps whole words (a reason was once cut to 'payload.csv_colu')
    assert "payload.csv_columns" in out and "payload.csv_colu\n" not in out
    assert all(len(line) > 0 for line in out.splitlines() if line.startswith("    $ "))


def test_the_demo_project_reruns_train_and_ingest(demo: tuple[Path, str]):
    folder, _ = demo
    status = headrace(folder, "status", "--json")
    assert status.returncode == 0, status.stderr
    before = {m["name"]: m for m in json.loads(status.stdout)["models"]}
    assert {"churn", "price", "recommendations"} <= set(before)

    trained = headrace(folder, "train", "price", "--json")
    assert trained.returncode == 0, trained.stderr
    doc = json.loads(trained.stdout)
    assert doc["model"] == "price" and doc["version"] == before["price"]["latest"] + 1

    # new data arrives at two of the sources; the orders API is the demo's, started from the folder
    from headrace.demo.data import add_payments, housing

    housing(200, seed=99).write_csv(folder / "data" / "houses" / "houses-2.csv")
    add_payments(folder / "data" / "payments.db", new=7, updated=())
    api_url = str(load_project(folder / "headrace.yaml").source("orders_api").url)  # type: ignore[union-attr]
    services = subprocess.Popen(
        [sys.executable, "-m", "headrace", "demo", "--services", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _listening(api_url):
            assert services.poll() is None, services.stderr.read() if services.stderr else ""
            assert time.monotonic() < deadline, "the demo's orders API did not start"
            time.sleep(0.1)
        ingested = headrace(folder, "ingest", "--json")
    finally:
        services.terminate()
        services.communicate(timeout=20)  # reaps it and closes its pipe
    assert ingested.returncode == 0, ingested.stdout[-2000:] + ingested.stderr[-2000:]
    runs = {r["source"]: r for r in json.loads(ingested.stdout)["runs"]}
    assert set(runs) == {"customers", "houses", "interactions", "orders_api", "payments_db"}
    assert runs["houses"]["rows_committed"] == 200  # only the new file
    assert [b["status"] for b in runs["houses"]["batches"]].count("skipped") == 1
    assert runs["customers"]["rows_committed"] == 0 and runs["interactions"]["rows_committed"] == 0
    assert runs["payments_db"]["rows_committed"] == 7  # only the rows past the cursor
    assert runs["payments_db"]["cursor_before"] is not None
    # the API kept its orders: the incremental run reads only those at or after its cursor
    assert runs["orders_api"]["cursor_before"] is not None
    assert runs["orders_api"]["rows_read"] < 20
