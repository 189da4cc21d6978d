"""The models a server holds, and the hot swap when a champion alias moves.

``ModelHost`` keeps one immutable :class:`Served` per model name. A request takes the ``Served`` once
and uses that object to the end, so when the champion changes and ``check`` puts a new ``Served`` in
place (one dict assignment, atomic under the GIL), requests in flight finish on the old version and
the next ones get the new; none fail. The new version is loaded and compiled *before* the switch,
off the event loop, and a version that fails to load leaves the old one serving.

The fast path and the pipeline give the same answer to every record, or the same refusal. The input
schema refuses what neither should see (a non-finite number, a missing or unknown field) before
either runs; the fast path answers only numbers within the range its load-time probe checked
(``CompiledPipeline.accepts``) and the pipeline the rest; a number that overflows the model's
arithmetic, or an answer that is not a finite number, is a 422 naming the field on both. At load,
after compiling, the whole path is probed with edge records (non-finite, extreme, empty, unseen,
missing; ``fastpath.edge_records``): any difference, or any error while compiling, leaves the model
served by its pipeline with a warning.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ..errors import DataError, HeadraceError, NotFound, ServiceUnavailable
from .fastpath import (
    FAST_PATH_MAX_ABS,
    CompiledPipeline,
    NotCompilable,
    NotEquivalent,
    compile_pipeline,
    edge_records,
    probe_records,
)
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
        compiled = self.compiled
        if (
            allow_fast
            and compiled is not None
            and len(records) <= FAST_PATH_MAX_ROWS
            and all(compiled.accepts(r) for r in records)
        ):
            answer = self._fast(records)
        else:
            answer = self._pipeline(records)
        _check_finite(answer, records)
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
                with np.errstate(over="ignore"):  # exp of a huge value: inf, refused as the pipeline's is
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
        # an extreme number may overflow the model's arithmetic (1e308 / a scale < 1): numpy's warning
        # is silenced, the infinity it leaves is refused below or by scikit-learn's own input check
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                return self._pipeline_answer(records)
            except ValueError as exc:
                text = str(exc)
                if "infinity" in text or "too large" in text:
                    raise _overflow(records) from None
                if "contains NaN" in text:  # a model without an imputer, given null (or an overflow)
                    raise _unanswerable(records) from None
                raise

    def _pipeline_answer(self, records: list[dict[str, Any]]) -> TabularAnswer:
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


def _extreme_fields(records: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """The first record with numbers beyond the fast path's range, and those fields (the largest
    number of the first record when none is)."""
    for i, record in enumerate(records):
        names = [n for n, v in record.items() if _number(v) and abs(v) > FAST_PATH_MAX_ABS]
        if names:
            return i, names
    numbers = {n: abs(v) for n, v in (records[0] if records else {}).items() if _number(v)}
    return 0, [max(numbers, key=lambda n: numbers[n])] if numbers else []


def _number(value: Any) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool)


def _overflow(records: list[dict[str, Any]]) -> DataError:
    i, names = _extreme_fields(records)
    shown = ", ".join(f"{n!r} = {records[i][n]:.6g}" for n in names) if names else "a number"
    return DataError(
        f"record {i}: {shown} overflows this model's arithmetic (the answer would be infinite)",
        hint=f"send numbers of the size the model was trained on (within ±{FAST_PATH_MAX_ABS:.0e} at most)",
    )


def _unanswerable(records: list[dict[str, Any]]) -> DataError:
    i, names = _extreme_fields(records)
    if names and any(abs(records[i][n]) > FAST_PATH_MAX_ABS for n in names):
        return _overflow(records)
    for i, record in enumerate(records):
        for name, value in record.items():
            if value is None:
                return DataError(f"record {i}: field {name!r} needs a value", hint="send a number")
    return _overflow(records)


def _check_finite(answer: TabularAnswer, records: list[dict[str, Any]]) -> None:
    """An answer holding inf or NaN (a regression target transform overflowing, say) is refused as
    an overflow, whichever path gave it, instead of failing as JSON later."""
    values: list[Any] = list(answer.scores or [])
    for proba in answer.probabilities or []:
        values.extend(proba.values() if isinstance(proba, dict) else [proba])
    for value in values:
        if isinstance(value, float) and not math.isfinite(value):
            raise _overflow(records)


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
    except NotEquivalent as exc:
        log.warning("the fast path is not used: %s; the pipeline serves this model", exc)
        return None, str(exc)
    except NotCompilable as exc:
        return None, str(exc)
    except Exception as exc:  # a bug or an unforeseen model: the pipeline still serves it
        log.warning(
            "the fast path could not compile this model (%s: %s); the pipeline serves it",
            type(exc).__name__,
            exc,
        )
        return None, f"compiling failed ({type(exc).__name__}: {exc})"


def _answered(answer: TabularAnswer) -> list[tuple[str, list[float]]]:
    """Each record's label and numbers (class probabilities, or the value), to compare paths."""
    if answer.probabilities is not None:
        numbers = [[float(x) for x in p.values()] for p in answer.probabilities]
    else:
        numbers = [[float(x)] for x in answer.scores or []]
    return [(str(label), row) for label, row in zip(answer.predictions, numbers, strict=True)]


