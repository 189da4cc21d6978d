"""Spec classes for monitoring and the retraining loop (``monitoring:`` in headrace.yaml)."""

from __future__ import annotations

from pydantic import Field

from .base import Spec

__all__ = ["MonitoringSpec", "RollbackRule"]


class RollbackRule(Spec):
    error_rate: float = 0.02
    metric_drop: float = 0.05


class MonitoringSpec(Spec):
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    retrain_on: list[str] = Field(default_factory=lambda: ["drift", "performance"])
    rollback_on: RollbackRule = Field(default_factory=RollbackRule)
