"""The stream worker: micro-batches from a streaming source, validated, committed, then acknowledged.

For each batch the source yields (``MqttStream`` or ``NatsStream``):

1. rows whose ``_key`` was committed already are dropped (redeliveries after a crash or a reconnect):
   the keys of recent commits are kept in memory (``dedup_memory``), and rows the transport flags as
   possible redeliveries are also looked up in the dataset and its quarantine (the last
   ``dedup_lookback_hours``), so a worker restarted after SIGKILL does not double what it committed
   just before;
2. the rows go through :func:`headrace.ingest.validate.check`, the same rules, cleansing and
   quarantine as file ingestion; unparseable messages (``Batch.failures``) join the rejected rows;
3. clean rows are appended to the dataset (one Delta commit), rejected ones to ``<dataset>__quarantine``;
4. only then is the batch acknowledged to the broker.

A crash between 3 and 4 means a redelivery, which step 1 removes: at least once on the wire, once in
the dataset. A commit the store refuses (a type the dataset cannot take) sends the batch's rows to
the quarantine with the reason instead of stopping the worker. SIGTERM or SIGINT: the worker commits
and acknowledges what it holds, then exits. One ``ingestion_runs`` row per worker session is kept up
to date with the counts; ``quality_reports`` get one merged report per minute.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import polars as pl
from sqlalchemy import insert, update

from ..config.sources_stream import MqttSource, NatsSource, StreamSpec
from ..errors import ConfigError, HeadraceError, StoreError
from ..ingest.base import Batch, StreamingSource
from ..ingest.schema import SchemaTracker
from ..ingest.validate import QualityReport, check, failures_frame
from ..metadata import SCHEMA, Metadata, utcnow
from ..store import BatchMeta, Store, new_batch_id
from . import metrics
from .mqtt import MqttStream, StreamToken
from .payload import KEY_COLUMN, RECEIVED_COLUMN, TOPIC_COLUMN

__all__ = ["KeyMemory", "StreamStats", "StreamWorker", "open_stream", "preload_writer", "run_workers"]

log = logging.getLogger("headrace.stream.worker")


def open_stream(
    name: str, spec: StreamSpec, *, client_id: str | None = None, shared_group: str | None = None
) -> StreamingSource:
    """The streaming source for a ``kind: mqtt`` or ``kind: nats`` spec."""
    if isinstance(spec, MqttSource):
        return MqttStream(name, spec, client_id=client_id, shared_group=shared_group)
    if isinstance(spec, NatsSource):
        from .nats import NatsStream

        return NatsStream(name, spec, durable=shared_group)
    raise ConfigError(
        f"source {name!r} is of kind {getattr(spec, 'kind', '?')!r}, not a stream",
        hint="'headrace stream' runs kind: mqtt and kind: nats sources; use 'headrace ingest' for the others",
    )


class KeyMemory:
    """The keys of the most recent committed rows, oldest forgotten first (a bounded ordered set)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._keys: dict[str, None] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def isdisjoint(self, keys: set[str]) -> bool:
        return self._keys.keys().isdisjoint(keys)

    def add_all(self, keys: list[str]) -> None:
        if self.capacity <= 0:
            return
        self._keys.update(dict.fromkeys(keys))
        excess = len(self._keys) - self.capacity
        if excess > 0:
            it = iter(self._keys)
            for old in [next(it) for _ in range(excess)]:
                del self._keys[old]


@dataclass
class StreamStats:
    source: str
    dataset: str
    received: int = 0
    rows_committed: int = 0
    rows_quarantined: int = 0
    duplicates: int = 0
    batches: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    version: int | None = None
    status: str = "running"
    error: str | None = None
    compactions: int = 0
    recent_delays: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("recent_delays")
        doc["rows_per_second"] = round(self.rows_committed / self.seconds, 1) if self.seconds else None
        return doc


