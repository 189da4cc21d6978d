"""The CLI on a project whose source declares no types: inferred types shown, honest outcomes (failed
checks, interrupted runs), a change of rules noticed, ``--reload`` and ``datasets drop``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from headrace.store import Store

pytestmark = pytest.mark.e2e

HEAD = "customerID,zip,SeniorCitizen,tenure,TotalCharges,Churn\n"


def project(folder: Path, columns: str = "{}", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "headrace.yaml").write_text(
        "project: p\n"
        "sources:\n"
        "  customers:\n"
        "    kind: file\n"
        "    path: data/*.csv\n"
        "    dataset: customers\n"
        f"    columns: {columns}\n"
        f"{extra}"
    )
    (folder / "data").mkdir(exist_ok=True)
    return folder


def rows(n: int, start: int = 0, bad_every: int = 0) -> str:
    out = []
    for i in range(start, start + n):
        tenure = "twelve" if bad_every and i % bad_every == 0 else str(i % 72)
        charges = " " if i % 10 == 3 else f"{i * 1.5:.2f}"
        out.append(f"C{i:05d},{i % 100:05d},{i % 2},{tenure},{charges},{'Yes' if i % 3 else 'No'}\n")
    return "".join(out)


def cli(capsys: pytest.CaptureFixture[str], folder: Path, *args: str) -> tuple[int, str, str]:
    from headrace.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["--project", str(folder), *args])
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_inferred_types_failed_checks_changed_rules_reload_and_drop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    folder = project(tmp_path / "p", "{TotalCharges: {impute: median}}")
    (folder / "data" / "a.csv").write_text(HEAD + rows(200))
    code, out, err = cli(capsys, folder, "ingest", "--json")
    assert code == 0, err
    assert json.loads(out)["runs"][0]["rows_committed"] == 200

    code, out, _ = cli(capsys, folder, "datasets", "show", "customers", "--json")
    schema = {s["column"]: (s["type"], s["origin"]) for s in json.loads(out)["schema"]}
    assert schema == {
        "customerID": ("string", "inferred"),
        "zip": ("string", "inferred"),
        "SeniorCitizen": ("int", "inferred"),
        "tenure": ("int", "inferred"),
        "TotalCharges": ("float", "inferred"),
        "Churn": ("string", "inferred"),
    }
    code, out, _ = cli(capsys, folder, "datasets", "show", "customers")
    assert "inferred" in out and "SeniorCitizen" in out

    # a file where a quarter of the rows break the pinned type: failed checks, exit 1, nothing of it
    (folder / "data" / "b.csv").write_text(HEAD + rows(100, start=1000, bad_every=4))
    code, out, err = cli(capsys, folder, "ingest")
    assert code == 1
    line = [x for x in err.splitlines() if x.startswith("failed checks:")]
    assert len(line) == 1
    expected = "source 'customers': 25 of 100 rows quarantined (25.0%), more than max_quarantine_ratio 5.0%"
    assert expected in line[0]
    assert "top rules: tenure: type int (inferred) (25)" in line[0]
    store = Store(folder / ".headrace" / "lake")
    assert store.read("customers").height == 200

    # the user changes the rules: the run says what was loaded with the old ones, and the fix
    (folder / "data" / "b.csv").unlink()
    project(folder, "{TotalCharges: {impute: median}, zip: {type: int}}")
    code, out, err = cli(capsys, folder, "ingest")
    assert code == 0
    assert "warning: source 'customers': zip is declared int but the dataset holds string" in err
    assert "headrace ingest --reload customers" in err

    code, out, err = cli(capsys, folder, "ingest", "--reload", "customers", "--json")
    assert code == 0, err
    before = store.version("customers")
    data = store.read("customers")
    assert data.schema["zip"].is_integer() and data.height == 200
    assert str(store.read("customers", version=0).schema["zip"]) == "String"  # time travel keeps the old
    code, out, err = cli(capsys, folder, "ingest")
    assert code == 0 and "warning" not in err and store.version("customers") == before

    code, out, err = cli(capsys, folder, "datasets", "drop", "customers")
    assert code == 2 and "--yes" in err
    code, out, err = cli(capsys, folder, "datasets", "drop", "customers", "--yes")
    assert code == 0 and not store.exists("customers")
    code, out, err = cli(capsys, folder, "ingest", "--json")
    assert code == 0 and json.loads(out)["runs"][0]["rows_committed"] == 200  # loads everything again


def test_sigterm_records_the_run_as_interrupted_and_commits_nothing(tmp_path: Path):
    folder = project(tmp_path / "p", extra="    chunk_rows: 200\n")  # thousands of chunks: seconds
    (folder / "data" / "big.csv").write_text(HEAD + rows(400_000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "headrace", "--project", str(folder), "ingest"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    engine = create_engine(f"sqlite:///{folder / '.headrace' / 'headrace.db'}")
    try:
        deadline = time.monotonic() + 120
        running = False
        while time.monotonic() < deadline and proc.poll() is None and not running:
            time.sleep(0.2)
            try:
                with engine.connect() as conn:
                    running = bool(conn.execute(text("select count(*) from ingestion_runs")).scalar())
            except Exception:  # the database is not created yet
                continue
        assert running, "the run never started"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    with engine.connect() as conn:
        status, error = conn.execute(text("select status, error from ingestion_runs")).one()
    engine.dispose()
    assert status == "interrupted" and "KeyboardInterrupt" in error
    assert not Store(folder / ".headrace" / "lake").exists("customers")
