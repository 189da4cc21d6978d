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


def in_process(capsys: pytest.CaptureFixture[str], project: Path, *args: str) -> tuple[int, str, str]:
    """``headrace --project PROJECT ARGS`` through the same ``main`` as the console script, in this
    process (a new interpreter pays seconds of imports per command; two commands below still run as
    real processes)."""
    from headrace.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["--project", str(project), *args])
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_ingest_quarantine_rerun_bad_file_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert headrace("init", "p", cwd=tmp_path).returncode == 0
    project = tmp_path / "p"
    code, out, err = in_process(capsys, project, "ingest", "--json")
    assert code == 0, err
    doc = json.loads(out)
    run = doc["runs"][0]
    assert doc["ok"] and run["rows_read"] == 2000
    assert run["rows_committed"] + run["rows_quarantined"] == 2000 and run["rows_quarantined"] > 0
    assert run["reports"][0]["failures"]

    code, out, _ = in_process(capsys, project, "ingest", "--json")
    assert [b["status"] for b in json.loads(out)["runs"][0]["batches"]] == ["skipped", "skipped"]

    code, out, _ = in_process(capsys, project, "datasets", "quarantine", "customers", "--json")
    sample = json.loads(out)["sample"]
    assert {"reason", "origin", "position", "batch_id", "customerID"} <= set(sample[0])

    (project / "data" / "customers" / "customers-3.csv").write_bytes(b'customerID,tenure\n"C1,\xff\n')
    bad = headrace("ingest", "--html", "report.html", cwd=project)
    assert bad.returncode == 1
    assert "customers-3.csv" in bad.stdout and "failed" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert (project / "report.html").read_text().startswith("<!doctype html>")

    code, out, err = in_process(capsys, project, "datasets", "replay", "customers", "--json")
    assert code == 0, err
    assert json.loads(out)["replayed"] == run["rows_quarantined"]

    code, out, _ = in_process(capsys, project, "datasets", "report", "customers", "--json")
    assert json.loads(out)["reports"]

    code, _, err = in_process(capsys, project, "ingest", "nope")
    assert code == 2 and "no source named 'nope'" in err


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
