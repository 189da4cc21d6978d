"""An image folder (one sub-folder per class) recorded as a manifest dataset, bad files quarantined.

The manifest has one row per usable image: ``path`` (relative to the folder), ``label``, ``split``
(train or val), ``size`` (bytes), ``sha256``, ``width``, ``height``, ``format`` and ``manifest`` (the
id of the scan that listed it). Files that fail the checks of :class:`ImageCheckSpec` go to
``<dataset>__quarantine`` with the same columns and a ``reason``.

A dataset is appended to, never rewritten, so each scan's rows carry its id, and a version of the
dataset means the rows of the scan committed at that version. A scan whose listing equals the
latest version's is not committed again: the version, and so the lineage of a model trained on it,
stays the same while the files do.

This module needs only Pillow (no torch): scanning is useful without training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from PIL import Image

from ..config.vision import ImageCheckSpec
from ..errors import NotFound
from ..store import BatchMeta, Store, new_batch_id
from .folder import check_image, grey_entropy, scan_rows

__all__ = [
    "MANIFEST_COLUMNS",
    "Scan",
    "check_image",
    "grey_entropy",
    "manifest_at",
    "record_scan",
    "scan_folder",
]

log = logging.getLogger("headrace.vision.manifest")

MANIFEST_COLUMNS = ["path", "label", "split", "size", "sha256", "width", "height", "format", "manifest"]
_SCHEMA: dict[str, Any] = {
    "path": pl.String,
    "label": pl.String,
    "split": pl.String,
    "size": pl.Int64,
    "sha256": pl.String,
    "width": pl.Int64,
    "height": pl.Int64,
    "format": pl.String,
    "manifest": pl.String,
}


@dataclass
class Scan:
    """What a scan found: the usable images, the quarantined files, and (optionally) decoded pixels."""

    root: Path
    manifest: pl.DataFrame
    quarantine: pl.DataFrame
    layout: str  # "train/val" | "split"
    scan_id: str
    pixels: dict[str, Any] = field(default_factory=dict)  # path -> decoded image (keep=...)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.manifest["label"].to_list()))


def scan_folder(
    root: str | Path,
    checks: ImageCheckSpec | None = None,
    *,
    val_split: float = 0.2,
    seed: int = 42,
    draft: int | None = None,
    convert: Callable[[Image.Image], Any] | None = None,
    on_file: Callable[[int, int], None] | None = None,
) -> Scan:
    """List, hash and check every file under ``root``'s class folders (see :func:`.folder.scan_rows`)."""
    found = scan_rows(
        root,
        checks or ImageCheckSpec(),
        val_split=val_split,
        seed=seed,
        draft=draft,
        convert=convert,
        on_file=on_file,
    )
    scan_id = new_batch_id()
    for row in found.good + found.bad:
        row["manifest"] = scan_id
    quarantine_schema = {**_SCHEMA, "reason": pl.String}
    return Scan(
        root=found.root,
        manifest=pl.DataFrame(found.good, schema=_SCHEMA),
        quarantine=pl.DataFrame(found.bad, schema=quarantine_schema),
        layout=found.layout,
        scan_id=scan_id,
        pixels=found.pixels,
    )


def _listing(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    return sorted(frame.select("path", "label", "split", "sha256").iter_rows())


def manifest_at(store: Store, dataset: str, version: int | None = None) -> tuple[int, pl.DataFrame]:
    """The manifest committed at ``version`` (the latest when None): (version, its rows)."""
    history = [v for v in store.versions(dataset) if v.batch_id is not None]
    if version is None:
        version = store.version(dataset)
    committed = [v for v in history if v.version <= version]
    if not committed:
        raise NotFound(f"dataset {dataset!r} has no manifest at version {version}")
    scan_id = committed[-1].batch_id
    frame = store.read(dataset, version).filter(pl.col("manifest") == scan_id)
    return version, frame.sort("path")


def record_scan(store: Store, dataset: str, scan: Scan, *, source: str) -> tuple[int, bool]:
    """Commit the scan as a new manifest version unless it equals the latest: (version, committed)."""
    if store.exists(dataset):
        version, latest = manifest_at(store, dataset)
        if _listing(latest) == _listing(scan.manifest):
            return version, False
    extra = {
        "kind": "image_manifest",
        "root": str(scan.root),
        "layout": scan.layout,
        "images": scan.manifest.height,
        "quarantined": scan.quarantine.height,
        "classes": scan.classes,
    }
    meta = BatchMeta(source=source, batch_id=scan.scan_id, extra=extra)
    if scan.quarantine.height:
        store.append(Store.quarantine_name(dataset), scan.quarantine, meta)
    version = store.append(dataset, scan.manifest, meta)
    return version, True
