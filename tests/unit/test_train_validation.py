"""Validation: resampling inside folds, stratification, out-of-fold thresholds, strategies, nesting."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from headrace.config.models import ModelSpec
from headrace.datagen import churn
from headrace.errors import ConfigError
from headrace.train.run import fit_and_validate
from headrace.train.thresholds import choose_threshold, threshold_spec


def _spec(**overrides) -> ModelSpec:
    doc = {
        "task": "classification",
        "dataset": "customers",
        "target": "Churn",
        "features": {"drop": ["customerID"]},
        "candidates": [{"estimator": "logistic_regression"}],
        "validation": {
            "strategy": "stratified_kfold",
            "folds": 5,
            "threshold": "max_f1",
            "importance": False,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return ModelSpec.model_validate(doc)


@pytest.fixture(scope="module")
def customers() -> pl.DataFrame:
    return churn(700, seed=5)


def _noise(n: int = 300, positives: float = 0.1, seed: int = 0) -> pl.DataFrame:
    """Features and a label with no relation between them."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {f"x{i}": rng.normal(size=n) for i in range(4)}
        | {"label": np.where(rng.random(n) < positives, "yes", "no")}
    )


def test_resampling_before_the_split_inflates_the_score_and_ours_does_not():
    frame = _noise()
    spec = ModelSpec.model_validate(
        {
            "task": "classification",
            "dataset": "noise",
            "target": "label",
            "candidates": [{"estimator": "knn", "params": {"n_neighbors": 1}}],
            "validation": {"strategy": "stratified_kfold", "folds": 5, "importance": False},
        }
    )
    # the mistake: oversample the whole table, then cross-validate (copies land on both sides)
    from imblearn.over_sampling import RandomOverSampler

    rows, _ = RandomOverSampler(random_state=0).fit_resample(
        np.arange(frame.height).reshape(-1, 1), frame["label"].to_numpy()
    )
    leaked = fit_and_validate("noise", spec, frame[rows.ravel()])
    # ours: the sampler is a pipeline step, so only each training fold is resampled
    ours = fit_and_validate("noise", spec.model_copy(update={"imbalance": "over"}), frame)
    leaked_auc = leaked.metrics["roc_auc"]
    ours_auc = ours.metrics["roc_auc"]
    assert leaked_auc > 0.8, leaked_auc  # no signal, yet a "good" model
    assert 0.35 < ours_auc < 0.65, ours_auc  # chance, as it should be
    # the registered model has no sampler step: a plain scikit-learn Pipeline
    assert isinstance(ours.model.pipeline, Pipeline)
    assert [name for name, _ in ours.model.pipeline.steps] == ["features", "model"]


@pytest.mark.parametrize("strategy", ["stratified_kfold", "holdout", "repeated"])
def test_every_fold_keeps_the_class_ratio(customers: pl.DataFrame, strategy: str):
    spec = _spec(validation={"strategy": strategy, "folds": 4, "repeats": 2})
    result = fit_and_validate("churn", spec, customers)
    sc = result.scorecard
    overall = sc["class_ratio"]["shares"]["Yes"]
    expected_folds = {"stratified_kfold": 4, "holdout": 1, "repeated": 8}[strategy]
    assert len(sc["folds"]) == expected_folds
    for fold in sc["folds"]:
        assert abs(fold["test_ratio"]["Yes"] - overall) <= 1.0 / fold["n_test"] + 1e-9
        assert abs(fold["train_ratio"]["Yes"] - overall) <= 1.0 / fold["n_train"] + 1e-9
    if strategy == "holdout":
        assert sc["folds"][0]["n_test"] == pytest.approx(0.2 * len(customers), abs=1)
    if strategy == "repeated":
        counts = result.oof.group_by("row").len()["len"]
        assert set(counts.to_list()) == {2}  # every row scored once per repeat


def test_threshold_comes_from_out_of_fold_predictions(customers: pl.DataFrame):
    result = fit_and_validate("churn", _spec(), customers)
    oof = result.oof
    assert sorted(oof["row"].to_list()) == list(range(len(customers)))  # each row scored once
    expected = choose_threshold(
        oof["y"].to_numpy(), oof["prediction"].to_numpy(), threshold_spec("max_f1")
    ).value
    assert result.model.threshold == expected == result.scorecard["threshold"]["value"]
    # out of fold: fold 0's predictions are those of a model fitted on the other folds only
    X = result.model.prepare(customers)
    y = (customers["Churn"] == "Yes").to_numpy().astype(int)
    fold0 = oof.filter(pl.col("fold") == 0)
    test = fold0["row"].to_numpy()
    train = np.setdiff1d(np.arange(len(customers)), test)
    refit = clone(result.model.pipeline).fit(X.iloc[train], y[train])
    np.testing.assert_allclose(refit.predict_proba(X.iloc[test])[:, 1], fold0["prediction"].to_numpy())
    # and the in-sample scores of the final model would have chosen another threshold
    in_sample = result.model.predict_proba(customers)[:, 1]
    assert choose_threshold(y, in_sample, threshold_spec("max_f1")).value != expected
    # the stored threshold decides the labels
    decided = result.model.predict(customers.head(50))
    p = result.model.predict_proba(customers.head(50))[:, 1]
    assert decided.predictions == np.where(p >= expected, "Yes", "No").tolist()


def test_threshold_dependent_scores_are_at_the_chosen_threshold(customers: pl.DataFrame):
    spec = _spec(validation={"threshold": {"rule": "target_recall", "recall": 0.9}})
    result = fit_and_validate("churn", spec, customers)
    assert result.scorecard["threshold"]["rule"] == "target_recall"
    assert result.scorecard["oof_scores"]["recall"] >= 0.9
    assert result.metrics["recall"] >= 0.85  # per-fold mean at the same threshold


