"""Fitting an image classifier by transfer learning: a frozen-backbone head, then fine-tuning.

Phase one: every image passes through the frozen backbone once (a centre crop and its mirror image);
a new linear head is fitted on those cached features with AdamW, label smoothing and a cosine
schedule. That alone is a strong model, and it is where phase two starts.

Phase two unfreezes the top ``unfreeze_blocks`` blocks (their batch-norm statistics stay frozen:
re-estimated from a few hundred images they would only get noisier) and trains them at
``backbone_lr`` with the head at ``lr``: AdamW, a warm-up then cosine (or one-cycle) schedule, label
smoothing, early stopping on validation accuracy (validation loss breaks ties), and the best epoch's
weights kept. "Epoch 0", the phase-one model, is a candidate too, so fine-tuning replaces it only
by doing better.

On a CPU the time goes into the frozen part of the network, so it never runs twice on one input:
phase one keeps each image's activations where the trainable top begins; validation reuses them
every epoch; and ``augment.views`` augmented views (random resized crop, flip, colour jitter) of
each training image are pushed through the frozen part once, so that an epoch, which draws one view
per image (the phase-one centre crop and its mirror image count as two more), runs only the top.
With ``views: 0`` (the default on a GPU) every step augments afresh and runs the whole network.

This module needs only torch, numpy and Pillow (not the store or the config parser), so the
benchmark can run it on a bare GPU machine.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError
from .backbones import build_backbone
from .images import Augment, batch_center, normalize
from .model import ImageClassifier, ImageNetwork

if TYPE_CHECKING:
    from ..config.vision import ImageSpec

__all__ = ["FitResult", "default_threads", "fit_images", "resolve_device"]

log = logging.getLogger("headrace.vision.fit")

Progress = Callable[[str], None]
_CPU_VIEWS = 4


@dataclass
class FitResult:
    model: ImageClassifier
    frozen_accuracy: float
    finetuned_accuracy: float | None
    best_epoch: int
    history: list[dict[str, float]]
    val_proba: np.ndarray
    timings: dict[str, float]
    device: str
    threads: int
    head_losses: list[float]


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("image.device is cuda but no CUDA GPU is available", hint="use device: auto")
        return torch.device("cuda")
    return torch.device("cpu")


def default_threads() -> int:
    """One intra-op thread per core this process may use and nothing else is busy on, at most 8.

    Measured here (2 cores shared with other work, load average 8): a convolution batch took 2.3x
    longer with 2 threads than with 1, and a tiny optimiser step 16x longer, because OpenMP
    threads wait on each other for cores they do not get. So cores already busy (the load
    average) are not counted; an idle 2-core machine gets 2.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores - int(busy + 0.5), 8))


