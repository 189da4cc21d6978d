"""Alerting files for a project: Prometheus alerting rules, a Grafana dashboard, an Alertmanager example.

``write_alert_files(spec, folder)`` writes

- ``prometheus-rules.yml``: error rate, p99 latency, feature / dataset / prediction drift, a live
  metric drop, an unhealthy champion, the quarantine ratio, stream delay, a stale monitor and
  rollbacks, with the thresholds of ``monitoring:`` in headrace.yaml;
- ``grafana-dashboard.json``: a dashboard (schema version 39) with a ``datasource`` variable, so it
  imports into any Grafana with a Prometheus data source, and a ``model`` variable;
- ``alertmanager.yml``: routes by severity to a webhook and an e-mail receiver (placeholders).

``check_alert_files(folder)`` validates them: with ``promtool check rules`` (every rule, and every
dashboard query wrapped as a recording rule, so PromQL syntax is checked by Prometheus itself) and
``amtool check-config`` when those are on the PATH, and always against JSON schemas and the metric
catalogue (every metric an expression reads is one headrace exports).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ..config.monitoring import MonitoringSpec
from ..errors import ConfigError
from .metrics import MONITOR_METRICS, SERVING_METRICS

__all__ = [
    "ALERTMANAGER_FILE",
    "DASHBOARD_FILE",
    "DASHBOARD_SCHEMA",
    "RULES_FILE",
    "RULES_SCHEMA",
    "CheckResult",
    "alertmanager_config",
    "check_alert_files",
    "dashboard",
    "metric_names",
    "prometheus_rules",
    "write_alert_files",
]

RULES_FILE = "prometheus-rules.yml"
DASHBOARD_FILE = "grafana-dashboard.json"
ALERTMANAGER_FILE = "alertmanager.yml"

_SERVING_ROUTES = 'route=~"/models/.*|/v2/models/.*"'


def _num(value: float) -> str:
    return f"{value:g}"


def prometheus_rules(spec: MonitoringSpec, project: str = "headrace") -> dict[str, Any]:
    """The alerting rules, as a document for ``prometheus.yml``'s ``rule_files``."""
    a = spec.alerts
    stale = _num(max(3 * spec.interval, 300))
    window = "5m"

    def rule(
        name: str, expr: str, severity: str, summary: str, description: str, **kw: Any
    ) -> dict[str, Any]:
        return {
            "alert": name,
            "expr": expr,
            "for": kw.get("for_", a.for_),
            "labels": {"severity": severity, "project": project},
            "annotations": {"summary": summary, "description": description},
        }

    serving = [
        rule(
            "HeadraceHighErrorRate",
            f'sum by (model) (rate(headrace_requests_total{{{_SERVING_ROUTES},status=~"5.."}}[{window}]))'
            f" / sum by (model) (rate(headrace_requests_total{{{_SERVING_ROUTES}}}[{window}]))"
            f" > {_num(a.error_rate)}",
            "critical",
            "{{ $labels.model }}: {{ $value | humanizePercentage }} of predictions fail",
            f"More than {a.error_rate:.1%} of prediction requests answered 5xx over {window}. "
            "Check the server log; 'headrace models rollback {{ $labels.model }}' restores the "
            "previous champion.",
        ),
        rule(
            "HeadraceHighLatencyP99",
            "histogram_quantile(0.99, sum by (model, le) "
            f"(rate(headrace_request_duration_seconds_bucket{{{_SERVING_ROUTES}}}[{window}])))"
            f" > {_num(a.p99_latency_ms / 1000)}",
            "warning",
            "{{ $labels.model }}: p99 latency {{ $value | humanizeDuration }}",
            f"The 99th percentile of prediction latency is above {a.p99_latency_ms:g} ms over {window}.",
        ),
    ]
    model = [
        rule(
            "HeadraceFeatureDrift",
            f"max by (model, version, feature) (headrace_drift_psi) >= {_num(spec.psi_alert)}",
            "warning",
            "{{ $labels.model }} v{{ $labels.version }}: {{ $labels.feature }} drifted (PSI {{ $value }})",
            f"PSI of the feature, live window against the training data, is at least {spec.psi_alert:g}.",
            for_="0m",
        ),
        rule(
            "HeadraceDatasetDrift",
            f"max by (model, version) (headrace_drift_share) >= {_num(spec.drift_share)}",
            "critical",
            "{{ $labels.model }} v{{ $labels.version }}: "
            "{{ $value | humanizePercentage }} of features drifted",
            "The share of drifted features reached drift_share; the retraining loop retrains when "
            "'drift' is in retrain_on.",
            for_="0m",
        ),
        rule(
            "HeadracePredictionDrift",
            f"max by (model, version) (headrace_prediction_drift_psi) >= {_num(spec.psi_alert)}",
            "warning",
            "{{ $labels.model }} v{{ $labels.version }}: predictions drifted (PSI {{ $value }})",
            "The distribution of the model's outputs moved away from its outputs on the training data.",
            for_="0m",
        ),
        rule(
            "HeadraceLiveMetricDrop",
            "max by (model, version, metric) (headrace_live_metric_drop)"
            f" > {_num(spec.rollback_on.metric_drop)}",
            "critical",
            "{{ $labels.model }} v{{ $labels.version }}: live {{ $labels.metric }} fell by {{ $value }}",
            f"The metric measured on feedback fell more than {spec.rollback_on.metric_drop:g} below "
            "the version's validation score.",
            for_="0m",
        ),
        rule(
            "HeadraceChampionUnhealthy",
            "max by (model, version, check) (headrace_champion_unhealthy) >= 1",
            "critical",
            "{{ $labels.model }} v{{ $labels.version }}: the champion crosses its {{ $labels.check }} limit",
            f"The serving champion crossed the same limit in each of its last {spec.champion.windows} "
            f"windows of {spec.champion.window:g} s; the monitor's policy is '{spec.champion.action}'. "
            "See 'headrace monitor -m {{ $labels.model }}' for the numbers.",
            for_="0m",
        ),
        rule(
            "HeadraceMonitorStale",
            f"time() - max by (model) (headrace_monitor_last_run_timestamp_seconds) > {stale}",
            "warning",
            "{{ $labels.model }}: the monitor has not run for {{ $value | humanizeDuration }}",
            "'headrace monitor --watch' is not running or fails; drift and live metrics are stale.",
            for_="0m",
        ),
        rule(
            "HeadraceRollback",
            'increase(headrace_lifecycle_events_total{action="rollback"}[1h]) > 0',
            "info",
            "{{ $labels.model }} was rolled back",
            "See 'headrace models history {{ $labels.model }}' for the reason.",
            for_="0m",
        ),
    ]
    ingestion = [
        rule(
            "HeadraceQuarantineRatioHigh",
            f"max by (dataset) (headrace_ingest_quarantine_ratio) > {_num(a.quarantine_ratio)}",
            "warning",
            "{{ $labels.dataset }}: {{ $value | humanizePercentage }} of rows quarantined",
            "See 'headrace datasets quarantine {{ $labels.dataset }}' for the rows and their reasons.",
        ),
        rule(
            "HeadraceStreamDelayHigh",
            f"max by (dataset) (headrace_stream_delay_seconds) > {_num(a.stream_delay_s)}",
            "warning",
            "{{ $labels.dataset }}: no stream batch committed for {{ $value | humanizeDuration }}",
            "Check 'headrace stream' and the broker.",
        ),
    ]
    return {
        "groups": [
            {"name": "headrace-serving", "rules": serving},
            {"name": "headrace-model", "rules": model},
            {"name": "headrace-ingestion", "rules": ingestion},
        ]
    }


