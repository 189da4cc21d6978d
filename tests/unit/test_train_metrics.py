"""Metrics and threshold rules."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from headrace.config.models import ThresholdSpec
from headrace.errors import ConfigError
from headrace.train.metrics import label_scores, regression_scores, summarize
from headrace.train.thresholds import choose_threshold, threshold_spec


@pytest.mark.parametrize("k", [2, 3])
def test_label_scores_match_scikit_learn(k: int):
    rng = np.random.default_rng(k)
    y, labels = rng.integers(0, k, 400), rng.integers(0, k, 400)
    ours = label_scores(y, labels, k)
    average = "binary" if k == 2 else "macro"
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, labels))
    assert ours["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, labels))
    assert ours["precision"] == pytest.approx(skm.precision_score(y, labels, average=average))
    assert ours["recall"] == pytest.approx(skm.recall_score(y, labels, average=average))
    assert ours["f1"] == pytest.approx(skm.f1_score(y, labels, average=average))


def test_regression_scores_and_summary():
    scores = regression_scores(np.array([100.0, 200.0]), np.array([110.0, 190.0]))
    assert scores["rmse"] == pytest.approx(10.0)
    assert scores["mape"] == pytest.approx(0.075)
    summary = summarize([{"rmse": 1.0}, {"rmse": 3.0}])
    assert summary["rmse"] == {"mean": 2.0, "std": pytest.approx(np.sqrt(2.0))}


def _scores(seed: int = 0, n: int = 2000):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(int)
    p = np.clip(0.25 + 0.3 * (y - 0.25) + rng.normal(0, 0.18, n), 0, 1)
    return y, p


def test_max_f1_is_the_best_f1_over_all_thresholds():
    y, p = _scores()
    choice = choose_threshold(y, p, threshold_spec("max_f1"))
    best = max(skm.f1_score(y, p >= t) for t in np.unique(p))
    assert skm.f1_score(y, p >= choice.value) == pytest.approx(best)
    assert choice.detail["f_beta"] == pytest.approx(best)


def test_f_beta_favours_recall_when_beta_is_large():
    y, p = _scores()
    f1 = choose_threshold(y, p, threshold_spec("max_f1")).value
    f3 = choose_threshold(y, p, ThresholdSpec(rule="f_beta", beta=3.0)).value
    assert f3 < f1


def test_cost_matrix_moves_the_threshold():
    y, p = _scores()
    cheap_misses = choose_threshold(y, p, ThresholdSpec(rule="cost", cost_fp=5, cost_fn=1)).value
    costly_misses = choose_threshold(y, p, ThresholdSpec(rule="cost", cost_fp=1, cost_fn=5)).value
    assert costly_misses < cheap_misses
    # the chosen threshold has the least cost among all thresholds
    spec = ThresholdSpec(rule="cost", cost_fp=1, cost_fn=5)
    chosen = choose_threshold(y, p, spec)

    def cost(t: float) -> float:
        pred = p >= t
        return float(np.sum(pred & (y == 0)) * 1 + np.sum(~pred & (y == 1)) * 5)

    assert cost(chosen.value) == pytest.approx(min(cost(t) for t in np.unique(p)))


def test_target_recall_is_the_highest_threshold_that_reaches_it():
    y, p = _scores()
    choice = choose_threshold(y, p, ThresholdSpec(rule="target_recall", recall=0.8))
    assert skm.recall_score(y, p >= choice.value) >= 0.8
    higher = np.unique(p[p > choice.value])
    assert skm.recall_score(y, p >= higher[0]) < 0.8


def test_threshold_specs():
    assert threshold_spec(None).value == 0.5
    assert threshold_spec(0.3).rule == "fixed"
    with pytest.raises(ConfigError, match="unknown rule"):
        threshold_spec("max_f2")
    with pytest.raises(ConfigError, match="recall in"):
        threshold_spec(ThresholdSpec(rule="target_recall"))
