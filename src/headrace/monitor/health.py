"""What a serving version did, from the prediction log: requests, failures, p99 latency, live metric.

One function measures a version over any span (:func:`version_health`), and :func:`windows` cuts
the recent past into consecutive windows ending now, so the canary (one span since it started) and
the champion (its last ``monitoring.champion.windows`` windows) are measured the same way and
judged by the same limits (``headrace.monitor.policy.breaches``).

A row is a failure when its route says so: ``canary_error`` and ``shadow_error`` (written by the
router when a challenger fails), and any route named ``error`` or ending in ``_error`` (a champion's
own failure, where the server logs one).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from .feedback import prediction_outputs
from .policy import VersionHealth
from .routing import CANARY_ERROR, SHADOW, SHADOW_ERROR

__all__ = ["ERROR_ROUTES", "Measure", "error_mask", "version_health", "windows"]

ERROR_ROUTES = (CANARY_ERROR, SHADOW_ERROR)

Measure = Callable[[datetime, datetime], tuple[float | None, int]]
"""The live metric over [start, end) and how many rows (feedback, judged lists...) it rests on."""


def error_mask() -> pl.Expr:
    route = pl.col("route")
    return route.is_in(list(ERROR_ROUTES)) | (route == "error") | route.str.ends_with("_error")


def version_health(
    rows: pl.DataFrame,
    version: int,
    *,
    measure: Measure | None = None,
    span: tuple[datetime, datetime] | None = None,
    classes: bool = False,
) -> VersionHealth:
    """``version``'s rows of the prediction log (shadow answers left out: nobody waited for them),
    and its live metric over ``span`` from ``measure``."""
    mine = rows.filter((pl.col("version") == version) & (pl.col("route") != SHADOW)) if rows.height else rows
    metric: float | None = None
    metric_rows = 0
    if measure is not None and span is not None:
        metric, metric_rows = measure(*span)
    if mine.height == 0:
        return VersionHealth(version, metric=metric, feedback_rows=metric_rows)
    failed = error_mask()
    errors = mine.filter(failed)
    ok = mine.filter(~failed)
    latency = ok["latency_ms"].drop_nulls().to_numpy()
    counts: dict[str, int] = {}
    if classes and ok.height:
        for label in prediction_outputs(ok):
            counts[str(label)] = counts.get(str(label), 0) + 1
    return VersionHealth(
        version=version,
        requests=mine.height,
        errors=errors.height,
        p99_ms=float(np.percentile(latency, 99)) if latency.size else None,
        metric=metric,
        feedback_rows=metric_rows,
        classes=counts,
    )


def windows(
    rows: pl.DataFrame,
    version: int,
    *,
    now: datetime,
    window: float,
    count: int,
    since: datetime | None = None,
    measure: Measure | None = None,
) -> list[VersionHealth]:
    """``version``'s health in each of ``count`` consecutive windows of ``window`` seconds ending at
    ``now``, newest first; rows before ``since`` (when it took the alias) are not its own."""
    out = []
    for i in range(count):
        end = now - timedelta(seconds=i * window)
        start = end - timedelta(seconds=window)
        lower = max(start, since) if since is not None else start
        part = rows.filter((pl.col("ts") >= lower) & (pl.col("ts") < end)) if rows.height else rows
        out.append(version_health(part, version, measure=measure, span=(lower, end)))
    return out
