"""File ingestion: headrace (validate + cleanse + quarantine + commit) beside its baselines, one run.

    .venv/bin/python benchmarks/ingest_files.py [--rows 1000000] [--pairs 3]

Generates a churn-like CSV (15 columns, about 2% defective rows), then runs each approach in its own
process and prints rows/s and peak resident memory (ru_maxrss of that process). The machine may be
shared: raw and headrace run alternately ``--pairs`` times, every pair's ratio is printed and the
median pair is shown.

- headrace: ``headrace.ingest.runner.ingest`` with the example project's rules, into a Delta table;
- raw limit: polars reads the CSV and writes Parquet, no checks;
- naive: pandas reads the CSV, sqlite3 ``executemany`` inserts it;
- dlt into duckdb, only when dlt is installed;
- rule engines alone on the same parsed frame, each doing the whole job (cleanse, convert, check,
  impute, split into typed clean rows and quarantined rows with every failed rule, column statistics):
  headrace's ``check`` and pandera's polars backend with polars around it for what pandera does not
  do (when pandera is installed), which is how the rule engine was chosen.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RULES = {
    "customerID": {"type": "string", "required": True, "unique": True},
    "tenure": {"type": "int", "required": True, "min": 0, "max": 120},
    "MonthlyCharges": {"type": "float", "required": True, "min": 0},
    "TotalCharges": {"type": "float", "min": 0, "impute": "median"},
    "SeniorCitizen": {"type": "int", "allowed": [0, 1]},
    "Contract": {"type": "string", "allowed": ["Month-to-month", "One year", "Two year"]},
    "Churn": {"type": "string", "required": True, "allowed": ["Yes", "No"]},
}


def generate(path: Path, rows: int) -> None:
    from headrace.datagen import churn_with_defects

    frame, _ = churn_with_defects(rows, seed=7, rate=0.02)
    frame.drop("TechSupport").write_csv(path)


def run_generate(csv: Path, work: Path) -> dict[str, float]:
    rows = int(work.name.rsplit("-", 1)[-1])
    generate(csv, rows)
    return {"seconds": 0.0, "rows": rows}


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_headrace(csv: Path, work: Path) -> dict[str, float]:
    from headrace.config.sources import FileSource
    from headrace.ingest.runner import ingest, open_source
    from headrace.metadata import Metadata
    from headrace.store import Store

    spec = FileSource.model_validate(
        {
            "kind": "file",
            "path": str(csv),
            "dataset": "churn",
            "columns": RULES,
            "cleanse": ["trim_strings", "null_tokens"],
        }
    )
    store = Store(work / "lake")
    meta = Metadata(f"sqlite:///{work / 'meta.db'}")
    started, cpu = time.perf_counter(), time.process_time()
    result = ingest(open_source("churn", spec), spec, store=store, meta=meta, source_name="churn")
    seconds = time.perf_counter() - started
    assert result.ok, result.error
    return {
        "seconds": seconds,
        "cpu": time.process_time() - cpu,
        "rows": result.rows_read,
        "committed": result.rows_committed,
        "quarantined": result.rows_quarantined,
    }


def run_raw(csv: Path, work: Path) -> dict[str, float]:
    import polars as pl

    started, cpu = time.perf_counter(), time.process_time()
    frame = pl.read_csv(csv, infer_schema=False)  # text columns: typed inference fails on the defects
    frame.write_parquet(work / "raw.parquet")
    return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu, "rows": frame.height}


def run_naive(csv: Path, work: Path) -> dict[str, float]:
    import sqlite3

    import pandas as pd

    started = time.perf_counter()
    frame = pd.read_csv(csv)
    conn = sqlite3.connect(work / "naive.db")
    cols = ", ".join(f'"{c}"' for c in frame.columns)
    conn.execute(f"CREATE TABLE t ({cols})")
    marks = ", ".join("?" for _ in frame.columns)
    conn.executemany(f"INSERT INTO t VALUES ({marks})", frame.itertuples(index=False, name=None))
    conn.commit()
    conn.close()
    return {"seconds": time.perf_counter() - started, "rows": len(frame)}


def run_dlt(csv: Path, work: Path) -> dict[str, float]:
    import dlt  # type: ignore[import-not-found]
    import polars as pl

    started = time.perf_counter()
    frame = pl.read_csv(csv, infer_schema=False).to_arrow()
    pipeline = dlt.pipeline(
        pipeline_name="bench",
        destination=dlt.destinations.duckdb(str(work / "dlt.duckdb")),
        pipelines_dir=str(work / "dlt"),
    )
    pipeline.run(frame, table_name="churn")
    return {"seconds": time.perf_counter() - started, "rows": frame.num_rows}


def run_engines(csv: Path, work: Path) -> dict[str, float]:
    """The rule engines alone, on the same frame of text columns (as every source delivers CSV), each
    doing the whole job: cleanse, convert, check, impute, split into typed clean rows and quarantined
    rows (original text, every failed rule in one reason per row), and column statistics."""
    import polars as pl

    from headrace.config.sources import IngestSpec
    from headrace.ingest.validate import check

    frame = pl.read_csv(csv, infer_schema=False)
    spec = IngestSpec.model_validate(
        {"dataset": "churn", "columns": RULES, "cleanse": ["trim_strings", "null_tokens"]}
    )
    check(frame.head(1000), spec)  # warm both engines up on a slice, so neither pays first-call costs
    started = time.perf_counter()
    result = check(frame, spec)
    out = {"headrace_check_seconds": time.perf_counter() - started, "rows": frame.height}
    out["headrace_rejected"] = result.rejected.height
    try:
        import pandera.polars  # noqa: F401
    except ImportError:
        return out
    pandera_job(frame.head(1000), spec.null_tokens)
    started = time.perf_counter()
    _clean, rejected = pandera_job(frame, spec.null_tokens)
    out["pandera_seconds"] = time.perf_counter() - started
    out["pandera_rejected"] = rejected.height
    return out


def pandera_job(frame, tokens):  # type: ignore[no-untyped-def]
    """What ``check`` does, with pandera's polars backend checking the rules. pandera cannot convert
    text that does not parse and still check the other rows (the column stays text, its checks fail
    as a whole), so conversion and type failures are polars expressions around it, as is the split.
    One difference stays: pandera's ``unique`` flags every copy of a repeated id, not the later ones."""
    import pandera.polars as pa
    import polars as pl

    from headrace.ingest.validate import column_stats

    types = {"tenure": pl.Int64, "SeniorCitizen": pl.Int64, "MonthlyCharges": pl.Float64}
    types["TotalCharges"] = pl.Float64
    text = pl.col(pl.String).str.strip_chars()
    raw = frame.with_row_index("row")
    cleaned = raw.with_columns(pl.when(text.is_in(tokens)).then(None).otherwise(text).name.keep())
    typed = cleaned.with_columns(
        [pl.col(c).cast(t, strict=False) for c, t in types.items()]
        + [
            (pl.col(c).is_not_null() & pl.col(c).cast(t, strict=False).is_null()).alias(f"{c}!")
            for c, t in types.items()
        ]
    )
    median = typed.select(pl.col("TotalCharges").median()).item()
    typed = typed.with_columns(
        pl.col("TotalCharges").fill_null(pl.when(~pl.col("TotalCharges!")).then(median))
    )
    schema = pa.DataFrameSchema(
        {
            "customerID": pa.Column(str, nullable=False, unique=True),
            "tenure": pa.Column(pl.Int64, pa.Check.in_range(0, 120), nullable=False),
            "MonthlyCharges": pa.Column(pl.Float64, pa.Check.ge(0), nullable=False),
            "TotalCharges": pa.Column(pl.Float64, pa.Check.ge(0), nullable=True),
            "SeniorCitizen": pa.Column(pl.Int64, pa.Check.isin([0, 1]), nullable=True),
            "Contract": pa.Column(
                str, pa.Check.isin(["Month-to-month", "One year", "Two year"]), nullable=True
            ),
            "Churn": pa.Column(str, pa.Check.isin(["Yes", "No"]), nullable=False),
        },
        strict=False,
    )
    try:
        schema.validate(typed, lazy=True)
        cases = pl.DataFrame(schema={"row": pl.UInt32, "reason": pl.String})
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.filter(pl.col("index").is_not_null()).select(
            pl.col("index").cast(pl.UInt32).alias("row"),
            pl.concat_str(pl.col("column"), pl.lit(": "), pl.col("check")).alias("reason"),
        )
    type_cases = pl.concat(
        [typed.filter(pl.col(f"{c}!")).select("row", pl.lit(f"{c}: type").alias("reason")) for c in types]
    )
    reasons = pl.concat([type_cases, cases]).group_by("row").agg(pl.col("reason").str.join("; "))
    rejected = raw.join(reasons, on="row", how="inner").sort("row")
    clean = typed.join(reasons, on="row", how="anti").drop("row", *[f"{c}!" for c in types])
    column_stats(clean)
    return clean, rejected


