"""Training + 5-fold cross-validation on 1,000,000 generated rows, one run:

    .venv/bin/python benchmarks/train.py [--rows 1000000]

The pipeline is one-hot + scaling + logistic regression (headrace's ColumnTransformer from the
churn-like schema, one configuration, so no inner search), run three ways through
``headrace.train.run.fit_and_validate``: one process, two processes (joblib), and a Dask LocalCluster of
two worker processes (``--scheduler``). The baseline beside each is scikit-learn's own
``cross_validate`` on the same prepared frame and pipeline with the same ``n_jobs`` (one process, two
processes): headrace adds the out-of-fold threshold, the metrics and the final fit on all rows.
"""

from __future__ import annotations

import argparse
import time
import warnings

from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold, cross_validate

from headrace.config.models import ModelSpec
from headrace.datagen import churn
from headrace.train.run import fit_and_validate

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
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return seconds, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"generating {args.rows:,} churn-like rows", flush=True)
    frame = churn(args.rows, seed=3)

    ours: dict[str, float] = {}
    ours["1 process"], one = timed(
        "headrace, 1 process", lambda: fit_and_validate("churn", SPEC, frame, n_jobs=1)
    )
    ours["2 processes"], _ = timed(
        "headrace, 2 processes", lambda: fit_and_validate("churn", SPEC, frame, n_jobs=2)
    )

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        ours["Dask, 2 workers"], on_dask = timed(
            "headrace, Dask LocalCluster of 2 workers",
            lambda: fit_and_validate("churn", SPEC, frame, scheduler=cluster.scheduler_address),
        )

    # the baseline: scikit-learn's cross_validate on the same frame and pipeline (no threshold, no final fit)
    model = one.model  # type: ignore[attr-defined]
    X = model.prepare(frame)
    y = (frame["Churn"] == "Yes").to_numpy().astype(int)
    cv = StratifiedKFold(5, shuffle=True, random_state=SPEC.seed)
    base: dict[str, float] = {}
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
    print(f"ROC-AUC {one.metrics['roc_auc']:.4f} (Dask run: {on_dask.metrics['roc_auc']:.4f})")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
