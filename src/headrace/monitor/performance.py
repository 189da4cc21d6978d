"""Live performance: ground truth from ``/feedback`` joined to the prediction log, over time windows.

Everything here works on one canonical frame, one row per prediction that has feedback:

    ts (datetime, UTC) | version (int) | prediction | actual | score (float or null)

``score`` is the probability of the positive class for binary classification (null otherwise).
:func:`live_performance` gives the metric over each window ending now (the last hour, the last day,
...), per version, and the drop against the version's validation score; :func:`timeline` the same
metric in consecutive buckets, for plots.

A drop is how much worse the live metric is than the reference: absolute for metrics bounded in
[0, 1] (accuracy, ROC-AUC, F1, ...: 0.84 -> 0.79 is a drop of 0.05), relative for unbounded error
metrics (RMSE 40,000 -> 46,000 is a drop of 0.15), so one ``metric_drop`` threshold reads sensibly
for both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from sklearn import metrics as skm

from ..errors import DataError

__all__ = [
    "BOUNDED_METRICS",
    "LOWER_IS_BETTER",
    "PerformanceReport",
    "WindowScore",
    "compute_metrics",
    "default_metric",
    "live_performance",
    "metric_drop",
    "timeline",
    "window_label",
    "windows_report",
]

BOUNDED_METRICS = frozenset(
    {"accuracy", "balanced_accuracy", "roc_auc", "f1", "precision", "recall", "average_precision", "r2"}
)
LOWER_IS_BETTER = frozenset({"rmse", "mse", "mae", "mape", "log_loss", "brier", "error_rate"})
_CLASSIFICATION = ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc")
_REGRESSION = ("rmse", "mae", "r2", "mape")


def default_metric(task: str) -> str:
    return "roc_auc" if task == "classification" else "rmse"


def window_label(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def metric_drop(metric: str, reference: float | None, live: float | None) -> float | None:
    """How much worse ``live`` is than ``reference`` (positive is worse); see the module notes."""
    if reference is None or live is None or not math.isfinite(reference) or not math.isfinite(live):
        return None
    if metric in LOWER_IS_BETTER:
        return (live - reference) / abs(reference) if reference else live - reference
    if metric in BOUNDED_METRICS:
        return reference - live
    return (reference - live) / abs(reference) if reference else reference - live


def compute_metrics(frame: pl.DataFrame, task: str, positive: Any = None) -> dict[str, float | None]:
    """Every live metric the frame supports (``rows`` too); a metric that is undefined is None."""
    out: dict[str, float | None] = {"rows": float(frame.height)}
    if frame.height == 0:
        return out | {m: None for m in (_CLASSIFICATION if task == "classification" else _REGRESSION)}
    actual = frame["actual"].to_list()
    predicted = frame["prediction"].to_list()
    if task == "classification":
        y = np.asarray([str(v) for v in actual], dtype=object)
        p = np.asarray([str(v) for v in predicted], dtype=object)
        labels = sorted(set(y.tolist()) | set(p.tolist()))
        out["accuracy"] = float(np.mean(y == p))
        out["balanced_accuracy"] = (
            float(skm.balanced_accuracy_score(y, p)) if len(set(y.tolist())) > 1 else None
        )
        pos = str(positive) if positive is not None else (labels[-1] if len(labels) == 2 else None)
        if pos is not None:
            out["precision"] = float(skm.precision_score(y, p, pos_label=pos, zero_division=0))
            out["recall"] = float(skm.recall_score(y, p, pos_label=pos, zero_division=0))
            out["f1"] = float(skm.f1_score(y, p, pos_label=pos, zero_division=0))
        else:
            out["precision"] = out["recall"] = None
            out["f1"] = float(skm.f1_score(y, p, average="macro", zero_division=0))
        out["roc_auc"] = None
        if "score" in frame.columns and pos is not None:
            scores = frame["score"].cast(pl.Float64).to_numpy()
            ok = np.isfinite(scores)
            truth = (y[ok] == pos).astype(int)
            if ok.sum() > 1 and 0 < truth.sum() < truth.size:
                out["roc_auc"] = float(skm.roc_auc_score(truth, scores[ok]))
        return out
    y_num = frame["actual"].cast(pl.Float64).to_numpy()
    p_num = frame["prediction"].cast(pl.Float64).to_numpy()
    ok = np.isfinite(y_num) & np.isfinite(p_num)
    y_num, p_num = y_num[ok], p_num[ok]
    if y_num.size == 0:
        raise DataError("live performance: no numeric prediction/feedback pairs", hint="check /feedback")
    err = p_num - y_num
    out["rmse"] = float(np.sqrt(np.mean(err**2)))
    out["mae"] = float(np.mean(np.abs(err)))
    out["r2"] = float(skm.r2_score(y_num, p_num)) if y_num.size > 1 and np.var(y_num) > 0 else None
    nonzero = y_num != 0
    out["mape"] = float(np.mean(np.abs(err[nonzero] / y_num[nonzero]))) if nonzero.any() else None
    return out


@dataclass(frozen=True)
class WindowScore:
    label: str
    seconds: float
    rows: int
    value: float | None
    metrics: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class PerformanceReport:
    """The live metric of one version over each window, against its validation score."""

    metric: str
    version: int | None
    reference: float | None
    windows: list[WindowScore]
    value: float | None  # the shortest window with at least ``min_rows`` rows
    rows: int
    drop: float | None
    enough: bool

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["windows"] = [asdict(w) for w in self.windows]
        return doc


def live_performance(
    frame: pl.DataFrame,
    task: str,
    *,
    metric: str | None = None,
    windows: Sequence[float] = (3600.0, 86400.0),
    now: datetime | None = None,
    version: int | None = None,
    reference: float | None = None,
    positive: Any = None,
    min_rows: int = 30,
) -> PerformanceReport:
    """The metric over each window ending at ``now`` (only ``version``'s rows when given)."""
    metric = metric or default_metric(task)
    now = now or datetime.now(UTC)
    if version is not None and frame.height:
        frame = frame.filter(pl.col("version") == version)
    scores: list[WindowScore] = []
    for seconds in sorted(windows):
        since = now - timedelta(seconds=seconds)
        part = frame.filter((pl.col("ts") >= since) & (pl.col("ts") <= now)) if frame.height else frame
        values = compute_metrics(part, task, positive)
        scores.append(WindowScore(window_label(seconds), seconds, part.height, values.get(metric), values))
    return windows_report(scores, metric, version=version, reference=reference, min_rows=min_rows)


def windows_report(
    scores: list[WindowScore],
    metric: str,
    *,
    version: int | None,
    reference: float | None = None,
    min_rows: int = 30,
) -> PerformanceReport:
    """The report of scored windows: its value is the shortest window with ``min_rows`` rows."""
    chosen = next((w for w in scores if w.rows >= min_rows and w.value is not None), None)
    value = chosen.value if chosen else None
    return PerformanceReport(
        metric=metric,
        version=version,
        reference=reference,
        windows=scores,
        value=value,
        rows=chosen.rows if chosen else (scores[-1].rows if scores else 0),
        drop=metric_drop(metric, reference, value),
        enough=chosen is not None,
    )


def timeline(
    frame: pl.DataFrame, task: str, *, metric: str | None = None, every: str = "1h", positive: Any = None
) -> pl.DataFrame:
    """The metric per version in consecutive ``every`` buckets: ts, version, rows, value."""
    metric = metric or default_metric(task)
    schema: dict[str, pl.DataType] = {
        "ts": pl.Datetime("us", "UTC"),
        "version": pl.Int64(),
        "rows": pl.Int64(),
        "value": pl.Float64(),
    }
    if frame.height == 0:
        return pl.DataFrame(schema=schema)
    rows = []
    buckets = frame.sort("ts").with_columns(pl.col("ts").dt.truncate(every).alias("_bucket"))
    for (bucket, version), part in buckets.group_by(["_bucket", "version"], maintain_order=True):
        values = compute_metrics(part, task, positive)
        rows.append({"ts": bucket, "version": version, "rows": part.height, "value": values.get(metric)})
    return pl.DataFrame(rows, schema=schema).sort(["ts", "version"])
