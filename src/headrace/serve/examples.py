"""Small fitted models on generated data, for the serving benchmark, the tests and the demo.

``churn_model`` fits the same feature pipeline training builds (``headrace.train.features``) and a
classifier on generated churn customers and wraps it in the tabular flavor, so what is served is
exactly what ``headrace train`` would register, without the model search.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ..config.models import FeatureSpec
from ..datagen import churn

__all__ = ["churn_model", "churn_records", "register_churn"]


def churn_records(n: int, seed: int = 0, *, missing: float = 0.0) -> list[dict[str, Any]]:
    """``n`` raw churn records (no id, no label) as JSON-ready dicts; ``missing`` blanks some values."""
    frame = churn(n, seed=seed).drop("customerID", "Churn")
    records = frame.to_dicts()
    if missing > 0:
        rng = np.random.default_rng(seed + 1)
        names = frame.columns
        for record in records:
            for name in names:
                if rng.random() < missing:
                    record[name] = None
    for record in records:
        for key, value in record.items():
            if isinstance(value, int):
                record[key] = float(value)
    return records


def churn_model(
    n: int = 3000,
    seed: int = 0,
    *,
    estimator: str = "logistic_regression",
    pca: int | None = None,
    min_frequency: int | float | None = None,
    threshold: float = 0.4,
    C: float = 1.0,
) -> Any:
    """A fitted ``TabularModel`` (the tabular flavor) on ``n`` generated customers."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from ..train.features import build_features, build_pca, plan_features, prepare
    from ..train.tabular import TabularModel

    frame = churn(n, seed=seed)
    spec = FeatureSpec(drop=["customerID"], pca=pca, min_frequency=min_frequency)
    plan = plan_features(spec, frame.schema, exclude=["Churn"])
    steps: list[tuple[str, Any]] = [("features", build_features(plan))]
    reducer = build_pca(plan, seed)
    if reducer is not None:
        steps.append(("pca", reducer))
    model: Any = (
        HistGradientBoostingClassifier(max_iter=60, random_state=seed)
        if estimator == "hist_gradient_boosting"
        else LogisticRegression(C=C, max_iter=1000)
    )
    steps.append(("model", model))
    classes = ["No", "Yes"]
    y = (frame["Churn"] == "Yes").cast(pl.Int64).to_numpy()
    pipeline = Pipeline(steps).fit(prepare(frame, plan), y)
    return TabularModel(
        pipeline, task="classification", plan=plan, classes=classes, threshold=threshold, target="Churn"
    )


def register_churn(registry: Any, name: str = "churn", *, promote: bool = True, **kwargs: Any) -> Any:
    """Fit ``churn_model(**kwargs)``, register it, and (by default) make it the champion."""
    model = churn_model(**kwargs)
    mv = registry.register(
        name,
        task="classification",
        flavor=model.flavor,
        artifact=model.to_bytes(),
        metrics={},
        params=dict(kwargs),
        dataset="customers",
        signature=model.signature,
        threshold=model.threshold,
    )
    if promote:
        registry.promote(name, mv.version, reason="example model")
    return mv
