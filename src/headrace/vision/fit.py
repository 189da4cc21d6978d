"""Fitting an image classifier by transfer learning: a frozen-backbone head, then fine-tuning.

What each image is for. :func:`fit_images` gets the training images and the *selection* images (a
stratified part of the training folder, :func:`headrace.vision.folder.carve_selection`), and never
the validation images: every choice made here (the best fine-tuning epoch, and whether fine-tuning
beats the phase-one model at all) is made on the selection images, so that the accuracy measured
afterwards on the validation folder (:mod:`.train`) is that of a model no validation image helped
pick. Reading the best epoch's accuracy off the folder that picked it scores the maximum of several
noisy estimates, which is biased upwards.

Phase one: every image passes through the frozen backbone once (a centre crop and its mirror image);
a new linear head is fitted on those cached features with AdamW, label smoothing and a cosine
schedule. That alone is a strong model, and it is where phase two starts.

Phase two unfreezes the top ``unfreeze_blocks`` blocks (their batch-norm statistics stay frozen:
re-estimated from a few hundred images they would only get noisier) and trains them at
``backbone_lr`` with the head at ``lr``: AdamW, a warm-up then cosine (or one-cycle) schedule, label
smoothing, early stopping on the selection split, and the best epoch's weights kept. "Epoch 0",
the phase-one model, is a candidate too, so fine-tuning replaces it only by doing better.

"Better" is a lower log loss on the selection images (``select_on: loss``, the default; accuracy
breaks ties), or a higher accuracy (``select_on: accuracy``; loss breaks ties). A selection split
is a few dozen images (15% of ants/bees' training images is 36), on which accuracy moves in steps
of one image, 3% there: at 97% accuracy two epochs differ by a single image or not at all, so the
choice would follow noise. The log loss is a proper score that every image contributes to
continuously, and ranks epochs where the accuracy cannot.

Refit (``refit: true``): once the epoch is chosen, the same recipe is run again from the pretrained
weights on the training and selection images together, for the chosen number of epochs (on the
same learning-rate schedule), with nothing left to choose. It is off by default, on this
measurement (ants/bees on a 2-core CPU, 208 + 36 training and selection images, 153 validation
images, seeds 42, 1, 2 and 3): accuracy on the validation folder 0.941, 0.967, 0.948, 0.935
without refit (mean 0.948) and 0.948, 0.954, 0.948, 0.954 with it (mean 0.951), differences of
-2 to +3 images of 153, i.e. noise; the phase-one model was kept every time, so the refit was the
head alone (1.4 s), but when fine-tuned epochs are kept it is a second fine-tuning. Without refit
the model shipped is the one the selection split chose and scored.

On a CPU the time goes into the frozen part of the network, so it never runs twice on one input:
phase one keeps each image's activations where the trainable top begins; the selection score reuses
them every epoch; and ``augment.views`` augmented views (random resized crop, flip, colour jitter)
of each training image are pushed through the frozen part once, so that an epoch, which draws one
view per image (the phase-one centre crop and its mirror image count as two more), runs only the
top. With ``views: 0`` (the default on a GPU) every step augments afresh and runs the whole network.

Progress: stage lines go to ``progress`` (the module logger when None); each fine-tuning epoch
(``epoch n/N``, train loss, selection accuracy) and each augmented view is logged through the
module logger and, with ``on_step``, reported as (stage, done, total, line) for a progress display;
without ``on_step`` those lines go to ``progress`` too.

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
from dataclasses import dataclass, field
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

__all__ = ["FitResult", "StepProgress", "default_threads", "fit_images", "resolve_device"]

log = logging.getLogger("headrace.vision.fit")

Progress = Callable[[str], None]
StepProgress = Callable[[str, int, int, str], None]  # (stage, done, total, line)
_CPU_VIEWS = 4


@dataclass
class FitResult:
    """The fitted model and how it was chosen; every score here is on the selection images."""

    model: ImageClassifier
    frozen_selection_accuracy: float  # the phase-one model
    finetuned_selection_accuracy: float | None  # the best fine-tuning epoch's; None when not run
    selection_accuracy: float  # the kept model (the better of the two), before any refit
    best_epoch: int  # 0: the phase-one model was kept
    history: list[dict[str, float]]  # per epoch: train_loss, selection_loss, selection_accuracy
    selection_proba: np.ndarray  # the kept model's probabilities for the selection images
    timings: dict[str, float]
    device: str
    threads: int
    head_losses: list[float]
    frozen_selection_loss: float = float("nan")
    select_on: str = "loss"  # what "best" meant on the selection split
    train_images: int = 0
    selection_images: int = 0
    refit: dict[str, Any] | None = None  # {"images", "epochs", "seconds"} when refitted
    refit_history: list[dict[str, float]] = field(default_factory=list)


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
    progress: Progress | None
    on_step: StepProgress | None
    frozen: Any = None  # the backbone with batch norm folded in, for what never trains

    def say(self, line: str) -> None:
        """A stage line: to ``progress``, or the module logger."""
        if self.progress is not None:
            self.progress(line)
        else:
            log.info("%s", line)

    def step(self, stage: str, done: int, total: int, line: str) -> None:
        """One step of a stage (an epoch): logged, and to ``on_step`` (else ``progress``)."""
        log.info("%s", line)
        if self.on_step is not None:
            self.on_step(stage, done, total, line)
        elif self.progress is not None:
            self.progress(line)

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
    for p in head.parameters():
        p.requires_grad_(True)  # a refit starts from a network whose fine-tuning froze them again
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


def _augment(run: _Run) -> Augment:
    spec = run.spec
    return Augment(
        spec.image_size,
        scale=spec.augment.crop_scale,
        flip=spec.augment.flip,
        jitter=spec.augment.jitter,
        generator=run.generator,
    )


def _views(run: _Run) -> int:
    views = run.spec.augment.views
    if views is None:
        views = 0 if run.device.type == "cuda" else _CPU_VIEWS
    return views


def _bank(
    run: _Run, images: Sequence[torch.Tensor], centre_h: list[torch.Tensor], augment: Augment, what: str
) -> list[torch.Tensor]:
    """Views of ``images`` at the split point, one tensor each (sizes may differ: the phase-one
    centre crops are at eval_size, augmented crops at image_size); a batch draws one. Empty with
    ``views: 0`` (every step augments afresh)."""
    views = _views(run)
    if not views:
        return []
    n = len(images)
    bank = list(centre_h)
    for v in range(views):
        bank.append(run.prefix([augment(images[p]) for p in _chunks(n, run.spec.batch_size)]))
        run.step(
            f"augmented views ({what})",
            v + 1,
            views,
            f"fine-tune: pushed augmented view {v + 1}/{views} of {n} {what} images through the frozen part",
        )
    return bank


def _key(spec: ImageSpec, accuracy: float, loss: float) -> tuple[float, float]:
    """What "better on the selection split" means: lower log loss, then higher accuracy
    (``select_on: loss``), or the other way round (``select_on: accuracy``)."""
    return (-loss, accuracy) if spec.select_on == "loss" else (accuracy, -loss)


@dataclass
class _Selection:
    """The selection images at the split point, their labels, and the phase-one model's scores."""

    h: torch.Tensor
    h_flip: torch.Tensor | None  # with tta
    labels: torch.Tensor
    start_proba: torch.Tensor


