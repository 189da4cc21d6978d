"""The charts of each page, built from the plain data of :mod:`headrace.ui.data`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from markupsafe import Markup

from .charts import (
    PALETTE,
    STATUS_COLORS,
    Bar,
    Segment,
    Series,
    Threshold,
    bar_chart,
    line_chart,
    stacked_bar_chart,
    timeline_chart,
)

__all__ = ["dataset_charts", "model_charts", "monitoring_charts"]

_CLEAN, _QUARANTINED, _UNPARSEABLE = "#2a9d5c", "#e07b1a", "#cf222e"


def dataset_charts(doc: dict[str, Any]) -> dict[str, Markup]:
    reports = doc["reports"]
    if not reports:
        return {}
    labels = [r["at"].strftime("%m-%d %H:%M") if r["at"] else str(r["id"]) for r in reports]
    out = {
        "quality": stacked_bar_chart(
            labels,
            [
                ("clean", [r["rows_clean"] for r in reports], _CLEAN),
                ("quarantined", [r["rows_quarantined"] for r in reports], _QUARANTINED),
                ("unparseable", [r["rows_unparseable"] for r in reports], _UNPARSEABLE),
            ],
            label="Rows per batch: clean, quarantined and unparseable",
            y_label="rows",
            notes=[f"{r['origin']} ({r['status']})" for r in reports],
        )
    }
    thresholds = [Threshold(float(doc["alert_ratio"]), f"alert {doc['alert_ratio']:.0%}", color="#d4a72c")]
    if doc.get("max_quarantine_ratio") is not None and doc["max_quarantine_ratio"] < 1:
        limit = float(doc["max_quarantine_ratio"])
        thresholds.append(Threshold(limit, "max_quarantine_ratio: batch fails above"))
    out["reject"] = line_chart(
        [
            Series(
                "rejected share",
                [(r["at"], r["reject_ratio"]) for r in reports if r["at"]],
                color=_QUARANTINED,
            )
        ],
        label="Share of each batch's rows rejected, over time",
        thresholds=thresholds,
        y_label="rejected share",
        y_range=(0.0, None),
    )
    return out


def model_charts(doc: dict[str, Any]) -> dict[str, Markup]:
    out: dict[str, Markup] = {}
    versions = list(reversed(doc["versions"]))
    metric = doc["metric"]
    points = [(float(v["version"]), v["value"]) for v in versions if v["value"] is not None]
    if points:
        gate = doc.get("gate") or {}
        thresholds = []
        if gate.get("metric") == metric and gate.get("at_least") is not None:
            thresholds.append(Threshold(float(gate["at_least"]), f"gate: {metric} ≥ {gate['at_least']}"))
        if gate.get("metric") == metric and gate.get("at_most") is not None:
            thresholds.append(Threshold(float(gate["at_most"]), f"gate: {metric} ≤ {gate['at_most']}"))
        out["versions"] = bar_chart(
            [
                Bar(
                    f"v{v['version']}" + (f" ({', '.join(v['aliases'])})" if v["aliases"] else ""),
                    v["value"],
                    color="#6b7280" if v["status"] == "retired" else PALETTE[0],
                )
                for v in versions
            ],
            label=f"{metric} of each version (mean over the outer folds)",
            thresholds=[Threshold(t.value, t.label, axis="x") for t in thresholds],
            value_label=metric,
            x_range=(min(0.0, min(p[1] for p in points if p[1] is not None)), None),
        )
    selected = doc.get("selected")
    if selected:
        folds = selected["folds"]
        if folds:
            mean = (selected["summary"].get(metric) or {}).get("mean")
            out["folds"] = bar_chart(
                [Bar(f"fold {f['fold']}", f["scores"].get(metric)) for f in folds],
                label=f"{metric} per outer fold of v{selected['version']}",
                width=420,
                thresholds=[Threshold(float(mean), f"mean {mean:.4f}", color="#334155", axis="x")]
                if mean is not None
                else [],
                value_label=metric,
            )
        curves = selected.get("curves")
        if curves and curves["kind"] == "binary":
            out["roc"] = line_chart(
                [
                    Series(f"ROC (AUC {curves['roc_auc']:.4f})", curves["roc"], markers=False),
                    Series("chance", [(0.0, 0.0), (1.0, 1.0)], color="#9ca3af", dashed=True, markers=False),
                ],
                label="ROC curve (out-of-fold predictions)",
                x_label="false positive rate",
                y_label="true positive rate",
                x_range=(0.0, 1.0),
                y_range=(0.0, 1.0),
                width=420,
                height=300,
            )
            point = curves.get("threshold_point")
            out["pr"] = line_chart(
                [Series("precision-recall", curves["pr"], markers=False)],
                label="Precision-recall curve (out-of-fold predictions)",
                x_label="recall",
                y_label="precision",
                thresholds=[Threshold(curves["base_rate"], "base rate", color="#9ca3af")],
                markers=[(point[0], point[1], f"threshold {selected['threshold']:.3f}")]
                if point and selected.get("threshold") is not None
                else [],
                x_range=(0.0, 1.0),
                y_range=(0.0, 1.02),
                width=420,
                height=300,
            )
        elif curves and curves["kind"] == "regression":
            out["residuals"] = line_chart(
                [Series("residual", [(x, y) for x, y in curves["residuals"]])],
                label="Residuals (actual - predicted) against predicted, out-of-fold",
                thresholds=[Threshold(0.0, "0", color="#9ca3af")],
                x_label="predicted",
                y_label="residual",
                scatter=True,
            )
    timeline = doc["timeline"]
    if timeline["segments"]:
        out["timeline"] = timeline_chart(
            [
                Segment(
                    s["lane"],
                    s["start"],
                    s["end"],
                    f"v{s['version']}",
                    color=PALETTE[(s["version"] - 1) % len(PALETTE)],
                    note=s["why"],
                )
                for s in timeline["segments"]
            ],
            label="Which version held champion and challenger, and when",
            events=[(e["ts"], e["action"], f"v{e['version']}: {e['reason']}") for e in timeline["events"]],
            now=timeline["now"],
        )
    return out


def monitoring_charts(doc: dict[str, Any]) -> dict[str, Markup]:
    out: dict[str, Markup] = {}
    t = doc["thresholds"]
    psi_lines = [
        Threshold(t["psi_warn"], f"warn {t['psi_warn']}", color=STATUS_COLORS["warn"]),
        Threshold(t["psi_alert"], f"alert {t['psi_alert']}", color=STATUS_COLORS["alert"]),
    ]
    drift = doc["drift"]
    latest = doc.get("latest_drift")
    if drift:
        last = drift[-1]["psi"]
        top = sorted(last, key=lambda f: -(last[f] or 0.0))[:8]
        series = [Series(f, [(d["at"], d["psi"].get(f)) for d in drift]) for f in top]
        if any(d["prediction_psi"] is not None for d in drift):
            series.append(
                Series(
                    "prediction",
                    [(d["at"], d["prediction_psi"]) for d in drift],
                    color="#111827",
                    dashed=True,
                )
            )
        out["drift_time"] = line_chart(
            series,
            label="PSI per feature over time (the 8 that moved most in the latest report)",
            thresholds=psi_lines,
            y_label="PSI",
            y_range=(0.0, None),
        )
    if latest:
        features = sorted(latest.get("features", []), key=lambda f: -(f.get("psi") or 0.0))
        out["drift_latest"] = bar_chart(
            [
                Bar(
                    f["feature"],
                    f.get("psi"),
                    color=STATUS_COLORS.get(f.get("status", "ok"), PALETTE[0]),
                    note=f.get("status", ""),
                )
                for f in features
            ],
            label="PSI per feature in the latest drift report",
            thresholds=[Threshold(x.value, x.label, x.color, axis="x") for x in psi_lines],
            value_label="PSI (live window against the training data)",
        )
    live = doc["live"]
    accuracy = live.get("accuracy") or {}
    if accuracy.get("points"):
        versions = sorted({p["version"] for p in accuracy["points"]})
        lines = []
        reference = accuracy.get("reference")
        if reference is not None:
            lines.append(Threshold(reference, f"validation {reference:.3f}", color="#334155"))
            floor = (
                reference - t["metric_drop"]
                if accuracy["metric"] != "rmse"
                else reference * (1 + t["metric_drop"])
            )
            lines.append(Threshold(floor, f"rollback at {floor:.3f}", color=STATUS_COLORS["alert"]))
        out["accuracy"] = line_chart(
            [
                Series(f"v{v}", [(p["ts"], p["value"]) for p in accuracy["points"] if p["version"] == v])
                for v in versions
            ],
            label=f"Live {accuracy['metric']} from feedback, per version",
            thresholds=lines,
            y_label=accuracy["metric"],
            y_range=(0.0, 1.0) if accuracy["metric"] == "accuracy" else (None, None),
        )
    buckets = live.get("buckets") or []
    if buckets:
        out["latency"] = line_chart(
            [
                Series("p50", [(b["ts"], b["p50"]) for b in buckets]),
                Series("p95", [(b["ts"], b["p95"]) for b in buckets]),
                Series("p99", [(b["ts"], b["p99"]) for b in buckets]),
            ],
            label="Latency percentiles of logged predictions (ms)",
            thresholds=[Threshold(float(t["p99_latency_ms"]), f"p99 limit {t['p99_latency_ms']:g} ms")],
            y_label="ms",
            y_range=(0.0, None),
        )
        out["errors"] = line_chart(
            [
                Series(
                    "error rate", [(b["ts"], b["error_rate"]) for b in buckets], color=STATUS_COLORS["alert"]
                )
            ],
            label="Error rate of logged predictions (failed challenger answers / all)",
            thresholds=[Threshold(float(t["error_rate"]), f"rollback at {t['error_rate']:.1%}")],
            y_label="error rate",
            y_range=(0.0, max(0.05, float(t["error_rate"]) * 1.5, *(b["error_rate"] or 0 for b in buckets))),
        )
    perf = doc["performance"]
    if perf:
        metric = perf[-1]["metric"]
        windows = sorted({w.get("label") for r in perf for w in r["windows"] if w.get("label")})
        series = [
            Series(
                f"live {metric} ({label})",
                [
                    (r["at"], next((w.get("value") for w in r["windows"] if w.get("label") == label), None))
                    for r in perf
                ],
            )
            for label in windows
        ]
        reference = next((r["reference"] for r in reversed(perf) if r["reference"] is not None), None)
        lines = []
        if reference is not None:
            lines.append(Threshold(reference, f"validation {reference:.3f}", color="#334155"))
            if metric not in ("rmse", "mae", "mape"):
                lines.append(
                    Threshold(reference - t["metric_drop"], "rollback", color=STATUS_COLORS["alert"])
                )
        if any(p for s in series for _, p in s.points if p is not None):
            out["performance"] = line_chart(
                series, label=f"Live {metric} as the monitor measured it", thresholds=lines, y_label=metric
            )
    return out


def when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)
