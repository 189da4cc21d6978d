"""Fault injection: `headrace ingest` killed with SIGKILL right after each step of a batch (read,
quarantine commit, data commit, bookkeeping), then run again; files and SQL sources (PostgreSQL and
MariaDB) end with every source row in the dataset exactly once and every rejected row once in the
quarantine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pymysql
import pytest
from sqlalchemy import create_engine, text

from headrace.store import Store

pytestmark = pytest.mark.integration

STEPS = ["read", "quarantine", "commit", "bookkeeping"]


def headrace(folder: Path, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("HEADRACE_FAULT_AT", None)
    if fault:
        env["HEADRACE_FAULT_AT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "headrace", "--project", str(folder), "ingest"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def statuses(folder: Path) -> list[str]:
    engine = create_engine(f"sqlite:///{folder / '.headrace' / 'headrace.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status FROM ingestion_runs ORDER BY id")).scalars().all()
    engine.dispose()
    return list(rows)


@pytest.mark.parametrize("step", STEPS)
def test_files_killed_at_each_step_then_rerun_hold_each_row_once(tmp_path: Path, step: str):
    folder = tmp_path / "p"
    (folder / "data").mkdir(parents=True)
    good, bad = set(), set()
    for f in range(3):
        lines = []
        for i in range(f * 1000, (f + 1) * 1000):
            wrong = i % 50 == 7
            (bad if wrong else good).add(f"k{i}")
            lines.append(f"k{i},{-1 if wrong else i % 90}\n")
        (folder / "data" / f"part-{f}.csv").write_text("id,n\n" + "".join(lines))
    (folder / "headrace.yaml").write_text(
        "project: p\nsources:\n  parts:\n    kind: file\n    path: data/*.csv\n    dataset: parts\n"
        "    columns: {id: {unique: true}, n: {type: int, min: 0}}\n"
    )
    killed = headrace(folder, fault=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = headrace(folder)
    assert again.returncode == 0, again.stderr
    store = Store(folder / ".headrace" / "lake")
    data, quarantine = store.read("parts"), store.read("parts__quarantine")
    assert data.height == len(good) and set(data["id"].to_list()) == good
    assert quarantine.height == len(bad) and set(quarantine["id"].to_list()) == bad
    assert statuses(folder) == ["interrupted", "succeeded"]  # the killed run is not left 'running'
    assert headrace(folder).returncode == 0 and store.read("parts").height == len(good)  # a third run


def _pg_table(url: str, rows: int) -> str:
    name = f"hr_fault_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, amount float8, seq int NOT NULL)")
        conn.execute(
            f"INSERT INTO {name} SELECT g, CASE WHEN g % 37 = 0 THEN -1 ELSE g * 0.5 END, g "
            f"FROM generate_series(1, {rows}) g"
        )
    return name


def _maria_table(rows: int) -> str:
    name = f"hr_fault_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, amount double, seq int NOT NULL)")
        values = [(g, -1 if g % 37 == 0 else g * 0.5, g) for g in range(1, rows + 1)]
        cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s)", values)
    conn.close()
    return name


@pytest.mark.parametrize("engine", ["postgresql", "mariadb"])
@pytest.mark.parametrize("step", STEPS)
def test_an_incremental_sql_load_killed_at_each_step_then_rerun_holds_each_row_once(
    tmp_path: Path, step: str, engine: str, postgres_url: str, mariadb_url: str
):
    rows = 1500
    if engine == "postgresql":
        url, table = postgres_url, _pg_table(postgres_url, rows)
    else:
        url, table = mariadb_url, _maria_table(rows)
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "headrace.yaml").write_text(
        f"project: p\nsources:\n  orders:\n    kind: sql\n    url: {url}\n    table: {table}\n"
        "    dataset: orders\n    cursor: seq\n    chunk_size: 400\n    write: append\n"
        "    max_quarantine_ratio: 1.0\n    columns: {amount: {min: 0}}\n"
    )
    try:
        killed = headrace(folder, fault=step)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        again = headrace(folder)
        assert again.returncode == 0, again.stderr
        store = Store(folder / ".headrace" / "lake")
        data, held = store.read("orders"), store.read("orders__quarantine")
        assert sorted(data["id"].to_list()) == [g for g in range(1, rows + 1) if g % 37]
        assert sorted(int(i) for i in held["id"].to_list()) == [g for g in range(1, rows + 1) if g % 37 == 0]
    finally:
        if engine == "postgresql":
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
        else:
            conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", autocommit=True)
            with conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {table}")
            conn.close()
