"""The validation report of a model version: one HTML page (plots embedded as PNG) and a JSON twin.

Everything comes from what training recorded: the scorecard in the version's details and the
out-of-fold predictions (an artifact), so a report is cheap to rebuild and always describes the
version as it was validated: fold scores, ROC and precision-recall curves, the confusion matrix at
the chosen threshold, calibration, residuals for regression, permutation importance, the data
version, the parameters and the lineage.
"""

from __future__ import annotations

import base64
import io
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from jinja2 import Environment, select_autoescape
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from ..errors import NotFound
from ..registry import ModelVersion, Registry

__all__ = ["build_report", "load_oof", "write_report"]

_POINTS = 200


def load_oof(registry: Registry, mv: ModelVersion) -> pl.DataFrame:
    sha = mv.details.get("oof_sha256")
    if not sha:
        raise NotFound(
            f"{mv.ref} has no recorded out-of-fold predictions",
            hint="it was not trained by 'headrace train'; retrain it to get a report",
        )
    return pl.read_parquet(io.BytesIO(registry.artifacts.get_bytes(sha)))


def _thin(*arrays: np.ndarray) -> list[list[float]]:
    n = len(arrays[0])
    keep = np.unique(np.linspace(0, n - 1, min(n, _POINTS)).astype(int)) if n else np.array([], dtype=int)
    return [np.asarray(a)[keep].astype(float).round(6).tolist() for a in arrays]


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float = 5.0, height: float = 3.6) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _binary_curves(
    y: np.ndarray, p: np.ndarray, threshold: float | None
) -> tuple[dict[str, Any], dict[str, str]]:
    fpr, tpr, _ = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    curves = {
        "roc": dict(zip(("fpr", "tpr"), _thin(fpr, tpr), strict=True)),
        "pr": dict(zip(("recall", "precision"), _thin(recall[::-1], precision[::-1]), strict=True)),
        "calibration": {"predicted": prob_pred.round(6).tolist(), "observed": prob_true.round(6).tolist()},
    }
    plots: dict[str, str] = {}
    fig, ax = _figure()
    ax.plot(fpr, tpr, lw=1.5, label="out-of-fold")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    ax.legend(loc="lower right")
    plots["ROC curve"] = _png(fig)
    fig, ax = _figure()
    ax.plot(recall, precision, lw=1.5)
    ax.axhline(float(np.mean(y)), ls="--", c="grey", lw=0.8, label="base rate")
    if threshold is not None:
        chosen = p >= threshold
        tp = float(np.sum(chosen & (y == 1)))
        ax.scatter(
            [tp / max(1.0, float(np.sum(y == 1)))],
            [tp / max(1.0, float(np.sum(chosen)))],
            c="red",
            zorder=3,
            label=f"threshold {threshold:.3f}",
        )
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve")
    ax.legend(loc="upper right")
    plots["Precision-recall curve"] = _png(fig)
    fig, ax = _figure()
    ax.plot(prob_pred, prob_true, marker="o", lw=1.5, label="model")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8, label="perfectly calibrated")
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title="Calibration (deciles)")
    ax.legend(loc="upper left")
    plots["Calibration"] = _png(fig)
    return curves, plots


def _confusion_plot(matrix: list[list[int]], classes: list[Any]) -> str:
    fig, ax = _figure(4.2, 3.6)
    data = np.asarray(matrix)
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(classes)), [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), [str(c) for c in classes])
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            color = "white" if data[i, j] > data.max() / 2 else "black"
            ax.text(j, i, str(data[i, j]), ha="center", va="center", color=color)
    ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix (out-of-fold)")
    return _png(fig)


def _regression_plots(y: np.ndarray, pred: np.ndarray) -> tuple[dict[str, Any], dict[str, str]]:
    residual = y - pred
    plots: dict[str, str] = {}
    rng = np.random.default_rng(0)
    idx = rng.choice(len(y), size=min(len(y), 5000), replace=False)
    fig, ax = _figure()
    ax.scatter(pred[idx], y[idx], s=4, alpha=0.35)
    low, high = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([low, high], [low, high], c="grey", ls="--", lw=0.8)
    ax.set(xlabel="predicted", ylabel="actual", title="Predicted against actual (out-of-fold)")
    plots["Predicted against actual"] = _png(fig)
    fig, ax = _figure()
    ax.scatter(pred[idx], residual[idx], s=4, alpha=0.35)
    ax.axhline(0, c="grey", ls="--", lw=0.8)
    ax.set(xlabel="predicted", ylabel="residual (actual - predicted)", title="Residuals")
    plots["Residuals"] = _png(fig)
    fig, ax = _figure()
    ax.hist(residual, bins=50)
    ax.set(xlabel="residual", ylabel="rows", title="Residual distribution")
    plots["Residual distribution"] = _png(fig)
    quantiles = np.quantile(residual, [0.05, 0.25, 0.5, 0.75, 0.95]).round(4).tolist()
    return {
        "residual_quantiles": dict(zip(("p05", "p25", "p50", "p75", "p95"), quantiles, strict=True))
    }, plots


