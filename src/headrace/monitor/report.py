"""The monitoring report: one self-contained HTML page (plots embedded as PNG, no network needed).

PSI per feature against the warn and alert lines, the reference and live distributions of the
features that moved most, the live metric per window against the validation score, the champion's
last windows against its limits, the canary's health beside the champion's, and the decision with
its reasons.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from .loop import CheckResult

__all__ = ["render_html", "write_report"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.ok{color:#1a7f37}.warn{color:#9a6700}.alert{color:#cf222e;font-weight:bold} img{max-width:100%}
"""


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return '<img alt="plot" src="data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode() + '">'


def _psi_plot(result: CheckResult) -> str:
    report = result.drift
    assert report is not None
    features = sorted(report.features, key=lambda f: f.psi)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(features) + 1.2))
    colors = ["#cf222e" if f.drifted else "#d4a72c" if f.status == "warn" else "#2da44e" for f in features]
    ax.barh([f.feature for f in features], [f.psi for f in features], color=colors)
    ax.axvline(report.thresholds.psi_warn, color="#d4a72c", linestyle="--", label="warn")
    ax.axvline(report.thresholds.psi_alert, color="#cf222e", linestyle="--", label="alert")
    ax.set_xlabel("PSI (live window against the training data)")
    ax.legend(loc="lower right")
    return _png(fig)


def _distribution_plots(result: CheckResult, top: int = 4) -> str:
    report = result.drift
    assert report is not None
    movers = sorted(report.features, key=lambda f: f.psi, reverse=True)[:top]
    if report.prediction is not None:
        movers.append(report.prediction)
    fig, axes = plt.subplots(1, len(movers), figsize=(3.6 * len(movers), 3.2), squeeze=False)
    for ax, feature in zip(axes[0], movers, strict=True):
        x = range(len(feature.bins))
        ax.bar([i - 0.2 for i in x], feature.reference_share, width=0.4, label="reference", color="#8c959f")
        ax.bar([i + 0.2 for i in x], feature.live_share, width=0.4, label="live", color="#0969da")
        ax.set_title(f"{feature.feature} (PSI {feature.psi:.2f})", fontsize=9)
        ax.set_xticks(list(x))
        ax.set_xticklabels(feature.bins, rotation=60, ha="right", fontsize=6)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _performance_plot(result: CheckResult) -> str:
    perf = result.performance
    assert perf is not None
    windows = [w for w in perf.windows if w.value is not None]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar([w.label for w in windows], [float(w.value or 0.0) for w in windows], color="#0969da")
    if perf.reference is not None:
        ax.axhline(perf.reference, color="#8c959f", linestyle="--", label="validation score")
        ax.legend()
    ax.set_ylabel(f"live {perf.metric}")
    return _png(fig)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_html(result: CheckResult) -> str:
    """The report for one model as an HTML document."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>headrace monitor: {html.escape(result.model)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Monitoring report: {html.escape(result.model)}</h1>",
        f"<p>champion v{_fmt(result.signals.champion)}, challenger v{_fmt(result.signals.challenger)}; "
        f"generated {datetime.now(UTC).isoformat(timespec='seconds')}</p>",
        "<h2>Decision</h2>",
        f"<p><b>{html.escape(result.decision.action)}</b>: {html.escape(result.decision.reason)}</p>",
        "<h2>Drift</h2>",
    ]
    if result.drift is not None:
        report = result.drift
        css = report.status
        parts.append(
            f"<p class='{css}'>status {report.status}: {report.share_drifted:.0%} of features drifted "
            f"({', '.join(report.drifted) or 'none'}); {report.live_rows} live rows against "
            f"{report.reference_rows} reference rows</p>"
        )
        if report.features:  # an image model's drift is its prediction mix only
            parts.append(_psi_plot(result))
        parts.append(_distribution_plots(result))
        rows = [
            [f.feature, f.kind, f.psi, f.test, f.statistic, f.p_value, f.js, f.status]
            for f in report.features + ([report.prediction] if report.prediction else [])
        ]
        parts.append(_table(["feature", "kind", "PSI", "test", "statistic", "p-value", "JS", "status"], rows))
    else:
        parts.append(f"<p>not measured: {html.escape(result.drift_error or 'no data')}</p>")
    parts.append("<h2>Live performance</h2>")
    perf = result.performance
    if perf is not None and any(w.value is not None for w in perf.windows):
        parts.append(_performance_plot(result))
        parts.append(
            _table(
                ["window", "rows with feedback", perf.metric, "validation score"],
                [[w.label, w.rows, w.value, perf.reference] for w in perf.windows],
            )
        )
    else:
        parts.append("<p>no feedback joined to the prediction log yet (POST /feedback)</p>")
    watch = result.champion_watch
    if watch is not None:
        crossed = [check for check, bad in watch["unhealthy"].items() if bad]
        parts.append("<h2>Champion</h2>")
        parts.append(
            f"<p class='{'alert' if crossed else 'ok'}'>v{watch['version']}, last {len(watch['windows'])} "
            f"windows of {watch['window']:g} s: {html.escape(', '.join(crossed) or 'healthy')} "
            f"(policy: {html.escape(watch['action'])})</p>"
        )
        rows = [
            [
                f"-{i}" if i else "newest",
                w["requests"],
                w["error_rate"],
                w["p99_ms"],
                w["metric"],
                w["feedback_rows"],
            ]
            for i, w in enumerate(watch["windows"])
        ]
        parts.append(_table(["window", "requests", "error rate", "p99 ms", watch["metric"], "rows"], rows))
        parts.extend(f"<p>{html.escape(note)}</p>" for note in watch["notes"])
    if result.canary is not None:
        parts.append("<h2>Canary</h2>")
        rows = []
        for who in ("canary", "champion"):
            h = result.canary[who]
            rows.append([f"{who} v{h['version']}", h["requests"], h["error_rate"], h["p99_ms"], h["metric"]])
        parts.append(_table(["version", "requests", "error rate", "p99 ms", "live metric"], rows))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: CheckResult, path: Path | str) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(result), encoding="utf-8")
    return target
