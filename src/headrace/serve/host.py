"""The models a server holds, and the hot swap when a champion alias moves.

``ModelHost`` keeps one immutable :class:`Served` per model name. A request takes the ``Served`` once
and uses that object to the end, so when the champion changes and ``check`` puts a new ``Served`` in
place (one dict assignment, atomic under the GIL), requests in flight finish on the old version and
the next ones get the new; none fail. The new version is loaded and compiled *before* the switch,
off the event loop, and a version that fails to load leaves the old one serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ..errors import NotFound, ServiceUnavailable
from .fastpath import CompiledPipeline, NotCompilable, compile_pipeline
from .schema import InputSchema

__all__ = ["FAST_PATH_MAX_ROWS", "ModelHost", "Served", "TabularAnswer"]

log = logging.getLogger("headrace.serve")

FAST_PATH_MAX_ROWS = 64  # above this, the vectorised pipeline beats per-row arithmetic


@dataclass
class TabularAnswer:
    predictions: list[Any]
    probabilities: list[dict[str, float]] | None
    scores: list[float] | None  # positive-class probability (binary) or the predicted value
    fast: bool
    notes: list[list[str]] | None = None  # per record: what was imputed or ignored (None: nothing)


@dataclass
class Served:
    """One loaded model version, immutable once serving."""

    name: str
    version: int
    task: str
    flavor: str
    model: Any
    mv: Any = None
    schema: InputSchema | None = None
    compiled: CompiledPipeline | None = None
    not_compiled: str | None = None
    load_seconds: float = 0.0
    threshold: float | None = None
    classes: list[Any] | None = None
    _class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.version_label = str(self.version)
        self._class_names = [str(c) for c in self.classes or []]

    @property
    def kind(self) -> str:
        if hasattr(self.model, "recommend"):
            return "recommender"
        if hasattr(self.model, "predict_images"):
            return "image"
        return "tabular"

    # -- tabular --------------------------------------------------------------------------------
    def predict_records(self, records: list[dict[str, Any]], *, allow_fast: bool = True) -> TabularAnswer:
        """Records already checked by ``schema``: the fast path for a few rows, the pipeline otherwise."""
        if not records:
            empty: list[dict[str, float]] | None = [] if self.task == "classification" else None
            return TabularAnswer([], empty, [], True)
        if allow_fast and self.compiled is not None and len(records) <= FAST_PATH_MAX_ROWS:
            answer = self._fast(records)
        else:
            answer = self._pipeline(records)
        notes = getattr(self.model, "notes", None)
        if notes is not None:
            found = notes(records)
            answer.notes = found if any(found) else None
        return answer

    def _fast(self, records: list[dict[str, Any]]) -> TabularAnswer:
        compiled = self.compiled
        assert compiled is not None
        if self.task == "regression":
            values = [compiled.predict_value_one(r) for r in records]
            output = getattr(self.model, "output", None)  # a target transform undone, as the pipeline does
            if output is not None:
                values = [float(v) for v in output(np.asarray(values, dtype=np.float64))]
            return TabularAnswer(values, None, values, True)
        names, classes = self._class_names, self.classes or []
        probabilities, labels, scores = [], [], []
        binary = len(classes) == 2
        for record in records:
            proba = compiled.predict_proba_one(record)
            probabilities.append(dict(zip(names, proba, strict=True)))
            if binary and self.threshold is not None:
                labels.append(classes[1] if proba[1] >= self.threshold else classes[0])
            else:
                labels.append(classes[int(np.argmax(proba))])
            scores.append(proba[1] if binary else max(proba))
        return TabularAnswer(labels, probabilities, scores, True)

    def _frame(self, records: list[dict[str, Any]]) -> pl.DataFrame:
        schema = self.schema.polars_schema if self.schema is not None else None
        return pl.DataFrame(records, schema=schema)

    def _pipeline(self, records: list[dict[str, Any]]) -> TabularAnswer:
        frame = self._frame(records)
        if self.task == "classification" and hasattr(self.model, "predict_proba"):
            proba = np.asarray(self.model.predict_proba(frame), dtype=np.float64)
            if hasattr(self.model, "decide"):
                index = np.asarray(self.model.decide(proba))
            else:
                index = proba.argmax(axis=1)
            classes = self.classes or list(range(proba.shape[1]))
            labels = [classes[int(i)] for i in index]
            probabilities = [dict(zip(self._class_names, row, strict=True)) for row in proba.tolist()]
            scores = proba[:, 1].tolist() if proba.shape[1] == 2 else proba.max(axis=1).tolist()
            return TabularAnswer(labels, probabilities, scores, False)
        prediction = self.model.predict(frame)
        values = list(prediction.predictions)
        scores = [float(v) for v in values] if self.task == "regression" else None
        probs = prediction.probabilities if isinstance(prediction.probabilities, list) else None
        return TabularAnswer(values, probs, scores, False)


def _compile(model: Any) -> tuple[CompiledPipeline | None, str | None]:
    """The fast path for a tabular model whose preparation is only casts (no derived or date columns)."""
    pipeline = getattr(model, "pipeline", None)
    if pipeline is None:
        return None, "the model has no scikit-learn pipeline"
    plan = getattr(model, "plan", None)
    if plan is not None:
        if plan.derive or plan.dates:
            return None, "derived or date columns are prepared by the pipeline path"
        kinds = {c["name"]: c["kind"] for c in plan.inputs}
        if (
            set(plan.feature_columns) != set(kinds)
            or any(kinds[n] != "number" for n in plan.numeric)
            or any(kinds[n] != "string" for n in plan.categorical)
        ):
            return None, "inputs that need casting are prepared by the pipeline path"
    try:
        return compile_pipeline(pipeline), None
    except NotCompilable as exc:
        return None, str(exc)
    except Exception as exc:  # a bug or an unforeseen model: the pipeline still serves it
        log.warning(
            "the fast path could not compile this model (%s: %s); the pipeline serves it",
            type(exc).__name__,
            exc,
        )
        return None, f"compiling failed ({type(exc).__name__}: {exc})"


class ModelHost:
    """The served models: loaded from the registry at ``ref`` (the champion), swapped when it moves."""

    def __init__(
        self,
        registry: Any,
        names: Sequence[str],
        *,
        ref: str = "champion",
        fast_path: bool = True,
        on_loaded: Any = None,
    ) -> None:
        self.registry = registry
        self.names = list(dict.fromkeys(names))
        self.ref = ref
        self.fast_path = fast_path
        self._served: dict[str, Served] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()  # one load at a time per host; requests never take it
        self._on_loaded = on_loaded

    # -- requests -------------------------------------------------------------------------------
    def get(self, name: str) -> Served:
        served = self._served.get(name)
        if served is not None:
            return served
        if name in self.names:
            raise ServiceUnavailable(
                f"model {name!r} is not loaded ({self._errors.get(name, 'still loading')})",
                hint="check /health/ready; register and promote a version with 'headrace train'",
            )
        raise NotFound(
            f"model {name!r} is not served here",
            hint=f"served models: {', '.join(self.names) or 'none'} (serving.models in headrace.yaml)",
        )

    def served(self) -> dict[str, Served]:
        return dict(self._served)

    def errors(self) -> dict[str, str]:
        return dict(self._errors)

    def ready(self) -> bool:
        return all(name in self._served for name in self.names)

    def of_kind(self, kind: str) -> list[Served]:
        return [s for s in self._served.values() if s.kind == kind]

    # -- loading --------------------------------------------------------------------------------
    def _target(self, name: str) -> int:
        aliases: Mapping[str, int] = self.registry.aliases(name)
        if self.ref in aliases:
            return int(aliases[self.ref])
        if self.ref.isdigit():
            return int(self.ref)
        latest = self.registry.get(name, "latest")  # no champion yet: the newest version
        return int(latest.version)

    def load(self, name: str, version: int | None = None) -> Served:
        started = time.perf_counter()
        mv, model = self.registry.load(name, version if version is not None else self.ref)
        compiled: CompiledPipeline | None = None
        why: str | None = None if self.fast_path else "fast path disabled"
        if self.fast_path and mv.task in ("classification", "regression"):
            compiled, why = _compile(model)
        signature = getattr(model, "signature", None) or mv.signature
        served = Served(
            name=name,
            version=int(mv.version),
            task=mv.task,
            flavor=mv.flavor or getattr(model, "flavor", "unknown"),
            model=model,
            mv=mv,
            schema=InputSchema.from_signature(signature)
            if mv.task in ("classification", "regression")
            else None,
            compiled=compiled,
            not_compiled=why,
            load_seconds=time.perf_counter() - started,
            threshold=getattr(model, "threshold", None)
            if getattr(model, "threshold", None) is not None
            else mv.threshold,
            classes=list(getattr(model, "classes_", None) or []) or None,
        )
        if why and mv.task in ("classification", "regression"):
            log.info("%s@%s served by its pipeline: %s", name, served.version, why)
        return served

    def check(self, name: str, *, force: bool = False) -> bool:
        """Load the version ``ref`` points at if it is not the one serving; True if it swapped."""
        with self._lock:
            try:
                target = self._target(name)
                current = self._served.get(name)
                if current is not None and current.version == target and not force:
                    return False
                served = self.load(name, target)
            except Exception as exc:
                self._errors[name] = exc.args[0] if exc.args else type(exc).__name__
                if name in self._served:
                    log.error(
                        "could not load %s (%s); still serving v%s", name, exc, self._served[name].version
                    )
                else:
                    log.error("could not load %s: %s", name, exc)
                return False
            previous = self._served.get(name)
            self._served[name] = served  # the swap: one reference assignment
            self._errors.pop(name, None)
        if self._on_loaded is not None:
            self._on_loaded(served, previous)
        if previous is not None and previous.version != served.version:
            log.info("swapped %s from v%s to v%s", name, previous.version, served.version)
        return True

    def check_all(self, *, force: bool = False) -> list[str]:
        return [name for name in self.names if self.check(name, force=force)]
