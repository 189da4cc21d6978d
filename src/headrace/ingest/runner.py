"""The one path every source's rows take into a dataset: read, cleanse, check, quarantine, commit.

``ingest(source, spec, store=..., meta=..., source_name=...)`` drives any
:class:`~headrace.ingest.base.Source`. For each :class:`~headrace.ingest.base.Batch` it yields:

1. every chunk of the batch goes through :func:`headrace.ingest.validate.check` (keys already in the
   dataset, or earlier in this run, are rejected), typed by the declared types, then the types pinned
   for the dataset, then types inferred for columns seen for the first time
   (:class:`headrace.ingest.schema.SchemaTracker`);
2. when more than ``spec.max_quarantine_ratio`` of its rows are bad, the batch ends ``failed_checks``
   and nothing of it is committed (unless ``on_excess: commit``); the run then ends ``failed_checks``;
3. otherwise the rejected rows and the records the source could not parse (``Batch.failures``) are
   committed to ``<dataset>__quarantine``, then the clean rows to the dataset in one Delta commit
   whose metadata records the batch id, origin, fingerprint and cursor: that commit is the batch's
   commit point (the quarantine commit is, for a batch with no clean column at all);
4. only then are the batch's cursor (table ``cursors``), its fingerprint (``ingested_files``), its
   quality report (``quality_reports``) and the dataset's pinned types (``dataset_schemas``) stored, and
   a streaming source's ``ack(batch)`` called.

The metadata database is a cache of what the table log says: a run that died after a commit point and
before step 4 left the cursor and fingerprint in the dataset's log, where the next run reads them
(:func:`recover`); one that died between the quarantine commit and the commit point left quarantined
rows of a batch that never was, which the next run deletes before it reads. So a crash at any step
leaves all of a batch or none of it.

A run stopped by Ctrl-C, SIGTERM or a crash is recorded as ``interrupted``; one killed outright
(SIGKILL, power loss) is found by the next run of its source, whose process is gone, and recorded so.

How a batch is written follows the source's ``write`` mode (``IngestSpec.write_mode``): ``append``;
``replace``, where the whole run (every page of a full SQL or HTTP load) is one batch that becomes the
dataset in one commit, and its quarantine likewise, so a rerun never doubles a row; or ``merge`` on the
key (Delta MERGE), where an updated row replaces its old copy and a key already in the dataset is an
update, not a duplicate.

A batch that cannot be read or checked (``Batch.error``, a missing required column, a read error
mid-file) is recorded as failed and the run goes on with the next one. A crash part-way through a
batch commits nothing of it; the fingerprint in the dataset's commit metadata lets a rerun see a batch
that was committed just before a crash, so it is not loaded twice.

``open_source(name, spec)`` builds the source for a spec from ``SOURCE_FACTORIES`` (kind -> factory,
or kind -> "module:function" imported on first use); other kinds register with ``register_source``.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa
from sqlalchemy import delete, insert, select, update

from ..config.sources import IngestSpec
from ..errors import ConfigError, DataError, HeadraceError, NotFound, UsageError
from ..lineage import LineageEmitter
from ..metadata import SCHEMA, Metadata, utcnow
from ..store import BatchMeta, StagedFile, Store, VersionInfo, new_batch_id
from .base import Batch, Deduplicating, Resumable, Source, StreamingSource
from .lease import SourceLease, process_alive
from .schema import SchemaTracker
from .validate import ColumnStats, QualityReport, check, clean_stats, failures_frame, text_of

__all__ = [
    "SOURCE_FACTORIES",
    "BatchOutcome",
    "ProgressFn",
    "RunResult",
    "close_abandoned_runs",
    "ingest",
    "loaded_files",
    "loaded_fingerprints",
    "open_source",
    "recover",
    "register_source",
    "source_commits",
    "stored_cursor",
]

log = logging.getLogger("headrace.ingest.runner")

ProgressFn = Callable[[str, int], None]
"""Called as ``progress(origin, rows_read_so_far_in_this_batch)`` after each chunk is checked."""

SourceFactory = Callable[[str, Any], Source]
SOURCE_FACTORIES: dict[str, SourceFactory | str] = {
    "file": "headrace.ingest.files:open_file_source",
    "sql": "headrace.ingest.sql:open_sql_source",
    "http": "headrace.ingest.http:open_http_source",
}
"""kind -> ``factory(name, spec) -> Source``, or ``"module:function"`` naming one (imported lazily)."""


def register_source(kind: str, factory: SourceFactory | str) -> None:
    """Make ``open_source`` build sources of ``kind`` with ``factory(name, spec)``."""
    SOURCE_FACTORIES[kind] = factory


def open_source(name: str, spec: Any) -> Source:
    """The source that reads ``spec`` (any spec with a ``kind``), named ``name`` in headrace.yaml."""
    kind = getattr(spec, "kind", None)
    factory = SOURCE_FACTORIES.get(str(kind))
    if factory is None:
        raise ConfigError(
            f"source {name!r}: no reader for kind {kind!r}",
            hint=f"known kinds: {', '.join(sorted(SOURCE_FACTORIES))}",
        )
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"source {name!r}: the reader for kind {kind!r} is not available ({exc})",
                hint="install the extra it needs, or check the kind",
            ) from None
        assert callable(factory)
        SOURCE_FACTORIES[str(kind)] = factory
    return factory(name, spec)


@dataclass
class BatchOutcome:
    """What happened to one batch (one file, one page, one set of messages)."""

    origin: str
    status: str  # committed | skipped | failed | failed_checks
    batch_id: str | None = None
    rows_read: int = 0
    rows_committed: int = 0
    rows_quarantined: int = 0
    version: int | None = None
    error: str | None = None
    report: QualityReport | None = None
    excess: str | None = None  # more quarantined than max_quarantine_ratio allows: what and how many

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "status": self.status,
            "batch_id": self.batch_id,
            "rows_read": self.rows_read,
            "rows_committed": self.rows_committed,
            "rows_quarantined": self.rows_quarantined,
            "version": self.version,
            "error": self.error,
            "excess": self.excess,
        }


@dataclass
class RunResult:
    """One run of one source: its row in ``ingestion_runs`` and what happened to each batch."""

    source: str
    dataset: str
    run_id: int
    status: str  # succeeded | partial | failed | failed_checks | interrupted
    rows_read: int = 0
    rows_committed: int = 0
    rows_quarantined: int = 0
    version: int | None = None
    cursor_before: str | None = None
    cursor_after: str | None = None
    error: str | None = None
    seconds: float = 0.0
    batches: list[BatchOutcome] = field(default_factory=list)
    warning: str | None = None  # the data already loaded may not match the current rules: why

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def failed(self) -> list[BatchOutcome]:
        return [b for b in self.batches if b.status in ("failed", "failed_checks")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dataset": self.dataset,
            "run_id": self.run_id,
            "status": self.status,
            "rows_read": self.rows_read,
            "rows_committed": self.rows_committed,
            "rows_quarantined": self.rows_quarantined,
            "version": self.version,
            "cursor_before": self.cursor_before,
            "cursor_after": self.cursor_after,
            "error": self.error,
            "warning": self.warning,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_read / self.seconds) if self.seconds > 0 else None,
            "batches": [b.to_dict() for b in self.batches],
            "reports": [b.report.to_dict() for b in self.batches if b.report is not None],
        }


def stored_cursor(meta: Metadata, source_name: str) -> str | None:
    """The cursor stored after the source's last committed batch."""
    table = SCHEMA.tables["cursors"]
    with meta.begin() as conn:
        row = conn.execute(select(table.c.value).where(table.c.source == source_name)).first()
    return None if row is None else row[0]


