"""The demo's "train" and "evaluate" stages, and generated housing data for a price regressor.

"train" trains the project's churn classifier on the ingested ``customers`` dataset (cross-validated,
registered, promoted through the gate), then a house-price regressor on generated data whose price
depends on ratios of its columns (rooms per household, ...), declared as derived columns. "evaluate"
writes each champion's validation report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..config.models import ModelSpec
from ..registry import Registry
from ..store import BatchMeta

__all__ = ["HOUSING_DERIVE", "demo_evaluate_stage", "demo_train_stage", "housing", "price_spec"]

HOUSING_DERIVE = {
    "rooms_per_household": "total_rooms / households",
    "bedrooms_per_room": "total_bedrooms / total_rooms",
    "population_per_household": "population / households",
}
_OCEAN = ["<1H OCEAN", "INLAND", "NEAR OCEAN", "NEAR BAY", "ISLAND"]


def housing(n: int, seed: int = 0) -> pl.DataFrame:
    """``n`` California-like block groups; the value follows income, rooms per household, crowding,
    the coast and age, with noise, so derived ratio columns carry real signal."""
    rng = np.random.default_rng(seed)
    ocean = rng.choice(len(_OCEAN), size=n, p=[0.44, 0.32, 0.13, 0.105, 0.005])
    latitude = np.round(rng.uniform(32.5, 42.0, size=n), 2)
    longitude = np.round(-114.3 - (latitude - 32.5) * 0.9 - rng.uniform(0, 2.5, size=n), 2)
    households = np.maximum(1, rng.gamma(4.0, 120.0, size=n)).round()
    rooms_per = np.clip(rng.lognormal(1.6, 0.25, size=n), 1.5, 12)
    total_rooms = np.round(households * rooms_per)
    bedrooms = np.round(total_rooms * np.clip(rng.normal(0.21, 0.03, size=n), 0.1, 0.4))
    crowding = np.clip(rng.lognormal(1.0, 0.3, size=n), 1.0, 8.0)
    population = np.round(households * crowding)
    income = np.clip(rng.lognormal(1.25, 0.45, size=n), 0.5, 15.0).round(4)
    age = rng.integers(1, 53, size=n).astype(np.float64)
    coast = np.array([1.0, -0.9, 1.1, 1.2, 2.0])[ocean]
    value = (
        40_000
        + 38_000 * income
        + 9_000 * (rooms_per - 5.0)
        - 14_000 * (crowding - 2.8)
        + 45_000 * coast
        + 600 * age
        + rng.normal(0, 30_000, size=n)
    )
    value = np.clip(value, 15_000, 500_001).round()
    bedrooms_out = bedrooms.astype(object)
    bedrooms_out[rng.random(n) < 0.01] = None  # a few blanks, as in the real data
    return pl.DataFrame(
        {
            "longitude": longitude,
            "latitude": latitude,
            "housing_median_age": age,
            "total_rooms": total_rooms,
            "total_bedrooms": pl.Series(bedrooms_out.tolist(), dtype=pl.Float64),
            "population": population,
            "households": households,
            "median_income": income,
            "ocean_proximity": np.array(_OCEAN)[ocean],
            "median_house_value": value,
        }
    )


def price_spec(dataset: str = "houses", *, folds: int = 5) -> ModelSpec:
    """A price regressor: derived ratio columns, a linear baseline and gradient boosting."""
    return ModelSpec.model_validate(
        {
            "task": "regression",
            "dataset": dataset,
            "target": "median_house_value",
            "features": {"derive": HOUSING_DERIVE, "scale": "standard"},
            "candidates": [
                {"estimator": "ridge", "params": {"alpha": [1.0]}},
                {
                    "estimator": "hist_gradient_boosting",
                    "params": {"max_iter": [150], "learning_rate": [0.1]},
                },
            ],
            "validation": {"strategy": "kfold", "folds": folds, "metric": "rmse", "inner_folds": 2},
            "promote_if": {"metric": "rmse", "at_most": 80_000},
        }
    )


def _ensure_customers(ctx: Any) -> str | None:
    """The ingest stage loads ``customers``; without it, load the sample CSVs here (typed, bad rows
    left out) so this stage can run on its own."""
    store = ctx.ws.store
    if store.exists("customers"):
        return None
    files = sorted((ctx.folder / "data" / "customers").glob("*.csv"))
    frame = pl.concat([pl.read_csv(f, infer_schema_length=0) for f in files])
    frame = frame.with_columns(
        pl.col("tenure").cast(pl.Int64, strict=False),
        pl.col("SeniorCitizen").cast(pl.Int64, strict=False),
        pl.col(["MonthlyCharges", "TotalCharges"]).str.strip_chars().cast(pl.Float64, strict=False),
    ).filter(
        pl.col("tenure").is_between(0, 120)
        & pl.col("MonthlyCharges").is_not_null()
        & pl.col("Contract").is_in(["Month-to-month", "One year", "Two year"])
    )
    frame = frame.unique("customerID", keep="first", maintain_order=True)
    store.append("customers", frame, BatchMeta(source="demo-train"))
    return f"customers: {frame.height} rows loaded from {len(files)} sample files (no ingest stage ran)"


def _scores(summary: dict[str, dict[str, float]], names: tuple[str, ...]) -> str:
    parts = []
    for n in names:
        if n in summary:
            mean, std = summary[n]["mean"], summary[n]["std"]
            parts.append(
                f"{n} {mean:,.0f} ± {std:,.0f}" if abs(mean) > 100 else f"{n} {mean:.3f} ± {std:.3f}"
            )
    return ", ".join(parts)


def demo_train_stage(ctx: Any) -> list[str]:
    from ..train.run import train_model

    ws = ctx.ws
    registry = Registry(ws.meta, ws.artifacts, actor="demo")
    lines: list[str] = []
    loaded = _ensure_customers(ctx)
    if loaded:
        lines.append(loaded)
    spec = ws.project.model("churn")
    churn = train_model(
        "churn", spec, store=ws.store, registry=registry, promote=True, reason="demo: first model"
    )
    sc = churn.scorecard
    assert churn.version is not None
    ratio = ", ".join(f"{k} {v:.1%}" for k, v in sc["class_ratio"]["shares"].items())
    lines += [
        f"churn: {sc['rows']} customers of {spec.dataset}@{churn.data_version} ({ratio}); {sc['strategy']} "
        f"{len(sc['folds'])} folds, {sc['configurations']} configurations selected inside each training fold",
        f"  chosen: {sc['chosen']}",
        "  cross-validated: " + _scores(sc["summary"], ("roc_auc", "average_precision", "log_loss")),
        f"  threshold {sc['threshold']['value']:.3f} ({sc['threshold']['rule']} on out-of-fold predictions): "
        + _scores(sc["summary"], ("precision", "recall", "f1")),
        f"  registered churn@{churn.version.version}, aliases: {', '.join(churn.version.aliases)}",
    ]
    houses = housing(3000, seed=7)
    version = ws.store.append("houses", houses, BatchMeta(source="demo-generated"))
    price = train_model("price", price_spec(), store=ws.store, registry=registry, promote=True, reason="demo")
    psc = price.scorecard
    assert price.version is not None
    lines += [
        f"price: {psc['rows']} generated houses (houses@{version}), derived "
        f"{', '.join(HOUSING_DERIVE)}; {psc['strategy']} {len(psc['folds'])} folds",
        f"  chosen: {psc['chosen']}",
        "  cross-validated: " + _scores(psc["summary"], ("rmse", "mae", "r2")),
        f"  registered price@{price.version.version}, aliases: {', '.join(price.version.aliases)}",
    ]
    ctx.facts["trained"] = {"churn": churn.version.version, "price": price.version.version}
    return lines


def demo_evaluate_stage(ctx: Any) -> list[str]:
    from ..train.report import write_report

    ws = ctx.ws
    registry = Registry(ws.meta, ws.artifacts, actor="demo")
    out = Path(ctx.folder) / "reports"
    lines = []
    for name in ("churn", "price"):
        if name not in registry.models():
            continue
        written = write_report(registry, name, "champion", out)
        sc = written["doc"]["scorecard"]
        top = ", ".join(r["feature"] for r in sc.get("importance", [])[:3])
        lines.append(f"{name}@{written['version']}: report {written['html']}")
        if top:
            lines.append(f"  most important columns (permutation, held-out folds): {top}")
    return lines
