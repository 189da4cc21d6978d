"""The fast path equals the pipeline: compiled arithmetic vs the fitted sklearn pipeline, 1e-9, on
ordinary records and on the edges (non-finite, extreme, empty, unseen, missing), where both answer the
same or refuse the same."""

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
from threadpoolctl import threadpool_limits

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


# -- the edges: every record answered identically, or refused identically --------------------------


def _served(model) -> Served:
    from headrace.serve.host import _compile
    from headrace.serve.schema import InputSchema

    compiled, why = _compile(model)
    assert compiled is not None, why
    return Served(
        name="churn",
        version=1,
        task="classification",
        flavor="tabular",
        model=model,
        schema=InputSchema.from_signature(model.signature),
        compiled=compiled,
        threshold=model.threshold,
        classes=model.classes_,
    )


def _outcome(served: Served, record: dict, *, fast: bool):
    from headrace.errors import HeadraceError

    try:
        checked = served.schema.check([record])  # type: ignore[union-attr]  # what every route runs first
        answer = served.predict_records(checked, allow_fast=fast)
    except HeadraceError as exc:
        return ("refused", type(exc).__name__, str(exc)), None
    return ("answered", answer.predictions, [list(p.values()) for p in answer.probabilities]), answer.fast


@pytest.mark.parametrize("kwargs", [{}, {"estimator": "hist_gradient_boosting"}], ids=["logistic", "hgb"])
def test_edge_records_are_answered_or_refused_identically_by_both_paths(kwargs):
    """A churn pipeline (one-hot + scaling + logistic regression, and a tree model): inf, -inf, nan,
    ±1e308, the largest float, huge integers, numbers just past the fast path's range, empty and
    blank strings, unseen categories, null and left-out fields, one at a time and all at once."""
    import math

    from headrace.serve.fastpath import FAST_PATH_MAX_ABS, edge_records

    model = churn_model(n=800, seed=1, **kwargs)
    served = _served(model)
    fields = served.schema.fields  # type: ignore[union-attr]
    corpus = [r for base in churn_records(2, seed=3) for r in edge_records(fields, base)]
    corpus += [{**r, "Contract": ""} for r in churn_records(20, seed=4, missing=0.2)]
    kinds: dict[str, int] = {}
    with threadpool_limits(1):  # one row per call: OpenMP threads only cost time here
        outcomes = [(_outcome(served, r, fast=True), _outcome(served, r, fast=False)) for r in corpus]
    for record, ((fast, fast_used), (slow, slow_used)) in zip(corpus, outcomes, strict=True):
        assert fast[0] == slow[0] and fast[1] == slow[1], (record, fast, slow)
        if fast[0] == "answered":
            assert np.allclose(fast[2], slow[2], rtol=1e-9, atol=1e-9), (record, fast, slow)
            assert slow_used is False
            kinds["fast" if fast_used else "pipeline"] = kinds.get("fast" if fast_used else "pipeline", 0) + 1
            assert fast_used == all(
                v is None or isinstance(v, str) or abs(v) <= FAST_PATH_MAX_ABS for v in record.values()
            )
        else:
            assert fast == slow
            kinds[fast[1]] = kinds.get(fast[1], 0) + 1
        for value in record.values():  # what the schema lets through, each path answers or refuses
            if isinstance(value, float) and not math.isfinite(value):
                assert fast[:2] == ("refused", "RequestInvalid") and "finite number" in fast[2]
    # every kind of outcome happened: the comparison above had something to compare
    assert kinds["fast"] > 30 and kinds["pipeline"] > 5 and kinds["RequestInvalid"] > 30, kinds


def test_a_number_that_overflows_the_pipeline_is_a_422_naming_the_field_on_both_paths():
    """SeniorCitizen is 0/1 (a scale below 1): 1e308 / scale is infinity in the scaler. The pipeline
    refuses it, so the fast path (which would have folded the scale into a finite weight) must not
    answer it either."""
    from headrace.errors import DataError

    served = _served(churn_model(n=800, seed=1))
    record = {**churn_records(1, seed=3)[0], "SeniorCitizen": 1e308}
    for fast in (True, False):
        with pytest.raises(DataError, match=r"record 0: 'SeniorCitizen' = 1e\+308 overflows") as info:
            served.predict_records(served.schema.check([record]), allow_fast=fast)  # type: ignore[union-attr]
        assert "within" in (info.value.hint or "")
    assert not served.compiled.accepts(record)  # type: ignore[union-attr]
    ordinary = churn_records(1, seed=3)[0]
    assert served.compiled.accepts(ordinary) and served.predict_records([ordinary]).fast  # type: ignore[union-attr]