def source_commits(store: Store, dataset: str, source_name: str) -> list[VersionInfo]:
    """The dataset's commits made by ``source_name``, oldest first (none when there is no dataset)."""
    if not store.exists(dataset):
        return []
    return [v for v in store.versions(dataset) if v.source == source_name]


def loaded_fingerprints(
    meta: Metadata,
    store: Store,
    source_name: str,
    dataset: str,
    commits: list[VersionInfo] | None = None,
) -> set[str]:
    """Fingerprints already loaded for the source: from ``ingested_files`` and from the dataset's
    own commits (a commit whose metadata was not recorded because the run died right after it).
    ``commits``: the source's commits when already read (:func:`source_commits`)."""
    table = SCHEMA.tables["ingested_files"]
    with meta.begin() as conn:
        rows = conn.execute(select(table.c.fingerprint).where(table.c.source == source_name)).scalars()
        found = set(rows)
    for version in source_commits(store, dataset, source_name) if commits is None else commits:
        fp = (version.extra or {}).get("fingerprint")
        if fp:
            found.add(fp)
    return found


def loaded_files(commits: list[VersionInfo]) -> dict[str, dict[str, Any]]:
    """Per path, what the source's newest commit of it recorded (size, content_sha256): how a file
    that grew since is told from one that changed."""
    files: dict[str, dict[str, Any]] = {}
    for v in commits:
        path = v.extra.get("path")
        if path and v.extra.get("content_sha256"):
            files[str(path)] = {"size": v.extra.get("size"), "content_sha256": v.extra["content_sha256"]}
    return files