# -- Grafana ----------------------------------------------------------------------------------------

_DS = {"type": "prometheus", "uid": "${datasource}"}


def _panel(
    pid: int,
    title: str,
    exprs: list[tuple[str, str]],
    grid: tuple[int, int, int, int],
    *,
    kind: str = "timeseries",
    unit: str = "short",
    threshold: float | None = None,
    description: str = "",
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if threshold is not None:
        steps.append({"color": "red", "value": threshold})
    custom: dict[str, Any] = {}
    if kind == "timeseries" and threshold is not None:
        custom = {"thresholdsStyle": {"mode": "line+area"}}
    x, y, w, h = grid
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": _DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": _DS}
            for i, (expr, legend) in enumerate(exprs)
        ],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                "custom": custom,
            },
            "overrides": [],
        },
        "options": {},
    }


def _row(pid: int, title: str, y: int) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        "panels": [],
    }


def dashboard(spec: MonitoringSpec, project: str = "headrace") -> dict[str, Any]:
    """A Grafana dashboard for the project: serving, drift, live performance, ingestion, lifecycle."""
    a = spec.alerts
    m = 'model=~"$model"'
    sel = f"{{{m},{_SERVING_ROUTES}}}"
    errors = f'{{{m},{_SERVING_ROUTES},status=~"5.."}}'
    by_mv = "sum by (model, version)"
    mv = "{{model}} v{{version}}"
    duration = f"sum by (model, version, le) (rate(headrace_request_duration_seconds_bucket{sel}[5m]))"
    panels: list[dict[str, Any]] = [
        _row(1, "Serving", 0),
        _panel(2, "Requests per second", [(f"{by_mv} (rate(headrace_requests_total{sel}[5m]))", mv)],
               (0, 1, 8, 8), unit="reqps"),
        _panel(3, "Error rate (5xx share)",
               [(f"{by_mv} (rate(headrace_requests_total{errors}[5m]))"
                 f" / {by_mv} (rate(headrace_requests_total{sel}[5m]))", mv)],
               (8, 1, 8, 8), unit="percentunit", threshold=a.error_rate),
        _panel(4, "Latency p50 / p99",
               [(f"histogram_quantile(0.5, {duration})", "p50 " + mv),
                (f"histogram_quantile(0.99, {duration})", "p99 " + mv)],
               (16, 1, 8, 8), unit="s", threshold=a.p99_latency_ms / 1000),
        _row(5, "Drift (live window against the training data)", 9),
        _panel(6, "PSI per feature",
               [(f"max by (model, version, feature) (headrace_drift_psi{{{m}}})", "{{feature}}")],
               (0, 10, 12, 8), threshold=spec.psi_alert,
               description=f"warn at {spec.psi_warn:g}, alert at {spec.psi_alert:g}"),
        _panel(7, "Share of drifted features",
               [(f"max by (model, version) (headrace_drift_share{{{m}}})", mv)],
               (12, 10, 6, 8), kind="stat", unit="percentunit", threshold=spec.drift_share),
        _panel(8, "Prediction drift (PSI)",
               [(f"max by (model, version) (headrace_prediction_drift_psi{{{m}}})", mv)],
               (18, 10, 6, 8), kind="stat", threshold=spec.psi_alert),
        _panel(9, "Jensen-Shannon distance per feature",
               [(f"max by (model, version, feature) (headrace_drift_js{{{m}}})", "{{feature}}")],
               (0, 18, 24, 8), kind="bargauge", threshold=spec.js_alert),
        _row(10, "Live performance (feedback joined to the prediction log)", 26),
        _panel(11, "Live metric by window",
               [(f"headrace_live_metric{{{m}}}", "{{metric}} v{{version}} {{window}}"),
                (f"headrace_reference_metric{{{m}}}", "reference v{{version}}")],
               (0, 27, 12, 8)),
        _panel(12, "Live metric drop",
               [(f"max by (model, version, metric) (headrace_live_metric_drop{{{m}}})",
                 "{{metric}} v{{version}}")],
               (12, 27, 6, 8), threshold=spec.rollback_on.metric_drop),
        _panel(13, "Canary share", [(f"headrace_canary_share{{{m}}}", "{{mode}} v{{version}}")],
               (18, 27, 6, 8), kind="stat", unit="percentunit"),
        _row(14, "Ingestion", 35),
        _panel(15, "Quarantine ratio",
               [("max by (dataset) (headrace_ingest_quarantine_ratio)", "{{dataset}}")],
               (0, 36, 12, 8), unit="percentunit", threshold=a.quarantine_ratio),
        _panel(16, "Stream delay", [("max by (dataset) (headrace_stream_delay_seconds)", "{{dataset}}")],
               (12, 36, 12, 8), unit="s", threshold=a.stream_delay_s),
        _row(17, "Lifecycle", 44),
        _panel(18, "Registry changes (last 24 h)",
               [(f"sum by (model, action) (increase(headrace_lifecycle_events_total{{{m}}}[24h]))",
                 "{{model}} {{action}}")], (0, 45, 24, 8), kind="bargauge"),
    ]  # fmt: skip
    return {
        "uid": f"headrace-{re.sub(r'[^a-z0-9-]', '-', project.lower())}"[:40],
        "title": f"headrace: {project}",
        "description": "Serving, drift, live performance, ingestion and the model lifecycle (headrace_*).",
        "tags": ["headrace", "mlops"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "options": [],
                },
                {
                    "name": "model",
                    "label": "Model",
                    "type": "query",
                    "datasource": _DS,
                    "query": {"query": "label_values(headrace_drift_psi, model)", "refId": "model"},
                    "definition": "label_values(headrace_drift_psi, model)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {},
                    "hide": 0,
                    "refresh": 2,
                    "options": [],
                    "sort": 1,
                },
            ]
        },
        "panels": panels,
    }


