from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from sklearn import metrics as skm

from headrace.monitor.performance import (
    compute_metrics,
    live_performance,
    metric_drop,
    timeline,
    window_label,
)

NOW = datetime(2025, 1, 2, 12, 0, tzinfo=UTC)


def _frame(n: int, *, accuracy: float, seed: int, start: datetime, step: timedelta, version: int = 1):
    rng = np.random.default_rng(seed)
    actual = rng.choice(["No", "Yes"], size=n, p=[0.7, 0.3])
    right = rng.random(n) < accuracy
    predicted = np.where(right, actual, np.where(actual == "Yes", "No", "Yes"))
    score = np.clip(np.where(actual == "Yes", 0.65, 0.35) + rng.normal(0, 0.2, n), 0, 1)
    return pl.DataFrame(
        {
            "ts": [start + i * step for i in range(n)],
            "version": [version] * n,
            "prediction": predicted,
            "actual": actual,
            "score": score,
        }
    )


def test_classification_metrics_equal_sklearn():
    frame = _frame(500, accuracy=0.8, seed=0, start=NOW, step=timedelta(seconds=1))
    values = compute_metrics(frame, "classification", positive="Yes")
    y = frame["actual"].to_numpy()
    p = frame["prediction"].to_numpy()
    assert values["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert values["f1"] == pytest.approx(skm.f1_score(y, p, pos_label="Yes"))
    assert values["roc_auc"] == pytest.approx(skm.roc_auc_score(y == "Yes", frame["score"].to_numpy()))
    assert values["rows"] == 500


def test_regression_metrics():
    frame = pl.DataFrame({"prediction": [1.0, 2.0, 4.0], "actual": [1.0, 3.0, 2.0]})
    values = compute_metrics(frame, "regression")
    assert values["rmse"] == pytest.approx(np.sqrt((0 + 1 + 4) / 3))
    assert values["mae"] == pytest.approx(1.0)


def test_windows_see_only_their_rows_and_drop_is_measured():
    old_good = _frame(400, accuracy=0.9, seed=1, start=NOW - timedelta(hours=20), step=timedelta(minutes=1))
    new_bad = _frame(200, accuracy=0.6, seed=2, start=NOW - timedelta(minutes=50), step=timedelta(seconds=10))
    frame = pl.concat([old_good, new_bad])
    report = live_performance(
        frame,
        "classification",
        metric="accuracy",
        windows=[3600, 86400],
        now=NOW,
        reference=0.9,
        positive="Yes",
    )
    hour, day = report.windows
    assert (hour.label, hour.rows, day.label, day.rows) == ("1h", 200, "1d", 600)
    assert hour.value == pytest.approx(compute_metrics(new_bad, "classification")["accuracy"])
    assert report.value == hour.value and report.enough
    assert report.drop == pytest.approx(0.9 - hour.value)
    assert report.drop > 0.2
    assert report.to_dict()["windows"][0]["label"] == "1h"


def test_too_few_rows_is_not_enough():
    frame = _frame(10, accuracy=0.5, seed=3, start=NOW - timedelta(minutes=5), step=timedelta(seconds=1))
    report = live_performance(frame, "classification", now=NOW, reference=0.8, min_rows=30)
    assert not report.enough and report.value is None and report.drop is None


def test_metric_drop_is_absolute_for_bounded_and_relative_for_errors():
    assert metric_drop("roc_auc", 0.84, 0.79) == pytest.approx(0.05)
    assert metric_drop("rmse", 40_000, 46_000) == pytest.approx(0.15)
    assert metric_drop("rmse", 40_000, 30_000) == pytest.approx(-0.25)  # better
    assert metric_drop("accuracy", None, 0.5) is None


def test_timeline_buckets_per_version():
    a = _frame(120, accuracy=0.9, seed=4, start=NOW - timedelta(hours=2), step=timedelta(minutes=1))
    b = _frame(60, accuracy=0.5, seed=5, start=NOW - timedelta(hours=1), step=timedelta(minutes=1), version=2)
    out = timeline(pl.concat([a, b]), "classification", metric="accuracy", every="1h")
    assert out["rows"].sum() == 180
    assert set(out["version"].to_list()) == {1, 2}
    assert out.filter(pl.col("version") == 2)["value"].max() < 0.7


def test_window_labels():
    assert [window_label(s) for s in (60, 3600, 5400, 86400, 604800, 45)] == [
        "1m",
        "1h",
        "90m",
        "1d",
        "1w",
        "45s",
    ]