def ingest(
    source: Source,
    spec: IngestSpec,
    *,
    store: Store,
    meta: Metadata,
    source_name: str,
    force: bool = False,
    from_start: bool = False,
    progress: ProgressFn | None = None,
    wait: float = 0.0,
    lineage: LineageEmitter | None = None,
) -> RunResult:
    """Run ``source`` into ``spec.dataset``; never raises for a bad batch (see the module docstring).

    ``force``: load inputs again even when their fingerprint was loaded before. ``from_start``: read
    an incremental source from its beginning, not from the stored cursor (a reload). The run holds
    the source's lease (:class:`~headrace.ingest.lease.SourceLease`) throughout; when another run
    holds it, this one waits up to ``wait`` seconds, then raises :class:`SourceBusy`. Raises
    :class:`ConfigError` (after recording the run as failed) when the rules themselves are wrong.
    ``lineage``: OpenLineage START and COMPLETE/FAIL events (source -> dataset at its new version).
    """
    events = None
    if lineage is not None:
        events = lineage.start(f"ingest.{source_name}", inputs=[lineage.source(source_name)])
    try:
        with SourceLease(meta, source_name, wait=wait) as lease:
            result = _ingest(source, spec, store, meta, source_name, force, from_start, progress, lease)
    except BaseException as exc:
        if events is not None:
            events.fail(exc)
        raise
    if events is not None and lineage is not None:
        if result.ok:
            events.complete(outputs=[lineage.dataset(spec.dataset, result.version)])
        else:
            events.fail(result.error or f"ingestion run {result.status}")
    return result


def _ingest(
    source: Source,
    spec: IngestSpec,
    store: Store,
    meta: Metadata,
    source_name: str,
    force: bool,
    from_start: bool,
    progress: ProgressFn | None,
    lease: SourceLease,
) -> RunResult:
    runs = SCHEMA.tables["ingestion_runs"]
    kind = str(getattr(spec, "kind", "unknown"))
    cursor_before = None if from_start else stored_cursor(meta, source_name)
    started = time.perf_counter()
    close_abandoned_runs(meta, source_name)
    commits = source_commits(store, spec.dataset, source_name)  # read once for the checks below
    recovered = recover(store, spec.dataset, source_name, commits)
    if recovered is not None and spec.write_mode != "replace" and recovered != cursor_before:
        log.warning(
            "source %s: cursor taken from the dataset's log (the last run died before recording it)",
            source_name,
        )
        cursor_before = recovered
    with meta.begin() as conn:
        inserted = conn.execute(
            insert(runs).values(
                source=source_name,
                dataset=spec.dataset,
                kind=kind,
                started_at=utcnow(),
                status="running",
                cursor_before=cursor_before,
                details=_owner(),
            )
        )
        run_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
    result = RunResult(
        source=source_name, dataset=spec.dataset, run_id=run_id, status="running", cursor_before=cursor_before
    )
    result.cursor_after = cursor_before
    state = _DatasetState.load(store, spec)
    tracker = SchemaTracker(spec, meta, store, source_name)
    result.warning = tracker.changed()
    mode = spec.write_mode
    fatal: BaseException | None = None
    try:
        if isinstance(source, Resumable):
            source.resume(None if mode == "replace" else cursor_before)
        if isinstance(source, Deduplicating):
            fresh = force or mode == "replace"
            known = set() if fresh else loaded_fingerprints(meta, store, source_name, spec.dataset, commits)
            source.skip_loaded(known)
            know_files = getattr(source, "know_files", None)
            if know_files is not None and not fresh and mode == "append":
                know_files(loaded_files(commits))
        if mode == "replace":
            source = _WholeRun(source, source_name)
        for batch in source.read():
            _fault("read")
            lease.check()  # never commit after another run took the source over
            outcome = _one_batch(
                batch, spec, store, meta, source_name, run_id, state, tracker, progress, mode
            )
            result.batches.append(outcome)
            if outcome.status == "committed":
                if batch.cursor is not None:
                    result.cursor_after = batch.cursor
                result.version = outcome.version
                if isinstance(source, StreamingSource):
                    source.ack(batch)
    except ConfigError as exc:
        result.error = exc.one_line()
        fatal = exc
    except HeadraceError as exc:  # the source itself failed (unreachable server, refused query)
        result.error = exc.one_line()
        log.warning("source %s failed: %s", source_name, result.error)
    except BaseException as exc:  # Ctrl-C, SIGTERM, a crash: record it, commit nothing more, propagate
        result.error = f"interrupted: {type(exc).__name__}: {str(exc)[:200]}".rstrip(": ")
        result.status = "interrupted"
        fatal = exc
    finally:
        result.seconds = time.perf_counter() - started
        for b in result.batches:
            result.rows_read += b.rows_read
            result.rows_committed += b.rows_committed
            result.rows_quarantined += b.rows_quarantined
        failed = [b for b in result.batches if b.status == "failed"]
        excess = [b for b in result.batches if b.excess]
        committed = [b for b in result.batches if b.status == "committed"]
        if result.status == "interrupted":
            pass
        elif result.error is not None:
            result.status = "partial" if committed else "failed"
        elif failed:
            result.status = "partial" if committed else "failed"
            result.error = "; ".join(f"{b.origin}: {b.error}" for b in failed[:5])
            if len(failed) > 5:
                result.error += f" (and {len(failed) - 5} more)"
        elif excess:
            result.status = "failed_checks"
            result.error = "; ".join(str(b.excess) for b in excess[:3])
            if len(excess) > 3:
                result.error += f" (and {len(excess) - 3} more batches)"
        else:
            result.status = "succeeded"
        last_batch = committed[-1].batch_id if committed else None
        with meta.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    finished_at=utcnow(),
                    status=result.status,
                    batch_id=last_batch,
                    rows_read=result.rows_read,
                    rows_committed=result.rows_committed,
                    rows_quarantined=result.rows_quarantined,
                    version=result.version,
                    cursor_after=result.cursor_after,
                    error=result.error,
                    details={"batches": [b.to_dict() for b in result.batches], "seconds": result.seconds},
                )
            )
    if fatal is not None:
        raise fatal
    return result


