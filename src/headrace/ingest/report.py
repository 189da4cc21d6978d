"""Quality reports as rich tables (the terminal) and as one HTML page (to share or archive)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import Environment, select_autoescape
from rich.console import Group
from rich.table import Table
from sqlalchemy import desc, select

from ..metadata import SCHEMA, Metadata

__all__ = ["latest_reports", "report_html", "report_tables"]


def latest_reports(meta: Metadata, dataset: str, limit: int = 10) -> list[dict[str, Any]]:
    """The newest stored quality reports of a dataset, newest first."""
    table = SCHEMA.tables["quality_reports"]
    with meta.begin() as conn:
        rows = conn.execute(
            select(table).where(table.c.dataset == dataset).order_by(desc(table.c.id)).limit(limit)
        ).mappings()
        return [
            {**dict(r["report"]), "run_id": r["run_id"], "created_at": r["created_at"].isoformat()}
            for r in rows
        ]


def report_tables(report: Mapping[str, Any], *, columns: bool = True) -> Group:
    """One report (``QualityReport.to_dict()``) as rich tables: counts, failures, cleansing, columns."""
    origins = ", ".join(report.get("origins") or []) or report.get("dataset", "")
    head = Table(title=f"quality report: {origins}", title_justify="left", header_style="bold")
    for name in ("in", "clean", "quarantined", "unparseable", "duplicates dropped", "empty rows"):
        head.add_column(name, justify="right")
    head.add_row(
        *[
            str(report.get(k, 0))
            for k in (
                "rows_in",
                "rows_clean",
                "rows_quarantined",
                "rows_unparseable",
                "duplicates_dropped",
                "empty_rows_dropped",
            )
        ]
    )
    parts: list[Any] = [head]
    failures = report.get("failures") or {}
    if failures:
        rules = Table(title="failures per rule", title_justify="left", header_style="bold")
        rules.add_column("rule")
        rules.add_column("rows", justify="right")
        for rule, count in sorted(failures.items(), key=lambda kv: -kv[1]):
            rules.add_row(rule, str(count))
        parts.append(rules)
    fixes = [
        (col, f"impute {rec['strategy']}", rec.get("values", rec.get("value")), rec["count"])
        for col, rec in (report.get("imputed") or {}).items()
    ] + [
        (
            col,
            f"outliers {rec['method']} {rec['action']}",
            f"[{rec['lower']:.4g}, {rec['upper']:.4g}]",
            rec["count"],
        )
        for col, rec in (report.get("outliers") or {}).items()
    ]
    if fixes:
        cleansing = Table(title="cleansing", title_justify="left", header_style="bold")
        for name in ("column", "step", "value used", "values changed"):
            cleansing.add_column(name)
        for col, step, value, count in fixes:
            cleansing.add_row(col, step, str(value), str(count))
        parts.append(cleansing)
    stats_doc = (report.get("columns") or {}) if columns else {}
    if stats_doc:
        stats = Table(title="columns (clean rows)", title_justify="left", header_style="bold")
        for name in ("column", "type", "nulls", "distinct", "min", "max", "mean"):
            stats.add_column(name, overflow="fold")
        for col, st in stats_doc.items():
            mean = st.get("mean")
            stats.add_row(
                col,
                str(st.get("dtype")),
                str(st.get("nulls")),
                str(st.get("distinct")),
                _short(st.get("min")),
                _short(st.get("max")),
                "" if mean is None else f"{mean:.4g}",
            )
        parts.append(stats)
    return Group(*parts)


def _short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 24 else text[:21] + "..."


_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>headrace quality report: {{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3} td.n{text-align:right} .bad{color:#b00020}
</style></head><body>
<h1>Quality report: {{ title }}</h1>
{% for r in reports %}
<h2>{{ (r.origins or [r.dataset]) | join(", ") }}</h2>
<p>batch {{ r.batch_id }}{% if r.status %}, {{ r.status }}{% endif %}{% if r.error %}
 <span class="bad">({{ r.error }})</span>{% endif %}</p>
<table><tr><th>in</th><th>clean</th><th>quarantined</th><th>unparseable</th><th>duplicates dropped</th>
<th>empty rows</th></tr>
<tr><td class="n">{{ r.rows_in }}</td><td class="n">{{ r.rows_clean }}</td>
<td class="n">{{ r.rows_quarantined }}</td><td class="n">{{ r.rows_unparseable }}</td>
<td class="n">{{ r.duplicates_dropped }}</td><td class="n">{{ r.empty_rows_dropped }}</td></tr></table>
{% if r.failures %}<table><tr><th>rule</th><th>rows</th></tr>
{% for rule, n in r.failures | dictsort(by="value", reverse=true) %}
<tr><td>{{ rule }}</td><td class="n">{{ n }}</td></tr>{% endfor %}</table>{% endif %}
{% if r.imputed %}<table><tr><th>column</th><th>imputed with</th><th>value</th><th>count</th></tr>
{% for col, i in r.imputed.items() %}<tr><td>{{ col }}</td><td>{{ i.strategy }}</td>
<td>{{ i.get("values", i.value) }}</td><td class="n">{{ i.count }}</td></tr>{% endfor %}</table>{% endif %}
{% if r.columns %}<table><tr><th>column</th><th>type</th><th>nulls</th><th>distinct</th><th>min</th>
<th>max</th><th>mean</th></tr>
{% for col, s in r.columns.items() %}<tr><td>{{ col }}</td><td>{{ s.dtype }}</td>
<td class="n">{{ s.nulls }}</td><td class="n">{{ s.distinct }}</td><td>{{ s.min }}</td><td>{{ s.max }}</td>
<td class="n">{{ "" if s.mean is none else "%.4g" | format(s.mean) }}</td></tr>{% endfor %}</table>{% endif %}
{% endfor %}
</body></html>
"""


def report_html(reports: Sequence[Mapping[str, Any]], title: str = "") -> str:
    """Reports (``QualityReport.to_dict()`` documents) as one self-contained HTML page."""
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(_HTML).render(reports=list(reports), title=title or "headrace")
