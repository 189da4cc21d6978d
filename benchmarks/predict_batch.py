"""Batch scoring against its limit: ``headrace predict`` over a Delta dataset of N rows, beside the same
model's ``predict_proba`` on the whole data held in memory as one frame.

    .venv/bin/python benchmarks/predict_batch.py [--rows 10000000] [--chunk-rows 250000]

A churn-like dataset of ``--rows`` rows is written to a Delta table (1M rows a commit), a logistic
regression pipeline (one-hot + scaling) is trained on 50,000 of them, then, each in a process of its
own so that its peak memory (VmHWM) is its own:

1. ours: ``score_dataset`` streams the table in chunks, scores each with the pipeline and writes the
   scores (ids, prediction, score, model and data versions, batch id) in one commit;
2. the limit: the whole table read into memory, prepared once, and one ``predict_proba`` call: only
   that call is timed (reading and preparing are left out, in the limit's favour), its peak memory is
   the whole process's.

Goal (issue 20): ours >= 0.5x the limit's rows/s, with memory bounded whatever the row count.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _memory import peak_mb  # noqa: E402

SPEC = {
    "task": "classification",
    "dataset": "train",
    "target": "Churn",
    "features": {"drop": ["customerID"]},
    "candidates": [{"estimator": "logistic_regression"}],
    "validation": {"strategy": "holdout"},
}


def prepare(folder: Path, rows: int) -> None:
    from headrace.artifacts import ArtifactStore
    from headrace.config import ModelSpec
    from headrace.datagen import churn
    from headrace.metadata import Metadata
    from headrace.registry import Registry
    from headrace.store import BatchMeta, Store
    from headrace.train.run import train_model

    store = Store(folder / "lake")
    done = 0
    part = 0
    while done < rows:
        n = min(1_000_000, rows - done)
        frame = churn(n, seed=100 + part, id_offset=done).drop("Churn")
        store.append("customers", frame, BatchMeta("bench"))
        done += n
        part += 1
    store.append("train", churn(50_000, seed=7), BatchMeta("bench"))
    registry = Registry(Metadata(f"sqlite:///{folder}/meta.db"), ArtifactStore(folder / "artifacts"))
    train_model("churn", ModelSpec.model_validate(SPEC), store=store, registry=registry, promote=True)


def ours(folder: Path, chunk_rows: int) -> dict[str, float]:
    from headrace.artifacts import ArtifactStore
    from headrace.metadata import Metadata
    from headrace.registry import Registry
    from headrace.score import score_dataset
    from headrace.store import Store

    store = Store(folder / "lake")
    registry = Registry(Metadata(f"sqlite:///{folder}/meta.db"), ArtifactStore(folder / "artifacts"))
    started = time.perf_counter()
    result = score_dataset(store, registry, "churn", "customers", "scores", chunk_rows=chunk_rows)
    seconds = time.perf_counter() - started
    return {"rows": result.rows, "seconds": seconds, "peak_mb": peak_mb()}


def limit(folder: Path) -> dict[str, float]:
    from headrace.artifacts import ArtifactStore
    from headrace.metadata import Metadata
    from headrace.registry import Registry
    from headrace.store import Store

    store = Store(folder / "lake")
    registry = Registry(Metadata(f"sqlite:///{folder}/meta.db"), ArtifactStore(folder / "artifacts"))
    _, model = registry.load("churn")
    frame = store.read("customers")
    prepared = model.prepare(frame)
    started = time.perf_counter()
    proba = model.pipeline.predict_proba(prepared)
    seconds = time.perf_counter() - started
    return {"rows": len(proba), "seconds": seconds, "peak_mb": peak_mb()}


def _child(role: str, folder: Path, chunk_rows: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--role", role, "--folder", str(folder), "--chunk-rows", str(chunk_rows)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--role", choices=["ours", "limit"], default=None)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    if args.role is not None:
        result = ours(args.folder, args.chunk_rows) if args.role == "ours" else limit(args.folder)
        print(json.dumps(result))
        return 0
    folder = Path(tempfile.mkdtemp(prefix="headrace-predict-"))
    try:
        started = time.perf_counter()
        prepare(folder, args.rows)
        print(f"{args.rows:,} rows written and a model trained in {time.perf_counter() - started:.1f} s")
        mine = _child("ours", folder, args.chunk_rows)
        base = _child("limit", folder, args.chunk_rows)
        ours_rate = mine["rows"] / mine["seconds"]
        base_rate = base["rows"] / base["seconds"]
        print(
            f"headrace predict (read + score + write, chunks of {args.chunk_rows:,}): "
            f"{ours_rate:,.0f} rows/s ({mine['seconds']:.1f} s), peak {mine['peak_mb']:,.0f} MB"
        )
        print(
            f"limit: predict_proba on the whole frame in memory (the call alone): {base_rate:,.0f} rows/s "
            f"({base['seconds']:.1f} s), peak {base['peak_mb']:,.0f} MB"
        )
        ratio = mine["peak_mb"] / base["peak_mb"]
        print(f"ours / limit: {ours_rate / base_rate:.2f}x the rows/s, {ratio:.2f}x the peak")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
