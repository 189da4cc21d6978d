"""Ingest larger than memory: the peak memory of a file ingest stays put as the file grows.

    .venv/bin/python benchmarks/ingest_bounded.py [--rows 500000 2000000] [--chunk-rows 100000]

For each row count, a churn-like file (2 % defective rows) is written as CSV and as JSONL, and each is
ingested with every check (types, ranges, allowed values, a unique key, imputation, quarantine) in a
process of its own; its peak resident memory (VmHWM) is printed beside the file's size and the
peak of polars reading the whole CSV into memory (what a file that does not fit would need). With a
fixed ``--chunk-rows`` the ingest's peak should not grow with the file (the unique key's set of seen
values does: a few bytes a row).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _memory import peak_mb  # noqa: E402

RULES = {
    "customerID": {"type": "string", "required": True, "unique": True},
    "tenure": {"type": "int", "required": True, "min": 0, "max": 120},
    "MonthlyCharges": {"type": "float", "required": True, "min": 0},
    "TotalCharges": {"type": "float", "min": 0, "impute": "median"},
    "SeniorCitizen": {"type": "int", "allowed": [0, 1]},
    "Contract": {"type": "string", "allowed": ["Month-to-month", "One year", "Two year"]},
    "Churn": {"type": "string", "required": True, "allowed": ["Yes", "No"]},
}


def write_files(folder: Path, rows: int) -> tuple[Path, Path]:
    from headrace.datagen import churn_with_defects

    csv, jsonl = folder / f"customers-{rows}.csv", folder / f"customers-{rows}.jsonl"
    with csv.open("wb") as c, jsonl.open("wb") as j:
        done, part = 0, 0
        while done < rows:
            n = min(500_000, rows - done)
            frame, _ = churn_with_defects(n, seed=part, rate=0.02, id_offset=done)
            frame = frame.drop("TechSupport")
            frame.write_csv(c, include_header=part == 0)
            frame.write_ndjson(j)
            done += n
            part += 1
    return csv, jsonl


def ingest_one(path: Path, work: Path, chunk_rows: int) -> dict[str, float]:
    from headrace.config.sources import FileSource
    from headrace.ingest.runner import ingest, open_source
    from headrace.metadata import Metadata
    from headrace.store import Store

    spec = FileSource.model_validate(
        {
            "kind": "file",
            "path": str(path),
            "dataset": "customers",
            "columns": RULES,
            "cleanse": ["trim_strings", "null_tokens"],
            "chunk_rows": chunk_rows,
            "max_quarantine_ratio": 0.5,
        }
    )
    started = time.perf_counter()
    result = ingest(
        open_source("customers", spec),
        spec,
        store=Store(work / "lake"),
        meta=Metadata(f"sqlite:///{work / 'meta.db'}"),
        source_name="customers",
    )
    assert result.ok, result.error
    return {
        "seconds": time.perf_counter() - started,
        "rows": result.rows_read,
        "committed": result.rows_committed,
        "quarantined": result.rows_quarantined,
        "peak_mb": peak_mb(),
    }


def read_whole(path: Path) -> dict[str, float]:
    import polars as pl

    frame = pl.read_csv(path, infer_schema=False)
    return {"rows": frame.height, "peak_mb": peak_mb()}


def _child(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[500_000, 2_000_000])
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--role", default=None)
    parser.add_argument("--path", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    if args.role == "ingest":
        print(json.dumps(ingest_one(args.path, args.work, args.chunk_rows)))
        return 0
    if args.role == "whole":
        print(json.dumps(read_whole(args.path)))
        return 0
    with tempfile.TemporaryDirectory(prefix="headrace-bounded-") as tmp:
        folder = Path(tmp)
        for rows in args.rows:
            csv, jsonl = write_files(folder, rows)
            whole = _child("--role", "whole", "--path", str(csv))
            for path in (csv, jsonl):
                work = folder / f"work-{path.suffix[1:]}-{rows}"
                work.mkdir()
                got = _child(
                    "--role", "ingest", "--path", str(path), "--work", str(work), "--chunk-rows",
                    str(args.chunk_rows),
                )  # fmt: skip
                size = path.stat().st_size / 1e6
                print(
                    f"{path.suffix[1:]:>5} {rows:>10,} rows ({size:,.0f} MB): peak {got['peak_mb']:,.0f} MB, "
                    f"{got['rows'] / got['seconds']:,.0f} rows/s, {got['committed']:,.0f} committed, "
                    f"{got['quarantined']:,.0f} quarantined"
                )
            print(f"      polars reading the whole CSV into memory: peak {whole['peak_mb']:,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