def _seed(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _proba(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=1)


def _accuracy(proba: torch.Tensor, labels: torch.Tensor) -> float:
    return float((proba.argmax(1) == labels).float().mean()) if len(labels) else float("nan")


def _nll(proba: torch.Tensor, labels: torch.Tensor) -> float:
    return float(F.nll_loss(torch.log(proba.clamp_min(1e-7)), labels))


@dataclass
class _Run:
    """What every step of one fit shares."""

    spec: ImageSpec
    network: ImageNetwork
    k: int  # blocks unfrozen in phase two (0: none; the split point is then the pooled features)
    device: torch.device
    generator: torch.Generator
    amp_dtype: torch.dtype | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    say: Progress
    frozen: Any = None  # the backbone with batch norm folded in, for what never trains

    @property
    def backbone(self) -> Any:
        return self.network.backbone

    def autocast(self) -> Any:
        if self.amp_dtype is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float NCHW batch to normalised input on the device."""
        x = normalize(batch.to(self.device, non_blocking=True), self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def prefix(self, batches: Sequence[torch.Tensor]) -> torch.Tensor:
        """Activations at the split point for input batches, kept in float16 on the device."""
        out = []
        for batch in batches:
            with self.autocast():
                out.append(self.frozen.forward_prefix(self.prepare(batch), self.k).to(torch.float16))
        return torch.cat(out)

    def top(self, h: torch.Tensor) -> torch.Tensor:
        """Pooled features from split-point activations."""
        return self.backbone.forward_top(h.float(), self.k)

    @torch.no_grad()
    def top_proba(self, h: torch.Tensor, h_flip: torch.Tensor | None) -> torch.Tensor:
        self.network.eval()
        rows = []
        for part in _chunks(len(h), self.spec.batch_size):
            with self.autocast():
                proba = _proba(self.network.head(self.top(h[part])))
                if h_flip is not None:
                    proba = (proba + _proba(self.network.head(self.top(h_flip[part])))) / 2
            rows.append(proba.float().cpu())
        return torch.cat(rows)


# -- phase one ---------------------------------------------------------------------------------------
@torch.no_grad()
def _features(run: _Run, h: torch.Tensor) -> torch.Tensor:
    """Pooled features from split-point activations, through the (still frozen) top."""
    out = []
    for part in _chunks(len(h), run.spec.batch_size):
        with run.autocast():
            out.append(run.frozen.forward_top(h[part].float(), run.k).float().cpu())
    return torch.cat(out)


def _fit_head(run: _Run, feats: torch.Tensor, labels: torch.Tensor) -> tuple[nn.Sequential, list[float]]:
    """AdamW, label smoothing and a cosine schedule on cached features (on the CPU: it is tiny)."""
    spec = run.spec
    head = copy.deepcopy(run.network.head).cpu().float().train()
    opt = torch.optim.AdamW(head.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    steps = spec.head_epochs * math.ceil(len(feats) / spec.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    losses = []
    for _ in range(spec.head_epochs):
        order = torch.randperm(len(feats), generator=run.generator)
        total = 0.0
        for part in _chunks(len(feats), spec.batch_size):
            idx = order[part]
            loss = F.cross_entropy(head(feats[idx]), labels[idx], label_smoothing=spec.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(feats))
    return head.eval(), losses


# -- phase two ---------------------------------------------------------------------------------------
def _is_bn(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def _fine_tune(
    run: _Run,
    train_images: Sequence[torch.Tensor],
    y_train: torch.Tensor,
    train_h: list[torch.Tensor],
    val_h: torch.Tensor,
    val_hf: torch.Tensor | None,
    y_val: torch.Tensor,
    start_proba: torch.Tensor,
) -> tuple[list[dict[str, float]], int, torch.Tensor, dict[str, float]]:
    spec, network, backbone, k = run.spec, run.network, run.backbone, run.k
    timings: dict[str, float] = {}
    top_modules: list[nn.Module] = backbone.top_modules(k)
    for p in network.parameters():
        p.requires_grad_(False)
    top_params = [p for m in top_modules for p in m.parameters()]
    head_params = list(network.head.parameters())
    for p in top_params + head_params:
        p.requires_grad_(True)

    augment = Augment(
        spec.image_size,
        scale=spec.augment.crop_scale,
        flip=spec.augment.flip,
        jitter=spec.augment.jitter,
        generator=run.generator,
    )
    views = spec.augment.views
    if views is None:
        views = 0 if run.device.type == "cuda" else _CPU_VIEWS
    # Views of the training set at the split point, one tensor each (sizes may differ: the
    # phase-one centre crops are at eval_size, augmented crops at image_size); a batch draws one.
    bank: list[torch.Tensor] = []
    if views:
        started = time.perf_counter()
        n = len(train_images)
        bank = list(train_h)
        for v in range(views):
            bank.append(run.prefix([augment(train_images[p]) for p in _chunks(n, spec.batch_size)]))
            run.say(f"fine-tune: pushed augmented view {v + 1}/{views} of {n} images through the frozen part")
        timings["finetune_cache_s"] = time.perf_counter() - started

    def groups(params: list[nn.Parameter], lr: float) -> list[dict[str, Any]]:
        return [
            {"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": spec.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0},
        ]

    opt = torch.optim.AdamW(
        [g for g in groups(top_params, spec.backbone_lr) + groups(head_params, spec.lr) if g["params"]]
    )
    steps_per_epoch = math.ceil(len(train_images) / spec.batch_size)
    total_steps = steps_per_epoch * spec.finetune_epochs
    sched: Any
    if spec.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total_steps, pct_start=0.25
        )
    else:
        warmup = max(1, steps_per_epoch // 2)
        sched = torch.optim.lr_scheduler.SequentialLR(
            opt,
            [
                torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warmup),
                torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps - warmup)),
            ],
            milestones=[warmup],
        )
    scaler = torch.amp.GradScaler("cuda", enabled=run.amp_dtype == torch.float16)

    def train_mode() -> None:
        # Dropout and drop-connect on in the head and the unfrozen top; batch norm and the frozen
        # part stay in evaluation mode.
        network.eval()
        for module in [*top_modules, network.head]:
            for sub in module.modules():
                sub.training = not _is_bn(sub)

    y_dev = y_train.to(run.device)
    best_key = (_accuracy(start_proba, y_val), -_nll(start_proba, y_val))
    best_epoch, best_proba = 0, start_proba
    best_state = copy.deepcopy(network.state_dict())
    history: list[dict[str, float]] = []
    stale = 0
    started = time.perf_counter()
    for epoch in range(1, spec.finetune_epochs + 1):
        train_mode()
        order = torch.randperm(len(train_images), generator=run.generator)
        parts = _chunks(len(order), spec.batch_size)
        pick = torch.randint(0, max(len(bank), 1), (len(parts),), generator=run.generator).tolist()
        total, seen = 0.0, 0
        for part, view in zip(parts, pick, strict=True):
            idx = order[part]
            if bank:
                h = bank[view][idx.to(bank[view].device)]
            else:
                with torch.no_grad(), run.autocast():
                    x = run.prepare(augment([train_images[int(i)] for i in idx], run.device))
                    h = backbone.forward_prefix(x, k)
            with run.autocast():
                logits = network.head(run.top(h))
            loss = F.cross_entropy(
                logits.float(), y_dev[idx.to(run.device)], label_smoothing=spec.label_smoothing
            )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        proba = run.top_proba(val_h, val_hf)
        acc, val_loss = _accuracy(proba, y_val), _nll(proba, y_val)
        history.append(
            {"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss, "val_accuracy": acc}
        )
        run.say(
            f"fine-tune epoch {epoch}: train loss {total / seen:.4f}, "
            f"val loss {val_loss:.4f}, val accuracy {acc:.4f}"
        )
        if (acc, -val_loss) > best_key:
            best_key, best_epoch, best_proba, stale = (acc, -val_loss), epoch, proba, 0
            best_state = copy.deepcopy(network.state_dict())
        else:
            stale += 1
            if stale >= spec.patience:
                run.say(f"early stop at epoch {epoch}: epoch {best_epoch} is still the best")
                break
    timings["finetune_epochs_s"] = time.perf_counter() - started
    network.load_state_dict(best_state)
    network.eval()
    for p in network.parameters():
        p.requires_grad_(False)
    return history, best_epoch, best_proba, timings


# -- the whole fit -----------------------------------------------------------------------------------
def fit_images(
    spec: ImageSpec,
    train_images: Sequence[torch.Tensor],
    train_labels: Sequence[int],
    val_images: Sequence[torch.Tensor],
    val_labels: Sequence[int],
    classes: Sequence[str],
    *,
    seed: int = 42,
    progress: Progress | None = None,
) -> FitResult:
    """Fit on decoded images (CHW uint8 tensors, shorter side ``eval_size / crop_fraction``)."""
    if len(classes) < 2:
        raise DataError(f"image classification needs at least 2 classes; found {len(classes)}")
    if not train_images or not val_images:
        raise DataError(
            f"need training and validation images; found {len(train_images)} and {len(val_images)}",
            hint="add images, or change image.val_split",
        )
    say = progress or (lambda line: log.info("%s", line))
    threads = spec.threads or default_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _fit(spec, train_images, train_labels, val_images, val_labels, classes, seed, say, threads)
    finally:
        torch.set_num_threads(previous_threads)


def _fit(
    spec: ImageSpec,
    train_images: Sequence[torch.Tensor],
    train_labels: Sequence[int],
    val_images: Sequence[torch.Tensor],
    val_labels: Sequence[int],
    classes: Sequence[str],
    seed: int,
    say: Progress,
    threads: int,
) -> FitResult:
    timings: dict[str, float] = {}
    generator = _seed(seed)
    device = resolve_device(spec.device)
    amp_dtype = None
    if device.type == "cuda" and spec.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    started = time.perf_counter()
    backbone = build_backbone(spec.backbone)
    backbone.check_unfreeze(spec.unfreeze_blocks)
    network = ImageNetwork(backbone, len(classes), spec.dropout)
    network.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    network.eval()
    timings["load_backbone_s"] = time.perf_counter() - started
    fine_tune = spec.finetune_epochs > 0 and spec.unfreeze_blocks > 0
    run = _Run(
        spec, network, spec.unfreeze_blocks if fine_tune else 0, device, generator, amp_dtype,
        backbone.mean, backbone.std, say, network.backbone.fused(),
    )  # fmt: skip
    y_train = torch.as_tensor(list(train_labels), dtype=torch.long)
    y_val = torch.as_tensor(list(val_labels), dtype=torch.long)

    # Phase one: through the frozen part once, keeping the activations at the split point.
    started = time.perf_counter()
    eval_size, frac = spec.eval_pixels, spec.crop_fraction

    def centre(images: Sequence[torch.Tensor], flip: bool) -> list[torch.Tensor]:
        batches = [batch_center(images[p], eval_size, frac) for p in _chunks(len(images), spec.batch_size)]
        return [b.flip(-1) for b in batches] if flip else batches

    train_h = [run.prefix(centre(train_images, False)), run.prefix(centre(train_images, True))]
    val_h = run.prefix(centre(val_images, False))
    val_hf = run.prefix(centre(val_images, True)) if spec.tta else None
    f_train = torch.cat([_features(run, h) for h in train_h])
    f_val = _features(run, val_h)
    f_val_flip = _features(run, val_hf) if val_hf is not None else None
    timings["features_s"] = time.perf_counter() - started
    say(
        f"features of {len(train_images)} training images (and their mirror images) and "
        f"{len(val_images)} validation images in {timings['features_s']:.1f} s on {device}"
    )
    started = time.perf_counter()
    torch.set_num_threads(1)  # a linear layer on cached features: threads only add overhead
    head, head_losses = _fit_head(run, f_train, torch.cat([y_train, y_train]))
    torch.set_num_threads(threads)
    with torch.no_grad():
        proba = _proba(head(f_val))
        if f_val_flip is not None:
            proba = (proba + _proba(head(f_val_flip))) / 2
    frozen = _accuracy(proba, y_val)
    timings["head_s"] = time.perf_counter() - started
    say(f"phase 1, new head on the frozen backbone: validation accuracy {frozen:.4f}")
    network.head.load_state_dict(head.state_dict())

    history: list[dict[str, float]] = []
    best_epoch, finetuned = 0, None
    if fine_tune:
        history, best_epoch, proba, more = _fine_tune(
            run, train_images, y_train, train_h, val_h, val_hf, y_val, proba
        )
        timings.update(more)
        finetuned = _accuracy(proba, y_val)
        kept = "the phase-1 model" if best_epoch == 0 else f"epoch {best_epoch}"
        say(f"phase 2, top {run.k} blocks fine-tuned: validation accuracy {finetuned:.4f} (kept {kept})")
    network.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    model = ImageClassifier(
        backbone=spec.backbone,
        classes=list(classes),
        network=network,
        eval_size=eval_size,
        image_size=spec.image_size,
        crop_fraction=frac,
        tta=spec.tta,
        dropout=spec.dropout,
        mean=backbone.mean,
        std=backbone.std,
    )
    model.device = device
    name = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"
    return FitResult(
        model=model,
        frozen_accuracy=frozen,
        finetuned_accuracy=finetuned,
        best_epoch=best_epoch,
        history=history,
        val_proba=proba.numpy(),
        timings={key: round(v, 3) for key, v in timings.items()},
        device=name,
        threads=threads,
        head_losses=head_losses,
    )