class StreamWorker:
    """Runs one streaming source into its dataset until stopped (see the module docstring)."""

    def __init__(
        self,
        name: str,
        spec: StreamSpec,
        store: Store,
        meta: Metadata | None = None,
        source: StreamingSource | None = None,
        *,
        compact: bool = True,
        report_every: float = 60.0,
    ) -> None:
        self.name = name
        self.spec = spec
        self.store = store
        self.meta = meta
        self.source = source if source is not None else open_stream(name, spec)
        self.compact = compact and spec.compact_every_seconds > 0
        self.report_every = report_every
        self.stats = StreamStats(source=name, dataset=spec.dataset)
        self.memory = KeyMemory(spec.dedup_memory)
        self._stop = threading.Event()
        self._labels = {"source": name, "dataset": spec.dataset}
        self._schema: dict[str, pl.DataType] | None = None
        self._types = SchemaTracker(spec, meta, store, name)
        self._run_id: int | None = None
        self._report: QualityReport | None = None
        self._last_report = time.monotonic()
        self._last_compact = time.monotonic()

    # -- control --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Commit and acknowledge what is held, then end ``run`` (safe from a signal handler)."""
        self._stop.set()
        stop = getattr(self.source, "stop", None)
        if stop is not None:
            stop()

    def run(self, *, max_rows: int | None = None, idle_exit: float | None = None) -> StreamStats:
        """Process batches until ``stop()``; or until ``max_rows`` rows are committed or quarantined;
        or, with ``idle_exit``, once nothing has arrived for that many seconds."""
        started = time.perf_counter()
        start = getattr(self.source, "start", None)
        if start is not None:
            start()  # connected and subscribed before the run is recorded as running
        self._begin_run()
        watchdog = None
        if idle_exit is not None:
            watchdog = threading.Thread(target=self._idle_watch, args=(idle_exit,), daemon=True)
            watchdog.start()
        try:
            for batch in self.source.read():
                self.process(batch)
                if (
                    max_rows is not None
                    and self.stats.rows_committed + self.stats.rows_quarantined >= max_rows
                ):
                    self.stop()
                if self.compact and time.monotonic() - self._last_compact > self.spec.compact_every_seconds:
                    self.compact_now()
                if time.monotonic() - self._last_report > self.report_every:
                    self._update_run()
            self.stats.status = "succeeded"
        except HeadraceError as exc:
            self.stats.status = "failed"
            self.stats.error = exc.one_line()
            raise
        except BaseException as exc:
            self.stats.status = "failed"
            self.stats.error = f"interrupted: {type(exc).__name__}: {str(exc)[:200]}"
            raise
        finally:
            self._stop.set()
            self.stats.seconds = time.perf_counter() - started
            self.stats.reconnects = int(getattr(self.source, "reconnects", 0))
            close = getattr(self.source, "close", None)
            if close is not None:
                close()
            self._update_run(final=True)
        return self.stats

    def _idle_watch(self, seconds: float) -> None:
        last_count, last_change = -1, time.monotonic()
        while not self._stop.wait(0.2):
            count = int(getattr(self.source, "received", 0))
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > seconds:
                log.info("source %s: nothing received for %g s, stopping", self.name, seconds)
                self.stop()
                return

    # -- one batch --------------------------------------------------------------------------------
    def process(self, batch: Batch) -> None:
        """Dedup, check, commit, then acknowledge one batch."""
        t0 = time.perf_counter()
        token: StreamToken | None = batch.token if isinstance(batch.token, StreamToken) else None
        spec = self.spec
        frame = batch.frame
        received = token.messages if token is not None else frame.height + len(batch.failures)
        self.stats.received += received
        metrics.RECEIVED.labels(**self._labels).inc(received)
        suspects = token.suspect_keys if token is not None else set()

        frame, dropped = self._dedup(frame, suspects)
        failures = self._dedup_failures(batch.failures, suspects)
        dropped += len(batch.failures) - len(failures)

        batch_id = new_batch_id()
        extra = {"origin": batch.origin, "run_id": self._run_id, "messages": received}
        clean = frame.head(0)
        rejected: list[pl.DataFrame] = []
        report: QualityReport | None = None
        if frame.height:
            try:
                typed, inferred = self._types.prepare(frame)
                result = check(
                    frame, typed, origin=batch.origin, batch_id=batch_id, stats=False, inferred=inferred
                )
                clean, report = result.clean, result.report
                if result.rejected.height:
                    rejected.append(result.rejected)
            except HeadraceError as exc:  # a required column missing, drift refused: the whole batch
                rejected.append(_as_quarantine(frame, exc.one_line(), batch.origin, batch_id))
        if failures:
            rejected.append(_failures(failures, batch_id))

        version = None
        if clean.height:
            clean = self._fit_schema(clean)
            try:
                version = self.store.append(spec.dataset, clean, BatchMeta(self.name, batch_id, extra))
                self._types.commit()
                self._schema = None if set(clean.columns) - set(self._schema or {}) else self._schema
            except StoreError as exc:
                log.error("source %s: %s; the batch's rows go to the quarantine", self.name, exc.one_line())
                rejected.append(_as_quarantine(clean, exc.one_line(), batch.origin, batch_id))
                clean = clean.head(0)
        quarantined = 0
        if rejected:
            qframe = pl.concat(rejected, how="diagonal_relaxed")
            self.store.append(
                self.store.quarantine_name(spec.dataset), qframe, BatchMeta(self.name, batch_id, extra)
            )
            quarantined = qframe.height
        keys = []
        if KEY_COLUMN in frame.columns:
            keys = frame.get_column(KEY_COLUMN).to_list()
        keys.extend(f[KEY_COLUMN] for f in failures if f.get(KEY_COLUMN))
        self.memory.add_all(keys)

        self.source.ack(batch)  # only now: everything above is committed

        now = time.time()
        self.stats.rows_committed += clean.height
        self.stats.rows_quarantined += quarantined
        self.stats.duplicates += dropped
        self.stats.batches += 1
        if version is not None:
            self.stats.version = version
        metrics.COMMITTED.labels(**self._labels).inc(clean.height)
        metrics.QUARANTINED.labels(**self._labels).inc(quarantined)
        metrics.DUPLICATES.labels(**self._labels).inc(dropped)
        metrics.BATCH_ROWS.labels(**self._labels).observe(received)
        metrics.FLUSH_SECONDS.labels(**self._labels).observe(time.perf_counter() - t0)
        if token is not None and token.first_received is not None:
            delay = now - token.first_received
            metrics.DELAY.labels(**self._labels).observe(delay)
            self.stats.recent_delays = [*self.stats.recent_delays[-99:], delay]
        if report is not None:
            report.rows_unparseable = len(failures)
            self._report = report if self._report is None else self._report.merge(report)
        log.debug(
            "source %s: batch of %d messages: %d committed, %d quarantined, %d duplicates (%.3f s)",
            self.name,
            received,
            clean.height,
            quarantined,
            dropped,
            time.perf_counter() - t0,
        )

    def _dedup(self, frame: pl.DataFrame, suspects: set[str]) -> tuple[pl.DataFrame, int]:
        if not frame.height or KEY_COLUMN not in frame.columns:
            return frame, 0
        keys = frame.get_column(KEY_COLUMN).to_list()
        stored = self._stored_keys(suspects - {k for k in suspects if k in self.memory})
        memory = self.memory
        unique = set(keys)
        if len(unique) == len(keys) and memory.isdisjoint(unique) and stored.isdisjoint(unique):
            return frame, 0  # the usual case, in set operations rather than a loop over the keys
        seen: set[str] = set()
        keep = []
        for k in keys:
            ok = k not in seen and k not in memory and k not in stored
            seen.add(k)
            keep.append(ok)
        dropped = len(keep) - sum(keep)
        if not dropped:
            return frame, 0
        return frame.filter(pl.Series(keep, dtype=pl.Boolean)), dropped

    def _dedup_failures(self, failures: list[dict[str, Any]], suspects: set[str]) -> list[dict[str, Any]]:
        """Unparseable messages are told apart by content only when redelivered: two identical bad
        payloads are two failures, a redelivered one already quarantined is not."""
        redelivered = {str(f.get(KEY_COLUMN)) for f in failures} & suspects
        if not redelivered:
            return failures
        known = {k for k in redelivered if k in self.memory}
        known |= self._stored_keys(redelivered - known)
        out, seen = [], set()
        for f in failures:
            k = f.get(KEY_COLUMN)
            if k in known or (k in redelivered and k in seen):
                continue
            seen.add(k)
            out.append(f)
        return out

    def _stored_keys(self, keys: set[str]) -> set[str]:
        """Which of ``keys`` the dataset (recent rows) or its quarantine already holds."""
        if not keys:
            return set()
        found: set[str] = set()
        wanted = pl.Series(KEY_COLUMN, sorted(keys), dtype=pl.String)
        cutoff = datetime.now(UTC) - timedelta(hours=self.spec.dedup_lookback_hours)
        for dataset, recent in (
            (self.spec.dataset, True),
            (self.store.quarantine_name(self.spec.dataset), False),
        ):
            if not self.store.exists(dataset):
                continue
            scan = self.store.scan(dataset)
            names = scan.collect_schema().names()
            if KEY_COLUMN not in names:
                continue
            if recent and RECEIVED_COLUMN in names:
                scan = scan.filter(pl.col(RECEIVED_COLUMN) >= cutoff)
            hits = scan.filter(pl.col(KEY_COLUMN).is_in(wanted.implode())).select(KEY_COLUMN).collect()
            found.update(hits.get_column(KEY_COLUMN).to_list())
        if found:
            log.info("source %s: %d redelivered rows were committed already", self.name, len(found))
        return found

    def _fit_schema(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Lossless casts to the dataset's column types (an int batch into a float column, a column of
        nulls into any type), so an append does not fail for what the dataset can hold as it is."""
        if self._schema is None:
            if not self.store.exists(self.spec.dataset):
                return frame
            self._schema = dict(self.store.scan(self.spec.dataset).collect_schema())
        casts = []
        for name, dtype in frame.schema.items():
            target = self._schema.get(name)
            if target is None or target == dtype:
                continue
            if dtype == pl.Null or (dtype.is_integer() and target.is_float()):
                casts.append(pl.col(name).cast(target))
        return frame.with_columns(casts) if casts else frame

    # -- upkeep ---------------------------------------------------------------------------------
    def compact_now(self) -> None:
        """Merge the small files of many commits (dataset and quarantine); never fatal."""
        self._last_compact = time.monotonic()
        for dataset in (self.spec.dataset, self.store.quarantine_name(self.spec.dataset)):
            if not self.store.exists(dataset):
                continue
            try:
                result = self.store.compact(dataset)
                self.stats.compactions += 1
                log.info(
                    "source %s: compacted %s (%s files removed, %s added)",
                    self.name,
                    dataset,
                    result.get("numFilesRemoved"),
                    result.get("numFilesAdded"),
                )
            except Exception as exc:  # a concurrent writer won the commit: next time
                log.warning("source %s: compaction of %s skipped (%s)", self.name, dataset, str(exc)[:200])

    def _begin_run(self) -> None:
        if self.meta is None:
            return
        runs = SCHEMA.tables["ingestion_runs"]
        with self.meta.begin() as conn:
            self._run_id = int(
                conn.execute(  # type: ignore[index]
                    insert(runs).values(
                        source=self.name,
                        dataset=self.spec.dataset,
                        kind=str(getattr(self.spec, "kind", "stream")),
                        started_at=utcnow(),
                        status="running",
                        details={"pid": os.getpid()},
                    )
                ).inserted_primary_key[0]
            )

    def _update_run(self, final: bool = False) -> None:
        self._last_report = time.monotonic()
        if self.meta is None or self._run_id is None:
            return
        runs = SCHEMA.tables["ingestion_runs"]
        reports = SCHEMA.tables["quality_reports"]
        s = self.stats
        values: dict[str, Any] = {
            "rows_read": s.received,
            "rows_committed": s.rows_committed,
            "rows_quarantined": s.rows_quarantined,
            "version": s.version,
            "details": {"pid": os.getpid(), **s.to_dict()},
        }
        if final:
            values.update(finished_at=utcnow(), status=s.status, error=s.error)
        try:
            with self.meta.begin() as conn:
                conn.execute(update(runs).where(runs.c.id == self._run_id).values(**values))
                if self._report is not None:
                    doc = {
                        **self._report.to_dict(),
                        "status": "committed",
                        "window_end": utcnow().isoformat(),
                    }
                    conn.execute(
                        insert(reports).values(
                            run_id=self._run_id,
                            dataset=self.spec.dataset,
                            batch_id=self._report.batch_id,
                            created_at=utcnow(),
                            report=doc,
                        )
                    )
                    self._report = None
        except HeadraceError as exc:  # metadata down: the data path goes on
            log.warning("source %s: run record not updated (%s)", self.name, exc.one_line())


def _failures(failures: list[dict[str, Any]], batch_id: str) -> pl.DataFrame:
    frame = failures_frame(failures, batch_id=batch_id)
    return frame.with_columns(
        pl.Series(TOPIC_COLUMN, [str(f.get("origin", "")) for f in failures], dtype=pl.String),
        pl.Series(RECEIVED_COLUMN, [_iso(f.get(RECEIVED_COLUMN)) for f in failures], dtype=pl.String),
        pl.Series(KEY_COLUMN, [f.get(KEY_COLUMN) for f in failures], dtype=pl.String),
    )


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else None if value is None else str(value)


def _as_quarantine(frame: pl.DataFrame, reason: str, origin: str, batch_id: str) -> pl.DataFrame:
    """Rows that were fine but could not be committed, as quarantine rows (every column as text)."""
    text = []
    for name, dtype in frame.schema.items():
        if dtype.is_nested():
            text.append(pl.struct(pl.col(name).alias("v")).struct.json_encode().alias(name))
        elif isinstance(dtype, pl.Datetime):
            text.append(pl.col(name).dt.to_string("iso").alias(name))
        else:
            text.append(pl.col(name).cast(pl.String).alias(name))
    return frame.select(text).with_columns(
        pl.lit(reason, dtype=pl.String).alias("reason"),
        pl.lit(origin, dtype=pl.String).alias("origin"),
        pl.lit(None, dtype=pl.Int64).alias("position"),
        pl.lit(batch_id, dtype=pl.String).alias("batch_id"),
        pl.lit(None, dtype=pl.String).alias("raw"),
    )


# -- signals and processes --------------------------------------------------------------------------


class _Signals:
    """SIGTERM and SIGINT stop the workers gracefully; a second one ends the process at once."""

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self.on_stop = on_stop
        self.count = 0
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        log.warning("%s: committing what is held, then stopping", signal.Signals(signum).name)
        self.on_stop()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def worker_identity(project: str, name: str, index: int, workers: int) -> tuple[str, str | None]:
    """The client id (stable across restarts: it names the persistent session) and shared group."""
    base = f"headrace-{project}-{name}"
    if workers <= 1:
        return base, None
    return f"{base}-{index}", base


def _worker_main(
    project_file: str,
    name: str,
    index: int,
    workers: int,
    results: Any,
    max_rows: int | None,
    idle_exit: float | None,
    log_format: str,
    verbosity: int,
) -> None:
    """One worker process (started with spawn: deltalake does not survive fork)."""
    from ..log import setup_logging
    from ..workspace import Workspace

    setup_logging(log_format, verbosity)
    ws = Workspace.open(project_file)
    try:
        stats = run_source(ws, name, index=index, workers=workers, max_rows=max_rows, idle_exit=idle_exit)
        results.put(stats.to_dict())
    except HeadraceError as exc:
        results.put({"source": name, "status": "failed", "error": exc.one_line(), "worker": index})
    finally:
        ws.close()


def preload_writer() -> None:
    """Load what the first commit would otherwise load (about a second here) when a worker process
    starts: pyarrow.parquet, and pandas, which pyarrow loads to read the first time-zone-aware
    timestamp bound from a file's footer (``Store.append`` does, for ``_received_at``)."""
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401


