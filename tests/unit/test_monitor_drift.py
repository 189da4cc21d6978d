import math

import numpy as np
import polars as pl
import pytest
from scipy import stats
from scipy.spatial import distance

from headrace.datagen import churn
from headrace.errors import DataError
from headrace.monitor.drift import (
    EPSILON,
    REFERENCE_SCORES_MAX,
    DriftThresholds,
    drift,
    feature_drift,
    js_distance,
    ks_test,
    psi_categorical,
    psi_numeric,
    quantile_edges,
    reference_scores,
)


def test_psi_categorical_matches_the_textbook_formula():
    reference = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    live = ["a"] * 30 + ["b"] * 30 + ["c"] * 40
    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + 0 + (0.4 - 0.2) * math.log(0.4 / 0.2)
    assert psi_categorical(reference, live) == pytest.approx(expected, rel=1e-12)


def test_psi_puts_epsilon_in_an_empty_bin():
    reference = ["a"] * 50 + ["b"] * 50
    live = ["a"] * 50 + ["b"] * 40 + ["new"] * 10
    expected = (
        0.0 + (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.1 - EPSILON) * math.log(0.1 / EPSILON)
    )  # 'new' is absent from the reference
    assert psi_categorical(reference, live) == pytest.approx(expected, rel=1e-12)


def test_psi_numeric_bins_on_reference_quantiles():
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 20_000)
    edges = quantile_edges(reference, 10)
    assert len(edges) == 9
    shares = np.histogram(reference, bins=[-np.inf, *edges, np.inf])[0] / reference.size
    assert np.allclose(shares, 0.1, atol=0.002)  # equal-frequency bins on the reference
    # same distribution: PSI near 0; a one-sigma shift: far above the 0.25 alert line
    assert psi_numeric(reference, rng.normal(0, 1, 20_000)) < 0.01
    shifted = psi_numeric(reference, rng.normal(1, 1, 20_000))
    assert shifted > 0.25
    # by hand, on the same edges
    live = rng.normal(0.5, 1, 20_000)
    e = np.histogram(reference, bins=[-np.inf, *edges, np.inf])[0] / reference.size
    a = np.histogram(live, bins=[-np.inf, *edges, np.inf])[0] / live.size
    by_hand = float(np.sum((a - e) * np.log(a / e)))
    assert psi_numeric(reference, live) == pytest.approx(by_hand, rel=1e-3)


def test_psi_numeric_with_few_distinct_values_uses_fewer_bins():
    reference = np.array([0] * 84 + [1] * 16)
    assert list(quantile_edges(reference, 10)) == [0.0]
    live = np.array([0] * 50 + [1] * 50)
    expected = (0.5 - 0.84) * math.log(0.5 / 0.84) + (0.5 - 0.16) * math.log(0.5 / 0.16)
    assert psi_numeric(reference, live) == pytest.approx(expected, rel=1e-12)


def test_ks_and_js_agree_with_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 500), rng.normal(0.3, 1, 700)
    statistic, p_value = ks_test(a, b)
    reference = stats.ks_2samp(a, b)
    assert statistic == pytest.approx(reference.statistic)
    assert p_value == pytest.approx(reference.pvalue)
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    assert js_distance(p, q) == pytest.approx(distance.jensenshannon(p, q, base=2))
    assert js_distance(p, p) == pytest.approx(0.0, abs=1e-7)
    assert js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


def test_feature_drift_statuses_follow_thresholds():
    rng = np.random.default_rng(2)
    ref = pl.Series("x", rng.normal(0, 1, 5000))
    same = feature_drift("x", ref, pl.Series("x", rng.normal(0, 1, 5000)))
    assert same.status == "ok" and not same.drifted and same.kind == "numeric" and same.test == "ks"
    small = feature_drift("x", ref, pl.Series("x", rng.normal(0.35, 1, 5000)))
    assert 0.1 <= small.psi < 0.25 and small.status == "warn" and not small.drifted
    big = feature_drift("x", ref, pl.Series("x", rng.normal(1.0, 1, 5000)))
    assert big.status == "alert" and big.drifted
    # KS decides instead: even the small shift is significant with 5000 rows
    ks = feature_drift("x", ref, pl.Series("x", rng.normal(0.35, 1, 5000)), DriftThresholds(method="ks"))
    assert ks.drifted and ks.p_value < 0.01


def test_categorical_feature_uses_chi_square_and_counts_nulls():
    ref = pl.Series("c", ["a", "b"] * 500)
    live = pl.Series("c", ["a"] * 700 + ["b"] * 200 + [None] * 100)
    result = feature_drift("c", ref, live)
    assert result.kind == "categorical" and result.test == "chi2"
    assert result.live_nulls == pytest.approx(0.1) and result.reference_nulls == 0.0
    assert result.bins == ["a", "b"]
    assert result.live_share == pytest.approx([7 / 9, 2 / 9])
    expected = stats.chi2_contingency(np.array([[500, 500], [700, 200]]), correction=False)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)


def test_churn_shift_drifts_tenure_and_charges_only():
    reference = churn(4000, seed=1)
    features = [c for c in reference.columns if c not in ("customerID", "Churn")]
    calm = drift(reference, churn(2000, seed=2), features=features)
    assert calm.drifted == [] and not calm.dataset_drift and calm.status == "ok"
    shifted = drift(
        reference,
        churn(2000, seed=3, shift=1.0),
        DriftThresholds(drift_share=0.1),
        features=features,
    )
    assert {"tenure", "MonthlyCharges"} <= set(shifted.drifted)
    assert set(shifted.drifted) <= {"tenure", "MonthlyCharges", "TotalCharges"}  # TotalCharges derives
    assert shifted.share_drifted == pytest.approx(len(shifted.drifted) / len(features))
    assert shifted.dataset_drift and shifted.status == "alert"
    doc = shifted.to_dict()
    assert doc["features"][0]["feature"] == features[0] and doc["thresholds"]["psi_alert"] == 0.25


