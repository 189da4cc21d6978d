"""A new user's first try on the shared data, beside the hand-typed baseline, in one run:

    .venv/bin/python benchmarks/first_try.py [--data ../shared/data]

For Telco churn and California housing: ``headrace init --from FILE`` writes a project (no type written
by hand), ``headrace ingest`` loads it, the scaffolded model is uncommented and trained by
``headrace train`` (5-fold). The baseline is the same model spec trained on a frame whose types were
written by hand (as ``benchmarks/quality_tabular.py`` reads Telco), so the two figures differ only by
how the columns were typed. Printed: rows quarantined, the scores, and seconds for each step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

from headrace.config.models import ModelSpec
from headrace.train.run import fit_and_validate

BIN = Path(sys.executable).parent / "headrace"


def headrace(*args: str, cwd: Path) -> tuple[dict, float]:
    started = time.perf_counter()
    done = subprocess.run([str(BIN), *args, "--json"], cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"headrace {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout), seconds


def first_try(csv: Path, work: Path) -> tuple[dict, dict]:
    """Scaffold, ingest and train; the ingest and train documents, with seconds."""
    subprocess.run([str(BIN), "init", str(work), "--from", str(csv)], check=True, capture_output=True)
    text = (work / "headrace.yaml").read_text()
    head, _, model = text.partition("# models:")
    lines = ["models:"] + [line[2:] for line in model.splitlines()[1:] if line.startswith("# ")]
    (work / "headrace.yaml").write_text(head + "\n".join(lines) + "\n")
    ingest, ingest_s = headrace("ingest", cwd=work)
    train, train_s = headrace("train", cwd=work)
    return {**ingest, "seconds": ingest_s}, {**train, "wall_seconds": train_s}


def main() -> None:
    default = Path(
        os.environ.get("HEADRACE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=default)
    args = parser.parse_args()
    files = {
        "telco": args.data / "telco-churn" / "Telco-Customer-Churn.csv",
        "housing": args.data / "california-housing" / "housing.csv",
    }
    hand_typed = {
        "telco": lambda p: pl.read_csv(p, infer_schema_length=0).with_columns(
            pl.col(["SeniorCitizen", "tenure"]).cast(pl.Int64),
            pl.col(["MonthlyCharges", "TotalCharges"]).str.strip_chars().cast(pl.Float64, strict=False),
        ),
        "housing": lambda p: pl.read_csv(p),
    }
    print("| data | quarantined | headrace, no types written | baseline, typed by hand | seconds |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="headrace-first-try-") as tmp:
        for name, csv in files.items():
            ingest, train = first_try(csv, Path(tmp) / name)
            run = train["runs"][0] if "runs" in train else train
            metric = run["metric"]
            ours = run["summary"][metric]
            project = yaml.safe_load((Path(tmp) / name / "headrace.yaml").read_text())
            spec = ModelSpec.model_validate(next(iter(project["models"].values())))
            started = time.perf_counter()
            base = fit_and_validate(name, spec, hand_typed[name](csv), n_jobs=2).scorecard["summary"][metric]
            base_s = time.perf_counter() - started
            quarantined = sum(r["rows_quarantined"] for r in ingest["runs"])
            fmt = ",.0f" if ours["mean"] > 100 else ".4f"
            print(
                f"| {name} | {quarantined} | {metric} {ours['mean']:{fmt}} ± {ours['std']:{fmt}} "
                f"| {base['mean']:{fmt}} ± {base['std']:{fmt}} "
                f"| ingest {ingest['seconds']:.1f}, train {run['seconds']:.1f} (baseline {base_s:.1f}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
