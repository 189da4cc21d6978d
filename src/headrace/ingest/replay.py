"""Replay a dataset's quarantine through the current rules (after the rules, or the data, were fixed).

Rows that now pass are committed to the dataset; rows that still fail go back to the quarantine with
their new reasons; records that could not be parsed at all (``raw`` set) stay as they were. The
dataset is committed first and the quarantine rewritten after, so a crash in between can duplicate a
row in the quarantine but never lose one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl
from deltalake import CommitProperties, write_deltalake

from ..config.sources import IngestSpec
from ..metadata import Metadata
from ..store import Store, new_batch_id
from .base import POSITION_COLUMN, Batch
from .runner import RunResult, ingest
from .validate import BATCH_ID, ORIGIN, POSITION, RAW, original_columns

__all__ = ["ReplaySource", "replay_quarantine"]


@dataclass
class ReplaySource:
    """A source over quarantined rows: one batch per origin, positions as they were recorded."""

    name: str
    rows: pl.DataFrame

    def read(self) -> Iterator[Batch]:
        for (origin,), group in self.rows.group_by([ORIGIN], maintain_order=True):
            frame = original_columns(group).with_columns(group[POSITION].alias(POSITION_COLUMN))
            yield Batch(frame=frame, origin=f"replay:{origin}")


def replay_quarantine(
    spec: IngestSpec, *, store: Store, meta: Metadata, source_name: str
) -> tuple[RunResult | None, int]:
    """Re-check every parsed row of ``<dataset>__quarantine``; return the run and the rows still held
    back as unparseable records (which cannot be replayed)."""
    qname = store.quarantine_name(spec.dataset)
    if not store.exists(qname):
        return None, 0
    quarantine = store.read(qname)
    unparsed = quarantine.filter(pl.col(RAW).is_not_null())
    parsed = quarantine.filter(pl.col(RAW).is_null())
    if parsed.is_empty():
        return None, unparsed.height
    data_cols = [c for c in parsed.columns if c not in (RAW,)]
    parsed = parsed.select(data_cols).with_columns(pl.col(ORIGIN).str.strip_prefix("replay:"))
    # rows held back before: any share of them may still fail (the quarantine ratio is for new data)
    spec = spec.model_copy(update={"max_quarantine_ratio": 1.0})
    result = ingest(ReplaySource(source_name, parsed), spec, store=store, meta=meta, source_name=source_name)
    new_batches = {b.batch_id for b in result.batches if b.status == "committed"}
    failed = [b for b in result.batches if b.status == "failed"]
    if failed:  # some origins could not be replayed: leave the quarantine as it was for them
        return result, unparsed.height
    after = store.read(qname)
    keep = after.filter(pl.col(RAW).is_not_null() | pl.col(BATCH_ID).is_in(list(new_batches)))
    keep = keep.with_columns(pl.col(ORIGIN).str.strip_prefix("replay:"))
    payload = {
        "batch_id": new_batch_id(),
        "source": source_name,
        "rows": keep.height,
        "extra": {"replay": True},
    }
    write_deltalake(
        store.uri(qname),
        keep.to_arrow(compat_level=pl.CompatLevel.oldest()),
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=store.storage_options or None,
        commit_properties=CommitProperties(custom_metadata={"headrace": json.dumps(payload)}),
    )
    return result, unparsed.height
