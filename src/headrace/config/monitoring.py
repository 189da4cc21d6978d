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
    "Duration",
    "MonitoringSpec",
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
    """When a canary (or a freshly promoted champion) is rolled back: any one limit crossed."""

    error_rate: float = Field(default=0.02, ge=0, le=1)
    metric_drop: float = Field(default=0.05, ge=0)
    p99_latency_ms: float | None = Field(default=None, gt=0)


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
    metric: str | None = None
    retrain_on: list[_TRIGGERS] = Field(default_factory=lambda: list(_DEFAULT_TRIGGERS))
    schedule: Duration | None = None
    cooldown: Duration = 3600.0
    interval: Duration = 60.0
    rollback_on: RollbackRule = Field(default_factory=RollbackRule)
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
