"""Feature plans and the ColumnTransformer; the estimator catalog and its parameter checks."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import MinMaxScaler, OrdinalEncoder, RobustScaler

from headrace.config.models import FeatureSpec
from headrace.errors import ConfigError, DataError
from headrace.train.estimators import make_estimator, validate_candidate
from headrace.train.features import build_features, build_pca, plan_features, prepare


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e", "f"],
            "rooms": [10.0, 20.0, 30.0, None, 50.0, 60.0],
            "households": [2.0, 4.0, 0.0, 5.0, 5.0, 6.0],
            "charges": ["1.5", " 2.5", "", "4", "x", "6"],
            "city": ["x", "x", "x", "y", "y", "z"],
            "code": [1, 2, 1, 2, 1, 2],
            "opened": [date(2020, 1, 1), date(2021, 6, 15), None, date(2022, 3, 3), date(2023, 7, 9), None],
            "target": [0, 1, 0, 1, 0, 1],
        }
    )


def test_plan_reads_the_schema():
    spec = FeatureSpec(
        drop=["id"],
        numeric=["charges"],
        categorical=["code"],
        derive={"rooms_per_household": "rooms / households"},
        date_parts=["year", "month"],
    )
    plan = plan_features(spec, _frame().schema, exclude=["target"])
    assert plan.numeric == [
        "rooms",
        "households",
        "charges",
        "opened_year",
        "opened_month",
        "rooms_per_household",
    ]
    assert plan.categorical == ["city", "code"]
    assert plan.input_names == ["rooms", "households", "charges", "city", "code", "opened"]
    X = prepare(_frame(), plan)
    assert list(X.columns) == plan.feature_columns
    assert X["rooms_per_household"].tolist()[:2] == [5.0, 5.0]
    assert np.isnan(X["rooms_per_household"][2])  # 30 / 0 is infinite: read as missing, then imputed
    assert X["charges"].tolist()[:2] == [1.5, 2.5] and np.isnan(X["charges"][4])  # "x": missing
    assert X["opened_year"].tolist()[:2] == [2020.0, 2021.0]
    assert X["code"].tolist()[:2] == ["1", "2"]
    Xt = build_features(plan).fit_transform(X)
    assert not np.isnan(Xt).any()


def test_derived_columns_are_checked_before_training():
    schema = _frame().schema
    with pytest.raises(ConfigError, match=r"names unknown column\(s\) bedrooms"):
        plan_features(FeatureSpec(derive={"r": "bedrooms / rooms"}), schema)
    with pytest.raises(ConfigError, match="not a valid expression"):
        plan_features(FeatureSpec(derive={"r": "rooms / / households"}), schema)
    with pytest.raises(ConfigError, match="column 'nope' is not in the dataset"):
        plan_features(FeatureSpec(drop=["nope"]), schema)
    with pytest.raises(ConfigError, match="no column is left"):
        everything = ["id", "rooms", "households", "charges", "city", "code", "opened"]
        plan_features(FeatureSpec(drop=everything), schema, exclude=["target"])


def test_one_hot_ignores_unknown_and_groups_rare_categories():
    plan = plan_features(
        FeatureSpec(drop=["id", "opened", "charges"], min_frequency=2), _frame().schema, exclude=["target"]
    )
    ct = build_features(plan).fit(prepare(_frame(), plan))
    encoder = ct.named_transformers_["cat"].named_steps["encode"]
    assert [list(c) for c in encoder.infrequent_categories_] == [["z"]]
    unseen = _frame().with_columns(pl.lit("never seen").alias("city"))
    Xt = ct.transform(prepare(unseen, plan))
    assert Xt.shape[1] == ct.transform(prepare(_frame(), plan)).shape[1]


def test_scaling_ordinal_and_pca_options():
    schema = _frame().schema
    for kind, cls in (("robust", RobustScaler), ("minmax", MinMaxScaler)):
        plan = plan_features(FeatureSpec(drop=["id"], scale=kind), schema, exclude=["target"])
        assert isinstance(build_features(plan).transformers[0][1].named_steps["scale"], cls)
    plan = plan_features(FeatureSpec(drop=["id"], scale="none", encode="ordinal"), schema, exclude=["target"])
    ct = build_features(plan)
    assert "scale" not in ct.transformers[0][1].named_steps
    assert isinstance(ct.transformers[1][1].named_steps["encode"], OrdinalEncoder)
    assert build_pca(plan_features(FeatureSpec(pca=3), schema), 0).n_components == 3
    pca = build_pca(plan_features(FeatureSpec(pca=0.95), schema), 0)
    assert isinstance(pca, PCA) and pca.n_components == 0.95
    with pytest.raises(ConfigError, match="variance share"):
        build_pca(plan_features(FeatureSpec(pca=1.5), schema), 0)


def test_prediction_refuses_values_of_the_wrong_type():
    plan = plan_features(FeatureSpec(drop=["id", "charges"]), _frame().schema, exclude=["target"])
    bad = _frame().with_columns(pl.lit("many").alias("rooms"))
    with pytest.raises(DataError, match="does not fit its column's type"):
        prepare(bad, plan, strict=True)
    with pytest.raises(DataError, match="missing column"):
        prepare(_frame().drop("city"), plan, strict=True)


def test_catalog_checks_parameters_in_scikit_learn_style():
    with pytest.raises(ConfigError, match=r"The 'C' parameter of LogisticRegression must be a float"):
        make_estimator("logistic_regression", "classification", {"C": -1})
    with pytest.raises(ConfigError, match="has no parameter 'Cc'; did you mean 'C'"):
        make_estimator("logistic_regression", "classification", {"Cc": 1})
    with pytest.raises(ConfigError, match=r"estimator 'random_forrest'.*did you mean 'random_forest'"):
        make_estimator("random_forrest", "classification")
    with pytest.raises(ConfigError, match="'ridge' is a regression estimator"):
        make_estimator("ridge", "classification")
    with pytest.raises(ConfigError, match=r"needs the lightgbm package|has no parameter"):
        make_estimator("lightgbm", "regression", {"nope": 1})
    with pytest.raises(ConfigError, match=r"The 'max_depth' parameter of RandomForestRegressor"):
        validate_candidate("random_forest", "regression", {"max_depth": [3, -2]}, search="grid", where="c")
    with pytest.raises(ConfigError, match=r"needs validation\.search: random"):
        validate_candidate(
            "ridge", "regression", {"alpha": {"loguniform": [0.1, 10]}}, search="grid", where="c"
        )
    fixed, searched = validate_candidate(
        "ridge",
        "regression",
        {"alpha": {"loguniform": [0.1, 10]}, "fit_intercept": True},
        search="random",
        where="c",
    )
    assert fixed == {"fit_intercept": True} and 0.1 <= searched["alpha"].rvs(random_state=0) <= 10
    rf = make_estimator("random_forest", "classification", {"n_estimators": 10}, seed=3, class_weight=True)
    assert (rf.random_state, rf.class_weight, rf.n_estimators) == (3, "balanced", 10)


def test_category_codes_sent_as_numbers_are_read_as_their_text():
    frame = pl.DataFrame({"senior": ["0", "1", "0"], "x": [1.0, 2.0, 3.0]})
    plan = plan_features(FeatureSpec(), frame.schema)
    sent = pl.DataFrame({"senior": [0.0, 1.0, 2.5], "x": [1.0, 2.0, 3.0]})  # JSON numbers
    assert prepare(sent, plan, strict=True)["senior"].tolist() == ["0", "1", "2.5"]
