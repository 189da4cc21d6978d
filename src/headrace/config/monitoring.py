"""Spec classes for monitoring and the retraining loop (``monitoring:`` in headrace.yaml).

Durations are written as a number of seconds or as text with a unit: ``90s``, ``10m``, ``1h``,
``7d``, ``2w``; every duration field holds seconds once parsed.

```yaml
monitoring:
  psi_warn: 0.1
  psi_alert: 0.25
  window: 1h                    # the live window compared with the training reference
  retrain_on: [drift, performance, schedule]
  schedule: 7d                  # retrain at least this often (with 'schedule' in retrain_on)
  rollback_on: {error_rate: 0.02, metric_drop: 0.05, p99_latency_ms: 250}
  champion: {action: rollback, window: 5m, windows: 3}   # a promoted champion is watched too
  recommendations: {k: 10, horizon: 30m}                  # live hit rate and NDCG of recommenders
  canary: {mode: canary, share: 0.1, window: 10m, min_requests: 200, sticky_by: x-user-id}
  retention: {keep_last: 5, unused_days: 30}
```
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from .base import Spec

__all__ = [
    "AlertThresholds",
    "CanarySpec",
    "ChampionWatch",
    "Duration",
    "MonitoringSpec",
    "RecommendationWatch",
    "RetentionSpec",
    "RollbackRule",
    "parse_duration",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"10m"``, ``"1h"``, ``"7d"`` or ``"2w"``."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s, 10m, 1h or 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError("a duration such as 30s, 10m, 1h or 7d")
    if seconds <= 0:
        raise ValueError("a positive duration such as 30s, 10m, 1h or 7d")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written in YAML as a number or as ``30s``, ``10m``, ``1h``, ``7d``, ``2w``."""


class RollbackRule(Spec):
    """The limits a serving version is held to: a canary is rolled back when it crosses any one of
    them, and a champion gets ``monitoring.champion.action`` when it crosses the same one in each of
    its last ``windows`` windows."""

    error_rate: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="the share of failed requests above which a version is unhealthy",
    )
    metric_drop: float = Field(
        default=0.05,
        ge=0,
        description="how far the live metric may fall below the reference (a canary: the champion on the "
        "same traffic; a champion: its validation score): absolute for metrics in [0, 1] such as "
        "accuracy or ROC-AUC, relative for error metrics such as RMSE",
    )
    p99_latency_ms: float | None = Field(
        default=None,
        gt=0,
        description="the 99th percentile of request latency above which a version is "
        "unhealthy (null: latency is not judged)",
    )


class ChampionWatch(Spec):
    """How the serving champion is watched after its promotion.

    Its live window is cut into ``windows`` consecutive windows of ``window`` each, ending now.
    Each window is judged on the limits of ``rollback_on`` (error rate, p99 latency, the live
    metric's drop) and on ``metric_floor``; a window with fewer than ``min_requests`` requests (or
    ``min_feedback`` predictions with ground truth, for the metric) gives no verdict. When the same
    limit is crossed in every one of the windows, ``action`` is taken: ``rollback`` to the previous
    champion through the registry (an alert instead when there is none, or when the champion is
    itself the target of a rollback), ``retrain`` (through the gate and the canary, as a drift
    retrain is), or ``alert`` only (the champion stays; the check is stored as an alert report and
    exported as ``headrace_champion_unhealthy``, which the generated Prometheus rules alert on).
    """

    action: Literal["rollback", "retrain", "alert"] = Field(
        default="rollback", description="what an unhealthy champion gets: rollback, retrain or alert"
    )
    window: Duration = Field(default=300.0, description="the length of one judged window")
    windows: int = Field(
        default=3, ge=1, description="how many consecutive windows must cross the same limit"
    )
    metric_floor: float | None = Field(
        default=None,
        description="the live metric's floor (a ceiling for error metrics such as RMSE); for a recommender "
        "its live hit rate or NDCG (monitoring.metric: hit_rate or ndcg), for an image model its mean "
        "top-1 probability (confidence). Null: only rollback_on.metric_drop is judged",
    )
    min_requests: int = Field(
        default=20, ge=1, description="requests a window needs before its error rate and latency count"
    )
    min_feedback: int = Field(
        default=30, ge=1, description="predictions with ground truth a window needs before its metric counts"
    )


