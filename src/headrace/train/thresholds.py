"""The decision threshold of a binary classifier, chosen on out-of-fold predictions.

Every prediction the threshold is chosen on comes from a model that did not see that row, so the
threshold is not fitted to the training data's own scores. Rules: the F1 maximum, the F-beta maximum,
the least total cost of errors (a cost per false positive and per false negative), the highest
threshold that still reaches a target recall, or a fixed value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from ..config.models import ThresholdSpec
from ..errors import ConfigError

__all__ = ["ThresholdChoice", "choose_threshold", "threshold_spec"]


@dataclass(frozen=True)
class ThresholdChoice:
    value: float
    rule: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def threshold_spec(value: str | float | ThresholdSpec | None) -> ThresholdSpec:
    """The spec's ``threshold`` (a rule name, a number, a mapping or None) as a ThresholdSpec."""
    if value is None:
        return ThresholdSpec(rule="fixed", value=0.5)
    if isinstance(value, ThresholdSpec):
        spec = value
    elif isinstance(value, int | float):
        spec = ThresholdSpec(rule="fixed", value=float(value))
    else:
        rules = ("max_f1", "f_beta", "cost", "target_recall", "fixed")
        if value not in rules:
            raise ConfigError(
                f"validation.threshold: unknown rule {value!r}",
                hint=f"use one of {', '.join(rules)}, a number, or {{rule: cost, cost_fp: 1, cost_fn: 5}}",
            )
        spec = ThresholdSpec(rule=value)  # type: ignore[arg-type]
    if spec.rule == "fixed" and (spec.value is None or not 0.0 <= spec.value <= 1.0):
        raise ConfigError(
            f"validation.threshold: a fixed threshold must be in [0, 1]; got {spec.value}",
            hint="e.g. threshold: 0.4",
        )
    if spec.rule == "target_recall" and (spec.recall is None or not 0.0 < spec.recall <= 1.0):
        raise ConfigError(
            "validation.threshold: target_recall needs recall in (0, 1]",
            hint="e.g. {rule: target_recall, recall: 0.8}",
        )
    if spec.rule == "f_beta" and spec.beta <= 0:
        raise ConfigError(f"validation.threshold: beta must be > 0; got {spec.beta}", hint="e.g. beta: 2")
    if spec.rule == "cost" and (spec.cost_fp < 0 or spec.cost_fn < 0):
        raise ConfigError("validation.threshold: costs must be >= 0", hint="e.g. cost_fp: 1, cost_fn: 5")
    return spec


def choose_threshold(y: np.ndarray, p: np.ndarray, spec: ThresholdSpec) -> ThresholdChoice:
    """The threshold on P(positive): ``y`` holds 0/1, ``p`` the out-of-fold probabilities."""
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(p, dtype=np.float64)
    if spec.rule == "fixed":
        assert spec.value is not None
        return ThresholdChoice(float(spec.value), "fixed", {})
    if y.min(initial=1) == y.max(initial=0):
        return ThresholdChoice(0.5, "fixed", {"why": "one class only in the out-of-fold predictions"})
    if spec.rule in ("max_f1", "f_beta"):
        beta = 1.0 if spec.rule == "max_f1" else spec.beta
        precision, recall, thresholds = precision_recall_curve(y, p)
        precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
        b2 = beta * beta
        with np.errstate(invalid="ignore", divide="ignore"):
            score = (1 + b2) * precision * recall / (b2 * precision + recall)
        score = np.nan_to_num(score)
        best = int(np.argmax(score))
        return ThresholdChoice(
            float(thresholds[best]),
            spec.rule,
            {
                "beta": beta,
                "f_beta": float(score[best]),
                "precision": float(precision[best]),
                "recall": float(recall[best]),
            },
        )
    fpr, tpr, thresholds = roc_curve(y, p)
    thresholds = np.minimum(thresholds, 1.0)  # the first point is +inf: "predict nothing positive"
    positives = int(y.sum())
    negatives = int(len(y) - positives)
    if spec.rule == "cost":
        cost = spec.cost_fp * fpr * negatives + spec.cost_fn * (1 - tpr) * positives
        best = int(np.argmin(cost))
        return ThresholdChoice(
            float(thresholds[best]),
            "cost",
            {
                "cost_fp": spec.cost_fp,
                "cost_fn": spec.cost_fn,
                "total_cost": float(cost[best]),
                "cost_per_row": float(cost[best] / len(y)),
            },
        )
    assert spec.recall is not None
    reaching = np.flatnonzero(tpr >= spec.recall)
    best = int(reaching[0])  # thresholds fall as tpr rises: the first that reaches is the highest
    return ThresholdChoice(
        float(thresholds[best]),
        "target_recall",
        {"target": spec.recall, "recall": float(tpr[best]), "false_positive_rate": float(fpr[best])},
    )
