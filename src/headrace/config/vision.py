"""Spec classes for image classification (``image:`` under a model with ``task: image_classification``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .base import ProjectPath, Spec

__all__ = ["AugmentSpec", "ImageCheckSpec", "ImageSpec"]


class AugmentSpec(Spec):
    """Training augmentation: random resized crop, horizontal flip, colour jitter.

    ``views`` > 0 (the CPU default): each training image's pass through the frozen part of the
    backbone is computed for that many augmented views once, and fine-tuning epochs draw from
    them, so an epoch costs only the unfrozen top. ``views: 0``: fresh augmentation every step
    through the whole network (what a GPU can afford). ``null`` chooses by device.
    """

    crop_scale: tuple[float, float] = (0.35, 1.0)
    flip: bool = True
    jitter: float = Field(default=0.3, ge=0.0, le=1.0)
    views: int | None = Field(default=None, ge=0, le=64)

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high <= 1:
            raise ValueError("two fractions 0 < low <= high <= 1, e.g. [0.25, 1.0]")
        return value


class ImageCheckSpec(Spec):
    """What makes a file a usable photo; a file that fails goes to ``<dataset>__quarantine``.

    1. Pillow must decode it completely (a truncated or corrupt file, or one that is not an
       image at all, fails here).
    2. Its format must be in ``formats``. GIF is left out by default, as torchvision's
       ``ImageFolder`` leaves it out: in a photo set a GIF is a placeholder, an icon or an
       animation (the ants/bees set's ``imageNotFound.gif`` is a "we're sorry" placeholder that
       decodes fine). Add ``GIF`` to accept them (animated ones are still refused).
    3. Its shorter side must be at least ``min_side`` pixels.
    4. It must not be (nearly) blank: the Shannon entropy of its grey-level histogram must be at
       least ``min_entropy`` bits. A flat-colour placeholder scores about 0; the plainest real
       photo in the ants/bees set (an ant on a white background) scores 1.7; the placeholder GIF
       1.2, so raising it to 1.5 would catch it by content alone, too close for a default.
    5. A file whose bytes (sha256) were already seen is a duplicate; the copy in the validation
       split is kept out of training (a duplicate across splits is leakage).
    """

    formats: list[str] = Field(default_factory=lambda: ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO"])
    min_side: int = Field(default=32, ge=1)
    min_entropy: float = Field(default=0.5, ge=0.0, le=8.0)

    @field_validator("formats")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [v.upper() for v in value]


class ImageSpec(Spec):
    """Transfer learning on a folder of images, one sub-folder per class.

    ``path`` holds ``train/<class>/*`` and ``val/<class>/*`` (``valid``/``validation`` also
    accepted), or ``<class>/*`` directly, which is then split stratified with ``val_split`` (a
    held-out split that stands in for the validation folder).
    Phase one fits a new head on features of the frozen backbone (computed once and cached);
    phase two unfreezes the top ``unfreeze_blocks`` blocks and fine-tunes them with a learning rate
    ``backbone_lr`` below the head's ``lr`` (AdamW, ``schedule``, label smoothing, early stopping
    on the selection split with ``patience``, the best epoch kept). ``finetune_epochs: 0`` stops
    after phase one.

    Every choice (the best epoch, the phase-one head against fine-tuning) is made on the
    *selection split*, carved from the training images; the validation images take part in no
    choice: the reported accuracy is measured on them once, at the end.
    """

    path: ProjectPath
    backbone: Literal[
        "efficientnet_lite0", "resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0"
    ] = "efficientnet_lite0"
    image_size: int = Field(default=224, ge=32, le=1024)
    eval_size: int | None = Field(default=256, ge=32, le=1024)
    crop_fraction: float = Field(default=0.875, gt=0.0, le=1.0)
    val_split: float = Field(default=0.2, gt=0.0, lt=1.0)
    selection_split: float = Field(default=0.15, gt=0.0, lt=1.0)
    """Share of each class's training images kept aside (at least one where the class has two or
    more; by a hash of the seed and the content) to choose the epoch on; never fitted on unless
    ``refit``."""
    select_on: Literal["loss", "accuracy"] = "loss"
    """What "best" means on the selection split: the lowest log loss (accuracy breaks ties) or the
    highest accuracy (log loss breaks ties)."""
    refit: bool = False
    """After the choice, fit again on training and selection images together, for the chosen epochs."""
    head_epochs: int = Field(default=100, ge=1)
    finetune_epochs: int = Field(default=6, ge=0)
    unfreeze_blocks: int = Field(default=3, ge=0)
    lr: float = Field(default=1e-3, gt=0.0)
    backbone_lr: float = Field(default=1e-4, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    label_smoothing: float = Field(default=0.1, ge=0.0, lt=1.0)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    schedule: Literal["cosine", "onecycle"] = "cosine"
    patience: int = Field(default=3, ge=1)
    batch_size: int = Field(default=32, ge=1)
    tta: bool = True
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    checks: ImageCheckSpec = Field(default_factory=ImageCheckSpec)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    threads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _sizes(self) -> ImageSpec:
        if self.eval_size is not None and self.eval_size < self.image_size // 2:
            raise ValueError("eval_size should be at least half of image_size")
        return self

    @property
    def eval_pixels(self) -> int:
        return self.eval_size or self.image_size