def probe_edges(served: Served, tolerance: float = 1e-9) -> str | None:
    """Edge records (``fastpath.edge_records``: non-finite, extreme, empty, unseen, missing) through
    the serving path with the fast path and with the pipeline alone: the first difference, described,
    or None when every answer and every refusal is the same.

    A record the input schema refuses is refused before either path runs, and one with a number
    beyond the fast path's range is answered by the pipeline on both, so what is compared is every
    record the fast path answers: each on its own against the pipeline's batch answer (record by
    record where the batch is refused)."""
    compiled = served.compiled
    if compiled is None or served.schema is None:
        return None
    fields = served.schema.fields
    base: dict[str, Any] = {name: None for name in fields}
    base.update({k: v for k, v in probe_records(compiled, 1)[0].items() if k in fields})
    categories = {name: list(table) for name, _, table, _ in compiled.categorical}
    accepted: list[dict[str, Any]] = []
    for record in edge_records(fields, base, categories=categories):
        try:
            (checked,) = served.schema.check([record])
        except HeadraceError:
            continue  # refused by the schema, before either path: the same on both
        if compiled.accepts(checked):
            accepted.append(checked)
    if not accepted:
        return None

    def outcome(records: list[dict[str, Any]], fast: bool) -> Any:
        try:
            return _answered(served.predict_records(records, allow_fast=fast))
        except HeadraceError as exc:
            return ("refused", type(exc).__name__, str(exc))

    try:
        slow_all = _answered(served.predict_records(accepted, allow_fast=False))
    except HeadraceError:
        slow_all = None
    for i, record in enumerate(accepted):
        fast = outcome([record], True)
        slow = [slow_all[i]] if slow_all is not None else outcome([record], False)
        same = isinstance(fast, list) == isinstance(slow, list)
        if same and isinstance(fast, list):
            (fast_label, fast_numbers), (slow_label, slow_numbers) = fast[0], slow[0]
            same = fast_label == slow_label and bool(
                np.allclose(fast_numbers, slow_numbers, rtol=1e-9, atol=tolerance)
            )
        elif same:
            same = fast == slow
        if not same:
            changed = {k: v for k, v in record.items() if base.get(k) != v}
            return f"the fast path and the pipeline differ on {changed!r} ({fast} vs {slow})"
    return None


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
        if self.ref.isascii() and self.ref.isdigit():
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
        if served.compiled is not None:
            try:
                differs = probe_edges(served)
            except Exception as exc:  # the probe itself failed: trust the pipeline alone
                differs = f"the edge probe failed ({type(exc).__name__}: {exc})"
            if differs is not None:
                log.warning("%s@%s: %s; the pipeline serves it", name, served.version, differs)
                served.compiled, served.not_compiled = None, differs
        elif why and mv.task in ("classification", "regression"):
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
