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
    lines = stages["ingest"](ctx)
    assert "headrace ingest customers houses interactions" in ctx.commands
    assert lines[0].startswith("customers: 4000 rows read, ") and lines[0].endswith("(2 files)")
    assert any("quarantined customerID=" in line for line in lines)


SQL_HTTP_PROJECT = """\
project: batch-sources
store: .headrace/lake
metadata: sqlite:///.headrace/headrace.db
artifacts: .headrace/artifacts
sources:
  payments:
    kind: sql
    url: ${{PG_URL}}
    table: {table}
    dataset: payments
    cursor: updated_at
    cursor_key: [id]
    chunk_size: 70
    columns:
      amount: {{min: 0}}
  orders:
    kind: http
    url: {base}/orders/cursor
    auth: {{type: bearer, token: "${{ORDERS_TOKEN}}"}}
    pagination: {{type: cursor, cursor_path: next_cursor}}
    records_path: records
    dataset: orders
    incremental: {{param: updated_since, field: updated_at}}
    batch_rows: 25
"""


def test_ingest_sql_and_http_sources_from_the_project_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_url: str, monkeypatch: pytest.MonkeyPatch
):
    import uuid

    import psycopg

    from headrace.demo.api import DemoApi, serve

    table = f"hr_e2e_{uuid.uuid4().hex[:10]}"
    pg = psycopg.connect(postgres_url, autocommit=True)
    pg.execute(
        f"CREATE TABLE {table} (id int PRIMARY KEY, amount numeric(8,2), updated_at timestamptz NOT NULL)"
    )
    pg.execute(
        f"""INSERT INTO {table} SELECT g, CASE WHEN g % 50 = 0 THEN -1 ELSE g / 4.0 END,
            TIMESTAMPTZ '2024-01-01 00:00:00+00' + (g / 3) * INTERVAL '1 minute'
            FROM generate_series(1, 300) g"""
    )
    api = DemoApi(count=90, per_page=20, token="s3cret-token")
    monkeypatch.setenv("PG_URL", postgres_url)
    monkeypatch.setenv("ORDERS_TOKEN", "s3cret-token")
    try:
        with serve(api.app()) as base:
            project = tmp_path / "p"
            project.mkdir()
            (project / "headrace.yaml").write_text(SQL_HTTP_PROJECT.format(table=table, base=base))
            code, out, err = in_process(capsys, project, "ingest", "--json")
            assert code == 0, err
            runs = {r["source"]: r for r in json.loads(out)["runs"]}
            # Six rows break the 'min: 0' rule and are quarantined; every other row is committed.
            assert runs["payments"]["rows_read"] == 300
            assert (runs["payments"]["rows_committed"], runs["payments"]["rows_quarantined"]) == (294, 6)
            assert runs["payments"]["cursor_before"] is None and runs["payments"]["cursor_after"]
            assert runs["orders"]["rows_committed"] == 90
            assert "s3cret-token" not in out + err

            pg.execute(f"UPDATE {table} SET amount = 1, updated_at = now() WHERE id IN (50, 100)")
            pg.execute(f"INSERT INTO {table} VALUES (301, 2.5, now())")
            api.insert(5)
            code, out, err = in_process(capsys, project, "ingest", "--json")
            assert code == 0, err
            runs = {r["source"]: r for r in json.loads(out)["runs"]}
            assert (runs["payments"]["rows_read"], runs["payments"]["rows_committed"]) == (3, 3)
            assert runs["payments"]["cursor_before"] is not None
            assert runs["orders"]["rows_committed"] == 5

            # Only the named source runs; the recorded runs list both sources' history.
            code, out, err = in_process(capsys, project, "ingest", "orders", "--json")
            assert code == 0, err
            assert [r["source"] for r in json.loads(out)["runs"]] == ["orders"]
            assert json.loads(out)["runs"][0]["rows_read"] == 0
    finally:
        pg.execute(f"DROP TABLE IF EXISTS {table}")
        pg.close()
