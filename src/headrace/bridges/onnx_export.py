"""ONNX as an optional export: ``headrace models export MODEL[@V] --format onnx FILE``.

The fitted pipeline is converted with skl2onnx, then the graph's answer is made headrace's: ``label``
is the class name decided with the version's threshold (binary) or the most probable class, and
``probabilities`` are in the order of ``classes`` (both in the file's metadata); a regression's
``variable`` is in the target's units (a log target transform is undone in the graph). The graph is
checked against the pipeline on probe records (every category, unseen ones, empty strings, missing
values, a spread of numbers and extreme ones) before anything is written; a difference, or a step
skl2onnx cannot convert, is a refusal naming the step.

The graph takes one ``[N, 1]`` input per model column, as :func:`feeds` builds them: numbers as
float32 (NaN for missing; ONNX Runtime's imputer has no float64 kernel, hence the tolerance), and
categories as strings with a missing one sent as ``headrace.missing_category`` (in the metadata).
Derived columns and date parts are computed by headrace before the pipeline, so a model with them is
refused. Serving stays on the fast path (measured 15-35x faster per row than onnxruntime).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HeadraceError, UsageError

__all__ = ["NotConvertible", "export_onnx", "feeds", "probe_records", "run_onnx"]

# abs and relative tolerance of the check: the graph computes in float32
TOLERANCE = 1e-5


class NotConvertible(HeadraceError):
    """The pipeline (or one of its steps) has no ONNX conversion, or the converted graph differs."""

    exit_code = 1


def _onnx_modules() -> tuple[Any, Any, Any]:
    try:
        import onnx
        import onnxruntime
        import skl2onnx
    except ImportError as exc:
        raise UsageError(
            f"the ONNX export needs {exc.name}, which is not installed",
            hint="pip install 'headrace[onnx]' (skl2onnx, onnx, onnxruntime)",
        ) from None
    return onnx, onnxruntime, skl2onnx


# -- which step does not convert ------------------------------------------------------------------------
def _leaves(step: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every estimator of a (nested) pipeline with its path (``features/cat/encode``)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    if isinstance(step, Pipeline):
        for name, inner in step.steps:
            yield from _leaves(inner, f"{path}/{name}" if path else name)
    elif isinstance(step, ColumnTransformer):
        yield path, step
        for name, inner, _columns in getattr(step, "transformers_", step.transformers):
            if isinstance(inner, str):  # "drop", "passthrough"
                continue
            yield from _leaves(inner, f"{path}/{name}")
    elif isinstance(step, FeatureUnion):
        yield path, step
        for name, inner in step.transformer_list:
            yield from _leaves(inner, f"{path}/{name}")
    else:
        yield path, step


def unconvertible_step(pipeline: Any) -> tuple[str, Any] | None:
    """The first step skl2onnx has no converter for (its path and estimator), or None."""
    from skl2onnx._supported_operators import sklearn_operator_name_map

    for path, step in _leaves(pipeline, ""):
        if type(step) not in sklearn_operator_name_map:
            return path, step
    return None


def _failed_step(exc: BaseException, pipeline: Any) -> tuple[str, Any] | None:
    """The step skl2onnx was converting when it failed (its ``operator.raw_operator``)."""
    paths = {id(step): path for path, step in _leaves(pipeline, "")}
    tb = exc.__traceback__
    found = None
    while tb is not None:
        operator = tb.tb_frame.f_locals.get("operator")
        raw = getattr(operator, "raw_operator", None)
        if raw is not None and id(raw) in paths:
            found = (paths[id(raw)], raw)
        tb = tb.tb_next
    return found


def _refusal(ref: str, path: str, step: Any, why: str) -> NotConvertible:
    return NotConvertible(
        f"{ref} does not convert to ONNX: step '{path}' ({type(step).__name__}) {why}",
        hint="export it with --format mlflow, or train it with steps skl2onnx converts",
    )


# -- inputs ---------------------------------------------------------------------------------------------
def _missing_category() -> str:
    from ..train.features import MISSING

    return MISSING


def feeds(model: Any, frame: Any) -> dict[str, np.ndarray]:
    """The graph's inputs for raw records (a polars frame), prepared as headrace prepares them."""
    prepared = model.prepare(frame)
    out: dict[str, np.ndarray] = {}
    for name in model.plan.numeric:
        out[name] = prepared[name].to_numpy(dtype=np.float32, na_value=np.nan).reshape(-1, 1)
    missing = _missing_category()
    for name in model.plan.categorical:
        column = prepared[name].astype(object)
        out[name] = np.asarray(column.where(column.notna(), missing), dtype=object).reshape(-1, 1)
    return out


