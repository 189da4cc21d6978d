"""What every ingestion source produces, and the protocol it follows.

A source reads raw records and yields ``Batch`` objects; the same validation, cleansing, quarantine
and commit path (``headrace.ingest.runner``) then handles every kind of source alike. Streaming
sources also ``ack`` a batch once it is committed, and only then.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import polars as pl

__all__ = ["POSITION_COLUMN", "Batch", "Source", "StreamingSource"]

POSITION_COLUMN = "_hr_position"
"""Optional column in ``Batch.frame``: the line or record number of each row in its origin."""


@dataclass
class Batch:
    """Raw rows from one origin (a file, a query page, an HTTP page, a set of messages)."""

    frame: pl.DataFrame
    origin: str
    cursor: str | None = None  # the high-water mark once this batch is committed (incremental)
    failures: list[dict[str, Any]] = field(default_factory=list)  # unparseable records: origin, position, raw, reason
    token: Any = None  # what a streaming source needs to ack this batch


@runtime_checkable
class Source(Protocol):
    name: str

    def read(self) -> Iterator[Batch]: ...


@runtime_checkable
class StreamingSource(Source, Protocol):
    def ack(self, batch: Batch) -> None: ...
