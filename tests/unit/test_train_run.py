"""train_model end to end on a Store and a Registry: lineage, reproduction, the gate on the same
data, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headrace.artifacts import ArtifactStore
from headrace.config.models import ModelSpec
from headrace.datagen import churn
from headrace.errors import GateRefused
from headrace.metadata import Metadata
from headrace.registry import Registry
from headrace.store import BatchMeta, Store
from headrace.train.report import write_report
from headrace.train.run import reproduce, train_model

SPEC = ModelSpec.model_validate(
    {
        "task": "classification",
        "dataset": "customers",
        "target": "Churn",
        "features": {"drop": ["customerID"], "derive": {"charge_per_month": "TotalCharges / (tenure + 1)"}},
        "candidates": [{"estimator": "logistic_regression", "params": {"C": [0.1, 1.0]}}],
        "validation": {"strategy": "stratified_kfold", "folds": 3, "inner_folds": 2, "threshold": "max_f1"},
        "imbalance": "class_weight",
        "promote_if": {"metric": "roc_auc", "at_least": 0.6, "beat_champion_by": 0.0},
        "seed": 7,
    }
)


@pytest.fixture
def env(tmp_path: Path):
    store = Store(tmp_path / "lake")
    meta = Metadata(f"sqlite:///{tmp_path}/meta.db")
    registry = Registry(meta, ArtifactStore(tmp_path / "artifacts"), actor="test")
    store.append("customers", churn(500, seed=1), BatchMeta(source="test"))
    yield store, registry
    meta.dispose()


def test_train_registers_a_version_with_its_lineage(env):
    store, registry = env
    result = train_model("churn", SPEC, store=store, registry=registry, promote=True)
    mv = result.version
    assert mv is not None and mv.version == 1 and mv.aliases == ("champion",)
    assert (mv.dataset, mv.data_version) == ("customers", 0)
    assert mv.threshold == result.model.threshold and 0 < mv.threshold < 1
    assert mv.metrics["roc_auc"] == result.scorecard["summary"]["roc_auc"]["mean"] > 0.7
    assert "roc_auc_std" in mv.metrics
    assert mv.params["estimator"] == "logistic_regression" and mv.params["C"] in (0.1, 1.0)
    assert mv.code_version and mv.packages["scikit-learn"]
    assert mv.details["seed"] == 7 and mv.details["spec"]["seed"] == 7
    assert {c["name"] for c in mv.signature["inputs"]} >= {"tenure", "TotalCharges", "Contract"}
    assert "customerID" not in {c["name"] for c in mv.signature["inputs"]}
    _, model = registry.load("churn")
    frame = churn(20, seed=99)
    assert model.predict(frame).predictions == result.model.predict(frame).predictions
    run = registry.history("churn")
    assert [e.action for e in run] == ["register", "promote"]


def test_reproduce_gives_the_same_metrics_from_the_recorded_data_version(env):
    store, registry = env
    first = train_model("churn", SPEC, store=store, registry=registry)
    store.append("customers", churn(300, seed=2, id_offset=10_000), BatchMeta(source="test"))  # data moves on
    report, again = reproduce("churn", first.version.version, store=store, registry=registry)
    assert report.same, report.rows
    assert again.data_version == 0
    assert again.metrics == first.metrics
    assert len(registry.list("churn")) == 1  # reproducing does not register


def test_the_gate_compares_with_the_champion_on_the_same_data(env):
    store, registry = env
    good = train_model("churn", SPEC, store=store, registry=registry, promote=True)
    store.append("customers", churn(300, seed=3, id_offset=20_000), BatchMeta(source="test"))
    weak = SPEC.model_copy(
        update={
            "candidates": [SPEC.candidates[0].model_copy(update={"params": {"C": 1e-6}})],
            "imbalance": None,
        }
    )
    weak = weak.model_copy(update={"validation": weak.validation.model_copy(update={"metric": "log_loss"})})
    weak = weak.model_copy(update={"promote_if": weak.promote_if.model_copy(update={"metric": "log_loss"})})
    with pytest.raises(GateRefused, match="does not beat champion churn@1"):
        train_model("churn", weak, store=store, registry=registry, promote=True)
    candidate = registry.get("churn", 2)
    rescored = candidate.details["champion_rescored"]
    assert rescored["version"] == good.version.version
    assert rescored["metrics"]["log_loss"] < candidate.metrics["log_loss"]
    assert registry.get("churn", "champion").version == 1


def test_report_has_the_plots_the_scores_and_the_lineage(env, tmp_path: Path):
    store, registry = env
    train_model("churn", SPEC, store=store, registry=registry)
    written = write_report(registry, "churn", 1, tmp_path / "reports")
    html = Path(written["html"]).read_text()
    for title in (
        "ROC curve",
        "Precision-recall curve",
        "Calibration",
        "Confusion matrix",
        "Permutation importance",
        "Fold scores",
    ):
        assert f'alt="{title}" src="data:image/png;base64,' in html
    assert "customers</b> version <b>0" in html
    doc = json.loads(Path(written["json"]).read_text())
    assert doc["data_version"] == 0 and doc["params"]["estimator"] == "logistic_regression"
    assert len(doc["scorecard"]["folds"]) == 3
    assert doc["curves"]["roc"]["fpr"][0] == 0.0


def test_the_prediction_drift_reference_is_out_of_fold(env):
    """A model that fits its training rows exactly scores them 0 or 1; the reference saved with the
    version is its cross-validation's out-of-fold scores, so a fresh sample of the same customers
    shows no prediction drift (against the in-sample scores it would be a false alarm)."""
    import numpy as np
    import polars as pl

    from headrace.monitor.drift import drift, reference_scores

    store, registry = env
    spec = SPEC.model_copy(
        update={
            "features": SPEC.features.model_copy(update={"derive": {}}),
            "candidates": [
                SPEC.candidates[0].model_copy(
                    update={"estimator": "extra_trees", "params": {"n_estimators": 40}}
                )
            ],
        }
    )
    mv = train_model("churn", spec, store=store, registry=registry).version
    assert mv is not None and mv.details["oof_sha256"]
    _, model = registry.load("churn", mv.version)
    training = store.read("customers")
    in_sample = model.predict_proba(training)[:, 1]
    assert np.all((in_sample <= 0.05) | (in_sample >= 0.95))  # fully grown trees: every row memorised

    reference = reference_scores(registry, mv, training)
    assert reference is not None and reference.source == "out_of_fold" and reference.note is None
    saved = reference.values.to_numpy()
    assert len(saved) == training.height  # stratified k-fold: every training row once
    assert np.mean((saved > 0.05) & (saved < 0.95)) > 0.5  # scored by models that never saw the row

    fresh = churn(500, seed=2)  # new customers from the same distribution
    live = pl.Series("score", model.predict_proba(fresh)[:, 1])
    features = pl.DataFrame({"tenure": training["tenure"]})
    honest = drift(
        features, features, prediction=(reference.values, live), prediction_reference=reference.source
    )
    assert honest.prediction is not None and not honest.prediction.drifted and honest.prediction.psi < 0.1
    assert honest.to_dict()["prediction_reference"] == "out_of_fold"
    naive = drift(features, features, prediction=(pl.Series(in_sample), live))
    assert naive.prediction is not None and naive.prediction.drifted  # what the in-sample reference said
