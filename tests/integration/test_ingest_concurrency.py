"""One writer per source: runs of `headrace ingest` started at once, as real processes, on SQLite and
on PostgreSQL metadata, leave each source row in the dataset exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import create_engine, text

from headrace.errors import SourceBusy
from headrace.ingest.lease import SourceLease
from headrace.metadata import Metadata
from headrace.store import Store

pytestmark = pytest.mark.integration

FILES, ROWS = 3, 40_000


def project(folder: Path, metadata: str | None = None, extra_source: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    for f in range(FILES):
        ids = range(f * ROWS, (f + 1) * ROWS)
        (data / f"part-{f}.csv").write_text("id,n\n" + "".join(f"k{i},{i % 97}\n" for i in ids))
    text_ = "project: p\n"
    if metadata:
        text_ += f"metadata: {metadata}\n"
    text_ += (
        "sources:\n"
        "  parts:\n"
        "    kind: file\n"
        "    path: data/part-*.csv\n"
        "    dataset: parts\n"
        "    chunk_rows: 5000\n"
        "    columns: {id: {unique: true}}\n"
    )
    if extra_source:
        (data / "more.csv").write_text("id,n\n" + "".join(f"m{i},{i}\n" for i in range(ROWS)))
        text_ += "  more:\n    kind: file\n    path: data/more.csv\n    dataset: parts\n"
    (folder / "headrace.yaml").write_text(text_)
    return folder


def start(folder: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "headrace", "--project", str(folder), "ingest", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        out.append((p.returncode, err))
    return out


def rows(folder: Path) -> pl.DataFrame:
    return Store(folder / ".headrace" / "lake").read("parts")


@pytest.mark.parametrize("wait", [True, False])
def test_runs_started_at_once_on_a_new_project_commit_each_row_once(tmp_path: Path, wait: bool):
    folder = project(tmp_path / "p")
    args = ["--wait", "120"] if wait else []
    results = finish([start(folder, *args) for _ in range(3)])
    for code, err in results:
        assert "unreachable" not in err  # the new metadata database is created once, not raced
        if code != 0:
            assert not wait and "is busy: another run" in err and "--wait" in err, err
    assert any(code == 0 for code, _ in results)
    data = rows(folder)
    assert data.height == FILES * ROWS and data["id"].n_unique() == FILES * ROWS


def test_two_sources_of_one_dataset_both_commit_at_once(tmp_path: Path):
    folder = project(tmp_path / "p", extra_source=True)
    assert finish([start(folder, "parts")])[0][0] == 0  # the database exists; now both at once
    (folder / "data" / "part-9.csv").write_text("id,n\nz1,1\nz2,2\n")
    results = finish([start(folder, "parts"), start(folder, "more")])
    assert [code for code, _ in results] == [0, 0], results
    assert rows(folder).height == FILES * ROWS + 2 + ROWS


def test_on_postgres_metadata_too(tmp_path: Path, postgres_url: str):
    name = "hr_lease_" + uuid.uuid4().hex[:10]
    admin = create_engine(
        postgres_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    try:
        folder = project(tmp_path / "p", metadata=url)
        results = finish([start(folder, "--wait", "120") for _ in range(3)])
        assert [code for code, _ in results] == [0, 0, 0], results
        data = rows(folder)
        assert data.height == FILES * ROWS and data["id"].n_unique() == FILES * ROWS
        meta = Metadata(url)
        try:
            busy = pytest.raises(SourceBusy, match="source 'parts' is busy: another run")
            with SourceLease(meta, "parts"), busy:  # given back by every run, so ours now
                SourceLease(meta, "parts").acquire()
        finally:
            meta.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_lease_whose_holder_was_killed_is_taken_over(tmp_path: Path):
    meta = Metadata(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time; from headrace.metadata import Metadata; from headrace.ingest.lease "
                "import SourceLease; m = Metadata(sys.argv[1]); SourceLease(m, 's').acquire(); "
                "print('held', flush=True); time.sleep(60)",
                meta.url,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(SourceBusy):
            SourceLease(meta, "s").acquire()
        holder.kill()
        holder.communicate()  # reaps it and closes its pipe
        lease = SourceLease(meta, "s")
        lease.acquire()  # the holder's process is gone: taken over at once, no expiry to wait for
        lease.release()
    finally:
        meta.dispose()