def alertmanager_config(project: str = "headrace") -> dict[str, Any]:
    """An Alertmanager example: critical alerts to a webhook and e-mail, the rest to the webhook."""
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": "headrace-webhook",
            "group_by": ["alertname", "model", "dataset"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {
                    "receiver": "headrace-oncall",
                    "matchers": [f'project="{project}"', 'severity="critical"'],
                    "continue": True,
                },
                {"receiver": "headrace-webhook", "matchers": ['severity=~"warning|info"']},
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": ['alertname="HeadraceDatasetDrift"'],
                "target_matchers": ['alertname="HeadraceFeatureDrift"'],
                "equal": ["model", "version"],
            }
        ],
        "receivers": [
            {
                "name": "headrace-webhook",
                "webhook_configs": [{"url": "http://127.0.0.1:5001/alerts", "send_resolved": True}],
            },
            {
                "name": "headrace-oncall",
                "email_configs": [
                    {
                        "to": "oncall@example.com",
                        "from": "alertmanager@example.com",
                        "smarthost": "smtp.example.com:587",
                        "send_resolved": True,
                    }
                ],
            },
        ],
    }


def write_alert_files(spec: MonitoringSpec, folder: Path | str, project: str = "headrace") -> list[Path]:
    """Write the three files into ``folder`` (created if needed); returns their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Generated by 'headrace monitor alerts' for project {project}; "
        "thresholds from monitoring: in headrace.yaml.\n"
    )
    rules = out / RULES_FILE
    rules.write_text(header + _yaml(prometheus_rules(spec, project)), encoding="utf-8")
    board = out / DASHBOARD_FILE
    board.write_text(json.dumps(dashboard(spec, project), indent=2) + "\n", encoding="utf-8")
    manager = out / ALERTMANAGER_FILE
    manager.write_text(
        header.replace("thresholds from monitoring: in headrace.yaml", "replace the receivers with yours")
        + _yaml(alertmanager_config(project)),
        encoding="utf-8",
    )
    return [rules, board, manager]


def _yaml(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, width=200, allow_unicode=True)


# -- checks -----------------------------------------------------------------------------------------

RULES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["groups"],
    "additionalProperties": False,
    "properties": {
        "groups": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "rules"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": {"type": "string"},
                    "rules": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["alert", "expr"],
                            "additionalProperties": False,
                            "properties": {
                                "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                "expr": {"type": "string", "minLength": 1},
                                "for": {"type": "string", "pattern": r"^\d+(ms|s|m|h|d|w|y)$"},
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                            },
                        },
                    },
                },
            },
        }
    },
}

_DATASOURCE_REF = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}},
}

DASHBOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "time": {"type": "object", "required": ["from", "to"]},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "contains": {
                        "type": "object",
                        "required": ["name", "type", "query"],
                        "properties": {
                            "name": {"const": "datasource"},
                            "type": {"const": "datasource"},
                            "query": {"const": "prometheus"},
                        },
                    },
                    "items": {"type": "object", "required": ["name", "type"]},
                }
            },
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "type": {"enum": ["row", "timeseries", "stat", "bargauge", "gauge", "table", "text"]},
                    "title": {"type": "string"},
                    "gridPos": {
                        "type": "object",
                        "required": ["x", "y", "w", "h"],
                        "properties": {
                            "x": {"type": "integer", "minimum": 0, "maximum": 23},
                            "y": {"type": "integer", "minimum": 0},
                            "w": {"type": "integer", "minimum": 1, "maximum": 24},
                            "h": {"type": "integer", "minimum": 1},
                        },
                    },
                },
                "if": {"properties": {"type": {"not": {"const": "row"}}}},
                "then": {
                    "required": ["targets", "datasource"],
                    "properties": {
                        "datasource": _DATASOURCE_REF,
                        "targets": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["refId", "expr", "datasource"],
                                "properties": {
                                    "refId": {"type": "string", "pattern": "^[A-Z]$"},
                                    "expr": {"type": "string", "minLength": 1},
                                    "datasource": _DATASOURCE_REF,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}

ALERTMANAGER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["route", "receivers"],
    "properties": {
        "route": {"type": "object", "required": ["receiver"]},
        "receivers": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "object", "required": ["name"]},
        },
    },
}


@dataclass
class CheckResult:
    """What was checked, how, and the problems found (empty when every file is valid)."""

    checked: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


_METRIC = re.compile(r"\b(headrace_[a-z0-9_]+)")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The headrace metric families an expression reads (histogram suffixes folded)."""
    names = set()
    for found in _METRIC.findall(expr):
        for suffix in _HISTOGRAM_SUFFIXES:
            if found.endswith(suffix) and found.removesuffix(suffix) in SERVING_METRICS:
                found = found.removesuffix(suffix)
        names.add(found)
    return names