APPROACHES = {
    "generate": run_generate,
    "headrace": run_headrace,
    "raw": run_raw,
    "naive": run_naive,
    "dlt": run_dlt,
    "engines": run_engines,
}


def child(name: str, csv: str, work: str) -> None:
    result = APPROACHES[name.split("-")[0]](Path(csv), Path(work))
    result["peak_mb"] = _peak_mb()
    print(json.dumps(result))


def measure(name: str, csv: Path, work: Path) -> dict[str, float] | None:
    folder = work / name
    folder.mkdir()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, str(csv), str(folder)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {name}: not run ({last[:160]})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--pairs", type=int, default=3, help="raw and headrace run alternately this many times (median)"
    )
    parser.add_argument("--child", nargs=3, metavar=("NAME", "CSV", "WORK"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="headrace-bench-") as tmp:
        work = Path(tmp)
        csv = work / "churn.csv"
        # in a child process: a forked child inherits the parent's peak RSS, so the parent stays small
        measure(f"generate-{args.rows}", csv, work)
        size = csv.stat().st_size / 1e6
        print(f"input: {args.rows:,} rows, 15 columns, {size:.1f} MB CSV, ~2% defective rows")
        results: dict[str, dict[str, float] | None] = {}
        # the machine is shared: raw and headrace alternate, and each figure is the median of its runs,
        # so both see the same load; every pair's ratio is printed too
        pairs: list[tuple[dict[str, float], dict[str, float]]] = []
        for i in range(max(args.pairs, 1)):
            raw_i, hr_i = measure(f"raw-{i}", csv, work), measure(f"headrace-{i}", csv, work)
            if raw_i and hr_i:
                pairs.append((raw_i, hr_i))
        if pairs:
            middle = sorted(pairs, key=lambda p: p[0]["seconds"] / p[1]["seconds"])[len(pairs) // 2]
            results["raw"], results["headrace"] = middle
            ratios = ", ".join(f"{r['seconds'] / h['seconds']:.2f}x" for r, h in pairs)
            print(f"  headrace / raw per pair: {ratios}")
        for name in ("naive", "dlt", "engines"):
            if name == "dlt":
                try:
                    import dlt  # type: ignore[import-not-found]  # noqa: F401
                except ImportError:
                    print("  dlt: not installed (skipped)")
                    continue
            results[name] = measure(name, csv, work)
        raw, hr = results.get("raw"), results.get("headrace")
        for name in ("headrace", "raw", "naive", "dlt"):
            r = results.get(name)
            if r:
                rate = r["rows"] / r["seconds"]
                line = f"  {name:9s} {r['seconds']:7.2f} s  {rate:12,.0f} rows/s  peak {r['peak_mb']:7.0f} MB"
                if "cpu" in r:  # on a shared machine, CPU time says what the wall clock cannot
                    line += f"  cpu {r['cpu']:5.2f} s"
                print(line)
        if hr:
            print(f"  headrace: {hr['committed']:,.0f} committed, {hr['quarantined']:,.0f} quarantined")
        if raw and hr:
            ratio = raw["seconds"] / hr["seconds"]
            print(f"  headrace / raw limit (rows/s), median pair: {ratio:.2f}x (goal >= 0.8x)")
            memory = hr["peak_mb"] / raw["peak_mb"]
            print(f"  peak memory, headrace / raw (median pair): {memory:.2f}x (goal <= 1.5x)")
        eng = results.get("engines")
        if eng:
            ours = eng["headrace_check_seconds"]
            line = "  rule engines, whole job on the parsed frame:"
            line += f" headrace check {ours:.2f} s ({eng['headrace_rejected']:,.0f} rejected)"
            if "pandera_seconds" in eng:
                theirs = eng["pandera_seconds"]
                line += f", pandera (polars) {theirs:.2f} s ({eng['pandera_rejected']:,.0f} rejected;"
                line += f" {theirs / ours:.1f}x headrace's time)"
            else:
                line += ", pandera: not installed (pip install 'pandera[polars]')"
            print(line)


if __name__ == "__main__":
    main()
