"""headrace with no types and no candidates written, beside plain scikit-learn baselines, in one run:

    .venv/bin/python benchmarks/baselines.py [--data ../shared/data]

headrace: a project whose sources declare no column types and whose models name no candidates (the
defaults: a linear model and gradient boosting, chosen by the pooled inner cross-validation),
ingested and trained through the CLI. Baselines: the 20-line scikit-learn a careful data scientist
would write (one-hot + HistGradientBoosting, and a scaled logistic regression or ridge), scored by
``cross_val_score`` with the same number of folds. Telco (ROC-AUC, 5-fold stratified) and California
housing (RMSE, 5-fold; headrace with and without three derived ratios). MovieLens is in
``benchmarks/recommend.py``.
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

import numpy as np
import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

BIN = Path(sys.executable).parent / "headrace"

PROJECT = """\
project: baselines
sources:
  telco: {{kind: file, path: "{telco}", dataset: telco}}
  housing: {{kind: file, path: "{housing}", dataset: housing}}
models:
  churn:
    task: classification
    dataset: telco
    target: Churn
    features: {{drop: [customerID]}}
    validation: {{strategy: stratified_kfold, folds: 5, metric: roc_auc}}
  price:
    task: regression
    dataset: housing
    target: median_house_value
    validation: {{strategy: kfold, folds: 5, metric: rmse}}
  price_ratios:
    task: regression
    dataset: housing
    target: median_house_value
    features:
      derive:
        rooms_per_household: total_rooms / households
        bedrooms_per_room: total_bedrooms / total_rooms
        population_per_household: population / households
    validation: {{strategy: kfold, folds: 5, metric: rmse}}