class RecommendationWatch(Spec):
    """How a recommender's live hit rate and NDCG@k are measured.

    A recommendation list served to a user (logged in the prediction log by
    ``GET /users/{id}/recommendations``) is a hit when the user interacts with one of its items
    (the model's interactions dataset) within ``horizon`` after it was served; NDCG@k gives each
    list's hits by their rank. A list is judged once its horizon has passed. Without logged lists,
    the champion's own top ``k`` for each user active in the window is replayed against that
    user's interactions there (reported as ``replayed``)."""

    k: int = Field(default=10, ge=1, le=1000, description="the cut-off of hit rate and NDCG")
    horizon: Duration = Field(
        default=1800.0, description="how long after a served list an interaction with one of its items counts"
    )


class CanarySpec(Spec):
    """How a retrained candidate meets live traffic before it is promoted.

    ``canary``: ``share`` of the requests (sticky by ``sticky_by``: a request header such as
    ``X-User-ID``, or a record field; else the ``X-Request-ID`` header) are answered by the
    candidate. ``shadow``: the candidate sees ``share`` of the requests too, but its answers are
    only logged, never returned. Either way it must stay healthy for ``window``
    and serve at least ``min_requests`` before it is promoted.
    """

    mode: Literal["canary", "shadow"] = "canary"
    share: float = Field(default=0.1, gt=0, lt=1)
    window: Duration = 600.0
    min_requests: int = Field(default=100, ge=1)
    sticky_by: str | None = "x-user-id"


class RetentionSpec(Spec):
    """Which versions are retired (artifacts removed, ledger kept): past the newest ``keep_last``,
    or not served for ``unused_days``. Champion and challenger are never retired."""

    keep_last: int = Field(default=5, ge=1)
    unused_days: float | None = Field(default=None, gt=0)


class AlertThresholds(Spec):
    """Thresholds written into the generated Prometheus alerting rules."""

    error_rate: float = Field(default=0.02, ge=0, le=1)
    p99_latency_ms: float = Field(default=250.0, gt=0)
    quarantine_ratio: float = Field(default=0.05, ge=0, le=1)
    stream_delay_s: Duration = 60.0
    for_: str = Field(default="5m", alias="for")

    @field_validator("for_")
    @classmethod
    def _for(cls, value: str) -> str:
        parse_duration(value)
        return value


_TRIGGERS = Literal["drift", "performance", "schedule"]
_DEFAULT_TRIGGERS: tuple[_TRIGGERS, ...] = ("drift", "performance")


class MonitoringSpec(Spec):
    """Drift and live-performance thresholds, the retraining policy, canary, rollback and retention."""

    psi_warn: float = Field(default=0.1, gt=0)
    psi_alert: float = Field(default=0.25, gt=0)
    ks_alpha: float = Field(default=0.01, gt=0, lt=1)
    js_alert: float = Field(default=0.1, gt=0, le=1)
    drift_method: Literal["psi", "ks", "js"] = "psi"
    drift_share: float = Field(default=0.3, gt=0, le=1)
    bins: int = Field(default=10, ge=2, le=100)
    window: Duration = 3600.0
    min_rows: int = Field(default=100, ge=1)
    performance_windows: list[Duration] = Field(default_factory=lambda: [3600.0, 86400.0])
    metric: str | None = Field(
        default=None,
        description="the live metric watched (default: the model's promote_if or validation metric; "
        "hit_rate for recommenders, confidence for image models)",
    )
    retrain_on: list[_TRIGGERS] = Field(default_factory=lambda: list(_DEFAULT_TRIGGERS))
    schedule: Duration | None = None
    cooldown: Duration = 3600.0
    interval: Duration = 60.0
    rollback_on: RollbackRule = Field(default_factory=RollbackRule)
    champion: ChampionWatch = Field(default_factory=ChampionWatch)
    recommendations: RecommendationWatch = Field(default_factory=RecommendationWatch)
    canary: CanarySpec = Field(default_factory=CanarySpec)
    retention: RetentionSpec = Field(default_factory=RetentionSpec)
    alerts: AlertThresholds = Field(default_factory=AlertThresholds)

    @model_validator(mode="after")
    def _consistent(self) -> MonitoringSpec:
        if self.psi_alert < self.psi_warn:
            raise ValueError(f"psi_alert ({self.psi_alert}) at least psi_warn ({self.psi_warn})")
        if "schedule" in self.retrain_on and self.schedule is None:
            raise ValueError("a 'schedule' duration (such as 7d) when retrain_on lists 'schedule'")
        return self
