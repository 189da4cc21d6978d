"""The ``image`` model flavor: a fine-tuned backbone and head that classify image bytes.

The artifact is one ``torch.save`` file holding plain data only (the configuration as strings and
numbers, the weights as tensors), read back with ``weights_only=True``: loading a model never runs
pickled code. The backbone is rebuilt from its name without downloading or reading ImageNet
weights, then every weight is loaded strictly.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import DataError, RegistryError
from ..flavors import Prediction
from .backbones import Backbone, build_backbone
from .images import batch_center, decode_to_tensor, normalize

__all__ = ["ARTIFACT_FORMAT", "ImageClassifier", "ImageNetwork"]

log = logging.getLogger("headrace.vision.model")

ARTIFACT_FORMAT = 1
_BATCH = 32


class ImageNetwork(nn.Module):
    """A backbone without its ImageNet classifier, and a new head: dropout and one linear layer."""

    def __init__(self, backbone: Backbone, n_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        backbone.network.drop_classifier()
        self.backbone: Any = backbone.network
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.feature_dim, n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ImageClassifier:
    """A trained image classifier: ``predict_images(list[bytes]) -> Prediction``.

    Each image is decoded, resized so its shorter side is ``eval_size / crop_fraction``, centre
    cropped to ``eval_size`` and normalised as the backbone expects; with ``tta`` the prediction
    averages the image and its mirror image.
    """

    flavor = "image"

    def __init__(
        self,
        *,
        backbone: str,
        classes: Sequence[str],
        network: ImageNetwork | None = None,
        eval_size: int = 256,
        image_size: int = 224,
        crop_fraction: float = 0.875,
        tta: bool = True,
        dropout: float = 0.2,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        self.backbone = backbone
        self.classes = [str(c) for c in classes]
        self.eval_size = int(eval_size)
        self.image_size = int(image_size)
        self.crop_fraction = float(crop_fraction)
        self.tta = bool(tta)
        self.dropout = float(dropout)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        if network is None:
            network = ImageNetwork(build_backbone(backbone, pretrained=False), len(self.classes), dropout)
        self.network = network.eval()
        self.device = torch.device("cpu")
        self._inference: Any = None  # the backbone with batch norm folded in

    @property
    def base_size(self) -> int:
        """The shorter side images are resized to before the centre crop."""
        return round(self.eval_size / self.crop_fraction)

    @property
    def signature(self) -> dict[str, Any]:
        return {
            "inputs": {"image": "bytes (JPEG, PNG, WEBP, BMP, ...)"},
            "outputs": {"label": "one of classes", "probabilities": "one per class"},
            "classes": self.classes,
            "eval_size": self.eval_size,
        }

    def config(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "classes": self.classes,
            "eval_size": self.eval_size,
            "image_size": self.image_size,
            "crop_fraction": self.crop_fraction,
            "tta": self.tta,
            "dropout": self.dropout,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    # -- the flavor contract ------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.network.state_dict().items()}
        buffer = io.BytesIO()
        torch.save({"format": ARTIFACT_FORMAT, "config": self.config(), "state": state}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageClassifier:
        try:
            doc = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise RegistryError(
                f"image model artifact cannot be read ({type(exc).__name__})",
                hint="the artifact is not a headrace image model; retrain it",
            ) from exc
        if not isinstance(doc, dict) or doc.get("format") != ARTIFACT_FORMAT:
            raise RegistryError(
                "image model artifact has an unknown format",
                hint=f"expected format {ARTIFACT_FORMAT}; retrain with this headrace version",
            )
        config = dict(doc["config"])
        model = cls(**config)
        try:
            model.network.load_state_dict(doc["state"], strict=True)
        except RuntimeError as exc:
            raise RegistryError(
                f"image model weights do not fit a {config.get('backbone')} network",
                hint="the artifact is damaged or from another version; retrain it",
            ) from exc
        return model

    def to(self, device: str | torch.device) -> ImageClassifier:
        self.device = torch.device(device)
        self.network.to(self.device)
        self._inference = None
        return self

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        backbone = self._inference
        if backbone is None:
            backbone = self._inference = self.network.backbone.fused()
        return self.network.head(backbone.features(x))

    # -- prediction ---------------------------------------------------------------------------------
    def decode(self, images: Sequence[bytes]) -> list[torch.Tensor]:
        """Each image's bytes to a uint8 tensor at ``base_size``; a DataError names the bad one."""
        if not isinstance(images, list | tuple):
            raise DataError("images must be a list of image bytes", hint="pass [bytes, ...]")
        out = []
        for i, data in enumerate(images):
            if not isinstance(data, bytes | bytearray | memoryview):
                raise DataError(
                    f"image {i} is a {type(data).__name__}, not bytes",
                    hint="send each image's raw file bytes (base64-decoded)",
                )
            out.append(decode_to_tensor(bytes(data), self.base_size, what=f"image {i}"))
        return out

    @torch.inference_mode()
    def predict_proba_tensors(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Class probabilities (N x classes, on the CPU) for decoded base-size images."""
        self.network.eval()
        rows = []
        for start in range(0, len(images), _BATCH):
            crops = batch_center(images[start : start + _BATCH], self.eval_size, self.crop_fraction)
            x = normalize(crops.to(self.device), self.mean, self.std)
            x = x.contiguous(memory_format=torch.channels_last)
            proba = torch.softmax(self._logits(x).float(), dim=1)
            if self.tta:
                proba = (proba + torch.softmax(self._logits(x.flip(-1)).float(), dim=1)) / 2
            rows.append(proba.cpu())
        if not rows:
            return torch.empty(0, len(self.classes))
        return torch.cat(rows)

    def predict_images(self, images: Sequence[bytes]) -> Prediction:
        """Labels and per-class probabilities for a list of image files' bytes."""
        proba = self.predict_proba_tensors(self.decode(images))
        best = proba.argmax(dim=1).tolist()
        probabilities = [
            {c: round(float(p), 6) for c, p in zip(self.classes, row, strict=True)} for row in proba.tolist()
        ]
        return Prediction(
            predictions=[self.classes[i] for i in best],
            probabilities=probabilities,
            classes=list(self.classes),
            extra={"scores": [float(proba[j, i]) for j, i in enumerate(best)]},
        )