def probe_records(model: Any, n: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """Raw records that exercise every category the model knows, unseen ones, empty strings, missing
    values, a spread of numbers around each column's fill value and extreme numbers (as
    ``headrace.serve.fastpath.probe_records`` does for the fast path, from the plan and fitted state)."""
    rng = np.random.default_rng(seed)
    known = model._categories()
    fills = _numeric_fills(model)
    extremes = (1e9, -1e9, 1e6, -1e6, 0.0, -0.0)
    records: list[dict[str, Any]] = []
    for i in range(n):
        record: dict[str, Any] = {}
        for j, col in enumerate(model.plan.inputs):
            name = col["name"]
            if col["kind"] == "number":
                base = fills.get(name, 0.0)
                if i % 7 == 3:
                    record[name] = None
                elif i % 13 == 9:
                    record[name] = extremes[(i + j) % len(extremes)]
                else:
                    record[name] = float(base + rng.normal(0, 1 + abs(base)))
            else:
                keys = sorted(str(k) for k in known.get(name, ()) if k is not None)
                if i % 5 == 4:
                    record[name] = None
                elif i % 11 == 6:
                    record[name] = "unseen-category"
                elif i % 17 == 8:
                    record[name] = ""
                else:
                    record[name] = keys[i % len(keys)] if keys else "a"
        records.append(record)
    return records


def _numeric_fills(model: Any) -> dict[str, float]:
    features = model.pipeline.named_steps.get("features")
    out: dict[str, float] = {}
    for _name, transformer, columns in getattr(features, "transformers_", []):
        impute = getattr(transformer, "named_steps", {}).get("impute")
        stats = getattr(impute, "statistics_", None)
        if stats is None or not isinstance(columns, list) or stats.dtype == object:
            continue
        for column, value in zip(columns, stats.tolist(), strict=True):
            if isinstance(value, float) and math.isfinite(value):
                out[str(column)] = value
    return out


def _frame(model: Any, records: Sequence[Mapping[str, Any]]) -> Any:
    import polars as pl

    kinds = {"number": pl.Float64, "string": pl.String, "bool": pl.Boolean}
    schema = {c["name"]: kinds.get(c["kind"], pl.String) for c in model.plan.inputs}
    return pl.DataFrame(list(records), schema=schema)


# -- the graph ------------------------------------------------------------------------------------------
def _converted(model: Any, ref: str) -> Any:
    """skl2onnx's graph of a copy of the pipeline whose category imputers read the missing marker."""
    _onnx, _ort, skl2onnx = _onnx_modules()
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    found = unconvertible_step(model.pipeline)
    if found is not None:
        raise _refusal(ref, found[0], found[1], "has no ONNX converter in skl2onnx")
    pipeline = copy.deepcopy(model.pipeline)
    for _path, step in _leaves(pipeline, ""):
        stats = getattr(step, "statistics_", None)
        if isinstance(step, SimpleImputer) and stats is not None and stats.dtype == object:
            step.missing_values = _missing_category()  # ONNX strings have no None: a marker stands for it
        if (
            isinstance(step, OneHotEncoder)
            and step.handle_unknown == "infrequent_if_exist"
            and not any(c is not None for c in getattr(step, "infrequent_categories_", None) or [])
        ):
            # no category turned out infrequent: an unseen one is all zeros, as with "ignore" (the
            # only spelling of that skl2onnx converts; otherwise ONNX Runtime fails on unseen values)
            step.handle_unknown = "ignore"
    types = [(n, FloatTensorType([None, 1])) for n in model.plan.numeric]
    types += [(n, StringTensorType([None, 1])) for n in model.plan.categorical]
    head = pipeline.steps[-1][1]
    options = {id(head): {"zipmap": False}} if model.task == "classification" else None
    try:
        return skl2onnx.convert_sklearn(pipeline, initial_types=types, options=options)
    except Exception as exc:
        step = _failed_step(exc, pipeline) or ("model", head)
        raise _refusal(ref, step[0], step[1], f"failed to convert ({_first_line(exc)})") from None


def _headrace_outputs(onnx: Any, graph_model: Any, model: Any) -> Any:
    """Replace the converter's answer with headrace's: the thresholded class name, or the value in
    the target's units."""
    from onnx import TensorProto, helper

    graph = graph_model.graph
    if model.task == "classification":
        old_label = next(o for o in graph.output if o.name == "label")
        for node in graph.node:
            node.output[:] = ["sklearn_label" if o == "label" else o for o in node.output]
        graph.output.remove(old_label)
        classes = list(model.classes_)
        numeric = all(isinstance(c, int) and not isinstance(c, bool) for c in classes)
        names = helper.make_tensor(
            "headrace_classes",
            TensorProto.INT64 if numeric else TensorProto.STRING,
            [len(classes)],
            _class_values(classes, numeric),
        )
        graph.initializer.append(names)
        if len(classes) == 2 and model.threshold is not None:
            graph.initializer.append(helper.make_tensor("headrace_one", TensorProto.INT64, [], [1]))
            graph.initializer.append(
                helper.make_tensor("headrace_threshold", TensorProto.FLOAT, [], [float(model.threshold)])
            )
            graph.node.extend(
                [
                    helper.make_node("Gather", ["probabilities", "headrace_one"], ["headrace_p1"], axis=1),
                    helper.make_node(
                        "GreaterOrEqual", ["headrace_p1", "headrace_threshold"], ["headrace_positive"]
                    ),
                    helper.make_node("Cast", ["headrace_positive"], ["headrace_index"], to=TensorProto.INT64),
                ]
            )
        else:
            graph.node.append(
                helper.make_node("ArgMax", ["probabilities"], ["headrace_index"], axis=1, keepdims=0)
            )
        graph.node.append(
            helper.make_node("Gather", ["headrace_classes", "headrace_index"], ["label"], axis=0)
        )
        kind = TensorProto.INT64 if numeric else TensorProto.STRING
        graph.output.insert(0, helper.make_tensor_value_info("label", kind, [None]))
    elif model.target_transform is not None:
        old = graph.output[0]
        for node in graph.node:
            node.output[:] = ["headrace_raw" if o == old.name else o for o in node.output]
        nodes = [
            helper.make_node(
                "Exp", ["headrace_raw"], [old.name if model.target_transform == "log" else "headrace_e"]
            )
        ]
        if model.target_transform != "log":  # log1p: expm1
            graph.initializer.append(helper.make_tensor("headrace_1", TensorProto.FLOAT, [], [1.0]))
            nodes.append(helper.make_node("Sub", ["headrace_e", "headrace_1"], [old.name]))
        graph.node.extend(nodes)
    onnx.checker.check_model(graph_model)
    return graph_model


def _class_values(classes: list[Any], numeric: bool) -> Any:
    return [int(c) for c in classes] if numeric else [str(c).encode() for c in classes]


def run_onnx(session: Any, model: Any, frame: Any) -> tuple[list[Any], np.ndarray]:
    """The graph's answers for raw records: labels (or values) and probabilities (classifier)."""
    outputs = session.run(None, feeds(model, frame))
    if model.task == "classification":
        labels = [v.decode() if isinstance(v, bytes) else v for v in np.asarray(outputs[0]).tolist()]
        return labels, np.asarray(outputs[1], dtype=np.float64)
    return np.asarray(outputs[0], dtype=np.float64).reshape(-1).tolist(), np.empty((0, 0))


def _check(session: Any, model: Any, records: Sequence[Mapping[str, Any]], ref: str) -> float:
    """The largest difference between the graph and headrace over ``records``; refuses a label that
    differs (unless its probability is within the tolerance of the threshold) or a number that does."""
    frame = _frame(model, records)
    try:
        labels, proba = run_onnx(session, model, frame)
    except Exception:  # find the first record it fails on, to name it
        for record in records:
            try:
                run_onnx(session, model, _frame(model, [record]))
            except Exception as exc:
                raise NotConvertible(
                    f"{ref}'s ONNX graph fails on {_shown(record)} ({_first_line(exc)})",
                    hint="export it with --format mlflow",
                ) from None
        raise
    if model.task == "classification":
        want_proba = model.predict_proba(frame)
        want = model.predict(frame).predictions
        gap = np.abs(proba - want_proba)
        worst = float(gap.max()) if gap.size else 0.0
        for i, (got, expected) in enumerate(zip(labels, want, strict=True)):
            near = model.threshold is not None and abs(want_proba[i, -1] - model.threshold) <= TOLERANCE
            if (str(got) != str(expected) and not near) or gap[i].max() > TOLERANCE:
                raise NotConvertible(
                    f"{ref}'s ONNX graph answers {got!r} ({proba[i].round(6).tolist()}) where headrace "
                    f"answers {expected!r} ({want_proba[i].round(6).tolist()}) for {_shown(records[i])}",
                    hint="export it with --format mlflow",
                )
        return worst
    with np.errstate(over="ignore"):  # exp of an extreme probe: headrace refuses to answer it (422)
        values = np.asarray(model.predict(frame).predictions, dtype=np.float64)
    got_values = np.asarray(labels, dtype=np.float64)
    # compared where headrace answers and float32 can hold the answer (beyond, the graph says inf)
    answered = np.isfinite(values) & (np.abs(values) < 1e38)
    close = np.isclose(got_values, values, rtol=TOLERANCE, atol=TOLERANCE) | ~answered
    if not close.all():
        i = int(np.argmin(close))
        raise NotConvertible(
            f"{ref}'s ONNX graph answers {got_values[i]:.6g} where headrace answers {values[i]:.6g} "
            f"for {_shown(records[i])}",
            hint="export it with --format mlflow",
        )
    gap = np.abs(got_values[answered] - values[answered]) / np.maximum(1.0, np.abs(values[answered]))
    return float(np.max(gap, initial=0.0))


def export_onnx(
    model: Any,
    out: Path,
    *,
    ref: str,
    metadata: Mapping[str, Any] | None = None,
    probes: int = 200,
    extra_records: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Convert ``model`` (a tabular model), check it on probe records, and write the ONNX file."""
    onnx, ort, _skl2onnx = _onnx_modules()
    if getattr(model, "flavor", None) != "tabular":
        raise UsageError(f"{ref} is not a tabular model; the ONNX export takes tabular models")
    computed = [*model.plan.derive, *(f"{d} (date parts)" for d in model.plan.dates)]
    if computed:
        raise NotConvertible(
            f"{ref} does not convert to ONNX: headrace computes {', '.join(computed)} before its pipeline, "
            "which the graph would not",
            hint="export it with --format mlflow",
        )
    graph_model = _headrace_outputs(onnx, _converted(model, ref), model)
    carried = {
        "headrace.ref": ref,
        "headrace.task": model.task,
        "headrace.threshold": json.dumps(model.threshold),
        "headrace.classes": json.dumps(model.classes_),
        "headrace.positive": json.dumps(model.positive),
        "headrace.missing_category": _missing_category(),
        "headrace.inputs": json.dumps(
            [
                *({"name": n, "type": "float32"} for n in model.plan.numeric),
                *({"name": n, "type": "string"} for n in model.plan.categorical),
            ]
        ),
        **{f"headrace.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()},
    }
    for key, value in carried.items():
        entry = graph_model.metadata_props.add()
        entry.key, entry.value = key, value
    data = graph_model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    records = [*probe_records(model, probes), *extra_records]
    worst = _check(session, model, records, ref)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return {
        "path": str(out),
        "format": "onnx",
        "probes": len(records),
        "max_difference": worst,
        "bytes": len(data),
    }


def _shown(record: Mapping[str, Any], limit: int = 160) -> str:
    text = json.dumps(record, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= 120 else line[:117].rstrip(" {:(=,") + "..."
