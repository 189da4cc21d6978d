"""ONNX export: the graph answers as headrace does (thresholded class names, probabilities, a regression
in the target's units) on probe records and generated customers; a step that does not convert is
refused in one line naming it, and nothing is written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytest.importorskip("skl2onnx")
ort = pytest.importorskip("onnxruntime")

from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LogisticRegression, Ridge  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler  # noqa: E402

from headrace.bridges.onnx_export import NotConvertible, export_onnx, probe_records, run_onnx  # noqa: E402
from headrace.config import FeatureSpec  # noqa: E402
from headrace.datagen import churn  # noqa: E402
from headrace.serve.examples import churn_model, churn_records  # noqa: E402
from headrace.train.features import MISSING, build_features, plan_features, prepare  # noqa: E402
from headrace.train.tabular import TabularModel  # noqa: E402


def _frame(model, records):
    schema = {c["name"]: (pl.Float64 if c["kind"] == "number" else pl.String) for c in model.plan.inputs}
    return pl.DataFrame(records, schema=schema)


def test_logistic_churn_pipeline_matches_on_probes(tmp_path: Path) -> None:
    model = churn_model(n=1500, seed=2, threshold=0.3)
    out = tmp_path / "churn.onnx"
    doc = export_onnx(model, out, ref="churn@1")
    assert out.stat().st_size == doc["bytes"] > 0 and doc["probes"] == 200
    assert doc["max_difference"] < 1e-5

    # a fresh session from the file, on the probes and on 1000 generated customers with gaps
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["headrace.threshold"]) == 0.3
    assert json.loads(meta["headrace.classes"]) == ["No", "Yes"]
    assert meta["headrace.missing_category"] == MISSING
    records = probe_records(model, 64, seed=5) + churn_records(1000, seed=9, missing=0.05)
    frame = _frame(model, records)
    labels, proba = run_onnx(session, model, frame)
    want = model.predict(frame)
    want_proba = model.predict_proba(frame)
    assert np.abs(proba - want_proba).max() < 1e-5
    near = np.abs(want_proba[:, 1] - 0.3) < 1e-5
    assert [g for g, n in zip(labels, near, strict=True) if not n] == [
        w for w, n in zip(want.predictions, near, strict=True) if not n
    ]
    # the decision is the version's threshold, not the argmax: customers between 0.3 and 0.5 are "Yes"
    between = (want_proba[:, 1] >= 0.3 + 1e-5) & (want_proba[:, 1] < 0.5)
    assert between.sum() > 20
    assert {labels[i] for i in np.flatnonzero(between)} == {"Yes"}


def test_regression_with_a_log_target_is_in_the_targets_units(tmp_path: Path) -> None:
    frame = churn(800, seed=4)
    spec = FeatureSpec(drop=["customerID", "Churn", "TotalCharges"])
    plan = plan_features(spec, frame.schema, exclude=["MonthlyCharges"])
    y = np.log(frame["MonthlyCharges"].to_numpy())
    pipeline = Pipeline([("features", build_features(plan)), ("model", Ridge())]).fit(prepare(frame, plan), y)
    model = TabularModel(
        pipeline, task="regression", plan=plan, target="MonthlyCharges", target_transform="log"
    )
    doc = export_onnx(model, tmp_path / "charges.onnx", ref="charges@1")
    session = ort.InferenceSession(str(tmp_path / "charges.onnx"), providers=["CPUExecutionProvider"])
    records = frame.drop("customerID", "Churn", "TotalCharges", "MonthlyCharges").to_dicts()[:300]
    values, _ = run_onnx(session, model, _frame(model, records))
    want = model.predict(_frame(model, records)).predictions
    assert np.allclose(values, want, rtol=1e-5) and min(want) > 10  # dollars, not log-dollars
    assert doc["max_difference"] < 1e-5


def test_a_step_without_a_converter_is_refused_by_name(tmp_path: Path) -> None:
    base = churn_model(n=600, seed=1)
    plan = base.plan
    features = ColumnTransformer(
        [
            (
                "num",
                Pipeline([("impute", SimpleImputer()), ("spline", SplineTransformer(n_knots=4))]),
                plan.numeric,
            ),
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value=MISSING)),
                        ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                plan.categorical,
            ),
        ]
    )
    frame = churn(600, seed=1)
    y = (frame["Churn"] == "Yes").cast(pl.Int64).to_numpy()
    pipeline = Pipeline(
        [("features", features), ("scale", StandardScaler()), ("model", LogisticRegression())]
    )
    pipeline.fit(prepare(frame, plan), y)
    model = TabularModel(pipeline, task="classification", plan=plan, classes=["No", "Yes"], threshold=0.5)
    out = tmp_path / "spline.onnx"
    with pytest.raises(NotConvertible) as caught:
        export_onnx(model, out, ref="churn@4")
    line = caught.value.one_line()
    assert "step 'features/num/spline' (SplineTransformer) has no ONNX converter" in line
    assert "\n" not in line and "--format mlflow" in line
    assert not out.exists()


def test_a_step_whose_conversion_fails_is_named(tmp_path: Path) -> None:
    model = churn_model(n=600, seed=1, min_frequency=0.15)  # infrequent categories: skl2onnx refuses
    out = tmp_path / "infrequent.onnx"
    with pytest.raises(NotConvertible) as caught:
        export_onnx(model, out, ref="churn@5")
    assert "step 'features/cat/encode' (OneHotEncoder) failed to convert" in caught.value.one_line()
    assert not out.exists()


def test_derived_columns_are_refused(tmp_path: Path) -> None:
    model = churn_model(n=400, seed=1)
    model.plan = dataclasses.replace(model.plan, derive={"charges_per_month": "TotalCharges / tenure"})
    with pytest.raises(NotConvertible, match="headrace computes charges_per_month before its pipeline"):
        export_onnx(model, tmp_path / "derived.onnx", ref="churn@6")
    assert not (tmp_path / "derived.onnx").exists()
