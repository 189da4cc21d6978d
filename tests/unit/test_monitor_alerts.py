import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from headrace.config.monitoring import MonitoringSpec
from headrace.monitor.alerts import (
    DASHBOARD_FILE,
    RULES_FILE,
    check_alert_files,
    dashboard,
    metric_names,
    prometheus_rules,
    write_alert_files,
)
from headrace.monitor.metrics import MONITOR_METRICS, families_from_reports


def _spec(**kw) -> MonitoringSpec:
    return MonitoringSpec.model_validate(kw)


def test_rules_cover_every_signal_with_the_configured_thresholds():
    spec = _spec(psi_alert=0.3, rollback_on={"metric_drop": 0.07}, alerts={"quarantine_ratio": 0.1})
    doc = prometheus_rules(spec, "churn-demo")
    rules = {r["alert"]: r for g in doc["groups"] for r in g["rules"]}
    assert {
        "HeadraceHighErrorRate",
        "HeadraceHighLatencyP99",
        "HeadraceFeatureDrift",
        "HeadraceDatasetDrift",
        "HeadracePredictionDrift",
        "HeadraceLiveMetricDrop",
        "HeadraceQuarantineRatioHigh",
        "HeadraceStreamDelayHigh",
    } <= set(rules)
    assert rules["HeadraceFeatureDrift"]["expr"].endswith(">= 0.3")
    assert rules["HeadraceLiveMetricDrop"]["expr"].endswith("> 0.07")
    assert rules["HeadraceQuarantineRatioHigh"]["expr"].endswith("> 0.1")
    assert rules["HeadraceHighLatencyP99"]["expr"].endswith("> 0.25")
    assert all(r["labels"]["project"] == "churn-demo" for r in rules.values())


def test_generated_files_pass_every_check(tmp_path: Path):
    write_alert_files(MonitoringSpec(), tmp_path, "demo")
    result = check_alert_files(tmp_path)
    assert result.ok, result.problems
    if shutil.which("promtool"):
        assert any("promtool" in c for c in result.checked)


