"""Training + 5-fold cross-validation on 1,000,000 generated rows, one run:

    .venv/bin/python benchmarks/train.py [--rows 1000000] [--repeat 1] [--skip-baseline]

The pipeline is one-hot + scaling + logistic regression (headrace's ColumnTransformer from the
churn-like schema, one configuration, so no inner search), run through
``headrace.train.run.fit_and_validate``: in one process, in two processes (joblib), and on Dask
LocalClusters of one and of two worker processes (one thread each). The rows are written to a Delta
table first; the Dask workers read it themselves (the driver sends only the dataset reference), and
each Dask time includes those reads. Cluster start-up is not timed. The Dask runs must give the
one-process metrics and out-of-fold predictions exactly; the script says so. ``--repeat N`` runs
headrace's four N times, interleaved, and keeps each one's fastest (a shared machine is noisy).

The baseline beside each is scikit-learn's own ``cross_validate`` on the same prepared frame and
pipeline with the same ``n_jobs`` (one process, two processes): headrace adds the out-of-fold
threshold, the metrics and the final fit on all rows.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_validate

from headrace.config.models import ModelSpec
from headrace.datagen import churn
from headrace.store import BatchMeta, Store
from headrace.train.run import fit_and_validate
from headrace.train.validation import DataRef

SPEC = ModelSpec.model_validate(
    {
        "task": "classification",
        "dataset": "customers",
        "target": "Churn",
        "features": {"drop": ["customerID"], "scale": "standard"},
        "candidates": [{"estimator": "logistic_regression", "params": {"max_iter": 200}}],
        "validation": {
            "strategy": "stratified_kfold",
            "folds": 5,
            "threshold": "max_f1",
            "importance": False,
        },
    }
)


def timed(label: str, fn) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - started
    print(f"  {label}: {seconds:.1f} s (load {os.getloadavg()[0]:.2f})", flush=True)
    return seconds, out


def on_dask(workers: int, frame, source: DataRef) -> tuple[float, object]:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        return timed(
            f"headrace, Dask LocalCluster of {workers} worker process(es)",
            lambda: fit_and_validate(
                "churn", SPEC, frame, scheduler=cluster.scheduler_address, source=source
            ),
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="headrace's runs, each kept at its fastest")
    parser.add_argument("--skip-baseline", action="store_true", help="leave out scikit-learn's runs")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"generating {args.rows:,} churn-like rows; load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        store = Store(folder)
        version = store.append("customers", churn(args.rows, seed=3), BatchMeta(source="benchmark"))
        frame = store.read("customers", version)
        source = DataRef.of(store, "customers", version)

        ours: dict[str, float] = {}

        def keep(label: str, result: tuple[float, object]) -> object:
            ours[label] = min(ours.get(label, float("inf")), result[0])
            return result[1]

        for _ in range(args.repeat):
            one = keep(
                "1 process",
                timed("headrace, 1 process", lambda: fit_and_validate("churn", SPEC, frame, n_jobs=1)),
            )
            keep(
                "2 processes",
                timed("headrace, 2 processes", lambda: fit_and_validate("churn", SPEC, frame, n_jobs=2)),
            )
            dask_one = keep("Dask, 1 worker process", on_dask(1, frame, source))
            dask_two = keep("Dask, 2 worker processes", on_dask(2, frame, source))

    for run in (dask_one, dask_two):
        same = run.metrics == one.metrics and run.oof.equals(one.oof)  # type: ignore[attr-defined]
        if not same:
            raise SystemExit("a Dask run did not give the one-process results")
    print("Dask runs: the one-process metrics and out-of-fold predictions, exactly")

    base: dict[str, float] = {}
    if not args.skip_baseline:
        # the baseline: scikit-learn's cross_validate on the same frame and pipeline (no threshold, no
        # final fit)
        model = one.model  # type: ignore[attr-defined]
        X = model.prepare(frame)
        y = (frame["Churn"] == "Yes").to_numpy().astype(int)
        cv = StratifiedKFold(5, shuffle=True, random_state=SPEC.seed)
        for jobs, label in ((1, "1 process"), (2, "2 processes")):
            base[label], _ = timed(
                f"scikit-learn cross_validate, n_jobs={jobs}",
                lambda jobs=jobs: cross_validate(
                    clone(model.pipeline), X, y, cv=cv, scoring="roc_auc", n_jobs=jobs
                ),
            )
    print()
    print(f"| {args.rows:,} rows, 5-fold CV + final fit | headrace | scikit-learn cross_validate |")
    print("| --- | --- | --- |")
    for label, seconds in ours.items():
        b = f"{base[label]:.1f} s" if label in base else "-"
        speed = f" ({ours['1 process'] / seconds:.2f}x)" if label != "1 process" else ""
        print(f"| {label} | {seconds:.1f} s{speed} | {b} |")
    two_over_one = ours["Dask, 1 worker process"] / ours["Dask, 2 worker processes"]
    print(f"Dask: 2 worker processes over 1: {two_over_one:.2f}x")
    print(f"ROC-AUC {one.metrics['roc_auc']:.4f} (Dask: {dask_two.metrics['roc_auc']:.4f})")  # type: ignore[attr-defined]
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
