"""Spec classes for models (``models:`` in headrace.yaml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import Spec

__all__ = ["Candidate", "FeatureSpec", "ModelSpec", "PromoteRule", "ValidationSpec"]


class FeatureSpec(Spec):
    drop: list[str] = Field(default_factory=list)
    scale: Literal["standard", "robust", "minmax", "none"] = "standard"
    pca: int | float | None = None
    derive: dict[str, str] = Field(default_factory=dict)


class Candidate(Spec):
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)


class ValidationSpec(Spec):
    strategy: Literal[
        "holdout", "kfold", "stratified_kfold", "repeated", "group_kfold", "time_series_split"
    ] = "stratified_kfold"
    folds: int = 5
    metric: str | None = None
    threshold: str | float | None = None


class PromoteRule(Spec):
    metric: str | None = None
    at_least: float | None = None
    beat_champion_by: float = 0.0


class ModelSpec(Spec):
    task: Literal["classification", "regression", "recommendation", "image_classification"]
    dataset: str
    target: str | None = None
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    candidates: list[Candidate] = Field(default_factory=list)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    imbalance: str | None = None
    promote_if: PromoteRule = Field(default_factory=PromoteRule)
    seed: int = 42