def test_prediction_drift_is_reported():
    ref_pred = pl.Series("p", ["No"] * 740 + ["Yes"] * 260)
    live_pred = pl.Series("p", ["No"] * 400 + ["Yes"] * 600)
    frame = pl.DataFrame({"x": np.arange(1000.0)})
    report = drift(frame, frame, prediction=(ref_pred, live_pred))
    assert report.prediction is not None and report.prediction.drifted
    assert report.status == "alert" and not report.dataset_drift


def test_missing_feature_and_empty_live_window_are_clear_errors():
    frame = pl.DataFrame({"x": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match=r"feature\(s\) y missing from the reference"):
        drift(frame, frame, features=["y"])
    with pytest.raises(DataError, match="no non-null values in the live window"):
        drift(frame, pl.DataFrame({"x": [None, None]}, schema={"x": pl.Float64}))


# -- the prediction-drift reference: out-of-fold scores saved with the version ----------------------


@pytest.fixture
def registry(tmp_path):
    from headrace.artifacts import ArtifactStore
    from headrace.metadata import Metadata
    from headrace.registry import Registry

    meta = Metadata(f"sqlite:///{tmp_path}/meta.db")
    yield Registry(meta, ArtifactStore(tmp_path / "artifacts"), actor="test")
    meta.dispose()


def _parquet(frame: pl.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def test_reference_scores_read_the_out_of_fold_table_as_serving_scores(registry):
    """Binary and regression: the ``prediction`` column; more classes: the top class's probability,
    as serving logs it; non-finite values left out; a seeded sample above the bound."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1.0, 1.0, 1.0], size=300)
    multi = pl.DataFrame(
        {"row": np.arange(300), "fold": 0, "y": 0, "p_0": p[:, 0], "p_1": p[:, 1], "p_2": p[:, 2]}
    )
    sha = registry.artifacts.put_bytes(_parquet(multi))
    mv = registry.register(
        "iris", task="classification", flavor="tabular", artifact=b"m", details={"oof_sha256": sha}
    )
    ref = reference_scores(registry, mv)
    assert ref is not None and ref.source == "out_of_fold"
    assert np.allclose(ref.values.to_numpy(), p.max(axis=1))

    big = REFERENCE_SCORES_MAX + 500
    values = rng.normal(size=big)
    values[:3] = [np.nan, np.inf, -np.inf]
    sha = registry.artifacts.put_bytes(_parquet(pl.DataFrame({"row": np.arange(big), "prediction": values})))
    mv = registry.register(
        "price", task="regression", flavor="tabular", artifact=b"m", details={"oof_sha256": sha}
    )
    ref = reference_scores(registry, mv)
    assert ref is not None and ref.values.len() == REFERENCE_SCORES_MAX
    assert ref.values.is_finite().all() and set(ref.values.to_list()) <= set(values[3:].tolist())
    again = reference_scores(registry, mv)
    assert again is not None and again.values.to_list() == ref.values.to_list()  # seeded


def test_a_version_without_out_of_fold_scores_falls_back_to_in_sample_and_says_so(registry, tmp_path, caplog):
    from headrace.config.models import ModelSpec
    from headrace.store import BatchMeta, Store
    from headrace.train.run import train_model

    store = Store(tmp_path / "lake")
    store.append("customers", churn(300, seed=1), BatchMeta(source="test"))
    spec = ModelSpec.model_validate(
        {
            "task": "classification",
            "dataset": "customers",
            "target": "Churn",
            "features": {"drop": ["customerID"]},
            "candidates": [{"estimator": "logistic_regression"}],
            "validation": {"strategy": "stratified_kfold", "folds": 3},
        }
    )
    result = train_model("churn", spec, store=store, registry=None, register=False)
    # registered as versions were before the out-of-fold scores were saved: no oof_sha256
    old = registry.register(
        "churn",
        task="classification",
        flavor="tabular",
        artifact=result.model.to_bytes(),
        dataset="customers",
    )
    training = store.read("customers")
    with caplog.at_level("WARNING", logger="headrace.monitor.drift"):
        ref = reference_scores(registry, old, training)
    assert ref is not None and ref.source == "in_sample"
    assert ref.note is not None and "trained before out-of-fold scores were saved" in ref.note
    assert "retrain" in caplog.text and "in-sample" in caplog.text
    _, model = registry.load("churn", old.version)
    assert np.allclose(ref.values.to_numpy(), model.predict_proba(training)[:, 1])
    assert reference_scores(registry, old, None) is None  # nothing to score it on: no prediction drift

    # an out-of-fold table that went missing from the artifact store: in-sample again, with the reason
    gone = registry.register(
        "churn",
        task="classification",
        flavor="tabular",
        artifact=result.model.to_bytes(),
        details={"oof_sha256": "0" * 64},
    )
    ref = reference_scores(registry, gone, training)
    assert ref is not None and ref.source == "in_sample" and "could not be read" in (ref.note or "")

    live = pl.Series("score", model.predict_proba(churn(300, seed=5))[:, 1])
    frame = pl.DataFrame({"x": np.arange(10.0)})
    report = drift(frame, frame, prediction=(ref.values, live), prediction_reference=ref.source)
    assert report.to_dict()["prediction_reference"] == "in_sample"
    assert drift(frame, frame, prediction_reference="in_sample").prediction_reference is None
