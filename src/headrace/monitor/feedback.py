"""Predictions joined with the ground truth that came back for them (``POST /feedback``): the frame
live metrics are computed on, by the monitor and by the dashboard alike."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

__all__ = ["decode_json", "join_feedback", "prediction_outputs"]


def decode_json(values: list[str | None]) -> list[Any]:
    out: list[Any] = []
    for text in values:
        try:
            out.append(json.loads(text) if text is not None else None)
        except (TypeError, ValueError):
            out.append(text)
    return out


def prediction_outputs(frame: pl.DataFrame) -> list[Any]:
    decoded = decode_json(frame["output"].to_list())
    return [d.get("prediction") if isinstance(d, dict) else None for d in decoded]


def join_feedback(log_rows: pl.DataFrame, feedback: pl.DataFrame) -> pl.DataFrame:
    """The canonical frame of ``headrace.monitor.performance``: ts, version, prediction, actual, score."""
    if log_rows.height == 0 or feedback.height == 0:
        return pl.DataFrame(
            schema={
                "ts": pl.Datetime("us", "UTC"),
                "version": pl.Int64(),
                "prediction": pl.String(),
                "actual": pl.String(),
                "score": pl.Float64(),
            }
        )
    fb = feedback.select(pl.col("prediction_id").alias("id"), pl.col("actual").alias("_actual")).unique(
        subset="id", keep="last"
    )
    rows = log_rows.join(fb, on="id", how="inner")
    predictions = prediction_outputs(rows)
    actual = decode_json(rows["_actual"].to_list())
    return pl.DataFrame(
        {
            "ts": rows["ts"],
            "version": rows["version"],
            "prediction": [None if p is None else str(p) for p in predictions],
            "actual": [None if a is None else str(a) for a in actual],
            "score": rows["score"],
        }
    ).drop_nulls(["prediction", "actual"])