def test_schema_check_catches_broken_files(tmp_path: Path):
    write_alert_files(MonitoringSpec(), tmp_path, "demo")
    board = json.loads((tmp_path / DASHBOARD_FILE).read_text())
    broken = copy.deepcopy(board)
    broken["panels"][1]["targets"][0].pop("refId")
    broken["panels"][2]["targets"][0]["expr"] = "rate(headrace_no_such_metric[5m])"
    broken["templating"]["list"] = [v for v in broken["templating"]["list"] if v["name"] != "datasource"]
    (tmp_path / DASHBOARD_FILE).write_text(json.dumps(broken))
    rules = yaml.safe_load((tmp_path / RULES_FILE).read_text())
    rules["groups"][0]["rules"][0]["expr"] = "sum(rate(headrace_requests_total[5m])"
    (tmp_path / RULES_FILE).write_text(yaml.safe_dump(rules))
    problems = "\n".join(check_alert_files(tmp_path, use_tools=False).problems)
    assert "'refId' is a required property" in problems
    assert "unknown metric(s) headrace_no_such_metric" in problems
    assert "templating/list" in problems
    assert "unbalanced brackets" in problems


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_rejects_bad_promql(tmp_path: Path):
    write_alert_files(MonitoringSpec(), tmp_path, "demo")
    rules = yaml.safe_load((tmp_path / RULES_FILE).read_text())
    rules["groups"][1]["rules"][0]["expr"] = "max by (model (headrace_drift_psi) >= 0.25)"
    (tmp_path / RULES_FILE).write_text(yaml.safe_dump(rules))
    problems = check_alert_files(tmp_path).problems
    assert any(p.startswith("promtool:") for p in problems)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_alerts_fire_on_the_series_they_watch(tmp_path: Path):
    """promtool's rule unit tests: feed series, assert which alerts fire."""
    write_alert_files(MonitoringSpec(), tmp_path, "demo")
    labels = 'model="churn",version="2"'
    tests = {
        "rule_files": [RULES_FILE],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'headrace_drift_psi{{{labels},feature="tenure"}}', "values": "0.05 0.4x10"},
                    {"series": f'headrace_drift_psi{{{labels},feature="gender"}}', "values": "0.01x10"},
                    {"series": f"headrace_drift_share{{{labels}}}", "values": "0.1 0.5x10"},
                    {
                        "series": f'headrace_live_metric_drop{{{labels},metric="roc_auc"}}',
                        "values": "0.01x10",
                    },
                    {
                        "series": 'headrace_requests_total{route="/models/churn/predict",model="churn",'
                        'version="2",status="200"}',
                        "values": "0+100x15",
                    },
                    {
                        "series": 'headrace_requests_total{route="/models/churn/predict",model="churn",'
                        'version="2",status="500"}',
                        "values": "0+10x15",
                    },
                    {"series": 'headrace_ingest_quarantine_ratio{dataset="customers"}', "values": "0.2x10"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "HeadraceFeatureDrift",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "project": "demo",
                                    "model": "churn",
                                    "version": "2",
                                    "feature": "tenure",
                                },
                                "exp_annotations": {
                                    "summary": "churn v2: tenure drifted (PSI 0.4)",
                                    "description": "PSI of the feature, live window against the "
                                    "training data, is at least 0.25.",
                                },
                            }
                        ],
                    },
                    {"eval_time": "5m", "alertname": "HeadraceLiveMetricDrop", "exp_alerts": []},
                    {
                        "eval_time": "12m",
                        "alertname": "HeadraceHighErrorRate",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "project": "demo", "model": "churn"},
                                "exp_annotations": {
                                    "summary": "churn: 9.091% of predictions fail",
                                    "description": "More than 2.0% of prediction requests answered 5xx "
                                    "over 5m. Check the server log; 'headrace models rollback churn' "
                                    "restores the previous champion.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "8m",
                        "alertname": "HeadraceQuarantineRatioHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "project": "demo",
                                    "dataset": "customers",
                                },
                                "exp_annotations": {
                                    "summary": "customers: 20% of rows quarantined",
                                    "description": "See 'headrace datasets quarantine customers' for the "
                                    "rows and their reasons.",
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run(
        ["promtool", "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_reads_only_metrics_headrace_exports():
    board = dashboard(MonitoringSpec(), "demo")
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 12
    read = set().union(*(metric_names(e) for e in exprs))
    assert {"headrace_drift_psi", "headrace_requests_total", "headrace_request_duration_seconds"} <= read
    assert board["templating"]["list"][0]["type"] == "datasource"


def test_gauges_render_from_stored_reports():
    drift_doc = {
        "share_drifted": 0.25,
        "dataset_drift": False,
        "live_rows": 300,
        "features": [
            {"feature": "tenure", "psi": 0.4, "js": 0.2, "p_value": 1e-9},
            {"feature": "gender", "psi": 0.01, "js": 0.01, "p_value": 0.7},
        ],
        "prediction": {"psi": 0.12},
    }
    perf_doc = {
        "metric": "roc_auc",
        "reference": 0.84,
        "drop": 0.06,
        "windows": [{"label": "1h", "value": 0.78, "rows": 120}],
    }
    reports = [
        {"model": "churn", "version": 3, "kind": "drift", "report": drift_doc},
        {"model": "churn", "version": 3, "kind": "performance", "report": perf_doc},
    ]
    health = {"customers": {"quarantine_ratio": 0.02, "stream_delay_s": None}}
    registry = CollectorRegistry()

    class Fixed:
        def collect(self):
            return families_from_reports(reports, health, {("churn", "rollback"): 2})

    registry.register(Fixed())
    text = generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert (
        samples[("headrace_drift_psi", (("feature", "tenure"), ("model", "churn"), ("version", "3")))] == 0.4
    )
    assert samples[("headrace_drift_share", (("model", "churn"), ("version", "3")))] == 0.25
    key = (
        "headrace_live_metric",
        (("metric", "roc_auc"), ("model", "churn"), ("version", "3"), ("window", "1h")),
    )
    assert samples[key] == 0.78
    assert samples[("headrace_ingest_quarantine_ratio", (("dataset", "customers"),))] == 0.02
    assert samples[("headrace_lifecycle_events_total", (("action", "rollback"), ("model", "churn")))] == 2
    assert all(name.startswith("headrace_") for name in MONITOR_METRICS)


def test_an_unhealthy_champion_is_a_gauge_and_an_alert_rule():
    spec = _spec(champion={"action": "alert", "window": "2m", "windows": 4})
    rules = {r["alert"]: r for g in prometheus_rules(spec)["groups"] for r in g["rules"]}
    rule = rules["HeadraceChampionUnhealthy"]
    assert rule["expr"] == "max by (model, version, check) (headrace_champion_unhealthy) >= 1"
    assert "last 4 windows of 120 s; the monitor's policy is 'alert'" in rule["annotations"]["description"]
    doc = {"version": 3, "unhealthy": {"error_rate": False, "p99_latency": True, "metric": False}}
    families = families_from_reports([{"model": "churn", "version": 3, "kind": "champion", "report": doc}])
    (family,) = [f for f in families if f.name == "headrace_champion_unhealthy"]
    values = {s.labels["check"]: s.value for s in family.samples}
    assert values == {"error_rate": 0.0, "p99_latency": 1.0, "metric": 0.0}
    assert {s.labels["version"] for s in family.samples} == {"3"}