def run_source(
    ws: Any,
    name: str,
    *,
    index: int = 0,
    workers: int = 1,
    max_rows: int | None = None,
    idle_exit: float | None = None,
    handle_signals: bool = True,
) -> StreamStats:
    """Run one source of a workspace in this process (worker ``index`` of ``workers``)."""
    spec = ws.project.source(name)
    if not isinstance(spec, StreamSpec):
        open_stream(name, spec)  # raises the ConfigError that says so
    client_id, group = worker_identity(ws.project.project, name, index, workers)
    if isinstance(spec, NatsSource):
        group = spec.durable or f"headrace-{ws.project.project}-{name}"
    preload_writer()
    source = open_stream(name, spec, client_id=client_id, shared_group=group)
    if spec.metrics_port is not None:
        metrics.serve_metrics(spec.metrics_port + index)
    worker = StreamWorker(name, spec, ws.store, ws.meta, source, compact=index == 0)
    if handle_signals:
        with _Signals(worker.stop):
            return worker.run(max_rows=max_rows, idle_exit=idle_exit)
    return worker.run(max_rows=max_rows, idle_exit=idle_exit)


def run_workers(
    project_file: str | Path,
    names: list[str],
    workers: int = 1,
    *,
    max_rows: int | None = None,
    idle_exit: float | None = None,
    log_format: str = "text",
    verbosity: int = 0,
) -> list[dict[str, Any]]:
    """``workers`` processes per source (spawned), each on the shared subscription; waits for all.

    SIGTERM/SIGINT to this process is passed on to the workers, which commit, acknowledge and exit.
    """
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = []
    for name in names:
        for index in range(workers):
            proc = ctx.Process(
                target=_worker_main,
                args=(
                    str(project_file),
                    name,
                    index,
                    workers,
                    results,
                    max_rows,
                    idle_exit,
                    log_format,
                    verbosity,
                ),
                name=f"headrace-stream-{name}-{index}",
            )
            proc.start()
            procs.append(proc)

    def forward() -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    out: list[dict[str, Any]] = []
    with _Signals(forward):
        while any(p.is_alive() for p in procs) or not results.empty():
            out.extend(_drain(results))
            for p in procs:
                p.join(timeout=0.1)
        out.extend(_drain(results))
    for proc in procs:
        if proc.exitcode not in (0, None) and not any(r.get("worker") == proc.name for r in out):
            out.append(
                {"source": proc.name, "status": "failed", "error": f"worker exited with {proc.exitcode}"}
            )
    return out


def _drain(queue: Any) -> Iterator[dict[str, Any]]:
    import queue as _queue

    while True:
        try:
            yield queue.get_nowait()
        except _queue.Empty:
            return
