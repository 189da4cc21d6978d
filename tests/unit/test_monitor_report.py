from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from headrace.config.monitoring import MonitoringSpec
from headrace.datagen import churn
from headrace.monitor.drift import drift
from headrace.monitor.loop import CheckResult
from headrace.monitor.performance import live_performance
from headrace.monitor.policy import Signals, decide


def test_report_is_one_self_contained_page(tmp_path):
    reference = churn(2000, seed=1)
    features = [c for c in reference.columns if c not in ("customerID", "Churn")]
    report = drift(reference, churn(500, seed=2, shift=1.0), features=features)
    now = datetime(2025, 1, 1, tzinfo=UTC)
    rng = np.random.default_rng(0)
    joined = pl.DataFrame(
        {
            "ts": [now - timedelta(minutes=i) for i in range(100)],
            "version": [1] * 100,
            "prediction": rng.choice(["No", "Yes"], 100).tolist(),
            "actual": rng.choice(["No", "Yes"], 100).tolist(),
            "score": rng.random(100),
        }
    )
    perf = live_performance(joined, "classification", windows=[3600, 86400], now=now, reference=0.84)
    signals = Signals(model="churn", now=now, champion=1, dataset_drift=True, drifted=tuple(report.drifted))
    watch = {
        "version": 1,
        "metric": "roc_auc",
        "action": "rollback",
        "window": 300.0,
        "windows": [{"requests": 80, "error_rate": 0.1, "p99_ms": 12.5, "metric": 0.61, "feedback_rows": 40}],
        "unhealthy": {"error_rate": True, "p99_latency": False, "metric": False},
        "reasons": [],
        "notes": ["a note for <people>"],
    }
    result = CheckResult(
        "churn", None, signals, decide(signals, MonitoringSpec()), report, None, perf, champion_watch=watch
    )
    from headrace.monitor.report import write_report

    path = write_report(result, tmp_path / "r.html")
    text = path.read_text()
    assert text.count("data:image/png;base64,") == 3  # PSI bars, distributions, live metric
    assert "retrain" in text and "tenure" in text and "http" not in text.replace("http-equiv", "")
    assert "v1, last 1 windows of 300 s: error_rate (policy: rollback)" in text
    assert "<td>12.5</td>" in text and "a note for &lt;people&gt;" in text