def _fine_tune(
    run: _Run,
    images: Sequence[torch.Tensor],
    y: torch.Tensor,
    bank: list[torch.Tensor],
    augment: Augment,
    epochs: int,
    select: _Selection | None,
) -> tuple[list[dict[str, float]], int, torch.Tensor | None]:
    """``epochs`` epochs of fine-tuning on a schedule laid out for ``finetune_epochs``.

    With ``select``: scored on the selection images after each epoch, early stopping, and the best
    epoch's weights (epoch 0: the starting model) loaded at the end; (history, best epoch, its
    selection probabilities). Without (a refit): the weights after the last epoch; (history,
    ``epochs``, None).
    """
    spec, network, backbone, k = run.spec, run.network, run.backbone, run.k
    top_modules: list[nn.Module] = backbone.top_modules(k)
    for p in network.parameters():
        p.requires_grad_(False)
    top_params = [p for m in top_modules for p in m.parameters()]
    head_params = list(network.head.parameters())
    for p in top_params + head_params:
        p.requires_grad_(True)

    def groups(params: list[nn.Parameter], lr: float) -> list[dict[str, Any]]:
        return [
            {"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": spec.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0},
        ]

    opt = torch.optim.AdamW(
        [g for g in groups(top_params, spec.backbone_lr) + groups(head_params, spec.lr) if g["params"]]
    )
    steps_per_epoch = math.ceil(len(images) / spec.batch_size)
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

    y_dev = y.to(run.device)
    best_epoch, best_proba = 0, None
    best_key = (-math.inf, -math.inf)
    best_state = None
    if select is not None:
        best_proba = select.start_proba
        best_key = _key(spec, _accuracy(best_proba, select.labels), _nll(best_proba, select.labels))
        best_state = copy.deepcopy(network.state_dict())
    history: list[dict[str, float]] = []
    stale = 0
    stage = "fine-tuning" if select is not None else "refit"
    for epoch in range(1, epochs + 1):
        train_mode()
        order = torch.randperm(len(images), generator=run.generator)
        parts = _chunks(len(order), spec.batch_size)
        pick = torch.randint(0, max(len(bank), 1), (len(parts),), generator=run.generator).tolist()
        total, seen = 0.0, 0
        for part, view in zip(parts, pick, strict=True):
            idx = order[part]
            if bank:
                h = bank[view][idx.to(bank[view].device)]
            else:
                with torch.no_grad(), run.autocast():
                    x = run.prepare(augment([images[int(i)] for i in idx], run.device))
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
        if select is None:
            history.append({"epoch": epoch, "train_loss": total / seen})
            run.step(stage, epoch, epochs, f"refit epoch {epoch}/{epochs}: train loss {total / seen:.4f}")
            continue
        proba = run.top_proba(select.h, select.h_flip)
        acc, sel_loss = _accuracy(proba, select.labels), _nll(proba, select.labels)
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / seen,
                "selection_loss": sel_loss,
                "selection_accuracy": acc,
            }
        )
        run.step(
            stage,
            epoch,
            epochs,
            f"fine-tune epoch {epoch}/{epochs}: train loss {total / seen:.4f}, "
            f"selection loss {sel_loss:.4f}, selection accuracy {acc:.4f}",
        )
        if _key(spec, acc, sel_loss) > best_key:
            best_key, best_epoch, best_proba, stale = _key(spec, acc, sel_loss), epoch, proba, 0
            best_state = copy.deepcopy(network.state_dict())
        else:
            stale += 1
            if stale >= spec.patience:
                run.say(f"early stop at epoch {epoch}: epoch {best_epoch} is still the best on selection")
                break
    if select is None:
        best_epoch = epochs
    elif best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    for p in network.parameters():
        p.requires_grad_(False)
    return history, best_epoch, best_proba


