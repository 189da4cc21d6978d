"""The dashboard's pieces without a browser: SVG charts, curves, quantiles, the ledger timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from headrace.registry import LedgerEntry
from headrace.ui.charts import Bar, Series, Threshold, bar_chart, line_chart, nice_ticks
from headrace.ui.data import _timeline, binary_curves, histogram_quantile, trapezoid


def test_binary_curves_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(800) < 0.3).astype(int)
    score = np.round(rng.random(800) * 0.6 + y * 0.3, 2)  # ties on purpose
    fpr, tpr, precision, recall = binary_curves(y, score)
    ref_fpr, ref_tpr, _ = roc_curve(y, score, drop_intermediate=False)
    assert np.allclose(fpr, ref_fpr) and np.allclose(tpr, ref_tpr)
    assert trapezoid(fpr, tpr) == pytest.approx(roc_auc_score(y, score))
    ref_precision, ref_recall, _ = precision_recall_curve(y, score)
    assert np.allclose(recall, ref_recall[::-1])
    assert np.allclose(precision[1:], ref_precision[::-1][1:])


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = [(0.1, 50.0), (0.2, 90.0), (0.5, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.1)
    assert histogram_quantile(buckets, 0.7) == pytest.approx(0.15)
    assert histogram_quantile(buckets, 0.95) == pytest.approx(0.35)
    assert histogram_quantile([], 0.5) is None
    assert histogram_quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.5) is None


def test_nice_ticks() -> None:
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.03, 0.87) == [0.2, 0.4, 0.6, 0.8]
    assert nice_ticks(5, 5) == [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]


def test_charts_draw_thresholds_and_escape_names() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    svg = line_chart(
        [Series("<script>x</script>", [(now, 0.1), (now + timedelta(hours=1), 0.3)])],
        label="PSI & co",
        thresholds=[Threshold(0.25, "alert 0.25"), Threshold(0.1, "warn 0.1")],
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count('class="threshold"') == 2 and 'data-points="2"' in svg
    assert "PSI &amp; co" in svg
    bars = bar_chart(
        [Bar("a", 0.4), Bar("b", None)], label="bars", thresholds=[Threshold(0.3, "t", axis="x")]
    )
    assert bars.count('class="bar"') == 1 and 'data-value="0.3"' in bars


def test_timeline_replays_aliases_from_the_ledger() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def entry(minutes: int, action: str, version: int | None, alias: str | None, reason: str) -> LedgerEntry:
        return LedgerEntry(t0 + timedelta(minutes=minutes), "m", action, version, alias, None, reason, "me")

    history = [
        entry(0, "register", 1, None, "first"),
        entry(1, "promote", 1, "champion", "first model"),
        entry(5, "register", 2, None, "retrained"),
        entry(6, "set_alias", 2, "challenger", "canary"),
        entry(9, "promote", 2, "champion", "canary healthy"),
        entry(9, "remove_alias", None, "challenger", "promoted"),
        entry(12, "rollback", 1, "champion", "error rate 5%"),
    ]
    doc = _timeline(history)
    lanes = [(s["lane"], s["version"], s["start"].minute, None if s.get("current") else s["end"].minute)
             for s in doc["segments"]]  # fmt: skip
    assert lanes == [
        ("champion", 1, 1, 9),
        ("champion", 2, 9, 12),
        ("champion", 1, 12, None),
        ("challenger", 2, 6, 9),
    ]
    assert doc["segments"][1]["why"] == "promote: canary healthy"
    assert [e["action"] for e in doc["events"]] == ["register", "promote", "register", "promote", "rollback"]
