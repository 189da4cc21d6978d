"""Fixtures for the vision tests: small generated image folders and one trained model per session.

The generated classes differ in colour and texture (reddish blobs and bluish stripes), which an
ImageNet backbone separates at 96 px, so a training test takes seconds instead of minutes.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

TORCH_REASON = "torch is not installed (pip install 'headrace[vision]')"


def photo_bytes(kind: str, seed: int, size: tuple[int, int] = (120, 96), fmt: str = "JPEG") -> bytes:
    """A small synthetic photo: 'red' (warm blobs) or 'blue' (cool stripes), with noise."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    w, h = size
    if kind == "red":
        img = Image.new("RGB", size, (rng.randint(150, 220), rng.randint(40, 90), rng.randint(20, 60)))
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x, y, r = rng.randint(0, w), rng.randint(0, h), rng.randint(4, 16)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(rng.randint(200, 255), rng.randint(60, 140), 30))
    else:
        img = Image.new("RGB", size, (rng.randint(20, 60), rng.randint(60, 110), rng.randint(150, 220)))
        draw = ImageDraw.Draw(img)
        for x in range(0, w, rng.randint(6, 12)):
            draw.line((x, 0, x + rng.randint(-20, 20), h), fill=(200, 220, 255), width=2)
    noise = Image.effect_noise(size, 24).convert("RGB")
    img = Image.blend(img, noise, 0.15)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def make_folder(root: Path, per_class: dict[str, int], *, seed: int = 0) -> Path:
    """``root/train/<class>`` and ``root/val/<class>`` with generated photos."""
    for split, n in per_class.items():
        for kind in ("red", "blue"):
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"{kind}_{split}_{i}.jpg").write_bytes(
                    photo_bytes(kind, seed + i + (1000 if split == "val" else 0))
                )
    return root


def tiny_spec(path: Path, **image: Any) -> Any:
    from headrace.config.models import ModelSpec

    settings: dict[str, Any] = {
        "path": str(path),
        "image_size": 96,
        "eval_size": 96,
        "head_epochs": 25,
        "finetune_epochs": 2,
        "unfreeze_blocks": 2,
        "patience": 5,
        "batch_size": 8,
        "augment": {"views": 1},
        **image,
    }
    return ModelSpec.model_validate(
        {"task": "image_classification", "dataset": "tiny", "seed": 7, "image": settings}
    )


def train_tiny(root: Path) -> dict[str, Any]:
    """Train one model end to end on a generated folder (with two bad files), registered and promoted."""
    from headrace.artifacts import ArtifactStore
    from headrace.metadata import Metadata
    from headrace.registry import Registry
    from headrace.store import Store
    from headrace.vision.train import train_image_model

    folder = make_folder(root / "images", {"train": 8, "val": 4})
    (folder / "train" / "red" / "broken.jpg").write_bytes(photo_bytes("red", 99)[:300])  # truncated
    (folder / "train" / "blue" / "notes.txt").write_text("not an image")
    meta = Metadata(f"sqlite:///{root}/headrace.db")
    artifacts = ArtifactStore(root / "artifacts")
    store = Store(root / "lake")
    lines: list[str] = []
    result = train_image_model(
        tiny_spec(folder),
        store=store,
        meta=meta,
        artifacts=artifacts,
        name="tiny",
        promote=True,
        out_dir=root / "out",
        progress=lines.append,
    )
    return {
        "result": result,
        "folder": folder,
        "store": store,
        "meta": meta,
        "artifacts": artifacts,
        "registry": Registry(meta, artifacts),
        "lines": lines,
        "out": root / "out",
    }
