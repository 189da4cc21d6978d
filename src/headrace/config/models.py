"""Spec classes for models (``models:`` in headrace.yaml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import Spec
from .vision import ImageSpec

__all__ = ["Candidate", "FeatureSpec", "ModelSpec", "PromoteRule", "ThresholdSpec", "ValidationSpec"]


DatePart = Literal["year", "month", "day", "dayofweek", "dayofyear", "hour"]
_DEFAULT_DATE_PARTS: tuple[DatePart, ...] = ("year", "month", "day", "dayofweek")


class FeatureSpec(Spec):
    """How a dataset's columns become model inputs (a ColumnTransformer built from the schema).

    ``derive`` declares new columns as SQL expressions over the others (``total_rooms / households``),
    computed before everything else, at training and at prediction. Columns typed as dates or
    datetimes become ``date_parts``. ``min_frequency`` groups rare categories (a count, or a share of
    the rows) into one "infrequent" category; categories never seen in training are ignored.
    """

    drop: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)  # read as numbers (text that is not a number: missing)
    categorical: list[str] = Field(default_factory=list)  # numeric codes to treat as categories
    impute_numeric: Literal["median", "mean", "most_frequent", "zero"] = "median"
    impute_categorical: Literal["most_frequent", "constant"] = "constant"
    scale: Literal["standard", "robust", "minmax", "none"] = "standard"
    encode: Literal["onehot", "ordinal"] = "onehot"
    min_frequency: int | float | None = None
    pca: int | float | None = None
    date_parts: list[DatePart] = Field(default_factory=lambda: list(_DEFAULT_DATE_PARTS))
    derive: dict[str, str] = Field(default_factory=dict)


class Candidate(Spec):
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)


class ThresholdSpec(Spec):
    """How the decision threshold of a binary classifier is chosen on out-of-fold predictions."""

    rule: Literal["max_f1", "f_beta", "cost", "target_recall", "fixed"] = "max_f1"
    beta: float = 1.0  # f_beta: > 1 favours recall
    cost_fp: float = 1.0  # cost: the price of a false positive ...
    cost_fn: float = 1.0  # ... and of a false negative
    recall: float | None = None  # target_recall: the highest threshold that keeps recall >= this
    value: float | None = None  # fixed


class ValidationSpec(Spec):
    """How a model is validated: the outer folds give the estimate; candidates and their parameters
    are chosen inside each outer training fold (nested), by ``metric``."""

    strategy: Literal[
        "holdout", "kfold", "stratified_kfold", "repeated", "group_kfold", "time_series_split"
    ] = "stratified_kfold"
    folds: int = 5
    metric: str | None = None
    threshold: str | float | ThresholdSpec | None = None  # "max_f1", a number, or a ThresholdSpec
    repeats: int = 3  # repeated: how many times the k folds are redrawn
    test_size: float = 0.2  # holdout: the share held out
    group: str | None = None  # group_kfold: the column whose values never straddle folds
    time_column: str | None = None  # time_series_split: rows are ordered by this column
    inner_folds: int = 3  # folds of the selection inside each outer training fold
    search: Literal["grid", "random"] = "grid"
    n_iter: int = 10  # random search: configurations drawn
    n_jobs: int = 1  # outer folds in parallel (joblib); -1: every core
    importance: bool = True  # permutation importance on each held-out fold


class PromoteRule(Spec):
    """The promotion gate: a floor (or, for error metrics, a ceiling) on ``metric`` and a minimum
    gain over the champion on the same data."""

    metric: str | None = None
    at_least: float | None = None
    at_most: float | None = None
    beat_champion_by: float = 0.0


class ModelSpec(Spec):
    task: Literal["classification", "regression", "recommendation", "image_classification"]
    dataset: str
    target: str | None = None
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    candidates: list[Candidate] = Field(default_factory=list)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    positive: str | int | bool | None = None  # binary classification: the positive class
    imbalance: Literal["class_weight", "over", "under", "smote"] | None = None
    promote_if: PromoteRule = Field(default_factory=PromoteRule)
    seed: int = 42
    image: ImageSpec | None = None  # task: image_classification (headrace.config.vision)
    target_transform: Literal["none", "log", "log1p"] = Field(
        default="none",
        description="regression: fit the model to log(target) or log(1 + target); cross-validated "
        "metrics and served predictions stay in the target's own units.",
    )
    # task: recommendation -- the interactions' columns; absent, the usual names are detected
    user: str | None = Field(
        default=None, description="recommendation: the column of the user (detected: user_id, userID, ...)"
    )
    item: str | None = Field(
        default=None, description="recommendation: the column of the item (detected: item_id, artistID, ...)"
    )
    weight: str | None = Field(
        default=None, description="recommendation: the column of the weight (detected: weight, rating, ...)"
    )
    time: str | None = Field(
        default=None,
        description="recommendation: the column of the time, for the leave-last split "
        "(detected: ts, timestamp, ...)",
    )

    @model_validator(mode="after")
    def _recommendation_columns(self) -> ModelSpec:
        named = [key for key in ("user", "item", "weight", "time") if getattr(self, key) is not None]
        if named and self.task != "recommendation":
            keys = " and ".join(f"`{key}:`" for key in named)
            raise ValueError(f"{keys} only with task: recommendation (they name the interactions' columns)")
        return self
