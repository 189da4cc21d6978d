"""Target transforms for regression (``target_transform: log | log1p``): the model is fitted to the
transformed target and every prediction is turned back into the target's units, so metrics, reports
and served answers never show log units."""

from __future__ import annotations

import numpy as np

from ..errors import DataError

__all__ = ["TRANSFORMS", "forward", "inverse"]

TRANSFORMS = ("none", "log", "log1p")


def forward(kind: str | None, y: np.ndarray, *, target: str = "target") -> np.ndarray:
    """``y`` transformed; a value the transform cannot take is a one-line DataError."""
    if kind in (None, "none"):
        return y
    low = float(np.nanmin(y)) if len(y) else 0.0
    if kind == "log":
        if low <= 0:
            raise DataError(
                f"target_transform log needs {target} > 0; its smallest value is {low:g}",
                hint="use target_transform: log1p (for values >= 0) or none",
            )
        return np.log(y)
    if low <= -1:
        raise DataError(
            f"target_transform log1p needs {target} > -1; its smallest value is {low:g}",
            hint="use target_transform: none",
        )
    return np.log1p(y)


def inverse(kind: str | None, values: np.ndarray) -> np.ndarray:
    """Predictions in transformed units back in the target's own."""
    if kind in (None, "none"):
        return values
    return np.exp(values) if kind == "log" else np.expm1(values)
