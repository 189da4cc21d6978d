"""The ``tabular`` flavor: a fitted scikit-learn Pipeline with what it needs to answer for raw records.

``pipeline`` is a plain ``sklearn.pipeline.Pipeline``: a ColumnTransformer (``features``), an optional
PCA, then the estimator (``model``); resampling steps used while fitting are not part of it (they only
act in ``fit``). Rows are turned into the pipeline's input by :meth:`TabularModel.prepare` (derived
columns, date parts, casts) from the stored feature plan.

The artifact is written with skops, not pickle: loading reconstructs only the types listed in
``TRUSTED_TYPES`` (plus what skops trusts by default: scikit-learn estimators, numpy arrays and
builtins), so a planted artifact cannot run code.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import polars as pl
from sklearn.pipeline import Pipeline

from ..errors import ArtifactError
from ..flavors import Prediction
from .features import FeaturePlan, prepare
from .target import inverse


class _NoTorchHere(importlib.abc.MetaPathFinder):
    """Refuses ``torch`` to one thread while it imports skops (see :func:`_import_skops_io`)."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if (name == "torch" or name.startswith("torch.")) and threading.get_ident() == self.thread:
            raise ImportError(f"{name} is not imported while skops builds its trusted types")


def _import_skops_io() -> ModuleType:
    """skops builds its list of trusted estimators at import by walking every scikit-learn module,
    and scikit-learn's array-API shim for torch imports torch whenever it is installed: 0.9 s and
    about 180 MB more in every process that loads a tabular model (a serving worker), for nothing
    (the list is the same 208 names either way, see tests/unit/test_train_tabular_imports.py). So
    torch is kept out while skops is imported, unless something imported it already; it imports
    normally afterwards (an image model)."""
    # (import statements, not importlib: a bundle's requirements are read off headrace's imports)
    if "torch" in sys.modules or "skops.io" in sys.modules:
        import skops.io

        return skops.io
    guard = _NoTorchHere()
    sys.meta_path.insert(0, guard)
    try:
        import skops.io

        return skops.io
    finally:
        sys.meta_path.remove(guard)


sio = _import_skops_io()

__all__ = ["FORMAT_VERSION", "TRUSTED_TYPES", "TabularModel"]

FORMAT_VERSION = 1

# Types skops does not trust by default that fitted pipelines of the catalog hold. Anything else in an
# artifact makes loading fail: add a type here only after checking it cannot run code.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.tree._tree.Tree",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.utils._bunch.Bunch",
    "collections.OrderedDict",
)


