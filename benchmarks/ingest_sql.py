"""1,000,000 rows from the local PostgreSQL: headrace's SQL source against pandas.read_sql (what users
do today) and the fastest raw path (COPY to a CSV file with psql's \\copy when psql is installed and with
psycopg; ADBC's PostgreSQL driver into Arrow; connectorx when it is installed), with peak memory.

    .venv/bin/python benchmarks/ingest_sql.py [--rows 1000000] [--rounds 3] [--url postgresql://...]

Each contender runs in its own process (spawned), so its peak resident memory (ru_maxrss) is its own.
headrace is measured twice: the source alone (rows into Arrow/polars batches, bounded memory) and the
whole ingestion (validate, commit to a Delta dataset, record the run).

The machine may be shared: every round runs each contender once, one after another (every other
round in reverse order), so the raw paths and headrace see the same load; each round's ratio
(headrace source / the fastest raw path of that round) is printed, and the figures shown are medians
over the rounds with their spread. pandas.read_sql runs in the first round only (it takes several
times longer than all the others together).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from typing import Any

COLUMNS = "id, customer, amount, score, flag, day, created_at, note"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _headrace_source(url: str, table: str) -> dict[str, Any]:
    from headrace.config.sources_db import SqlSource
    from headrace.ingest.sql import SqlReader

    spec = SqlSource(kind="sql", url=url, table=table, dataset="bench", chunk_size=100_000)  # full load
    started = time.perf_counter()
    reader = SqlReader("bench", spec)
    rows = sum(b.frame.height for b in reader.read())
    return {"rows": rows, "seconds": time.perf_counter() - started, "fast_path": reader.used_fast_path}


def _headrace_ingest(url: str, table: str) -> dict[str, Any]:
    from headrace.config.sources_db import SqlSource
    from headrace.ingest.runner import ingest
    from headrace.ingest.sql import SqlReader
    from headrace.metadata import Metadata
    from headrace.store import Store

    folder = tempfile.mkdtemp(prefix="hr-bench-")
    try:
        store, meta = Store(f"{folder}/lake"), Metadata(f"sqlite:///{folder}/meta.db")
        spec = SqlSource(kind="sql", url=url, table=table, dataset="bench", cursor="id", chunk_size=250_000)
        started = time.perf_counter()
        result = ingest(SqlReader("bench", spec), spec, store=store, meta=meta, source_name="bench")
        seconds = time.perf_counter() - started
        assert result.status == "succeeded", result.error
        return {"rows": result.rows_committed, "seconds": seconds}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _pandas(url: str, table: str) -> dict[str, Any]:
    import pandas as pd
    from sqlalchemy import create_engine

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    started = time.perf_counter()
    frame = pd.read_sql(f"SELECT {COLUMNS} FROM {table}", engine)
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"rows": len(frame), "seconds": seconds}


def _copy_psycopg(url: str, table: str) -> dict[str, Any]:
    import psycopg

    with tempfile.NamedTemporaryFile(suffix=".csv") as out, psycopg.connect(url) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY {table} TO STDOUT (FORMAT csv)") as copy:
            for block in copy:
                out.write(block)
        out.flush()
        seconds = time.perf_counter() - started
    return {"rows": None, "seconds": seconds}


def _copy_psql(url: str, table: str) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".csv") as out:
        started = time.perf_counter()
        subprocess.run(["psql", url, "-qc", f"\\copy {table} TO '{out.name}' CSV"], check=True)
        seconds = time.perf_counter() - started
    return {"rows": None, "seconds": seconds}


def _adbc_raw(url: str, table: str) -> dict[str, Any]:
    import adbc_driver_postgresql.dbapi as adbc

    started = time.perf_counter()
    rows = 0
    with adbc.connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {COLUMNS} FROM {table}")
        for batch in cur.fetch_record_batch():
            rows += batch.num_rows
    return {"rows": rows, "seconds": time.perf_counter() - started}


def _connectorx(url: str, table: str) -> dict[str, Any]:
    import connectorx

    started = time.perf_counter()
    arrow = connectorx.read_sql(url, f"SELECT {COLUMNS} FROM {table}", return_type="arrow")
    return {"rows": arrow.num_rows, "seconds": time.perf_counter() - started}


def _child(fn_name: str, url: str, table: str, queue: Any) -> None:
    result = globals()[fn_name](url, table)
    result["peak_mb"] = _peak_mb()
    queue.put(result)


def _run(ctx: Any, fn_name: str, url: str, table: str) -> dict[str, Any]:
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn_name, url, table, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="every contender runs once per round (median)")
    parser.add_argument(
        "--url", default=os.environ.get("HEADRACE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
    )
    args = parser.parse_args()
    import psycopg

    table = f"hr_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute(
            f"""CREATE TABLE {table} (id bigint PRIMARY KEY, customer text, amount numeric(12,2),
                score float8, flag boolean, day date, created_at timestamptz, note text)"""
        )
        conn.execute(
            f"""INSERT INTO {table} SELECT g, 'C' || (g % 5000), (g % 100000) / 100.0, random(), g % 3 = 0,
                DATE '2020-01-01' + g % 2000, TIMESTAMPTZ '2024-01-01 00:00:00+00' + g * INTERVAL '1 second',
                CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || g END
                FROM generate_series(1, {int(args.rows)}) g""",
        )
        conn.execute(f"VACUUM ANALYZE {table}")
    source_label = "headrace source (ADBC binary COPY)"
    started_at, load_before = time.strftime("%Y-%m-%d %H:%M:%S %Z"), os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        ctx = mp.get_context("spawn")
        _copy_psycopg(args.url, table)  # warm-up: every contender then reads a table in cache
        contenders = [("raw: psycopg COPY to CSV file", "_copy_psycopg")]
        if shutil.which("psql"):
            contenders.append(("raw: psql \\copy to CSV file", "_copy_psql"))
        contenders.append(("raw: ADBC into Arrow, no checks", "_adbc_raw"))
        if importlib.util.find_spec("connectorx") is not None:
            contenders.append(("raw: connectorx into Arrow", "_connectorx"))
        contenders.append((source_label, "_headrace_source"))
        contenders.append(("headrace ingest (source + checks + Delta commit)", "_headrace_ingest"))
        for round_ in range(max(args.rounds, 1)):
            # every other round in reverse order, so that no contender always runs after the same one
            for label, fn in contenders if round_ % 2 == 0 else contenders[::-1]:
                runs.setdefault(label, []).append(_run(ctx, fn, args.url, table))
            if round_ == 0:
                runs["pandas.read_sql"] = [_run(ctx, "_pandas", args.url, table)]
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")

    rounds = len(runs[source_label])
    print(
        f"{args.rows:,} rows, 8 columns, PostgreSQL at {args.url.split('@')[-1]}; {started_at}, "
        f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(f"median of {rounds} rounds (pandas: 1 run); spread is min-max over the rounds")
    print(f"{'contender':52} {'seconds':>8} {'spread':>11} {'rows/s':>12} {'peak MB':>8}")
    for label, rs in runs.items():
        seconds = [r["seconds"] for r in rs]
        mid = statistics.median(seconds)
        spread = f"{min(seconds):.2f}-{max(seconds):.2f}"
        peak = statistics.median(r["peak_mb"] for r in rs)
        print(f"{label:52} {mid:8.2f} {spread:>11} {args.rows / mid:12,.0f} {peak:8.0f}")
    raw_labels = [label for label in runs if label.startswith("raw:")]
    ratios = []
    for i in range(rounds):
        fastest = min(raw_labels, key=lambda label: runs[label][i]["seconds"])
        ratios.append(runs[source_label][i]["seconds"] / runs[fastest][i]["seconds"])
        print(f"round {i + 1}: headrace source / fastest raw path ({fastest[5:]}) = {ratios[-1]:.2f}x")
    print(
        f"headrace source vs fastest raw path: {statistics.median(ratios):.2f}x the time, median of "
        f"{rounds} rounds (spread {min(ratios):.2f}-{max(ratios):.2f}x; goal <= 1.1x, floor <= 1.5x)"
    )
    pandas = runs["pandas.read_sql"][0]["seconds"]
    source = statistics.median(r["seconds"] for r in runs[source_label])
    print(f"headrace source vs pandas.read_sql: {pandas / source:.1f}x faster (goal >= 3x)")


if __name__ == "__main__":
    main()
