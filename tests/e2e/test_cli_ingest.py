"""``headrace ingest``, ``datasets quarantine|replay|report`` and the demo's ingest stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def headrace(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "300"},
    )


def test_ingest_quarantine_rerun_bad_file_replay(tmp_path: Path):
    assert headrace("init", "p", cwd=tmp_path).returncode == 0
    project = tmp_path / "p"
    first = headrace("ingest", "--json", cwd=project)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    run = doc["runs"][0]
    assert doc["ok"] and run["rows_read"] == 2000
    assert run["rows_committed"] + run["rows_quarantined"] == 2000 and run["rows_quarantined"] > 0
    assert run["reports"][0]["failures"]

    again = headrace("ingest", "--json", cwd=project)
    assert [b["status"] for b in json.loads(again.stdout)["runs"][0]["batches"]] == ["skipped", "skipped"]

    q = headrace("datasets", "quarantine", "customers", "--json", cwd=project)
    sample = json.loads(q.stdout)["sample"]
    assert {"reason", "origin", "position", "batch_id", "customerID"} <= set(sample[0])

    (project / "data" / "customers" / "customers-3.csv").write_bytes(b'customerID,tenure\n"C1,\xff\n')
    bad = headrace("ingest", "--html", "report.html", cwd=project)
    assert bad.returncode == 1
    assert "customers-3.csv" in bad.stdout and "failed" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert (project / "report.html").read_text().startswith("<!doctype html>")

    replay = headrace("datasets", "replay", "customers", "--json", cwd=project)
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout)["replayed"] == run["rows_quarantined"]

    report = headrace("datasets", "report", "customers", "--json", cwd=project)
    assert json.loads(report.stdout)["reports"]

    unknown = headrace("ingest", "nope", cwd=project)
    assert unknown.returncode == 2 and "no source named 'nope'" in unknown.stderr


def test_demo_runs_the_ingest_stage(tmp_path: Path):
    from headrace.demo import STAGES, DemoContext

    ctx = DemoContext(folder=tmp_path)
    stages = dict(STAGES)
    stages["project"](ctx)
    try:
        lines = stages["ingest"](ctx)
    finally:
        ctx.ws.close()
    assert lines[0].startswith("customers: 4000 rows read from 2 files")
    assert any("quarantined customerID=" in line for line in lines)