class TabularModel:
    """A fitted tabular classifier or regressor (the ``tabular`` flavor)."""

    flavor = "tabular"

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        task: str,
        plan: FeaturePlan,
        classes: Sequence[Any] | None = None,
        threshold: float | None = None,
        target: str | None = None,
        target_transform: str | None = None,
    ) -> None:
        if not isinstance(pipeline, Pipeline):
            raise TypeError("TabularModel takes a fitted sklearn Pipeline")
        self.pipeline = pipeline
        self.task = task
        self.plan = plan
        self.classes_ = list(classes) if classes is not None else None
        self.threshold = threshold
        self.target = target
        # regression fitted to log(target) or log1p(target): ``output`` turns predictions back
        self.target_transform = None if target_transform in (None, "none") else target_transform

    # -- what serving reads -------------------------------------------------------------------
    @property
    def feature_columns(self) -> list[str]:
        """The columns the pipeline takes (after derived columns and date parts)."""
        return self.plan.feature_columns

    @property
    def signature(self) -> dict[str, Any]:
        """The raw inputs a record must carry (name, type, kind) and what comes out."""
        return {
            "inputs": [dict(c) for c in self.plan.inputs],
            "output": {"name": self.target, "task": self.task, "classes": self.classes_},
        }

    @property
    def positive(self) -> Any:
        return self.classes_[1] if self.classes_ is not None and len(self.classes_) == 2 else None

    def prepare(self, frame: pl.DataFrame) -> Any:
        """Raw records -> the pandas frame ``pipeline`` takes."""
        return prepare(frame, self.plan, strict=True)

    # -- predicting ---------------------------------------------------------------------------
    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        if self.task != "classification":
            raise TypeError(f"a {self.task} model has no probabilities")
        return np.asarray(self.pipeline.predict_proba(self.prepare(frame)))

    def notes(self, records: Sequence[Mapping[str, Any]]) -> list[list[str]]:
        """What the model did for each record beyond reading it: a missing value imputed, a category
        it never saw in training ignored (or grouped as infrequent). An empty list when nothing."""
        known = self._categories()
        plan = self.plan
        out: list[list[str]] = []
        for record in records:
            said: list[str] = []
            for column in plan.input_names:
                value = record.get(column)
                if value is None or (isinstance(value, float) and value != value):
                    how = (
                        f"imputed ({plan.impute_numeric})"
                        if column in plan.numeric
                        else "read as a missing category"
                    )
                    said.append(f"{column}: missing, {how}")
                elif column in known and value not in known[column] and str(value) not in known[column]:
                    said.append(f"{column}: {value!r} was not seen in training, ignored")
            out.append(said)
        return out

    def _categories(self) -> dict[str, frozenset[Any]]:
        """The categories each categorical input was trained on (read once from the fitted encoder)."""
        cached: dict[str, frozenset[Any]] | None = getattr(self, "_known_categories", None)
        if cached is not None:
            return cached
        found: dict[str, frozenset[Any]] = {}
        features = self.pipeline.named_steps.get("features")
        for _name, transformer, columns in getattr(features, "transformers_", []):
            steps = getattr(transformer, "named_steps", {})
            encoder = steps.get("encode")
            if encoder is None or not hasattr(encoder, "categories_") or not isinstance(columns, list):
                continue
            for column, values in zip(columns, encoder.categories_, strict=True):
                found[str(column)] = frozenset(v for v in values.tolist() if isinstance(v, str | int | float))
        self._known_categories = found
        return found

    def output(self, values: np.ndarray) -> np.ndarray:
        """The pipeline's regression output in the target's units (undoing ``target_transform``);
        the serving fast path calls this too."""
        return inverse(self.target_transform, values)

    def decide(self, proba: np.ndarray) -> np.ndarray:
        """Class indexes from probabilities: the stored threshold for binary, the argmax otherwise."""
        if proba.shape[1] == 2 and self.threshold is not None:
            return (proba[:, 1] >= self.threshold).astype(np.int64)
        return np.asarray(proba.argmax(axis=1), dtype=np.int64)

    def predict(self, frame: pl.DataFrame) -> Prediction:
        if frame.height == 0:
            return Prediction(predictions=[], probabilities=[] if self.task == "classification" else None)
        if self.task == "regression":
            values = np.asarray(self.pipeline.predict(self.prepare(frame)), dtype=np.float64)
            return Prediction(predictions=self.output(values).tolist())
        proba = self.predict_proba(frame)
        assert self.classes_ is not None
        labels = np.asarray(self.classes_, dtype=object)[self.decide(proba)]
        names = [str(c) for c in self.classes_]
        probabilities = [dict(zip(names, row, strict=True)) for row in proba.round(6).tolist()]
        return Prediction(
            predictions=labels.tolist(),
            probabilities=probabilities,
            classes=list(self.classes_),
            extra={"threshold": self.threshold, "positive": self.positive},
        )

    # -- the artifact -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        state = {
            "format": FORMAT_VERSION,
            "pipeline": self.pipeline,
            "task": self.task,
            "plan": self.plan.to_dict(),
            "classes": [_plain(c) for c in self.classes_] if self.classes_ is not None else None,
            "threshold": None if self.threshold is None else float(self.threshold),
            "target": self.target,
            "target_transform": self.target_transform,
        }
        return bytes(sio.dumps(state, compression=8))

    @classmethod
    def from_bytes(cls, data: bytes) -> TabularModel:
        try:
            untrusted = sio.get_untrusted_types(data=data)
        except Exception as exc:
            raise ArtifactError(
                f"tabular artifact cannot be read ({exc})", hint="retrain the model"
            ) from None
        refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
        if refused:
            raise ArtifactError(
                f"tabular artifact holds types that are not trusted: {', '.join(refused)}",
                hint="retrain the model with an estimator from the catalog; never load artifacts of "
                "unknown origin",
            )
        state = sio.loads(data, trusted=sorted(set(untrusted)))
        if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
            raise ArtifactError("tabular artifact has an unknown format", hint="retrain the model")
        return cls(
            state["pipeline"],
            task=state["task"],
            plan=FeaturePlan.from_dict(state["plan"]),
            classes=state["classes"],
            threshold=state["threshold"],
            target=state.get("target"),
            target_transform=state.get("target_transform"),
        )

    def __repr__(self) -> str:
        model = self.pipeline.steps[-1][1]
        return f"TabularModel({self.task}, {type(model).__name__}, threshold={self.threshold})"


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