def _fold_plot(scorecard: dict[str, Any]) -> str:
    metric = scorecard["metric"]
    values = [f["scores"].get(metric, float("nan")) for f in scorecard["folds"]]
    fig, ax = _figure(5.0, 3.0)
    ax.bar(range(1, len(values) + 1), values)
    mean = scorecard["summary"][metric]["mean"]
    ax.axhline(mean, c="red", lw=1, label=f"mean {mean:.4g}")
    ax.set(xlabel="fold", ylabel=metric, title=f"{metric} per outer fold")
    finite = [v for v in values if np.isfinite(v)]
    if finite:
        spread = max(finite) - min(finite)
        ax.set_ylim(min(finite) - spread - 1e-9, max(finite) + spread + 1e-9)
    ax.legend(loc="lower right")
    return _png(fig)


def _importance_plot(rows: list[dict[str, Any]]) -> str:
    top = rows[:15][::-1]
    fig, ax = _figure(5.5, 0.3 * len(top) + 1.2)
    ax.barh([r["feature"] for r in top], [r["mean"] for r in top], xerr=[r["std"] for r in top])
    ax.set(xlabel="score drop when the column is shuffled", title="Permutation importance (held-out folds)")
    return _png(fig)


def build_report(mv: ModelVersion, oof: pl.DataFrame) -> tuple[str, dict[str, Any]]:
    """The HTML page and the JSON document for ``mv``."""
    scorecard = dict(mv.details.get("scorecard") or {})
    if not scorecard:
        raise NotFound(f"{mv.ref} has no scorecard", hint="retrain it with 'headrace train'")
    y = oof["y"].to_numpy()
    plots: dict[str, str] = {"Fold scores": _fold_plot(scorecard)}
    curves: dict[str, Any] = {}
    classes = scorecard.get("classes")
    if mv.task == "classification" and classes is not None:
        if len(classes) == 2:
            extra_curves, extra_plots = _binary_curves(y, oof["prediction"].to_numpy(), mv.threshold)
            curves.update(extra_curves)
            plots.update(extra_plots)
        plots["Confusion matrix"] = _confusion_plot(scorecard["confusion"], classes)
    else:
        extra, extra_plots = _regression_plots(y.astype(float), oof["prediction"].to_numpy())
        curves.update(extra)
        plots.update(extra_plots)
    if scorecard.get("importance"):
        plots["Permutation importance"] = _importance_plot(scorecard["importance"])
    doc = {
        "model": mv.name,
        "version": mv.version,
        "task": mv.task,
        "created_at": mv.created_at.isoformat(),
        "aliases": list(mv.aliases),
        "dataset": mv.dataset,
        "data_version": mv.data_version,
        "code_version": mv.code_version,
        "packages": mv.packages,
        "params": mv.params,
        "threshold": mv.threshold,
        "metrics": mv.metrics,
        "scorecard": scorecard,
        "curves": curves,
        "spec": mv.details.get("spec"),
    }
    html = _TEMPLATE.render(doc=doc, sc=scorecard, plots=plots, spec_json=json.dumps(doc["spec"], indent=2))
    return html, doc


def write_report(registry: Registry, name: str, ref: int | str | None, out: Path) -> dict[str, Any]:
    """Write ``report.html`` and ``report.json`` for ``name@ref`` under ``out``; return the paths."""
    mv = registry.get(name, ref if ref is not None else "latest")
    html, doc = build_report(mv, load_oof(registry, mv))
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{mv.name}-v{mv.version}"
    html_path = out / f"{stem}.html"
    json_path = out / f"{stem}.json"
    html_path.write_text(html, encoding="utf-8")
    json_path.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
    return {
        "model": mv.name,
        "version": mv.version,
        "html": str(html_path),
        "json": str(json_path),
        "doc": doc,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if not np.isfinite(value):
            return "n/a"
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


_ENV = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_ENV.filters["fmt"] = _fmt
_TEMPLATE = _ENV.from_string(
    (resources.files("headrace.train") / "report.html.j2").read_text(encoding="utf-8")
)