@dataclass
class _DatasetState:
    """What the run knows of the dataset: its columns and the keys it holds (grows with each commit)."""

    columns: list[str]
    keys: pl.DataFrame | None
    key_cols: list[str]

    @classmethod
    def load(cls, store: Store, spec: IngestSpec) -> _DatasetState:
        key_cols = list(dict.fromkeys([*spec.key_columns, *(c for c, r in spec.columns.items() if r.unique)]))
        if not store.exists(spec.dataset):
            return cls([], None, key_cols)
        columns = store.info(spec.dataset).columns
        present = [c for c in key_cols if c in columns]
        keys = store.scan(spec.dataset).select(present).collect() if present else None
        return cls(columns, keys, key_cols)


def _one_batch(
    batch: Batch,
    spec: IngestSpec,
    store: Store,
    meta: Metadata,
    source_name: str,
    run_id: int,
    state: _DatasetState,
    tracker: SchemaTracker,
    progress: ProgressFn | None,
    mode: str = "append",
) -> BatchOutcome:
    if batch.skipped:
        return BatchOutcome(origin=batch.origin, status="skipped")
    batch_id = new_batch_id()
    outcome = BatchOutcome(origin=batch.origin, status="failed", batch_id=batch_id)
    if batch.error is not None:
        outcome.error = batch.error
        log.warning("%s: %s", batch.origin, batch.error)
        return outcome
    staging = _Staging(store, spec.dataset, mode)
    stats = _Stats(spec)
    report: QualityReport | None = None
    rejected: list[pl.DataFrame] = []
    # a key already in the dataset is a duplicate when appending; replacing or merging, it is the
    # same row again (a full load) or its new version
    keys = state.keys if mode == "append" else None
    try:
        chunk: pl.DataFrame | None = batch.frame
        chunks = iter(batch.chunks) if batch.chunks is not None else iter(())
        if batch.chunks is not None:  # the batch no longer holds its first chunk once it is checked
            batch.frame = batch.frame.clear()
        while chunk is not None:
            if chunk.width == 0 and report is None:  # nothing parsed (only failures, or an empty page)
                report = QualityReport(dataset=spec.dataset, batch_id=batch_id, origins=[batch.origin])
            elif chunk.height or report is None:
                chunk_spec, inferred = tracker.prepare(chunk, state.columns)
                result = check(
                    chunk,
                    chunk_spec,
                    existing_keys=keys,
                    known_columns=state.columns,
                    origin=batch.origin,
                    batch_id=batch_id,
                    stats=False,
                    inferred=inferred,
                )
                stats.add(result.clean)  # column statistics, computed beside the next steps
                report = result.report if report is None else report.merge(result.report)
                outcome.rows_read += chunk.height
                if result.clean.height or staging.empty:
                    staging.add(result.clean)
                if result.rejected.height:
                    rejected.append(result.rejected)
                present = [c for c in state.key_cols if c in result.clean.columns]
                if present and result.clean.height:
                    new_keys = result.clean.select(present)
                    keys = new_keys if keys is None else pl.concat([keys, new_keys], how="diagonal_relaxed")
                if progress is not None:
                    progress(batch.origin, outcome.rows_read)
            chunk = None  # not held while the next one is read
            chunk = next(chunks, None)
        assert report is not None
        if batch.failures:
            rejected.append(failures_frame(batch.failures, batch_id=batch_id))
            report.rows_unparseable = len(batch.failures)
            outcome.rows_read += len(batch.failures)
        bad = report.rows_quarantined + report.rows_unparseable
        total = report.rows_in + report.rows_unparseable
        if total and bad / total > spec.max_quarantine_ratio:
            excess = (
                f"source {source_name!r}: {bad:,} of {total:,} rows quarantined ({bad / total:.1%}), "
                f"more than max_quarantine_ratio {spec.max_quarantine_ratio:.1%}; "
                f"top rules: {_top_failures(report)}"
            )
            if spec.on_excess == "fail":
                outcome.excess = excess + "; nothing of this batch was committed"
                raise _TooManyRejected(
                    outcome.excess,
                    hint="fix the data or the rules ('headrace datasets report' shows them), or set "
                    "max_quarantine_ratio / on_excess: commit on the source",
                )
            outcome.excess = excess + "; committed anyway (on_excess: commit)"
            log.warning("%s: %s", batch.origin, outcome.excess)
        extra: dict[str, Any] = {"origin": batch.origin, "run_id": run_id, **batch.extra}
        if batch.fingerprint:
            extra["fingerprint"] = batch.fingerprint
        if batch.cursor is not None:
            extra["cursor"] = batch.cursor
        stats.start()  # beside the commits
        stamp = BatchMeta(source_name, batch_id, {**extra, "write": mode})
        quarantine = store.quarantine_name(spec.dataset)
        # the quarantine first: the data commit after it is the batch's commit point
        has_data = bool(staging.columns)
        if rejected:
            qframe = pl.concat(rejected, how="diagonal_relaxed")
            qstamp = stamp if has_data else BatchMeta(source_name, batch_id, {**stamp.extra, "alone": True})
            if mode == "replace":
                store.overwrite(quarantine, qframe, qstamp)
            else:
                store.append(quarantine, qframe, qstamp)
            outcome.rows_quarantined = qframe.height
            _fault("quarantine")
        elif mode == "replace" and store.exists(quarantine):
            store.clear(quarantine, stamp)  # this full load rejected nothing: nothing is held back
        if has_data:
            if mode == "merge":
                outcome.version = store.merge(
                    spec.dataset, staging.result(), spec.key_columns, stamp, deleted=spec.deleted
                )
            else:
                outcome.version = staging.commit(stamp)
            outcome.rows_committed = staging.rows
            _fault("commit")
        state.columns = list(dict.fromkeys([*state.columns, *staging.columns]))
        state.keys = keys
        report.columns = stats.columns()
        _record(meta, batch, spec, source_name, run_id, batch_id, outcome, report)
        _fault("bookkeeping")
        tracker.commit()
        outcome.status = "committed"
        outcome.report = report
        log.info(
            "%s: %d rows committed to %s (version %s), %d quarantined",
            batch.origin,
            outcome.rows_committed,
            spec.dataset,
            outcome.version,
            outcome.rows_quarantined,
        )
    except (DataError, NotFound, UsageError, OSError, pl.exceptions.PolarsError, pa.ArrowException) as exc:
        outcome.error = exc.one_line() if isinstance(exc, HeadraceError) else _one_line(exc)
        outcome.report = report
        if isinstance(exc, _TooManyRejected):
            outcome.status = "failed_checks"
        if report is not None:
            outcome.rows_quarantined = 0
            report.columns = stats.columns()
            _store_report(meta, spec, run_id, batch_id, report, status=outcome.status, error=outcome.error)
        log.warning("%s: %s", batch.origin, outcome.error)
    finally:
        staging.close()
        stats.close()
    return outcome


