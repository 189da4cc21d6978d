"""Off the request path: rows (predictions, feedback, interactions) queued, then appended in batches.

A request only appends a dict to a deque (thread-safe, no lock on the hot path); one background
thread wakes every ``flush_seconds`` (or when ``batch_rows`` are waiting), groups the rows by
dataset and commits each group with ``Store.append`` as one Delta commit. A full queue drops rows
and counts them (``headrace_prediction_log_dropped_total``) rather than slow the requests down; a
failed write is logged, counted and retried with the next batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import polars as pl

from ..store import BatchMeta, Store

__all__ = ["BatchWriter"]

_SLICE = 256  # rows converted while holding the GIL at a time
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(value: Any) -> int | None:
    """Microseconds since the epoch of an aware (or UTC-naive) datetime; None stays None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


log = logging.getLogger("headrace.serve.writer")


class BatchWriter:
    def __init__(
        self,
        store: Store,
        *,
        flush_seconds: float = 1.0,
        batch_rows: int = 1000,
        max_queue: int = 100_000,
        schemas: dict[str, dict[str, pl.DataType]] | None = None,
        on_written: Callable[[str, int], None] | None = None,
        on_dropped: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.batch_rows = batch_rows
        self.max_queue = max_queue
        self.schemas = dict(schemas or {})
        self._fixed = set(self.schemas)  # given schemas: rows built column by column
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._retry: list[tuple[str, dict[str, Any]]] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="headrace-batch-writer", daemon=True)
            self._thread.start()

    def put(self, dataset: str, row: dict[str, Any]) -> None:
        if len(self._queue) >= self.max_queue:
            if self._on_dropped is not None:
                self._on_dropped(dataset, 1)
            return
        self._queue.append((dataset, row))
        if len(self._queue) >= self.batch_rows:
            self._wake.set()

    def pending(self) -> int:
        return len(self._queue) + len(self._retry)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write what is queued now; returns the rows committed."""
        with self._flush_lock:
            rows = self._retry
            self._retry = []
            while self._queue:
                rows.append(self._queue.popleft())
            if not rows:
                return 0
            groups: dict[str, list[dict[str, Any]]] = {}
            for dataset, row in rows:
                groups.setdefault(dataset, []).append(row)
            written = 0
            for dataset, items in groups.items():
                try:
                    frame = self._frame(dataset, items)
                    self.store.append(dataset, frame, BatchMeta(source="serve"))
                except Exception:
                    log.exception(
                        "could not write %d rows to dataset %r; retrying with the next batch",
                        len(items),
                        dataset,
                    )
                    if len(self._retry) + len(items) <= self.max_queue:
                        self._retry.extend((dataset, r) for r in items)
                    elif self._on_dropped is not None:
                        self._on_dropped(dataset, len(items))
                    continue
                written += len(items)
                if self._on_written is not None:
                    self._on_written(dataset, len(items))
            return written

    def _frame(self, dataset: str, items: list[dict[str, Any]]) -> pl.DataFrame:
        schema = self.schemas.get(dataset)
        if schema is None and self.store.exists(dataset):
            # an existing dataset (the interactions the recommender trained on): match its types
            schema = dict(self.store.scan(dataset).collect_schema())
            self.schemas[dataset] = schema
        if schema and dataset in self._fixed:
            known = schema.keys()
            if all(row.keys() <= known for row in items):  # else the general way, which keeps them
                return self._columns(items, schema)
        frame = pl.DataFrame(items, infer_schema_length=None)
        if schema:
            for name in frame.columns:
                target = schema.get(name)
                if target is not None and target.is_integer() and isinstance(frame.schema[name], pl.Datetime):
                    frame = frame.with_columns(pl.col(name).dt.epoch("s"))  # unix-seconds timestamps
            cast = frame.cast({c: schema[c] for c in frame.columns if c in schema}, strict=False)
            lost = [c for c in frame.columns if cast[c].null_count() > frame[c].null_count()]
            if lost:
                log.warning(
                    "dataset %r: values of %s do not fit the dataset's types and are stored as null",
                    dataset,
                    ", ".join(lost),
                )
            frame = cast
        return frame

    def _columns(self, items: list[dict[str, Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
        """Rows of a fixed schema (the prediction log, feedback) built column by column, in slices.

        Built from row dicts at once, 1,000 rows held the GIL for 2.4 ms (2.1 of them converting
        aware datetimes), a stall of every request in flight: timestamps go in as epoch
        microseconds, and each slice of ``_SLICE`` rows gives the GIL back before the next."""
        parts = []
        for start in range(0, len(items), _SLICE):
            rows = items[start : start + _SLICE]
            columns: dict[str, pl.Series] = {}
            for name, dtype in schema.items():
                values = [row.get(name) for row in rows]
                if isinstance(dtype, pl.Datetime):
                    micros = [_micros(v) for v in values]
                    columns[name] = pl.Series(name, micros, dtype=pl.Int64).cast(dtype)
                else:
                    columns[name] = pl.Series(name, values, dtype=dtype, strict=False)
            parts.append(pl.DataFrame(columns))
            time.sleep(0)  # let a request's thread take the GIL between slices
        return pl.concat(parts, rechunk=False) if len(parts) > 1 else parts[0]

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()
