"""What every ingestion source produces, and the protocol it follows.

A source reads raw records and yields ``Batch`` objects; the same validation, cleansing, quarantine
and commit path (``headrace.ingest.runner``) then handles every kind of source alike. Streaming
sources also ``ack`` a batch once it is committed, and only then.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import polars as pl

__all__ = ["POSITION_COLUMN", "Batch", "Deduplicating", "Resumable", "Source", "StreamingSource"]

POSITION_COLUMN = "_hr_position"
"""Optional column in ``Batch.frame``: the line or record number of each row in its origin."""


@dataclass
class Batch:
    """Raw rows from one origin (a file, a query page, an HTTP page, a set of messages)."""

    frame: pl.DataFrame
    origin: str
    cursor: str | None = None  # the high-water mark once this batch is committed (incremental)
    failures: list[dict[str, Any]] = field(
        default_factory=list
    )  # unparseable records: origin, position, raw, reason
    token: Any = None  # what a streaming source needs to ack this batch
    # More rows of the same batch, read lazily so memory stays bounded (a large file in chunks). The
    # runner checks each chunk and still commits the whole batch at once, or nothing of it.
    chunks: Iterator[pl.DataFrame] | None = None
    fingerprint: str | None = None  # identity of the input (a file's content) for idempotent reruns
    error: str | None = None  # the origin could not be read at all: recorded as a failed batch
    skipped: bool = False  # already loaded (same fingerprint): recorded, nothing read
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in the batch's commit (file: path, size)


@runtime_checkable
class Source(Protocol):
    name: str

    def read(self) -> Iterator[Batch]: ...


@runtime_checkable
class StreamingSource(Source, Protocol):
    def ack(self, batch: Batch) -> None: ...


@runtime_checkable
class Resumable(Protocol):
    """A source that reads from where the last committed batch ended (SQL, HTTP): before ``read``,
    the runner calls ``resume`` with the cursor stored after the last commit (None the first time)."""

    def resume(self, cursor: str | None) -> None: ...


@runtime_checkable
class Deduplicating(Protocol):
    """A source whose inputs have fingerprints (files): before ``read``, the runner passes the
    fingerprints already loaded; such inputs are yielded as ``Batch(skipped=True)``."""

    def skip_loaded(self, loaded: Collection[str]) -> None: ...
