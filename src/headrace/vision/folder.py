"""Reading a folder of images, one sub-folder per class, and checking every file (Pillow only).

The checks (:class:`headrace.config.vision.ImageCheckSpec` documents them and their defaults): the
file must decode completely; its format must be allowed (GIF is not, by default: in a photo set a GIF
is a placeholder, an icon or an animation); it must not be animated; its shorter side must reach
``min_side``; it must not be blank (grey-level entropy below ``min_entropy``); and its bytes must not
repeat an earlier file's (of two copies, the one in the validation split is refused, as leakage).

:func:`carve_selection` picks the selection split out of the training images: the images every
choice of the training (the best epoch) is made on, so that the validation images take part in none.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, UnidentifiedImageError

from ..errors import DataError

__all__ = [
    "Checks",
    "FolderScan",
    "carve_selection",
    "check_image",
    "grey_entropy",
    "list_folder",
    "scan_rows",
    "split_record",
]

log = logging.getLogger("headrace.vision.folder")

_SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val"}


class Checks(Protocol):
    @property
    def formats(self) -> Sequence[str]: ...
    @property
    def min_side(self) -> int: ...
    @property
    def min_entropy(self) -> float: ...


@dataclass
class FolderScan:
    """Rows for usable images and refused files (with ``reason``), and kept decoded pixels."""

    root: Path
    layout: str  # "train/val" | "split"
    good: list[dict[str, Any]]
    bad: list[dict[str, Any]]
    pixels: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return sorted({r["label"] for r in self.good})


def grey_entropy(img: Image.Image) -> float:
    """Shannon entropy (bits) of the grey-level histogram; 0 for a flat image, 8 at most."""
    grey = img.convert("L")
    if max(grey.size) > 256:
        grey.thumbnail((256, 256))
    hist = grey.histogram()
    total = float(sum(hist))
    return -sum((n / total) * math.log2(n / total) for n in hist if n)


def check_image(
    data: bytes, checks: Checks, *, draft: int | None = None
) -> tuple[dict[str, Any], str | None, Image.Image | None]:
    """Decode ``data`` and apply the checks: (facts, the reason it is refused or None, the image).

    With ``draft``, a JPEG is decoded at reduced scale (shorter side still >= ``draft``); that still
    reads the whole stream, so a truncated file fails here as it would at full size.
    """
    facts: dict[str, Any] = {"width": None, "height": None, "format": None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            facts.update(width=img.size[0], height=img.size[1], format=img.format)
            frames = int(getattr(img, "n_frames", 1) or 1)
            if draft is not None and img.format == "JPEG" and min(img.size) >= 2 * draft:
                scale = min(img.size) / draft
                img.draft("RGB", (math.ceil(img.size[0] / scale), math.ceil(img.size[1] / scale)))
            img.load()
    except UnidentifiedImageError:
        return facts, "undecodable: not an image format Pillow can read", None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return facts, "undecodable: too many pixels to decode safely (decompression bomb guard)", None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return facts, f"undecodable: {detail}", None
    fmt = str(img.format or "").upper()
    allowed = [f.upper() for f in checks.formats]
    if fmt not in allowed:
        return facts, f"format {fmt or 'unknown'} is not allowed (allowed: {', '.join(allowed)})", None
    if frames > 1:
        return facts, f"animated image ({frames} frames), not a photo", None
    width, height = facts["width"], facts["height"]
    if min(width, height) < checks.min_side:
        return facts, f"too small: {width}x{height} px, the shorter side is below {checks.min_side}", None
    entropy = grey_entropy(img)
    if entropy < checks.min_entropy:
        return facts, f"blank: grey-level entropy {entropy:.2f} bits is below {checks.min_entropy}", None
    return facts, None, img


def _layout(root: Path) -> tuple[str, list[tuple[str, Path]]]:
    """(layout, [(split or '', class folder)])."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist", hint="check image.path in headrace.yaml")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [p for p in subdirs if p.name.lower() in _SPLIT_NAMES]
    if not split_dirs:
        return "split", [("", c) for c in subdirs]
    if {_SPLIT_NAMES[p.name.lower()] for p in split_dirs} != {"train", "val"}:
        found = ", ".join(p.name for p in split_dirs)
        raise DataError(
            f"image folder {root} has {found}/ but needs both train/ and val/",
            hint="add the missing split folder, or put the class folders directly in the folder",
        )
    pairs = [
        (_SPLIT_NAMES[s.name.lower()], c)
        for s in split_dirs
        for c in sorted(s.iterdir())
        if c.is_dir() and not c.name.startswith(".")
    ]
    return "train/val", pairs


def list_folder(root: str | Path) -> tuple[str, list[tuple[str, str, Path]]]:
    """(layout, [(split or '', label, file)]) for every visible file under the class folders."""
    root = Path(root)
    layout, pairs = _layout(root)
    files = [
        (split, folder.name, f)
        for split, folder in pairs
        for f in sorted(folder.rglob("*"))
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(folder).parts)
    ]
    if not files:
        raise DataError(
            f"no image files under {root}",
            hint="put images in one sub-folder per class (train/<class>/ and val/<class>/, or <class>/)",
        )
    return layout, files