def test_selection_runs_inside_each_training_fold(customers: pl.DataFrame):
    spec = _spec(
        candidates=[
            {"estimator": "logistic_regression", "params": {"C": [1e-5, 1.0]}},
            {"estimator": "knn", "params": {"n_neighbors": [1]}},
        ],
        validation={"folds": 3, "inner_folds": 2, "metric": "log_loss"},
    )
    result = fit_and_validate("churn", spec, customers)
    sc = result.scorecard
    assert sc["configurations"] == 3
    for fold in sc["folds"]:
        assert fold["chosen"] == {"estimator": "logistic_regression", "C": 1.0}
        assert fold["inner_score"] is not None
    assert sc["chosen"] == {"estimator": "logistic_regression", "C": 1.0}
    assert [c["rank"] for c in sc["candidates"]] == [1, 2, 3]
    assert {c["estimator"] for c in sc["candidates"]} == {"logistic_regression", "knn"}


def test_group_kfold_keeps_each_group_on_one_side(customers: pl.DataFrame):
    frame = customers.with_columns((pl.int_range(pl.len()) % 40).alias("household"))
    spec = _spec(validation={"strategy": "group_kfold", "folds": 4, "group": "household"})
    result = fit_and_validate("churn", spec, frame)
    groups = frame["household"].to_numpy()
    for fold in range(4):
        test = result.oof.filter(pl.col("fold") == fold)["row"].to_numpy()
        train = np.setdiff1d(np.arange(frame.height), test)
        assert not set(groups[test]) & set(groups[train])
    assert "household" not in result.model.feature_columns


def test_time_series_split_tests_on_later_rows_only(customers: pl.DataFrame):
    frame = customers.with_columns(pl.int_range(pl.len()).reverse().alias("day"))
    spec = _spec(validation={"strategy": "time_series_split", "folds": 3, "time_column": "day"})
    result = fit_and_validate("churn", spec, frame)
    sorted_days = frame.sort("day")["day"].to_numpy()
    seen_before = -1
    for fold in range(3):
        rows = np.sort(result.oof.filter(pl.col("fold") == fold)["row"].to_numpy())
        assert sorted_days[rows].min() > seen_before  # every test fold lies after the data before it
        seen_before = sorted_days[rows].max()
    assert result.oof.height < frame.height  # the first chunk only trains


def test_regression_with_derived_columns_and_scores():
    from headrace.demo.data import HOUSING_DERIVE, housing

    frame = housing(800, seed=2)
    spec = ModelSpec.model_validate(
        {
            "task": "regression",
            "dataset": "houses",
            "target": "median_house_value",
            "features": {"derive": HOUSING_DERIVE},
            "candidates": [{"estimator": "ridge"}],
            "validation": {"strategy": "kfold", "folds": 4},
        }
    )
    result = fit_and_validate("price", spec, frame)
    assert set(HOUSING_DERIVE) <= set(result.model.feature_columns)
    assert set(result.metrics) >= {"rmse", "mae", "r2", "mape", "rmse_std"}
    assert result.metrics["r2"] > 0.6
    assert result.model.threshold is None
    names = [r["feature"] for r in result.scorecard["importance"]]
    assert names[0] == "median_income"
    raw = frame.drop("median_house_value").head(3)
    assert len(result.model.predict(raw).predictions) == 3


def test_class_weight_and_smote(customers: pl.DataFrame):
    weighted = fit_and_validate("churn", _spec(imbalance="class_weight"), customers)
    assert weighted.model.pipeline.named_steps["model"].class_weight == "balanced"
    smote = fit_and_validate("churn", _spec(imbalance="smote"), customers)
    assert [n for n, _ in smote.model.pipeline.steps] == ["features", "model"]
    # more predicted positives than the unweighted model: the minority class counts more
    plain = fit_and_validate("churn", _spec(), customers)
    assert smote.scorecard["summary"]["roc_auc"]["mean"] > 0.7
    p_plain = plain.model.predict_proba(customers)[:, 1].mean()
    assert weighted.model.predict_proba(customers)[:, 1].mean() > p_plain


def test_parallel_folds_give_the_same_scores(customers: pl.DataFrame):
    one = fit_and_validate("churn", _spec(), customers, n_jobs=1)
    two = fit_and_validate("churn", _spec(), customers, n_jobs=2)
    assert one.metrics == two.metrics


def test_multiclass(customers: pl.DataFrame):
    spec = _spec(target="Contract", validation={"folds": 3, "metric": "accuracy"})
    result = fit_and_validate("contract", spec, customers)
    assert result.model.classes_ == ["Month-to-month", "One year", "Two year"]
    assert result.model.threshold is None
    assert len(result.scorecard["confusion"]) == 3
    assert "One year" in result.scorecard["per_class"]
    prediction = result.model.predict(customers.head(4))
    assert set(prediction.predictions) <= set(result.model.classes_)
    assert set(prediction.probabilities[0]) == set(result.model.classes_)


def test_our_parameters_fail_in_scikit_learn_style(customers: pl.DataFrame):
    with pytest.raises(
        ConfigError, match=r"The 'folds' parameter of cross_validate must be an int >= 2\. Got 1"
    ):
        fit_and_validate("churn", _spec(validation={"folds": 1}), customers)
    with pytest.raises(ConfigError, match=r"group_kfold needs validation\.group"):
        fit_and_validate("churn", _spec(validation={"strategy": "group_kfold"}), customers)
    with pytest.raises(ConfigError, match="'rmse' is not a classification metric"):
        fit_and_validate("churn", _spec(validation={"metric": "rmse"}), customers)
