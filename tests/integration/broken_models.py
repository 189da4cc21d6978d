"""Test helpers: a version that validated well but raises on every prediction (its estimator was never
fitted, as when a training job writes the wrong object), and a trainer for the monitor loop making one."""

from __future__ import annotations

from typing import Any

from sklearn.linear_model import LogisticRegression

from headrace.registry import Registry
from headrace.train.tabular import TabularModel
from headrace.workspace import Workspace


def unfitted(good: TabularModel) -> TabularModel:
    """``good`` with its final estimator replaced by an unfitted one: it loads, and raises on predict."""
    pipeline = good.pipeline
    return TabularModel(
        type(pipeline)([*pipeline.steps[:-1], ("model", LogisticRegression())]),
        task=good.task,
        plan=good.plan,
        classes=good.classes_,
        threshold=good.threshold,
        target=good.target,
    )


def broken_trainer(champion: int) -> Any:
    """A monitor-loop trainer registering an unfitted copy of ``champion`` with the champion's metrics."""

    def trainer(ws: Workspace, reg: Registry, model: str, reason: str) -> Any:
        mv, good = reg.load(model, champion)
        return reg.register(
            model,
            task=mv.task,
            flavor="tabular",
            artifact=unfitted(good).to_bytes(),
            metrics=mv.metrics,
            dataset=mv.dataset,
            data_version=ws.store.version("customers"),
            signature=mv.signature,
            threshold=mv.threshold,
            details={"champion_rescored": {"version": champion, "metrics": mv.metrics}},
            reason=reason,
        )

    return trainer