def _stratified_val(rows: list[dict[str, Any]], fraction: float, seed: int) -> None:
    """Split each class by a hash of (seed, content): stratified, and stable as files are added."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row)
    for members in by_label.values():
        members.sort(key=lambda r: hashlib.sha256(f"{seed}:{r['sha256']}".encode()).hexdigest())
        n_val = 0
        if len(members) > 1:
            n_val = min(max(round(len(members) * fraction), 1), len(members) - 1)
        for i, row in enumerate(members):
            row["split"] = "val" if i < n_val else "train"


def carve_selection(rows: Sequence[Mapping[str, Any]], fraction: float, seed: int) -> set[str]:
    """The paths of the selection split carved out of training ``rows`` (``path``, ``label``, ``sha256``).

    Stratified: ``round(fraction * n)`` of each class's n images, at least one where the class has
    two or more, never all of them (a class with one training image has none). Which ones is decided
    by a hash of (seed, content), salted differently from the validation split's, so the split is
    reproducible and an image keeps its side as files are added.
    """
    by_label: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_label.setdefault(str(row["label"]), []).append(row)
    chosen: set[str] = set()
    for members in by_label.values():
        if len(members) < 2:
            continue
        ranked = sorted(
            members,
            key=lambda r: (hashlib.sha256(f"{seed}:selection:{r['sha256']}".encode()).hexdigest(), r["path"]),
        )
        n = min(max(round(len(members) * fraction), 1), len(members) - 1)
        chosen.update(str(r["path"]) for r in ranked[:n])
    return chosen


def _counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row["label"])] = counts.get(str(row["label"]), 0) + 1
    return dict(sorted(counts.items()))


def _shown(per_class: Mapping[str, int]) -> str:
    return ", ".join(f"{label} {n}" for label, n in per_class.items())


def split_record(
    layout: str,
    rows: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    selection_split: float,
    val_split: float,
    seed: int,
    refit: bool = False,
) -> dict[str, Any]:
    """How the images were split, for the report and the registry: ``rows`` maps ``fit``,
    ``selection`` and ``val`` to their rows (``path``, ``label``).

    ``chosen_on`` and ``scored_on`` say in a sentence which split chose the epoch and which one the
    reported figures come from, with sizes; ``selection.files`` lists the selection images by class.
    """
    per_class = {k: _counts(rows[k]) for k in ("fit", "selection", "val")}
    n = {k: len(rows[k]) for k in ("fit", "selection", "val")}
    n_train = n["fit"] + n["selection"]
    train_counts = _counts([*rows["fit"], *rows["selection"]])
    notes = [
        f"class {label!r} has {count} training image: none left for the selection split"
        for label, count in train_counts.items()
        if count < 2
    ]
    how = (
        f"{selection_split:.0%} of each class's training images (at least one where the class has "
        f"two or more), by a hash of seed {seed} and the file's content"
    )
    chosen_on = (
        f"selection split, {n['selection']} of the {n_train} training images "
        f"({selection_split:.0%} of each class, at least one; by a hash of seed {seed} and content): "
        f"{_shown(per_class['selection'])}"
    )
    if layout == "train/val":
        source = "validation folder"
        val_how = "the folder's validation images (val/)"
        scored_on = f"validation folder, {n['val']} images ({_shown(per_class['val'])}), used for no choice"
    else:
        source = "held-out split"
        val_how = (
            f"held out: {val_split:.0%} of each class's images, by a hash of seed {seed} and content "
            "(the folder has no val/ folder)"
        )
        scored_on = (
            f"held-out split, {n['val']} images ({_shown(per_class['val'])}; {val_split:.0%} of each "
            f"class, by a hash of seed {seed} and content, as the folder has no val/), used for no choice"
        )
    return {
        "chosen_on": chosen_on,
        "scored_on": scored_on,
        "fit": {"images": n["fit"], "per_class": per_class["fit"]},
        "selection": {
            "images": n["selection"],
            "per_class": per_class["selection"],
            "fraction": selection_split,
            "seed": seed,
            "how": how,
            "files": {
                label: sorted(str(r["path"]) for r in rows["selection"] if str(r["label"]) == label)
                for label in per_class["selection"]
            },
        },
        "val": {
            "images": n["val"],
            "per_class": per_class["val"],
            "source": source,
            "how": val_how,
            "used_for_choices": False,
        },
        "refit": refit,
        "notes": notes,
    }


def scan_rows(
    root: str | Path,
    checks: Checks,
    *,
    val_split: float = 0.2,
    seed: int = 42,
    draft: int | None = None,
    convert: Callable[[Image.Image], Any] | None = None,
    on_file: Callable[[int, int], None] | None = None,
) -> FolderScan:
    """Hash and check every file under ``root``'s class folders.

    ``draft``: decode JPEGs at reduced scale, keeping the shorter side >= ``draft`` pixels.
    ``convert``: keep ``convert(image)`` of each usable image in ``pixels`` (by relative path), so
    training need not decode the files again.
    """
    root = Path(root)
    layout, files = list_folder(root)
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    pixels: dict[str, Any] = {}
    seen: dict[str, str] = {}
    # Training files first, so that of two identical files the one in val is the duplicate.
    files.sort(key=lambda t: (t[0] != "train", str(t[2])))
    for i, (split, label, path) in enumerate(files):
        data = path.read_bytes()
        rel = path.relative_to(root).as_posix()
        sha = hashlib.sha256(data).hexdigest()
        facts, reason, img = check_image(data, checks, draft=draft)
        if reason is None and sha in seen:
            reason = f"duplicate of {seen[sha]}"
        row = {"path": rel, "label": label, "split": split, "size": len(data), "sha256": sha, **facts}
        if reason is None:
            seen[sha] = rel
            good.append(row)
            if convert is not None and img is not None:
                pixels[rel] = convert(img)
        else:
            bad.append({**row, "reason": reason})
            log.info("quarantined %s: %s", rel, reason)
        if on_file is not None:
            on_file(i + 1, len(files))
    if layout == "split":
        _stratified_val(good, val_split, seed)
    good.sort(key=lambda r: r["path"])
    bad.sort(key=lambda r: r["path"])
    return FolderScan(root, layout, good, bad, pixels)