@pytest.fixture
def registry(tmp_path):
    from headrace.artifacts import ArtifactStore
    from headrace.metadata import Metadata
    from headrace.registry import Registry
    from headrace.serve.examples import register_churn

    meta = Metadata(f"sqlite:///{tmp_path}/meta.db")
    registry = Registry(meta, ArtifactStore(tmp_path / "artifacts"), actor="test")
    register_churn(registry, n=600, seed=1)
    yield registry
    meta.dispose()


def test_any_error_while_compiling_falls_back_to_the_pipeline_and_the_model_loads(
    registry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """Not only NotCompilable: a compiler bug (here a KeyError from inside compile_pipeline, where a
    scaler is folded) leaves the model loaded and answered by its pipeline, with a warning."""
    from headrace.serve import fastpath
    from headrace.serve.host import ModelHost

    def broken(step, width):
        raise KeyError("a compiler bug")

    monkeypatch.setattr(fastpath, "_affine_of", broken)
    host = ModelHost(registry, ["churn"])
    with caplog.at_level("WARNING", logger="headrace.serve"):
        assert host.check("churn")
    served = host.get("churn")
    assert served.compiled is None and "KeyError" in (served.not_compiled or "")
    assert "could not compile" in caplog.text and "the pipeline serves it" in caplog.text
    records = churn_records(5, seed=2)
    answer = served.predict_records(served.schema.check(records))  # type: ignore[union-attr]
    assert not answer.fast and len(answer.predictions) == 5


def test_a_fast_path_that_disagrees_at_the_edges_falls_back_with_a_warning(
    registry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """The load-time edge probe runs the whole serving path both ways: a compiled model that answers
    differently (here one compiled from another fit) is not used."""
    from headrace.serve import host as host_module
    from headrace.serve.host import ModelHost, probe_edges

    other = churn_model(n=600, seed=9, C=0.01)
    monkeypatch.setattr(host_module, "compile_pipeline", lambda pipeline: compile_pipeline(other.pipeline))
    host = ModelHost(registry, ["churn"])
    with caplog.at_level("WARNING", logger="headrace.serve"):
        assert host.check("churn")
    served = host.get("churn")
    assert served.compiled is None and "differ" in (served.not_compiled or "")
    assert "the fast path and the pipeline differ" in caplog.text
    monkeypatch.undo()
    assert host.check("churn", force=True) and host.get("churn").compiled is not None  # the real one agrees
    assert probe_edges(host.get("churn")) is None


def test_a_regression_answer_that_is_not_finite_is_refused_alike_on_both_paths():
    """A regressor fitted to log(target): a large enough input makes exp() of its prediction
    infinite. Both paths refuse it with the same 422 (instead of an answer JSON cannot carry)."""
    from sklearn.pipeline import Pipeline

    from headrace.config.models import FeatureSpec
    from headrace.errors import DataError
    from headrace.serve.schema import InputSchema
    from headrace.train.features import build_features, plan_features, prepare
    from headrace.train.tabular import TabularModel

    frame = churn(600, seed=3).select("tenure", "Contract", "MonthlyCharges")
    plan = plan_features(FeatureSpec(), frame.schema, exclude=["MonthlyCharges"])
    pipe = Pipeline([("features", build_features(plan)), ("model", Ridge())])
    pipe.fit(prepare(frame, plan), np.log(frame["MonthlyCharges"].to_numpy()))
    model = TabularModel(pipe, task="regression", plan=plan, target="MonthlyCharges", target_transform="log")
    from headrace.serve.host import _compile

    compiled, why = _compile(model)
    assert compiled is not None, why
    served = Served(
        name="charges",
        version=1,
        task="regression",
        flavor="tabular",
        model=model,
        schema=InputSchema.from_signature(model.signature),
        compiled=compiled,
    )
    ordinary = {"tenure": 12.0, "Contract": "One year"}
    fast, slow = (served.predict_records([ordinary], allow_fast=f) for f in (True, False))
    assert fast.fast and not slow.fast and np.isclose(fast.predictions[0], slow.predictions[0], rtol=1e-9)
    huge = {"tenure": -1e15, "Contract": "One year"}  # within the fast path's range; exp() overflows
    assert compiled.accepts(huge)
    messages = set()
    for allow_fast in (True, False):
        with pytest.raises(DataError, match=r"record 0: 'tenure' = -1e\+15 overflows") as info:
            served.predict_records([huge], allow_fast=allow_fast)
        messages.add(str(info.value))
    assert len(messages) == 1
