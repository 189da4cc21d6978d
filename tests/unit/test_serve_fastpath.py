"""The fast path equals the pipeline: compiled arithmetic vs the fitted sklearn pipeline, 1e-9."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler

from headrace.datagen import churn
from headrace.serve.examples import churn_model, churn_records
from headrace.serve.fastpath import NotCompilable, compile_pipeline, probe_records
from headrace.serve.host import Served


def _proba(model, records):
    frame = pl.DataFrame(
        records,
        schema={c["name"]: (pl.Float64 if c["kind"] == "number" else pl.String) for c in model.plan.inputs},
    )
    return model.predict_proba(frame), model.predict(frame)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"pca": 4},
        {"min_frequency": 0.15},
        {"estimator": "hist_gradient_boosting"},
    ],
    ids=["logistic", "pca", "infrequent", "hgb"],
)
def test_compiled_equals_pipeline_over_many_records(kwargs):
    model = churn_model(n=800, seed=1, **kwargs)
    compiled = compile_pipeline(model.pipeline)
    records = churn_records(1500, seed=7, missing=0.05)
    records += [{**r, "Contract": "Three year", "PaymentMethod": "Cash"} for r in records[:100]]  # unseen
    want, prediction = _proba(model, records)
    got = np.array([compiled.predict_proba_one(r) for r in records])
    assert np.abs(got - want).max() <= 1e-9
    served = Served(
        name="churn",
        version=1,
        task="classification",
        flavor="tabular",
        model=model,
        compiled=compiled,
        threshold=model.threshold,
        classes=model.classes_,
    )
    answer = served.predict_records(records[:64])
    assert answer.fast
    assert answer.predictions == prediction.predictions[:64]


def test_regression_with_ordinal_and_minmax():
    frame = churn(600, seed=3).to_pandas()
    y = frame.pop("MonthlyCharges")
    num, cat = ["tenure", "TotalCharges"], ["Contract", "InternetService"]
    ct = ColumnTransformer(
        [
            ("num", Pipeline([("i", SimpleImputer(strategy="mean")), ("s", MinMaxScaler())]), num),
            (
                "cat",
                Pipeline(
                    [
                        ("i", SimpleImputer(strategy="most_frequent")),
                        ("o", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)),
                    ]
                ),
                cat,
            ),
        ]
    )
    pipe = Pipeline([("f", ct), ("s", StandardScaler()), ("m", Ridge())]).fit(frame[num + cat], y)
    compiled = compile_pipeline(pipe)
    records = probe_records(compiled, 500, seed=2)
    import pandas as pd

    want = pipe.predict(pd.DataFrame(records).astype({c: "float64" for c in num}))
    got = np.array([compiled.predict_value_one(r) for r in records])
    # the probes include extreme inputs (±1e15), whose answers are equal to float rounding
    assert np.allclose(got, want, rtol=1e-9, atol=1e-9)
    assert np.abs(got - want)[np.abs(want) < 1e6].max() <= 1e-9


def test_unknown_estimator_is_not_compiled():
    frame = churn(300, seed=4).to_pandas()
    y = frame.pop("Churn")
    ct = ColumnTransformer(
        [("num", StandardScaler(), ["tenure"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["Contract"])]
    )
    pipe = Pipeline([("f", ct), ("m", RandomForestClassifier(n_estimators=3, random_state=0))])
    pipe.fit(frame[["tenure", "Contract"]], y)
    with pytest.raises(NotCompilable, match="not linear"):
        compile_pipeline(pipe)


def test_multiclass_softmax():
    frame = churn(900, seed=5).to_pandas()
    y = frame.pop("Contract")
    cols = ["tenure", "MonthlyCharges", "InternetService"]
    ct = ColumnTransformer(
        [("num", StandardScaler(), cols[:2]), ("cat", OneHotEncoder(handle_unknown="ignore"), cols[2:])]
    )
    pipe = Pipeline([("f", ct), ("m", LogisticRegression(max_iter=500))]).fit(frame[cols], y)
    compiled = compile_pipeline(pipe)
    records = frame[cols].head(300).to_dict("records")
    got = np.array([compiled.predict_proba_one(r) for r in records])
    assert np.abs(got - pipe.predict_proba(frame[cols].head(300))).max() <= 1e-9


def test_a_compile_error_of_any_kind_falls_back_to_the_pipeline(monkeypatch: pytest.MonkeyPatch):
    """Not only NotCompilable: any exception while compiling leaves the model served by its pipeline."""
    from headrace.serve import host

    def broken(pipeline: object) -> object:
        raise ZeroDivisionError("a bug in the compiler")

    monkeypatch.setattr(host, "compile_pipeline", broken)

    class Model:
        pipeline = object()
        plan = None

    compiled, why = host._compile(Model())
    assert compiled is None and why is not None and "ZeroDivisionError" in why


def test_non_finite_numbers_are_refused_on_every_route_by_the_schema():
    from headrace.serve.errors import RequestInvalid
    from headrace.serve.schema import InputSchema

    schema = InputSchema({"tenure": "number", "Contract": "string"})
    for bad in (float("inf"), float("-inf"), float("nan"), 10**400):
        with pytest.raises(RequestInvalid) as info:
            schema.check([{"tenure": bad, "Contract": "One year"}])
        (problem,) = info.value.problems
        assert problem["loc"] == ["body", "records", 0, "tenure"] and "number" in problem["msg"]
    assert schema.check([{"tenure": None, "Contract": ""}]) == [{"tenure": None, "Contract": ""}]
    assert schema.check([{"tenure": 1e308, "Contract": "x"}])[0]["tenure"] == 1e308
