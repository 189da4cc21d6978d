"""``headrace init``: a working example project (headrace.yaml and generated sample data)."""

from __future__ import annotations

from pathlib import Path

from .config import PROJECT_FILE, load_project
from .datagen import churn_with_defects
from .errors import UsageError

__all__ = ["EXAMPLE_YAML", "init_project"]

EXAMPLE_YAML = """\
# headrace project file: see 'headrace --help' and the README for every key.
project: {name}
store: .headrace/lake                          # Delta Lake tables (or s3://bucket/prefix)
metadata: sqlite:///.headrace/headrace.db      # or postgresql://user@host/db
artifacts: .headrace/artifacts

sources:
  customers:
    kind: file
    path: data/customers/*.csv
    dataset: customers
    columns:
      customerID: {{type: string, required: true, unique: true}}
      SeniorCitizen: {{type: int, allowed: [0, 1]}}
      tenure: {{type: int, required: true, min: 0, max: 120}}
      MonthlyCharges: {{type: float, required: true, min: 0}}
      TotalCharges: {{type: float, min: 0, impute: median}}
      Contract: {{type: string, allowed: [Month-to-month, One year, Two year]}}
      Churn: {{type: string, required: true, allowed: ["Yes", "No"]}}
    cleanse: [trim_strings, null_tokens]

models:
  churn:
    task: classification
    dataset: customers
    target: Churn
    features: {{drop: [customerID], scale: standard}}
    candidates:
      - {{estimator: logistic_regression, params: {{C: [0.1, 1.0]}}}}
      - {{estimator: hist_gradient_boosting}}
    validation: {{strategy: stratified_kfold, folds: 5, metric: roc_auc, threshold: max_f1}}
    imbalance: class_weight
    promote_if: {{metric: roc_auc, at_least: 0.70, beat_champion_by: 0.0}}

serving:
  models: [churn]
"""


def init_project(folder: Path, *, name: str | None = None, rows: int = 2000, force: bool = False) -> Path:
    """Write headrace.yaml and sample CSV files (with a few planted defects) into ``folder``."""
    folder = folder.resolve()
    target = folder / PROJECT_FILE
    if target.exists() and not force:
        raise UsageError(f"{target} already exists", hint="pass --force to overwrite it")
    project_name = name or _project_name(folder.name)
    data = folder / "data" / "customers"
    data.mkdir(parents=True, exist_ok=True)
    half = rows // 2
    for part, seed in ((1, 11), (2, 12)):
        frame, _ = churn_with_defects(half, seed=seed, rate=0.02, id_offset=(part - 1) * half)
        frame.write_csv(data / f"customers-{part}.csv")
    target.write_text(EXAMPLE_YAML.format(name=project_name), encoding="utf-8")
    load_project(target)  # the example must always be valid
    return target


def _project_name(folder_name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in folder_name).strip("-_")
    return cleaned if cleaned[:1].isalpha() else f"project-{cleaned}" if cleaned else "project"
