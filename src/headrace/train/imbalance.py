"""Class imbalance: the ratio reported, and resampling that happens only inside training folds.

A resampler is a step of an imbalanced-learn Pipeline placed after the features: imbalanced-learn
runs samplers in ``fit`` only, so each training fold is resampled on its own and the rows a fold is
scored on are never touched (resampling before the split copies rows into both sides and inflates
the score; tests/unit/test_train_validation.py shows it). The registered model drops the sampler
step: it did its work during fit, and prediction never used it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["RESAMPLERS", "class_ratio", "make_sampler"]

RESAMPLERS = ("over", "under", "smote")


def class_ratio(y: np.ndarray, classes: Sequence[Any]) -> dict[str, Any]:
    """Counts and shares per class, and majority / minority."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(classes))
    total = int(counts.sum())
    present = counts[counts > 0]
    return {
        "counts": {str(c): int(n) for c, n in zip(classes, counts, strict=True)},
        "shares": {
            str(c): (float(n) / total if total else 0.0) for c, n in zip(classes, counts, strict=True)
        },
        "imbalance_ratio": float(present.max() / present.min()) if present.size else 1.0,
    }


def make_sampler(kind: str | None, seed: int, *, minority: int | None = None) -> Any:
    """The imbalanced-learn sampler for ``imbalance: over | under | smote`` (None otherwise)."""
    if kind is None or kind == "class_weight":
        return None
    from imblearn.over_sampling import SMOTE, RandomOverSampler
    from imblearn.under_sampling import RandomUnderSampler

    if kind == "over":
        return RandomOverSampler(random_state=seed)
    if kind == "under":
        return RandomUnderSampler(random_state=seed)
    if kind == "smote":
        neighbours = 5 if minority is None else max(1, min(5, minority - 1))
        return SMOTE(random_state=seed, k_neighbors=neighbours)
    raise ConfigError(f"imbalance: unknown method {kind!r}", hint="use class_weight, over, under or smote")
