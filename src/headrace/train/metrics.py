"""Metrics of a validated model, per fold and as mean and spread across folds.

Classification: accuracy, balanced accuracy, precision, recall, F1 (at the chosen threshold for a
binary model, macro-averaged for several classes), ROC-AUC, average precision, log loss, Brier; plus
the confusion matrix and a per-class report on the out-of-fold predictions. Regression: RMSE, MAE,
R2, MAPE. A binary model's probabilities are P(positive class); labels are class indexes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.preprocessing import label_binarize

from ..errors import ConfigError

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "classification_scores",
    "confusion",
    "default_metric",
    "label_scores",
    "per_class_report",
    "regression_scores",
    "scorer",
    "summarize",
]

CLASSIFICATION_METRICS = (
    "roc_auc",
    "average_precision",
    "log_loss",
    "brier",
    "accuracy",
    "balanced_accuracy",
    "precision",
    "recall",
    "f1",
)
REGRESSION_METRICS = ("rmse", "mae", "r2", "mape")

_SCORERS_BINARY = {
    "roc_auc": "roc_auc",
    "average_precision": "average_precision",
    "log_loss": "neg_log_loss",
    "brier": "neg_brier_score",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced_accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "f1",
}
_SCORERS_MULTI = {
    **_SCORERS_BINARY,
    "roc_auc": "roc_auc_ovr",
    "average_precision": "average_precision",
    "precision": "precision_macro",
    "recall": "recall_macro",
    "f1": "f1_macro",
    "brier": "neg_brier_score",
}
_SCORERS_REGRESSION = {
    "rmse": "neg_root_mean_squared_error",
    "mae": "neg_mean_absolute_error",
    "r2": "r2",
    "mape": "neg_mean_absolute_percentage_error",
}


def default_metric(task: str) -> str:
    return "roc_auc" if task == "classification" else "rmse"


def scorer(metric: str, task: str, n_classes: int = 2) -> str:
    """The scikit-learn scoring name for ``metric`` (what the selection inside the folds maximises)."""
    table = (
        _SCORERS_REGRESSION
        if task == "regression"
        else (_SCORERS_BINARY if n_classes <= 2 else _SCORERS_MULTI)
    )
    if metric not in table:
        raise ConfigError(
            f"validation.metric: {metric!r} is not a {task} metric",
            hint=f"choose one of: {', '.join(table)}",
        )
    return table[metric]


def _safe(fn: Any, *args: Any, **kwargs: Any) -> float:
    """A metric that is undefined on this fold (one class only) is NaN, not an error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            return float(fn(*args, **kwargs))
    except ValueError:
        return math.nan


def classification_scores(
    y: np.ndarray, proba: np.ndarray, labels: np.ndarray, n_classes: int
) -> dict[str, float]:
    """``proba``: P(positive) for binary (1-d), the class probabilities otherwise; ``labels``: the
    decided class indexes (at the threshold for binary)."""
    y = np.asarray(y)
    out: dict[str, float] = {}
    if n_classes == 2:
        p = np.clip(np.asarray(proba, dtype=np.float64), 1e-15, 1 - 1e-15)
        out["roc_auc"] = _safe(skm.roc_auc_score, y, p)
        out["average_precision"] = _safe(skm.average_precision_score, y, p)
        out["log_loss"] = _safe(skm.log_loss, y, p, labels=[0, 1])
        out["brier"] = _safe(skm.brier_score_loss, y, p, pos_label=1)
    else:
        p2 = np.asarray(proba, dtype=np.float64)
        onehot = label_binarize(y, classes=list(range(n_classes)))
        out["roc_auc"] = _safe(skm.roc_auc_score, y, p2, multi_class="ovr", labels=list(range(n_classes)))
        out["average_precision"] = _safe(skm.average_precision_score, onehot, p2, average="macro")
        out["log_loss"] = _safe(skm.log_loss, y, p2, labels=list(range(n_classes)))
        out["brier"] = float(np.mean(np.sum((p2 - onehot) ** 2, axis=1)))
    out.update(label_scores(y, labels, n_classes))
    return out


def label_scores(y: np.ndarray, labels: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, balanced accuracy, precision, recall and F1 from the confusion matrix (binary: of
    the positive class, index 1; several classes: macro averages), with 0 where a ratio is 0/0.
    The same numbers as scikit-learn's functions, from one pass over the labels instead of five."""
    k = max(n_classes, 2)
    matrix = np.bincount(
        np.asarray(y, dtype=np.int64) * k + np.asarray(labels, dtype=np.int64), minlength=k * k
    ).reshape(k, k)
    tp = np.diag(matrix).astype(np.float64)
    actual = matrix.sum(axis=1).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    total = float(matrix.sum())
    out = {
        "accuracy": float(tp.sum() / total) if total else math.nan,
        "balanced_accuracy": float(recall[actual > 0].mean()) if (actual > 0).any() else math.nan,
    }
    if n_classes == 2:
        out.update(precision=float(precision[1]), recall=float(recall[1]), f1=float(f1[1]))
    else:
        out.update(precision=float(precision.mean()), recall=float(recall.mean()), f1=float(f1.mean()))
    return out


def regression_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    return {
        "rmse": _safe(skm.root_mean_squared_error, y, pred),
        "mae": _safe(skm.mean_absolute_error, y, pred),
        "r2": _safe(skm.r2_score, y, pred),
        "mape": _safe(skm.mean_absolute_percentage_error, y, pred),
        **({"rmsle": _rmsle(y, pred)} if len(y) and y.min() >= 0 else {}),
    }


def _rmsle(y: np.ndarray, pred: np.ndarray) -> float:
    """Root mean squared log error (negative predictions counted as 0, as for a price or a count)."""
    return float(np.sqrt(np.mean((np.log1p(y) - np.log1p(np.clip(pred, 0, None))) ** 2)))


def summarize(folds: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (ddof=1; 0 for one fold) of each metric across folds."""
    names = list(folds[0]) if folds else []
    out: dict[str, dict[str, float]] = {}
    for name in names:
        values = np.array([f[name] for f in folds], dtype=np.float64)
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if finite.size else math.nan
        std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
        out[name] = {"mean": mean, "std": std}
    return out


def confusion(y: np.ndarray, labels: np.ndarray, n_classes: int) -> list[list[int]]:
    return skm.confusion_matrix(y, labels, labels=list(range(n_classes))).tolist()  # type: ignore[no-any-return,unused-ignore]


def per_class_report(y: np.ndarray, labels: np.ndarray, classes: Sequence[Any]) -> dict[str, Any]:
    report = skm.classification_report(
        y,
        labels,
        labels=list(range(len(classes))),
        target_names=[str(c) for c in classes],
        output_dict=True,
        zero_division=0,
    )
    return dict(report)  # type: ignore[arg-type,unused-ignore]