def _known(name: str) -> bool:
    return name in MONITOR_METRICS or name in SERVING_METRICS


def check_alert_files(folder: Path | str, *, use_tools: bool = True) -> CheckResult:
    """Validate the generated files; ``use_tools`` runs promtool and amtool when they are installed."""
    root = Path(folder)
    result = CheckResult()
    paths = {name: root / name for name in (RULES_FILE, DASHBOARD_FILE, ALERTMANAGER_FILE)}
    for path in paths.values():
        if not path.is_file():
            raise ConfigError(f"{path} is missing", hint="run 'headrace monitor alerts --out DIR' first")
    rules = yaml.safe_load(paths[RULES_FILE].read_text(encoding="utf-8"))
    board = json.loads(paths[DASHBOARD_FILE].read_text(encoding="utf-8"))
    manager = yaml.safe_load(paths[ALERTMANAGER_FILE].read_text(encoding="utf-8"))
    for label, doc, schema in (
        (RULES_FILE, rules, RULES_SCHEMA),
        (DASHBOARD_FILE, board, DASHBOARD_SCHEMA),
        (ALERTMANAGER_FILE, manager, ALERTMANAGER_SCHEMA),
    ):
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        result.problems += [f"{label}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
        result.checked.append(f"{label}: JSON schema")
    exprs = [
        (f"rule {r.get('alert')}", r.get("expr", "")) for g in rules.get("groups", []) for r in g["rules"]
    ]
    panel_exprs = [
        (f"panel {p.get('title')!r} {t.get('refId')}", t.get("expr", ""))
        for p in board.get("panels", [])
        for t in p.get("targets", [])
    ]
    for where, expr in exprs + panel_exprs:
        unknown = sorted(n for n in metric_names(expr) if not _known(n))
        if unknown:
            result.problems.append(f"{where}: unknown metric(s) {', '.join(unknown)}")
        if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
            result.problems.append(f"{where}: unbalanced brackets in {expr!r}")
    result.checked.append("expressions: metric catalogue")
    result.problems += _dashboard_layout(board)
    result.checked.append(f"{DASHBOARD_FILE}: panel ids, refIds, grid")
    if use_tools and shutil.which("promtool"):
        result.problems += _promtool(paths[RULES_FILE])
        with tempfile.TemporaryDirectory() as tmp:
            wrapped = Path(tmp) / "dashboard-queries.yml"
            wrapped.write_text(_yaml(_as_recording_rules(panel_exprs)), encoding="utf-8")
            result.problems += [p.replace(str(wrapped), DASHBOARD_FILE) for p in _promtool(wrapped)]
        result.checked.append("promtool check rules: alert rules and dashboard queries")
    if use_tools and shutil.which("amtool"):
        done = subprocess.run(
            ["amtool", "check-config", str(paths[ALERTMANAGER_FILE])],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            result.problems.append(f"{ALERTMANAGER_FILE}: amtool: {(done.stdout + done.stderr).strip()}")
        result.checked.append("amtool check-config")
    return result


def _promtool(path: Path) -> list[str]:
    done = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    if done.returncode == 0:
        return []
    return [f"promtool: {(done.stdout + done.stderr).strip()}"]


def _as_recording_rules(exprs: list[tuple[str, str]]) -> dict[str, Any]:
    """Dashboard queries as recording rules, Grafana's variables replaced, so promtool parses them."""
    rules = [
        {"record": f"headrace:dashboard_query_{i}", "expr": expr.replace("$model", ".*")}
        for i, (_, expr) in enumerate(exprs)
    ]
    return {"groups": [{"name": "dashboard-queries", "rules": rules}]}


def _dashboard_layout(board: dict[str, Any]) -> list[str]:
    problems = []
    ids = [p.get("id") for p in board.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append(f"{DASHBOARD_FILE}: panel ids are not unique")
    cells: set[tuple[int, int]] = set()
    for panel in board.get("panels", []):
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if len(refs) != len(set(refs)):
            problems.append(f"{DASHBOARD_FILE}: panel {panel.get('title')!r} repeats a refId")
        g = panel.get("gridPos", {})
        if g.get("x", 0) + g.get("w", 0) > 24:
            problems.append(f"{DASHBOARD_FILE}: panel {panel.get('title')!r} is wider than the grid")
        mine = {(x, y) for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0))
                for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0))}  # fmt: skip
        if cells & mine:
            problems.append(f"{DASHBOARD_FILE}: panel {panel.get('title')!r} overlaps another panel")
        cells |= mine
    return problems
