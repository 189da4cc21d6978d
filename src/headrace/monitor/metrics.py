"""The monitoring gauges, defined once, under ``headrace_``, with the shared labels.

They are computed by ``headrace monitor`` and stored in metadata (``monitor_reports``); the
:class:`MonitorCollector` turns the latest stored reports (and the ingestion log) into Prometheus
gauges at scrape time, so the serving app's ``/metrics`` and ``headrace monitor --watch
--metrics-port`` expose the same numbers however many processes computed them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import desc, func, select

from ..metadata import SCHEMA, Metadata

__all__ = [
    "MONITOR_METRICS",
    "SERVING_METRICS",
    "MetricDef",
    "MonitorCollector",
    "families_from_reports",
    "ingestion_health",
    "latest_reports",
    "ledger_counts",
]


@dataclass(frozen=True)
class MetricDef:
    name: str
    help: str
    labels: tuple[str, ...]
    kind: str = "gauge"


MONITOR_METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in [
        MetricDef("headrace_drift_psi", "PSI of a feature, live window against the training reference",
                  ("model", "version", "feature")),
        MetricDef("headrace_drift_js", "Jensen-Shannon distance (base 2) of a feature, live vs reference",
                  ("model", "version", "feature")),
        MetricDef("headrace_drift_p_value", "KS (numeric) or chi-square (categorical) p-value of a feature",
                  ("model", "version", "feature")),
        MetricDef("headrace_drift_share", "Share of features that drifted", ("model", "version")),
        MetricDef("headrace_dataset_drift", "1 when the share of drifted features reaches drift_share",
                  ("model", "version")),
        MetricDef("headrace_prediction_drift_psi", "PSI of the model's predictions, live against reference",
                  ("model", "version")),
        MetricDef("headrace_live_rows", "Predictions in the live window", ("model", "version")),
        MetricDef("headrace_live_metric", "Live metric from feedback joined to the prediction log",
                  ("model", "version", "metric", "window")),
        MetricDef("headrace_reference_metric", "The version's validation metric at training time",
                  ("model", "version", "metric")),
        MetricDef("headrace_live_metric_drop", "How far the live metric fell below the reference "
                  "(positive is worse)", ("model", "version", "metric")),
        MetricDef("headrace_feedback_rows", "Predictions with ground truth in the window",
                  ("model", "version", "window")),
        MetricDef("headrace_champion_unhealthy", "1 when the champion crossed this limit (error_rate, "
                  "p99_latency, metric) in each of its last windows", ("model", "version", "check")),
        MetricDef("headrace_ingest_quarantine_ratio", "Rows quarantined / rows read, over recent runs",
                  ("dataset",)),
        MetricDef("headrace_stream_delay_seconds", "Seconds since a streaming source last committed a batch",
                  ("dataset",)),
        MetricDef("headrace_monitor_last_run_timestamp_seconds", "When the monitor last checked the model",
                  ("model",)),
        MetricDef("headrace_canary_share", "Share of traffic the challenger gets (0 when none)",
                  ("model", "version", "mode")),
        MetricDef("headrace_lifecycle_events_total", "Ledger entries: register, promote, rollback, retire...",
                  ("model", "action"), "counter"),
    ]
}  # fmt: skip

# What the serving app exports that the alert rules and the dashboard read (see headrace.serve).
SERVING_METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in [
        MetricDef("headrace_requests_total", "Requests by route, model, version and status code",
                  ("route", "model", "version", "status"), "counter"),
        MetricDef("headrace_request_duration_seconds", "Request latency", ("route", "model", "version"),
                  "histogram"),
    ]
}  # fmt: skip


def _gauge(name: str) -> GaugeMetricFamily:
    spec = MONITOR_METRICS[name]
    return GaugeMetricFamily(name, spec.help, labels=list(spec.labels))


def _family(name: str) -> Metric:
    spec = MONITOR_METRICS[name]
    if spec.kind == "counter":
        return CounterMetricFamily(name.removesuffix("_total"), spec.help, labels=list(spec.labels))
    return _gauge(name)


def families_from_reports(
    reports: Iterable[dict[str, Any]],
    health: dict[str, dict[str, float | None]] | None = None,
    events: dict[tuple[str, str], int] | None = None,
) -> list[Metric]:
    """Gauge families from monitor report documents (as ``monitor.run_checks`` stores them).

    Each report is ``{"model", "version", "kind": "drift"|"performance"|..., "report": {...},
    "created_at"}``; the newest report of each (model, kind) should come last.
    """
    out: dict[str, Any] = {name: _family(name) for name in MONITOR_METRICS}
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for row in reports:
        seen[(row["model"], row["kind"])] = row
    last_run: dict[str, float] = {}
    for (model, kind), row in sorted(seen.items()):
        version = str(row.get("version"))
        doc = row["report"]
        created = row.get("created_at")
        if isinstance(created, datetime):
            stamp = (created if created.tzinfo else created.replace(tzinfo=UTC)).timestamp()
            last_run[model] = max(last_run.get(model, 0.0), stamp)
        if kind == "drift":
            for feature in doc.get("features", []):
                labels = [model, version, feature["feature"]]
                _add(out["headrace_drift_psi"], labels, feature.get("psi"))
                _add(out["headrace_drift_js"], labels, feature.get("js"))
                _add(out["headrace_drift_p_value"], labels, feature.get("p_value"))
            _add(out["headrace_drift_share"], [model, version], doc.get("share_drifted"))
            _add(out["headrace_dataset_drift"], [model, version], float(bool(doc.get("dataset_drift"))))
            prediction = doc.get("prediction") or {}
            _add(out["headrace_prediction_drift_psi"], [model, version], prediction.get("psi"))
            _add(out["headrace_live_rows"], [model, version], doc.get("live_rows"))
        elif kind == "performance":
            metric = doc.get("metric")
            for window in doc.get("windows", []):
                label = window.get("label", "")
                _add(out["headrace_live_metric"], [model, version, metric, label], window.get("value"))
                _add(out["headrace_feedback_rows"], [model, version, label], window.get("rows"))
            _add(out["headrace_reference_metric"], [model, version, metric], doc.get("reference"))
            _add(out["headrace_live_metric_drop"], [model, version, metric], doc.get("drop"))
        elif kind == "champion":
            for check, crossed in (doc.get("unhealthy") or {}).items():
                value = float(bool(crossed)) if doc.get("version") is not None else None
                _add(out["headrace_champion_unhealthy"], [model, str(doc.get("version")), check], value)
        elif kind == "canary":
            state = doc.get("state")
            share = doc.get("share") if state == "running" else 0.0
            _add(out["headrace_canary_share"], [model, str(doc.get("version")), doc.get("mode", "")], share)
    for model, stamp in last_run.items():
        out["headrace_monitor_last_run_timestamp_seconds"].add_metric([model], stamp)
    for dataset, values in (health or {}).items():
        _add(out["headrace_ingest_quarantine_ratio"], [dataset], values.get("quarantine_ratio"))
        _add(out["headrace_stream_delay_seconds"], [dataset], values.get("stream_delay_s"))
    for (model, action), count in sorted((events or {}).items()):
        out["headrace_lifecycle_events_total"].add_metric([model, action], float(count))
    return list(out.values())


def _add(family: Any, labels: list[Any], value: Any) -> None:
    if value is None:
        return
    family.add_metric([str(v) for v in labels], float(value))


def ingestion_health(meta: Metadata, recent: int = 20) -> dict[str, dict[str, float | None]]:
    """Per dataset: quarantine ratio over its ``recent`` runs, and the delay of streaming sources."""
    runs = SCHEMA.tables["ingestion_runs"]
    with meta.begin() as conn:
        rows = (
            conn.execute(
                select(
                    runs.c.dataset,
                    runs.c.kind,
                    runs.c.rows_read,
                    runs.c.rows_quarantined,
                    runs.c.finished_at,
                    runs.c.status,
                )
                .order_by(desc(runs.c.id))
                .limit(2000)
            )
            .mappings()
            .all()
        )
    per: dict[str, list[Any]] = {}
    for row in rows:
        bucket = per.setdefault(row["dataset"], [])
        if len(bucket) < recent:
            bucket.append(row)
    now = datetime.now(UTC)
    out: dict[str, dict[str, float | None]] = {}
    for dataset, items in per.items():
        read = sum(int(r["rows_read"] or 0) for r in items)
        quarantined = sum(int(r["rows_quarantined"] or 0) for r in items)
        delay: float | None = None
        streaming = [r for r in items if r["kind"] in ("mqtt", "nats") and r["finished_at"] is not None]
        if streaming:
            last = max(r["finished_at"] for r in streaming)
            last = last if last.tzinfo else last.replace(tzinfo=UTC)
            delay = max(0.0, (now - last).total_seconds())
        out[dataset] = {"quarantine_ratio": quarantined / read if read else 0.0, "stream_delay_s": delay}
    return out


class MonitorCollector(Collector):
    """Prometheus collector over the latest monitor reports in metadata, cached for ``ttl`` seconds."""

    def __init__(self, meta: Metadata, ttl: float = 10.0) -> None:
        self.meta = meta
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def describe(self) -> list[Metric]:
        return [_family(name) for name in MONITOR_METRICS]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self.ttl:
                self._cached = (now, self._families())
            families = self._cached[1]
        yield from families

    def _families(self) -> list[Metric]:
        reports = latest_reports(self.meta)
        try:
            health = ingestion_health(self.meta)
        except Exception:  # the ingestion log is optional for the gauges; never fail a scrape
            health = {}
        return families_from_reports(reports, health, ledger_counts(self.meta))


def ledger_counts(meta: Metadata) -> dict[tuple[str, str], int]:
    """Ledger entries per (model, action): a counter, since the ledger only ever grows."""
    table = SCHEMA.tables["ledger"]
    with meta.begin() as conn:
        rows = conn.execute(
            select(table.c.model, table.c.action, func.count()).group_by(table.c.model, table.c.action)
        ).all()
    return {(str(m), str(a)): int(n) for m, a, n in rows}


def latest_reports(meta: Metadata) -> list[dict[str, Any]]:
    """The newest stored report of each (model, kind), oldest first."""
    table = SCHEMA.tables["monitor_reports"]
    newest = select(func.max(table.c.id).label("id")).group_by(table.c.model, table.c.kind).subquery("newest")
    with meta.begin() as conn:
        rows = (
            conn.execute(select(table).join(newest, table.c.id == newest.c.id).order_by(table.c.id))
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]
