"""1,000,000 rows from the local PostgreSQL: headrace's SQL source against pandas.read_sql (what users
do today) and the fastest raw path (COPY to a CSV file with psql's \\copy when psql is installed and with
psycopg; ADBC's PostgreSQL driver into Arrow; connectorx when it is installed), from one run, with
peak memory.

    .venv/bin/python benchmarks/ingest_sql.py [--rows 1000000] [--url postgresql://postgres@127.0.0.1/test]

Each contender runs in its own process (spawned), so its peak resident memory (ru_maxrss) is its own.
headrace is measured twice: the source alone (rows into Arrow/polars batches, bounded memory) and the
whole ingestion (validate, commit to a Delta dataset, record the run).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import resource
import shutil
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
    try:
        ctx = mp.get_context("spawn")
        _copy_psycopg(args.url, table)  # warm-up: every contender then reads a table in cache
        contenders = [("raw: psycopg COPY to CSV file", "_copy_psycopg")]
        if shutil.which("psql"):
            contenders.append(("raw: psql \\copy to CSV file", "_copy_psql"))
        contenders.append(("raw: ADBC into Arrow, no checks", "_adbc_raw"))
        if importlib.util.find_spec("connectorx") is not None:
            contenders.append(("raw: connectorx into Arrow", "_connectorx"))
        contenders.append(("headrace source (ADBC binary COPY)", "_headrace_source"))
        contenders.append(("headrace ingest (source + checks + Delta commit)", "_headrace_ingest"))
        contenders.append(("pandas.read_sql", "_pandas"))
        results = {label: _run(ctx, fn, args.url, table) for label, fn in contenders}
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")

    print(f"{args.rows:,} rows, 8 columns, PostgreSQL at {args.url.split('@')[-1]} (one run each)")
    print(f"{'contender':52} {'seconds':>8} {'rows/s':>12} {'peak MB':>8}")
    for label, r in results.items():
        rate = args.rows / r["seconds"]
        print(f"{label:52} {r['seconds']:8.2f} {rate:12,.0f} {r['peak_mb']:8.0f}")
    source = results["headrace source (ADBC binary COPY)"]["seconds"]
    raw = min(r["seconds"] for label, r in results.items() if label.startswith("raw:"))
    pandas = results["pandas.read_sql"]["seconds"]
    print(f"headrace source vs fastest raw path: {source / raw:.2f}x the time (goal <= 1.5x)")
    print(f"headrace source vs pandas.read_sql: {pandas / source:.1f}x faster (goal >= 3x)")


if __name__ == "__main__":
    main()
