"""Rebuild a dataset from its sources with the current rules (``headrace ingest --reload``), and drop one
(``headrace datasets drop``).

A reload reads every batch source that feeds the dataset from its beginning into a staging dataset
(``<dataset>__reload``), with types inferred afresh where ``columns:`` declares none; only when every
source succeeded does the dataset take the staging dataset's rows and schema, in one new Delta version
(time travel keeps the old one), and its quarantine likewise. A reload that fails leaves the dataset as
it was. The staging dataset is removed either way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, update

from ..config.sources import IngestSpec
from ..errors import UsageError
from ..metadata import SCHEMA, Metadata
from ..store import BatchMeta, Store, new_batch_id
from .runner import ProgressFn, RunResult, ingest, open_source
from .schema import drop_schema, load_schema, save_schema

__all__ = ["drop_dataset", "reload_dataset"]

log = logging.getLogger("headrace.ingest.reload")

STAGING_SUFFIX = "__reload"


def reload_dataset(
    dataset: str,
    sources: Mapping[str, IngestSpec],
    *,
    store: Store,
    meta: Metadata,
    progress: Any = None,
) -> list[RunResult]:
    """Reload ``dataset`` from ``sources`` (every source that feeds it); see the module docstring.

    ``progress(source_name) -> ProgressFn | None`` gives each run its progress callback."""
    staging = dataset + STAGING_SUFFIX
    _remove(store, meta, staging)  # a staging dataset left by a reload that crashed
    results: list[RunResult] = []
    try:
        for name, spec in sources.items():
            staged = spec.model_copy(update={"dataset": staging})
            on_progress: ProgressFn | None = progress(name) if progress is not None else None
            result = ingest(
                open_source(name, staged),
                staged,
                store=store,
                meta=meta,
                source_name=name,
                force=True,
                from_start=True,
                progress=on_progress,
            )
            result.dataset = dataset
            results.append(result)
        _rename_runs(meta, [r.run_id for r in results], dataset)
        if not all(r.ok for r in results):
            for r in results:
                if r.ok:
                    r.status = "failed"
                    r.error = "not reloaded: another source of the dataset failed"
                r.error = f"{r.error}; the reload of {dataset!r} was abandoned and it is unchanged"
            return results
        batch = BatchMeta("reload", new_batch_id(), {"reload": list(sources)})
        quarantine, staged_q = store.quarantine_name(dataset), store.quarantine_name(staging)
        if store.exists(staging):
            version = store.replace(dataset, staging, batch)
        elif store.exists(dataset):
            version = store.clear(dataset, batch)
        else:
            version = None
        if store.exists(staged_q):
            store.replace(quarantine, staged_q, batch)
        elif store.exists(quarantine):
            store.clear(quarantine, batch)
        pinned = load_schema(meta, staging)
        if pinned is not None:
            save_schema(meta, dataset, pinned)
        for r in results:
            r.version = version
        log.info("dataset %s reloaded from %s (version %s)", dataset, ", ".join(sources), version)
        return results
    finally:
        _remove(store, meta, staging)


def drop_dataset(dataset: str, *, store: Store, meta: Metadata, sources: list[str]) -> bool:
    """Remove ``dataset``, its quarantine and pinned types, and what ``sources`` (those that feed it)
    remember of what they loaded, so the next ``headrace ingest`` loads everything again. Models and
    their registry are not touched. True if the dataset existed."""
    if dataset.endswith(STAGING_SUFFIX) or dataset.endswith("__quarantine"):
        raise UsageError(f"{dataset!r} is part of another dataset", hint="name the dataset itself")
    existed = _remove(store, meta, dataset)
    files, cursors = SCHEMA.tables["ingested_files"], SCHEMA.tables["cursors"]
    with meta.begin() as conn:
        conn.execute(delete(files).where(files.c.source.in_(sources)))
        conn.execute(delete(cursors).where(cursors.c.source.in_(sources)))
    return existed


def _remove(store: Store, meta: Metadata, dataset: str) -> bool:
    found = store.drop(dataset)
    found = store.drop(store.quarantine_name(dataset)) or found
    drop_schema(meta, dataset)
    return found


def _rename_runs(meta: Metadata, run_ids: list[int], dataset: str) -> None:
    """The runs and quality reports of a reload are the dataset's, not the staging dataset's."""
    runs, reports = SCHEMA.tables["ingestion_runs"], SCHEMA.tables["quality_reports"]
    with meta.begin() as conn:
        conn.execute(update(runs).where(runs.c.id.in_(run_ids)).values(dataset=dataset))
        conn.execute(update(reports).where(reports.c.run_id.in_(run_ids)).values(dataset=dataset))