def _record(
    meta: Metadata,
    batch: Batch,
    spec: IngestSpec,
    source_name: str,
    run_id: int,
    batch_id: str,
    outcome: BatchOutcome,
    report: QualityReport,
) -> None:
    files = SCHEMA.tables["ingested_files"]
    cursors = SCHEMA.tables["cursors"]
    reports = SCHEMA.tables["quality_reports"]
    now = utcnow()
    with meta.begin() as conn:
        if batch.fingerprint:
            conn.execute(delete(files).where(files.c.fingerprint == batch.fingerprint))
            conn.execute(
                insert(files).values(
                    fingerprint=batch.fingerprint,
                    source=source_name,
                    path=batch.origin,
                    size=_size(batch.origin),
                    batch_id=batch_id,
                    version=outcome.version,
                    loaded_at=now,
                )
            )
        if batch.cursor is not None:
            conn.execute(delete(cursors).where(cursors.c.source == source_name))
            conn.execute(insert(cursors).values(source=source_name, value=batch.cursor, updated_at=now))
        doc = {**report.to_dict(), "status": "committed", "version": outcome.version, "origin": batch.origin}
        conn.execute(
            insert(reports).values(
                run_id=run_id, dataset=spec.dataset, batch_id=batch_id, created_at=now, report=doc
            )
        )


