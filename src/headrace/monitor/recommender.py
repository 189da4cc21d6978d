"""A recommender's live hit rate and NDCG@k: interactions that follow the lists it served.

**Served lists** are prediction-log rows with ``route`` ``recommend``: ``inputs`` holds
``{"user_id": ...}``, ``output`` holds ``{"items": [...]}`` (item ids, or ``{"item_id", "score"}``
objects as ``GET /users/{id}/recommendations`` answers), best first.

A list served at ``ts`` is judged on the user's interactions (the model's interactions dataset,
its user, item and time columns as the model version recorded them) in ``(ts, ts + horizon]``,
once that horizon has passed: it is a **hit** when one of its first ``k`` items was interacted
with, and its **NDCG@k** gives each such item ``1 / log2(rank + 1)`` over the best possible
ordering of the items interacted with (binary relevance, as the offline evaluation in
``headrace.recommend.evaluate`` computes it). A list its user did not act on at all scores 0 on
both: both rates are over every judged list.

Without served lists in the log the champion's own top ``k`` is **replayed** for each user active
in the window (their history as the model knows it) and judged on their interactions there; the
report says which (``source``: ``logged`` or ``replayed``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from .feedback import decode_json

__all__ = [
    "RECOMMEND_ROUTE",
    "RankingScore",
    "interaction_events",
    "judge_lists",
    "replayed_lists",
    "score_lists",
    "served_lists",
]

RECOMMEND_ROUTE = "recommend"

_LISTS = {
    "ts": pl.Datetime("us", "UTC"),
    "until": pl.Datetime("us", "UTC"),
    "version": pl.Int64(),
    "user": pl.String(),
    "items": pl.List(pl.String()),
}
_EVENTS = {"user": pl.String(), "item": pl.String(), "ts": pl.Datetime("us", "UTC")}


@dataclass(frozen=True)
class RankingScore:
    lists: int
    hits: int
    hit_rate: float | None
    ndcg: float | None

    def value(self, metric: str) -> float | None:
        return self.ndcg if metric.startswith("ndcg") else self.hit_rate


def _item(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("item_id", value.get("item"))
    return None if value is None else str(value)


def served_lists(log: pl.DataFrame, horizon: float) -> pl.DataFrame:
    """The recommendation lists in prediction-log rows: ts, until (ts + horizon), version, user, items."""
    if log.height == 0 or "route" not in log.columns:
        return pl.DataFrame(schema=_LISTS)
    rows = log.filter(pl.col("route") == RECOMMEND_ROUTE)
    if rows.height == 0:
        return pl.DataFrame(schema=_LISTS)
    inputs = decode_json(rows["inputs"].to_list())
    outputs = decode_json(rows["output"].to_list())
    users = [
        str(i.get("user_id")) if isinstance(i, Mapping) and i.get("user_id") is not None else None
        for i in inputs
    ]
    items = [
        [x for x in (_item(v) for v in o.get("items") or []) if x is not None]
        if isinstance(o, Mapping)
        else []
        for o in outputs
    ]
    frame = pl.DataFrame(
        {"ts": rows["ts"], "version": rows["version"], "user": users, "items": items},
        schema={k: v for k, v in _LISTS.items() if k != "until"},
    )
    return frame.with_columns((pl.col("ts") + timedelta(seconds=horizon)).alias("until")).select(list(_LISTS))


def _as_utc(series: pl.Series) -> pl.Series:
    """A time column as UTC datetimes: datetimes, ISO text, or unix seconds (milliseconds when large)."""
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            return series.dt.replace_time_zone("UTC").dt.cast_time_unit("us")
        return series.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    if dtype.is_numeric():
        seconds = series.cast(pl.Float64)
        if seconds.drop_nulls().len() and float(seconds.drop_nulls().max()) > 1e11:  # type: ignore[arg-type]
            seconds = seconds / 1000.0
        return (seconds * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    values = []
    for text in series.cast(pl.String).to_list():
        try:
            when = datetime.fromisoformat(text) if text else None
        except ValueError:
            when = None
        values.append(None if when is None else when if when.tzinfo else when.replace(tzinfo=UTC))
    return pl.Series(series.name, values, dtype=pl.Datetime("us", "UTC"))


def interaction_events(frame: pl.DataFrame, columns: Mapping[str, str | None]) -> pl.DataFrame:
    """user, item (as text) and ts (UTC) from an interactions dataset and its recorded columns."""
    user, item, ts = columns.get("user"), columns.get("item"), columns.get("ts")
    if frame.height == 0 or user is None or item is None or ts is None:
        return pl.DataFrame(schema=_EVENTS)
    return pl.DataFrame(
        {
            "user": frame[user].cast(pl.String),
            "item": frame[item].cast(pl.String),
            "ts": _as_utc(frame[ts]),
        },
        schema=_EVENTS,
    ).drop_nulls()


def judge_lists(lists: pl.DataFrame, events: pl.DataFrame, k: int) -> pl.DataFrame:
    """Each list with ``hit`` (0/1) and ``ndcg`` from its user's interactions in (ts, until]."""
    if lists.height == 0:
        return lists.with_columns(pl.lit(0).alias("hit"), pl.lit(0.0).alias("ndcg"))
    numbered = lists.with_row_index("_list")
    followed = (
        numbered.select("_list", "user", "ts", "until")
        .join(events.rename({"ts": "_at"}), on="user", how="inner")
        .filter((pl.col("_at") > pl.col("ts")) & (pl.col("_at") <= pl.col("until")))
        .group_by("_list")
        .agg(pl.col("item").unique().alias("_relevant"))
    )
    relevant: dict[int, set[str]] = {
        int(i): set(items) for i, items in zip(followed["_list"], followed["_relevant"], strict=True)
    }
    discounts = [1.0 / math.log2(rank + 2) for rank in range(k)]
    hits: list[int] = []
    ndcgs: list[float] = []
    for i, items in enumerate(numbered["items"].to_list()):
        wanted = relevant.get(i, set())
        gains = [discounts[r] for r, item in enumerate((items or [])[:k]) if item in wanted]
        ideal = sum(discounts[: min(len(wanted), k)])
        hits.append(1 if gains else 0)
        ndcgs.append(sum(gains) / ideal if ideal else 0.0)
    return lists.with_columns(
        pl.Series("hit", hits, dtype=pl.Int64), pl.Series("ndcg", ndcgs, dtype=pl.Float64)
    )


def score_lists(judged: pl.DataFrame) -> RankingScore:
    if judged.height == 0:
        return RankingScore(0, 0, None, None)
    hits = int(judged["hit"].sum())
    return RankingScore(judged.height, hits, hits / judged.height, float(judged["ndcg"].mean()))  # type: ignore[arg-type]


def replayed_lists(
    model: Any, events: pl.DataFrame, *, since: datetime, now: datetime, k: int, version: int
) -> pl.DataFrame:
    """The champion's top ``k`` for each user who interacted in [since, now], as if served at ``since``
    (judged until ``now``): what the model would have shown them."""
    active = events.filter((pl.col("ts") > since) & (pl.col("ts") <= now))["user"].unique().sort().to_list()
    rows = [
        {
            "ts": since,
            "until": now,
            "version": version,
            "user": user,
            "items": [str(item) for item, _ in model.recommend(user, k)],
        }
        for user in active
    ]
    return pl.DataFrame(rows, schema=_LISTS)
