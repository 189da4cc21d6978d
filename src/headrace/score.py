"""Batch scoring: a registered tabular model scores a whole dataset in bounded memory.

``headrace predict MODEL[@VERSION] --dataset NAME[@VERSION] --out DATASET``: the dataset's Delta table
is read as a stream of Arrow record batches (``chunk_rows`` at a time, only the columns needed), each
batch is scored by the model's fitted pipeline, vectorised (the computation the serving fast path is
checked against), and the scored batches are written to ``DATASET`` as they come, in one Delta
commit: a failed run leaves the output dataset as it was. Memory is bounded by the chunk size, not by
the row count.

Every output row carries the columns kept (by default the ones the model does not read: ids, the
target when present), ``prediction``, ``score`` (the positive class's probability for a binary
classifier, the value for a regressor), ``proba_<class>`` for a multi-class model, and
``model``, ``model_version``, ``data_version``, ``batch_id`` and ``scored_at``. The run is recorded in
the ledger (action ``batch_score``) with its counts and time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from .errors import HeadraceError, UsageError
from .registry import Registry, split_ref
from .store import BatchMeta, Store, new_batch_id

__all__ = ["ScoreResult", "score_dataset"]

log = logging.getLogger("headrace.score")

SCORE = "batch_score"


@dataclass
class ScoreResult:
    model: str
    version: int
    dataset: str
    data_version: int
    out: str
    out_version: int
    rows: int
    seconds: float
    batch_id: str
    chunks: int
    columns: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "dataset": self.dataset,
            "data_version": self.data_version,
            "out": self.out,
            "out_version": self.out_version,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "batch_id": self.batch_id,
            "chunks": self.chunks,
            "columns": self.columns,
        }


def _split_dataset(ref: str) -> tuple[str, int | None]:
    name, _, version = ref.partition("@")
    if not version:
        return name, None
    if not version.isdigit():
        raise UsageError(
            f"{ref!r}: a dataset version is a number", hint="write NAME@VERSION, e.g. customers@3"
        )
    return name, int(version)


def score_dataset(
    store: Store,
    registry: Registry,
    model_ref: str,
    dataset_ref: str,
    out: str,
    *,
    keep: Sequence[str] | None = None,
    chunk_rows: int = 250_000,
    on_chunk: Callable[[int], None] | None = None,
) -> ScoreResult:
    """Score ``dataset_ref`` with ``model_ref`` into dataset ``out`` (see the module's doc)."""
    name, ref = split_ref(model_ref)
    mv, model = registry.load(name, ref if ref is not None else "champion")
    if mv.task not in ("classification", "regression") or not hasattr(model, "pipeline"):
        raise UsageError(
            f"{mv.ref} is a {mv.task} model; batch scoring takes tabular classifiers and regressors",
            hint="score recommenders through /users/{id}/recommendations",
        )
    dataset, data_version = _split_dataset(dataset_ref)
    if out == dataset:
        raise UsageError(
            f"--out {out!r} is the dataset being scored", hint="name a new dataset for the scores"
        )
    table = store._table(dataset, data_version)
    data_version = int(table.version())
    available = list(pa.schema(table.schema().to_arrow()).names)
    inputs = list(model.plan.input_names)
    missing = [c for c in inputs if c not in available]
    if missing:
        raise UsageError(
            f"dataset {dataset}@{data_version} lacks {', '.join(missing)}, which {mv.ref} reads",
            hint="score a dataset with the columns the model was trained on",
        )
    kept = list(keep) if keep is not None else [c for c in available if c not in inputs]
    unknown = [c for c in kept if c not in available]
    if unknown:
        raise UsageError(
            f"--keep names columns {dataset} does not have: {', '.join(unknown)}", hint="check them"
        )
    batch_id = new_batch_id()
    scored_at = datetime.now(UTC)
    source = table.to_pyarrow_dataset().to_batches(
        columns=list(dict.fromkeys([*kept, *inputs])), batch_size=chunk_rows
    )
    counts = {"rows": 0, "chunks": 0}

    def scored() -> Iterator[pa.RecordBatch]:
        for batch in _rechunk(source, chunk_rows):
            frame = pl.from_arrow(pa.Table.from_batches([batch]))
            assert isinstance(frame, pl.DataFrame)
            try:
                scores = _scores(model, frame.select(inputs))
            except Exception as exc:
                first = counts["rows"] + 1
                raise HeadraceError(
                    f"{mv.ref} failed on rows {first:,}-{first + frame.height - 1:,} of {dataset}@"
                    f"{data_version} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                    hint=f"nothing was written to {out!r}; retrain the model or check those rows",
                ) from exc
            out_frame = frame.select(kept).with_columns(scores)
            out_frame = out_frame.with_columns(
                pl.lit(name).alias("model"),
                pl.lit(mv.version, pl.Int64).alias("model_version"),
                pl.lit(data_version, pl.Int64).alias("data_version"),
                pl.lit(batch_id).alias("batch_id"),
                pl.lit(scored_at).alias("scored_at"),
            )
            counts["rows"] += out_frame.height
            counts["chunks"] += 1
            if on_chunk is not None:
                on_chunk(out_frame.height)
            yield from out_frame.to_arrow().to_batches()

    started = time.perf_counter()
    meta = BatchMeta(source=f"predict {mv.ref} on {dataset}@{data_version}", batch_id=batch_id)
    out_version = store.append_stream(out, scored(), meta)
    seconds = time.perf_counter() - started
    result = ScoreResult(
        model=name,
        version=int(mv.version),
        dataset=dataset,
        data_version=data_version,
        out=out,
        out_version=out_version,
        rows=counts["rows"],
        seconds=seconds,
        batch_id=batch_id,
        chunks=counts["chunks"],
        columns=[*kept, "prediction", "score"],
    )
    registry.note(
        name,
        SCORE,
        version=int(mv.version),
        reason=f"scored {dataset}@{data_version} into {out}@{out_version}: {result.rows:,} rows "
        f"in {seconds:.1f} s",
        details=result.to_dict(),
    )
    log.info("%s scored %s rows of %s@%s into %s", mv.ref, result.rows, dataset, data_version, out)
    return result


def _rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of about ``rows`` rows (a Parquet reader hands out smaller ones)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        held += batch.num_rows
        if held >= rows:
            yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
            pending, held = [], 0
    if pending:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _scores(model: Any, frame: pl.DataFrame) -> list[pl.Series]:
    if model.task == "regression":
        values = model.output(np.asarray(model.pipeline.predict(model.prepare(frame)), dtype=np.float64))
        return [pl.Series("prediction", values), pl.Series("score", values)]
    proba = np.asarray(model.predict_proba(frame), dtype=np.float64)
    labels = np.asarray(model.classes_, dtype=object)[model.decide(proba)]
    out = [pl.Series("prediction", [str(v) for v in labels], dtype=pl.String)]
    if proba.shape[1] == 2:
        out.append(pl.Series("score", proba[:, 1]))
    else:
        out.append(pl.Series("score", proba.max(axis=1)))
        out += [pl.Series(f"proba_{c}", proba[:, i]) for i, c in enumerate(model.classes_)]
    return out