def _store_report(
    meta: Metadata,
    spec: IngestSpec,
    run_id: int,
    batch_id: str,
    report: QualityReport,
    *,
    status: str,
    error: str,
) -> None:
    reports = SCHEMA.tables["quality_reports"]
    with meta.begin() as conn:
        conn.execute(
            insert(reports).values(
                run_id=run_id,
                dataset=spec.dataset,
                batch_id=batch_id,
                created_at=utcnow(),
                report={**report.to_dict(), "status": status, "error": error},
            )
        )


class _Stats:
    """The column statistics of a batch's clean chunks, each computed in a worker thread while the
    runner goes on, then merged as ``QualityReport.merge`` does. The last chunk's wait until
    :meth:`start` (called once the clean rows are handed to the store), so they run beside the Delta
    write instead of competing with the conversion before it; earlier chunks start when the next one
    arrives, so at most one chunk is held for them."""

    def __init__(self, spec: IngestSpec) -> None:
        self.spec = spec
        self.pool: ThreadPoolExecutor | None = None
        self.parts: list[tuple[int, Future[dict[str, ColumnStats]]]] = []
        self.waiting: pl.DataFrame | None = None

    def add(self, clean: pl.DataFrame) -> None:
        self.start()
        self.waiting = clean

    def start(self) -> None:
        if self.waiting is None:
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headrace-stats")
        clean, self.waiting = self.waiting, None
        self.parts.append((clean.height, self.pool.submit(clean_stats, clean, self.spec)))
        pending = [future for _, future in self.parts if not future.done()]
        if len(pending) > 2:  # bounded memory: never more than a few chunks held for their statistics
            pending[0].result()

    def columns(self) -> dict[str, ColumnStats]:
        self.start()
        merged: QualityReport | None = None
        for rows, future in self.parts:
            part = QualityReport(dataset=self.spec.dataset, rows_clean=rows, columns=future.result())
            merged = part if merged is None else merged.merge(part)
        return {} if merged is None else merged.columns

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        self.parts = []
        self.waiting = None