# -- the whole fit -----------------------------------------------------------------------------------
def fit_images(
    spec: ImageSpec,
    train_images: Sequence[torch.Tensor],
    train_labels: Sequence[int],
    selection_images: Sequence[torch.Tensor],
    selection_labels: Sequence[int],
    classes: Sequence[str],
    *,
    seed: int = 42,
    progress: Progress | None = None,
    on_step: StepProgress | None = None,
) -> FitResult:
    """Fit on decoded training images (CHW uint8 tensors, shorter side ``eval_size / crop_fraction``),
    making every choice on the selection images. Validation images are not an argument: they are
    for scoring the returned model, which is the caller's business."""
    if len(classes) < 2:
        raise DataError(f"image classification needs at least 2 classes; found {len(classes)}")
    if not train_images or not selection_images:
        raise DataError(
            f"need training and selection images; found {len(train_images)} and {len(selection_images)}",
            hint="each class needs at least two training images (one is kept aside to choose the epoch)",
        )
    threads = spec.threads or default_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _fit(
            spec, train_images, train_labels, selection_images, selection_labels, classes, seed,
            progress, on_step, threads,
        )  # fmt: skip
    finally:
        torch.set_num_threads(previous_threads)


def _fit(
    spec: ImageSpec,
    train_images: Sequence[torch.Tensor],
    train_labels: Sequence[int],
    sel_images: Sequence[torch.Tensor],
    sel_labels: Sequence[int],
    classes: Sequence[str],
    seed: int,
    progress: Progress | None,
    on_step: StepProgress | None,
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
    initial = copy.deepcopy(network.state_dict()) if spec.refit else None
    timings["load_backbone_s"] = time.perf_counter() - started
    fine_tune = spec.finetune_epochs > 0 and spec.unfreeze_blocks > 0
    run = _Run(
        spec, network, spec.unfreeze_blocks if fine_tune else 0, device, generator, amp_dtype,
        backbone.mean, backbone.std, progress, on_step, network.backbone.fused(),
    )  # fmt: skip
    y_train = torch.as_tensor(list(train_labels), dtype=torch.long)
    y_sel = torch.as_tensor(list(sel_labels), dtype=torch.long)
    n_train, n_sel = len(train_images), len(sel_images)

    # Phase one: through the frozen part once, keeping the activations at the split point.
    started = time.perf_counter()
    eval_size, frac = spec.eval_pixels, spec.crop_fraction

    def centre(images: Sequence[torch.Tensor], flip: bool) -> list[torch.Tensor]:
        batches = [batch_center(images[p], eval_size, frac) for p in _chunks(len(images), spec.batch_size)]
        return [b.flip(-1) for b in batches] if flip else batches

    train_h = [run.prefix(centre(train_images, False)), run.prefix(centre(train_images, True))]
    sel_h = run.prefix(centre(sel_images, False))
    sel_hf = run.prefix(centre(sel_images, True)) if spec.tta or spec.refit else None
    f_train = torch.cat([_features(run, h) for h in train_h])
    f_sel = _features(run, sel_h)
    f_sel_flip = _features(run, sel_hf) if sel_hf is not None else None
    timings["features_s"] = time.perf_counter() - started
    run.say(
        f"features of {n_train} training images (and their mirror images) and "
        f"{n_sel} selection images in {timings['features_s']:.1f} s on {device}"
    )
    started = time.perf_counter()
    torch.set_num_threads(1)  # a linear layer on cached features: threads only add overhead
    head, head_losses = _fit_head(run, f_train, torch.cat([y_train, y_train]))
    torch.set_num_threads(threads)
    tta_flip = f_sel_flip if spec.tta else None
    with torch.no_grad():
        proba = _proba(head(f_sel))
        if tta_flip is not None:
            proba = (proba + _proba(head(tta_flip))) / 2
    frozen, frozen_loss = _accuracy(proba, y_sel), _nll(proba, y_sel)
    timings["head_s"] = time.perf_counter() - started
    run.say(
        f"phase 1, new head on the frozen backbone: selection loss {frozen_loss:.4f}, "
        f"selection accuracy {frozen:.4f} ({n_sel} images)"
    )
    network.head.load_state_dict(head.state_dict())

    history: list[dict[str, float]] = []
    best_epoch, finetuned = 0, None
    augment = _augment(run)
    bank: list[torch.Tensor] = []
    if fine_tune:
        started = time.perf_counter()
        bank = _bank(run, train_images, train_h, augment, "training")
        timings["finetune_cache_s"] = time.perf_counter() - started
        started = time.perf_counter()
        select = _Selection(sel_h, sel_hf if spec.tta else None, y_sel, proba)
        history, best_epoch, kept_proba = _fine_tune(
            run, train_images, y_train, bank, augment, spec.finetune_epochs, select
        )
        timings["finetune_epochs_s"] = time.perf_counter() - started
        assert kept_proba is not None
        proba = kept_proba
        if history:  # the best fine-tuning epoch, kept or not
            best_ft = max(history, key=lambda h: _key(spec, h["selection_accuracy"], h["selection_loss"]))
            finetuned = best_ft["selection_accuracy"]
    selection_accuracy = _accuracy(proba, y_sel)
    if fine_tune:
        kept = "the phase-1 model" if best_epoch == 0 else f"epoch {best_epoch}"
        run.say(
            f"phase 2, top {run.k} blocks fine-tuned: kept {kept}, the best by selection "
            f"{'log loss' if spec.select_on == 'loss' else 'accuracy'} on the {n_sel} selection images "
            f"(selection accuracy {selection_accuracy:.4f}, loss {_nll(proba, y_sel):.4f})"
        )

    refit: dict[str, Any] | None = None
    refit_history: list[dict[str, float]] = []
    if spec.refit and initial is not None and sel_hf is not None and f_sel_flip is not None:
        started = time.perf_counter()
        network.load_state_dict(initial)  # from the pretrained weights again, nothing to choose
        all_images = [*train_images, *sel_images]
        y_all = torch.cat([y_train, y_sel])
        f_all = torch.cat([f_train[:n_train], f_sel, f_train[n_train:], f_sel_flip])
        torch.set_num_threads(1)
        head, _ = _fit_head(run, f_all, torch.cat([y_all, y_all]))
        torch.set_num_threads(threads)
        network.head.load_state_dict(head.state_dict())
        if best_epoch > 0:
            sel_bank = _bank(run, sel_images, [sel_h, sel_hf], augment, "selection")
            bank_all = [torch.cat([a, b]) for a, b in zip(bank, sel_bank, strict=True)] if bank else []
            refit_history, _, _ = _fine_tune(run, all_images, y_all, bank_all, augment, best_epoch, None)
        timings["refit_s"] = time.perf_counter() - started
        refit = {"images": len(all_images), "epochs": best_epoch, "seconds": round(timings["refit_s"], 3)}
        run.say(
            f"refit on {len(all_images)} training and selection images "
            f"({'the phase-1 head only' if best_epoch == 0 else f'{best_epoch} fine-tuning epochs'}) "
            f"in {timings['refit_s']:.1f} s"
        )
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
        frozen_selection_accuracy=frozen,
        frozen_selection_loss=frozen_loss,
        select_on=spec.select_on,
        finetuned_selection_accuracy=finetuned,
        selection_accuracy=selection_accuracy,
        best_epoch=best_epoch,
        history=history,
        selection_proba=proba.numpy(),
        timings={key: round(v, 3) for key, v in timings.items()},
        device=name,
        threads=threads,
        head_losses=head_losses,
        train_images=n_train,
        selection_images=n_sel,
        refit=refit,
        refit_history=refit_history,
    )