"""


def headrace(folder: Path, *args: str) -> dict:
    done = subprocess.run(
        [str(BIN), *args, "--json"], cwd=folder, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"headrace {' '.join(args)} failed: {done.stderr.strip()[-400:]}")
    return json.loads(done.stdout)


def sklearn_baselines(data: Path) -> dict[str, tuple[float, float, float]]:
    """(mean, std, seconds) of each plain scikit-learn baseline."""
    out: dict[str, tuple[float, float, float]] = {}
    telco = pd.read_csv(data / "telco-churn" / "Telco-Customer-Churn.csv")
    telco["TotalCharges"] = pd.to_numeric(telco["TotalCharges"], errors="coerce").fillna(0.0)
    y = (telco.pop("Churn") == "Yes").astype(int)
    X = telco.drop(columns=["customerID"])
    text = X.select_dtypes(include=["object", "string"]).columns
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    for name, model in {
        "telco: one-hot + HistGradientBoosting": HistGradientBoostingClassifier(random_state=0),
        "telco: one-hot + scaled LogisticRegression": LogisticRegression(max_iter=2000),
    }.items():
        prep = make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore", sparse_output=False), text), remainder=StandardScaler()
        )
        started = time.perf_counter()
        s = cross_val_score(make_pipeline(prep, model), X, y, cv=folds, scoring="roc_auc")
        out[name] = (float(s.mean()), float(s.std(ddof=1)), time.perf_counter() - started)
    housing = pd.read_csv(data / "california-housing" / "housing.csv")
    y = housing.pop("median_house_value")
    folds = KFold(5, shuffle=True, random_state=0)
    for name, model in {
        "housing: one-hot + HistGradientBoosting": HistGradientBoostingRegressor(random_state=0),
        "housing: one-hot + scaled Ridge": Ridge(),
    }.items():
        prep = make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["ocean_proximity"]),
            remainder=make_pipeline(SimpleImputer(), StandardScaler()),
        )
        started = time.perf_counter()
        s = -cross_val_score(
            make_pipeline(prep, model), housing, y, cv=folds, scoring="neg_root_mean_squared_error"
        )
        out[name] = (float(s.mean()), float(s.std(ddof=1)), time.perf_counter() - started)
    return out


def generated_bank(rows: int = 10_000) -> tuple[float, float, float, float]:
    """A bank-churn-like frame of ``rows`` x 20 columns (12 numbers, 6 categories, an id, a surname):
    headrace's defaults (seconds, ROC-AUC) beside scikit-learn's one-hot + HistGradientBoosting."""
    import polars as pl

    from headrace.config.models import ModelSpec
    from headrace.train.run import fit_and_validate

    rng = np.random.default_rng(0)
    cols: dict[str, object] = {f"x{i}": rng.normal(size=rows) for i in range(12)}
    cols |= {f"c{i}": rng.choice([f"v{j}" for j in range(3 + 4 * i)], rows) for i in range(6)}
    cols["customer_id"] = np.arange(rows)
    cols["surname"] = [f"s{i}" for i in rng.integers(0, 3000, rows)]
    logit = cols["x0"] - 0.5 * cols["x1"] + (np.asarray(cols["c0"]) == "v1") * 0.8  # type: ignore[operator]
    cols["Exited"] = (np.asarray(logit) + rng.normal(size=rows) > 1).astype(int)
    frame = pl.DataFrame(cols)
    spec = ModelSpec.model_validate(
        {"task": "classification", "dataset": "bank", "target": "Exited", "validation": {"folds": 5}}
    )
    started = time.perf_counter()
    ours = fit_and_validate("bank", spec, frame, n_jobs=2).scorecard["summary"]["roc_auc"]["mean"]
    ours_s = time.perf_counter() - started
    X = frame.drop("Exited", "customer_id").to_pandas()
    text = [f"c{i}" for i in range(6)] + ["surname"]
    prep = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore", sparse_output=False), text), remainder="passthrough"
    )
    started = time.perf_counter()
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    model = make_pipeline(prep, HistGradientBoostingClassifier(random_state=0))
    base = cross_val_score(model, X, frame["Exited"].to_numpy(), cv=folds, scoring="roc_auc").mean()
    return ours_s, float(ours), time.perf_counter() - started, float(base)


def main() -> None:
    default = Path(
        os.environ.get("HEADRACE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")
    )
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=default)
    args = parser.parse_args()
    data = args.data.resolve()
    with tempfile.TemporaryDirectory(prefix="headrace-baselines-") as tmp:
        folder = Path(tmp)
        (folder / "headrace.yaml").write_text(
            PROJECT.format(
                telco=data / "telco-churn" / "Telco-Customer-Churn.csv",
                housing=data / "california-housing" / "housing.csv",
            )
        )
        ingest = headrace(folder, "ingest")
        quarantined = sum(r["rows_quarantined"] for r in ingest["runs"])
        ours = {}
        for model in ("churn", "price", "price_ratios"):
            started = time.perf_counter()
            doc = headrace(folder, "train", model)
            m = doc["metric"]
            nested = (doc.get("nested_summary") or {}).get(m, {}).get("mean", float("nan"))
            ours[model] = (
                doc["summary"][m]["mean"],
                doc["summary"][m]["std"],
                nested,
                doc["chosen"],
                time.perf_counter() - started,
            )
    base = sklearn_baselines(data)
    print(f"ingested with no types declared: {quarantined} rows quarantined")
    print("| what | score (5-fold) | fully nested | chosen | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for model, (mean, std, nested, chosen, seconds) in ours.items():
        fmt = ",.0f" if mean > 100 else ".4f"
        print(
            f"| headrace {model} (defaults) | {mean:{fmt}} ± {std:{fmt}} | {nested:{fmt}} | "
            f"{chosen.get('estimator')} | {seconds:.1f} |"
        )
    for name, (mean, std, seconds) in base.items():
        fmt = ",.0f" if mean > 100 else ".4f"
        print(f"| scikit-learn {name} | {mean:{fmt}} ± {std:{fmt}} | | | {seconds:.1f} |")
    ours_s, ours_auc, base_s, base_auc = generated_bank()
    print(
        f"| headrace, generated 10,000 x 20 (defaults, nested 5-fold) | {ours_auc:.4f} | | | {ours_s:.1f} |\n"
        f"| scikit-learn, same data: one-hot + HistGradientBoosting | {base_auc:.4f} | | | {base_s:.1f} |"
    )
    print(f"(numpy {np.__version__}; shared data from {data})")


if __name__ == "__main__":
    main()