class _Staging:
    """The clean chunks of one batch until its commit, in bounded memory.

    Appending or replacing on a local store, each chunk is written as a Parquet file into the
    dataset's folder (:meth:`Store.stage`, invisible until committed) by a writer thread while the
    next chunk is read and checked, and :meth:`commit` commits all the files in one commit: memory
    holds a chunk or two, however large the file, and the Parquet encoding of a chunk overlaps the
    work on the next. Otherwise (merging, object storage, a column type the fast path does not write,
    chunks whose columns or types differ) the first chunk stays in memory and later ones are spilled
    to memory-mapped Arrow files, committed through the store's writer."""

    def __init__(self, store: Store, dataset: str, mode: str) -> None:
        self.store, self.dataset, self.mode = store, dataset, mode
        self.direct = mode in ("append", "replace")
        self.pool: ThreadPoolExecutor | None = None
        self.staged: list[Future[StagedFile | pl.DataFrame]] = []
        self.schema: pl.Schema | None = None
        self.frames: list[pl.DataFrame] = []
        self.files: list[Path] = []
        self.folder: Path | None = None
        self.rows = 0
        self.columns: list[str] = []
        self.committed = False

    @property
    def empty(self) -> bool:
        return not self.staged and not self.frames and not self.files

    def add(self, frame: pl.DataFrame) -> None:
        self.rows += frame.height
        self.columns = list(dict.fromkeys([*self.columns, *frame.columns]))
        if self.direct and (frame.width == 0 or (self.schema is not None and frame.schema != self.schema)):
            self._unstage()
        if self.schema is None:
            self.schema = frame.schema
        if self.direct:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="headrace-stage")
            self.staged.append(self.pool.submit(self._stage, frame))
            pending = [f for f in self.staged if not f.done()]
            if len(pending) > 1:  # bounded memory: one chunk written while the next is checked
                pending[0].result()
            return
        if not self.frames and not self.files:
            self.frames.append(frame)
            return
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="headrace-stage-"))
            for kept in self.frames:
                self._spill(kept)
            self.frames = []
        self._spill(frame)

    def _stage(self, frame: pl.DataFrame) -> StagedFile | pl.DataFrame:
        staged = self.store.stage(self.dataset, frame)
        return frame if staged is None else staged  # the frame itself when the fast path cannot take it

    def _unstage(self) -> None:
        """From here on, the spilled way: the chunks staged so far are read back and spilled."""
        self.direct = False
        staged, self.staged = self.staged, []
        for future in staged:
            item = future.result()
            if isinstance(item, StagedFile):
                folder = Path(self.store.uri(self.dataset).removeprefix("file://"))
                frame = pl.read_parquet(folder / item.name)
                self.store.discard_staged(self.dataset, [item])
            else:
                frame = item
            self.direct = False
            self.rows -= frame.height  # counted again by add
            self.add(frame)

    def _spill(self, frame: pl.DataFrame) -> None:
        assert self.folder is not None
        path = self.folder / f"{len(self.files):06d}.arrow"
        frame.write_ipc(path, compression="uncompressed", compat_level=pl.CompatLevel.oldest())
        self.files.append(path)

    def commit(self, stamp: BatchMeta) -> int:
        """The batch's clean rows committed to the dataset in one commit (its commit point); the
        new version."""
        if self.direct:
            items = [future.result() for future in self.staged]
            files = [item for item in items if isinstance(item, StagedFile)]
            if len(files) == len(items):
                mode: Literal["append", "overwrite"] = "overwrite" if self.mode == "replace" else "append"
                version = self.store.commit_staged(self.dataset, files, stamp, mode)
                self.committed = True
                return version
            self._unstage()
        clean = self._result()
        if self.mode == "replace":
            return self.store.overwrite(self.dataset, clean, stamp)
        return self.store.append(self.dataset, clean, stamp)

    def result(self) -> pl.DataFrame | pa.Table:
        """The batch's clean rows (for a merge): the frame itself when it stayed in memory, else the
        spilled files memory-mapped as one Arrow table."""
        if self.direct and self.staged:
            self._unstage()
        return self._result()

    def _result(self) -> pl.DataFrame | pa.Table:
        if not self.frames and not self.files:
            return pa.table({})
        if self.frames:
            return self.frames[0]
        tables = [pa.ipc.open_file(pa.memory_map(str(p))).read_all() for p in self.files]
        try:
            return pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid):  # a column typed one way, then another
            return pa.concat_tables(_text_where_types_clash(tables), promote_options="permissive")

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
        if not self.committed:
            done = [f.result() for f in self.staged if f.done() and f.exception() is None]
            files = [item for item in done if isinstance(item, StagedFile)]
            if files:
                self.store.discard_staged(self.dataset, files)
        self.staged = []
        self.frames = []
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _text_where_types_clash(tables: list[pa.Table]) -> list[pa.Table]:
    """The chunks of one file with every column whose types cannot be merged (numbers in the first
    chunks, text in a later one, as JSON inference gives) turned into text, as the whole-file reader
    does when one record disagrees; nested values become JSON text."""
    kinds: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for f in table.schema:
            if not pa.types.is_null(f.type):
                kinds.setdefault(f.name, set()).add(f.type)
    clash = set()
    for name, types in kinds.items():
        try:
            pa.unify_schemas([pa.schema([pa.field(name, t)]) for t in types], promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            clash.add(name)
    out = []
    for table in tables:
        names = clash & set(table.column_names)
        if names:
            frame: pl.DataFrame = pl.from_arrow(table)  # type: ignore[assignment]
            frame = frame.with_columns(text_of(c, frame.schema[c]).alias(c) for c in names)
            table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
        out.append(table)
    return out


def _fault(step: str) -> None:
    """Fault injection for the crash tests: ``HEADRACE_FAULT_AT=STEP`` (read, quarantine, commit,
    bookkeeping) kills this process with SIGKILL right after that step of a batch, as a power cut
    would; the next run must leave every source row in the dataset exactly once."""
    if os.environ.get("HEADRACE_FAULT_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)


class _WholeRun:
    """A source whose every batch of one run is one batch (``write: replace``): one commit for the
    whole full load. The pages are its chunks; failures and the last cursor are gathered as they pass."""

    def __init__(self, inner: Source, name: str) -> None:
        self.inner = inner
        self.name = name

    def read(self) -> Any:
        batches = iter(self.inner.read())
        first = next(batches, None)
        if first is None:
            return
        if first.skipped or first.error is not None:
            yield first
            return
        whole = Batch(
            frame=first.frame,
            origin=f"{self.name} (full load)",
            cursor=first.cursor,
            failures=list(first.failures),
            fingerprint=None,
        )

        def chunks() -> Any:
            yield from first.chunks or ()
            for batch in batches:
                if batch.error is not None:
                    raise DataError(
                        f"{batch.origin}: {batch.error}", hint="nothing of this full load was committed"
                    )
                whole.failures.extend(batch.failures)
                if batch.cursor is not None:
                    whole.cursor = batch.cursor
                yield batch.frame
                yield from batch.chunks or ()

        whole.chunks = chunks()
        yield whole


class _TooManyRejected(DataError):
    """A batch quarantined more than ``max_quarantine_ratio`` of its rows."""


def recover(
    store: Store, dataset: str, source_name: str, commits: list[VersionInfo] | None = None
) -> str | None:
    """Make the dataset's log the truth for ``source_name`` before a run: quarantined rows of batches
    that have no commit in the dataset (a run died between the two commits) are deleted, and the
    cursor of the source's newest commit is returned (None without one)."""
    mine = source_commits(store, dataset, source_name) if commits is None else commits
    with_cursor = [v.extra["cursor"] for v in mine if v.extra.get("cursor") is not None]
    quarantine = store.quarantine_name(dataset)
    if store.exists(quarantine):
        committed = {v.batch_id for v in mine}
        held = {
            v.batch_id
            for v in store.versions(quarantine)
            if v.source == source_name and v.batch_id and "alone" not in v.extra and "replay" not in v.extra
        }
        orphans = sorted(str(b) for b in held - committed)
        if orphans:
            found = store.scan(quarantine).filter(pl.col("batch_id").is_in(orphans)).select(pl.len())
            if int(found.collect().item()):
                store.delete_rows(quarantine, "batch_id", orphans, BatchMeta(source_name, new_batch_id()))
                log.warning(
                    "source %s: removed the quarantined rows of %d batch(es) never committed",
                    source_name,
                    len(orphans),
                )
    return str(with_cursor[-1]) if with_cursor else None


def _owner() -> dict[str, Any]:
    """Who runs an ingestion (host and process), so a later run can tell one that was killed."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def close_abandoned_runs(meta: Metadata, source_name: str) -> int:
    """Record as ``interrupted`` the runs of ``source_name`` left ``running`` by a process of this host
    that is gone (killed outright); runs of other hosts, or of live processes, are left alone."""
    runs = SCHEMA.tables["ingestion_runs"]
    host = socket.gethostname()
    with meta.begin() as conn:
        rows = conn.execute(
            select(runs.c.id, runs.c.details).where(
                (runs.c.source == source_name) & (runs.c.status == "running")
            )
        ).all()
        dead = [
            run_id
            for run_id, details in rows
            if isinstance(details, dict)
            and details.get("host") == host
            and isinstance(details.get("pid"), int)
            and not process_alive(details["pid"])
        ]
        for run_id in dead:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    status="interrupted",
                    finished_at=utcnow(),
                    error="interrupted: the process running it ended without recording its end (killed)",
                )
            )
    return len(dead)


def _top_failures(report: QualityReport, n: int = 3) -> str:
    top = sorted(report.failures.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{rule} ({count})" for rule, count in top) or "unparseable records"


def _size(origin: str) -> int | None:
    try:
        return Path(origin).stat().st_size
    except (OSError, ValueError):
        return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
