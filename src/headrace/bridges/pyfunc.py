"""The MLflow pyfunc that carries a headrace tabular model (``headrace models export --format mlflow``).

It loads the registered artifact itself (the skops file, checked against the trusted types as any
headrace load is) and answers through :meth:`TabularModel.predict`: the same feature preparation, the
same decision threshold, the same class names and the same rounded probabilities as headrace serves.
A frame comes back with ``prediction`` and, for a classifier, ``proba_<class>`` for every class.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

with warnings.catch_warnings():  # MLflow's own agent types warn at import ("Any type hint ...")
    warnings.filterwarnings("ignore", message=".*inferred as AnyType", category=UserWarning)
    from mlflow.pyfunc import PythonModel

__all__ = ["ARTIFACT_KEY", "HeadracePyfunc", "answer_frame"]

ARTIFACT_KEY = "headrace_model"


def answer_frame(model: Any, frame: Any) -> Any:
    """A pandas frame of ``model``'s answers for the polars ``frame``: ``prediction`` then
    ``proba_<class>`` per class (classification), each row as headrace's ``/predict`` answers it."""
    import pandas as pd

    prediction = model.predict(frame)
    out = pd.DataFrame({"prediction": pd.Series(prediction.predictions, dtype=object)})
    if model.task == "classification":
        names = [str(c) for c in model.classes_]
        probabilities = prediction.probabilities or []
        for name in names:
            out[f"proba_{name}"] = [float(p[name]) for p in probabilities]
    else:
        out["prediction"] = out["prediction"].astype("float64")
    return out


class HeadracePyfunc(PythonModel):
    """``mlflow.pyfunc.load_model(DIR).predict(pandas_frame)`` -> headrace's answers."""

    def load_context(self, context):  # mlflow's own signature, untyped
        from ..train.tabular import TabularModel

        self.model = TabularModel.from_bytes(Path(context.artifacts[ARTIFACT_KEY]).read_bytes())

    def predict(self, context, model_input, params=None):  # untyped: MLflow reads hints as a schema
        import pandas as pd
        import polars as pl

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return answer_frame(self.model, pl.from_pandas(frame.reset_index(drop=True)))
