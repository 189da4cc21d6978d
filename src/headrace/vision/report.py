"""Evaluation of an image classifier and its HTML report (one self-contained file).

The report says first which images chose the epoch (the selection split, carved from the training
images) and which ones the reported figures come from (the validation folder, or a held-out split
when there is none), with their sizes; then the headline figures (accuracy, macro F1 and log loss
on the validation images; the frozen-head and fine-tuned selection accuracies that made the
choice), per-class precision, recall and F1 and the confusion matrix (validation images), the
fine-tuning curve (selection images), the selection split's files, the files that were quarantined
and why, and a contact sheet of the misclassified validation images, each captioned with its true
class, the predicted class and the probability given to it.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

if TYPE_CHECKING:
    from .fit import FitResult

__all__ = ["contact_sheet", "evaluate", "render_report"]


def evaluate(proba: np.ndarray, labels: Sequence[int], classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro averages, log loss, confusion matrix."""
    y = np.asarray(labels, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    pred = proba.argmax(axis=1)
    k = len(classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=list(range(k)), zero_division=0
    )
    matrix = confusion_matrix(y, pred, labels=list(range(k)))
    clipped = np.clip(proba, 1e-7, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return {
        "accuracy": float((pred == y).mean()),
        "n": len(y),
        "classes": list(classes),
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "precision_macro": float(np.mean(precision)),
        "recall_macro": float(np.mean(recall)),
        "f1_macro": float(np.mean(f1)),
        "log_loss": float(log_loss(y, clipped, labels=list(range(k)))),
        "confusion_matrix": matrix.tolist(),
        "misclassified": [
            {
                "index": int(i),
                "true": classes[int(y[i])],
                "predicted": classes[int(pred[i])],
                "p": float(proba[i, pred[i]]),
            }
            for i in np.flatnonzero(pred != y)
        ],
    }


def contact_sheet(
    images: Sequence[torch.Tensor], captions: Sequence[str], *, thumb: int = 160, columns: int = 6
) -> bytes:
    """A PNG grid of thumbnails (CHW uint8 tensors) with a caption under each."""
    n = len(images)
    if n == 0:
        return b""
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    caption_h = 30
    sheet = Image.new("RGB", (columns * (thumb + 8) + 8, rows * (thumb + caption_h + 8) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (tensor, caption) in enumerate(zip(images, captions, strict=True)):
        img = Image.fromarray(tensor.permute(1, 2, 0).contiguous().numpy())
        img.thumbnail((thumb, thumb))
        x = 8 + (i % columns) * (thumb + 8)
        y = 8 + (i // columns) * (thumb + caption_h + 8)
        sheet.paste(img, (x + (thumb - img.size[0]) // 2, y + (thumb - img.size[1]) // 2))
        for j, line in enumerate(caption.split("\n")[:2]):
            draw.text((x, y + thumb + 2 + 13 * j), line[:30], fill=(0, 0, 0))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _curve_png(history: list[dict[str, float]], frozen: float, frozen_loss: float) -> bytes:
    if not history:
        return b""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [0] + [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.plot(
        epochs,
        [frozen] + [h["selection_accuracy"] for h in history],
        marker="o",
        label="selection accuracy",
    )
    ax.set_xlabel("fine-tuning epoch (0 = frozen-backbone head)")
    ax.set_ylabel("accuracy")
    ax2 = ax.twinx()
    ax2.plot(epochs[1:], [h["train_loss"] for h in history], color="tab:red", marker=".", label="train loss")
    ax2.plot(
        epochs,
        [frozen_loss] + [h["selection_loss"] for h in history],
        color="tab:orange",
        marker=".",
        label="selection loss",
    )
    ax2.set_ylabel("loss")
    fig.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _counts(per_class: dict[str, int]) -> str:
    return ", ".join(f"{label} {n}" for label, n in per_class.items())


def _img(png: bytes, alt: str) -> str:
    if not png:
        return ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_report(
    *,
    name: str,
    evaluation: dict[str, Any],
    fit: FitResult,
    splits: dict[str, Any],
    val_paths: Sequence[str],
    val_images: Sequence[torch.Tensor],
    quarantined: list[dict[str, Any]],
    summary: dict[str, Any],
) -> str:
    """The HTML page; ``evaluation`` is on the validation images, ``splits`` as :mod:`.train` makes it."""
    classes = evaluation["classes"]
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else v  # noqa: E731
    kept = f"epoch {fit.best_epoch}" + (" (the frozen-backbone head)" if fit.best_epoch == 0 else "")
    refit = fit.refit
    headline = [
        ["epoch chosen on", splits["chosen_on"]],
        ["reported figures from", splits["scored_on"]],
        ["fitted on", f"{splits['fit']['images']} training images ({_counts(splits['fit']['per_class'])})"],
        ["kept", kept],
        [
            "best means",
            "the lowest log loss on the selection split (accuracy breaks ties)"
            if fit.select_on == "loss"
            else "the highest accuracy on the selection split (log loss breaks ties)",
        ],
        [
            "refit on training + selection images",
            f"yes: {refit['images']} images, {refit['epochs']} fine-tuning epochs" if refit else "no",
        ],
        [f"accuracy ({splits['val']['source']})", fmt(evaluation["accuracy"])],
        [f"macro F1 ({splits['val']['source']})", fmt(evaluation["f1_macro"])],
        [f"log loss ({splits['val']['source']})", fmt(evaluation["log_loss"])],
        ["selection accuracy of the kept model", fmt(fit.selection_accuracy)],
        ["selection accuracy, frozen-backbone head", fmt(fit.frozen_selection_accuracy)],
        ["selection log loss, frozen-backbone head", fmt(fit.frozen_selection_loss)],
        [
            "selection accuracy, best fine-tuning epoch",
            fmt(fit.finetuned_selection_accuracy)
            if fit.finetuned_selection_accuracy is not None
            else "not run",
        ],
        *[[k, v] for k, v in summary.items()],
        *[[k, f"{v:.1f} s"] for k, v in fit.timings.items()],
    ]
    per_class = [
        [c, fmt(m["precision"]), fmt(m["recall"]), fmt(m["f1"]), m["support"]]
        for c, m in evaluation["per_class"].items()
    ]
    matrix = [[f"true {c}", *row] for c, row in zip(classes, evaluation["confusion_matrix"], strict=True)]
    wrong = evaluation["misclassified"]
    sheet = contact_sheet(
        [val_images[w["index"]] for w in wrong],
        [f"{w['true']} -> {w['predicted']}\np={w['p']:.2f}" for w in wrong],
    )
    wrong_rows = [[val_paths[w["index"]], w["true"], w["predicted"], f"{w['p']:.3f}"] for w in wrong]
    quarantine_rows = [[q["path"], q["reason"]] for q in quarantined]
    history_rows = [
        [h["epoch"], fmt(h["train_loss"]), fmt(h["selection_loss"]), fmt(h["selection_accuracy"])]
        for h in fit.history
    ]
    if history_rows:
        start = [
            "0 (frozen-backbone head)",
            "",
            fmt(fit.frozen_selection_loss),
            fmt(fit.frozen_selection_accuracy),
        ]
        history_rows.insert(0, start)
    selection_files = [[f, label] for label, files in splits["selection"]["files"].items() for f in files]
    source = splits["val"]["source"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(name)}: image classifier report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
        "margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "th{background:#f3f3f3}img{max-width:100%}</style></head><body>",
        f"<h1>{html.escape(name)}: image classifier</h1>",
        f"<p>The epoch was chosen on the selection split ({splits['selection']['images']} images); "
        f"the reported figures come from the {html.escape(source)} ({splits['val']['images']} images), "
        "which took part in no choice.</p>",
        _table(["", ""], headline),
        *[f"<p>note: {html.escape(note)}</p>" for note in splits.get("notes") or []],
        f"<h2>Per class ({html.escape(source)})</h2>",
        _table(["class", "precision", "recall", "F1", "support"], per_class),
        f"<h2>Confusion matrix ({html.escape(source)})</h2>",
        _table(["", *[f"predicted {c}" for c in classes]], matrix),
        "<h2>Fine-tuning (scored on the selection split)</h2>",
        _img(
            _curve_png(fit.history, fit.frozen_selection_accuracy, fit.frozen_selection_loss),
            "fine-tuning curve",
        ),
        _table(["epoch", "train loss", "selection loss", "selection accuracy"], history_rows)
        if history_rows
        else "<p>not run</p>",
        f"<h2>Selection split ({len(selection_files)} images)</h2>",
        f"<p>{html.escape(splits['selection']['how'])}.</p>",
        _table(["file", "class"], selection_files) if selection_files else "<p>none</p>",
        f"<h2>Misclassified validation images ({len(wrong)})</h2>",
        _img(sheet, "misclassified images"),
        _table(["file", "true", "predicted", "p(predicted)"], wrong_rows) if wrong_rows else "<p>none</p>",
        f"<h2>Quarantined files ({len(quarantined)})</h2>",
        _table(["file", "reason"], quarantine_rows) if quarantine_rows else "<p>none</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
