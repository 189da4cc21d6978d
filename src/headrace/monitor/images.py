"""An image model's live confidence and prediction mix, from the prediction log's ``output`` column.

- **Confidence**: the mean top-1 probability of the answers (``output.probabilities``, a mapping of
  class to probability or a list, or ``output.confidence``); rows without them are not counted.
- **Prediction mix**: the share of each predicted class in the live window against the version's
  reference mix, compared as a categorical feature (PSI over the classes, a chi-square test, the
  Jensen-Shannon distance: ``headrace.monitor.drift.feature_drift``). The reference mix is what the
  version predicted on its held-out validation images (the columns of the confusion matrix it
  recorded), else the class mix of the images it was fitted on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from ..errors import DataError
from ..registry import ModelVersion
from .drift import DriftReport, DriftThresholds, feature_drift
from .feedback import decode_json

__all__ = ["confidences", "mix_drift", "reference_mix"]


def _top1(output: Any) -> float | None:
    if not isinstance(output, Mapping):
        return None
    probabilities = output.get("probabilities")
    if isinstance(probabilities, Mapping) and probabilities:
        values = [float(v) for v in probabilities.values() if isinstance(v, int | float)]
        return max(values) if values else None
    if isinstance(probabilities, list) and probabilities:
        values = [float(v) for v in probabilities if isinstance(v, int | float)]
        return max(values) if values else None
    confidence = output.get("confidence")
    return float(confidence) if isinstance(confidence, int | float) else None


def confidences(rows: pl.DataFrame) -> list[float]:
    """The top-1 probability of each answer that logged its probabilities."""
    if rows.height == 0:
        return []
    return [c for c in (_top1(o) for o in decode_json(rows["output"].to_list())) if c is not None]


def reference_mix(mv: ModelVersion) -> dict[str, int] | None:
    """Predicted-class counts on the validation images (else the fitted images' class counts)."""
    details = mv.details or {}
    evaluation = details.get("evaluation") or {}
    classes = evaluation.get("classes") or details.get("classes")
    matrix = evaluation.get("confusion_matrix")
    if isinstance(classes, list) and isinstance(matrix, list) and matrix:
        columns = [sum(int(row[j]) for row in matrix) for j in range(len(classes))]
        if sum(columns):
            return {str(c): n for c, n in zip(classes, columns, strict=True)}
    fitted = ((details.get("splits") or {}).get("fit") or {}).get("per_class")
    if isinstance(fitted, Mapping) and fitted:
        return {str(c): int(n) for c, n in fitted.items()}
    return None


def mix_drift(mv: ModelVersion, labels: list[Any], thresholds: DriftThresholds) -> DriftReport:
    """The live prediction mix against ``mv``'s reference mix, as a drift report's ``prediction``."""
    mix = reference_mix(mv)
    if mix is None:
        raise DataError(
            f"{mv.ref} records no reference class mix (no confusion matrix, no fitted images per class)",
            hint="retrain it with 'headrace train' to record one",
        )
    reference = pl.Series("prediction", [c for c, n in mix.items() for _ in range(n)], dtype=pl.String)
    live = pl.Series("prediction", [str(v) for v in labels if v is not None], dtype=pl.String)
    result = feature_drift("prediction", reference, live, thresholds)
    return DriftReport(
        features=[],
        prediction=result,
        share_drifted=0.0,
        dataset_drift=False,
        reference_rows=reference.len(),
        live_rows=live.len(),
        thresholds=thresholds,
    )
