"""The registry: versions, aliases, the gate, rollback, retirement, the ledger and tampering."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from headrace.artifacts import ArtifactStore
from headrace.config.models import FeatureSpec, PromoteRule
from headrace.datagen import churn
from headrace.errors import ArtifactError, GateRefused, NotFound, RegistryError, UsageError
from headrace.metadata import Metadata, utcnow
from headrace.registry import Registry, split_ref
from headrace.train.features import build_features, plan_features, prepare
from headrace.train.tabular import TabularModel


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    meta = Metadata(f"sqlite:///{tmp_path}/meta.db")
    reg = Registry(meta, ArtifactStore(tmp_path / "artifacts"), actor="t")
    yield reg
    reg.meta.dispose()


@pytest.fixture(scope="module")
def model() -> TabularModel:
    frame = churn(600, seed=3)
    plan = plan_features(FeatureSpec(drop=["customerID"]), frame.schema, exclude=["Churn"])
    y = (frame["Churn"] == "Yes").to_numpy().astype(int)
    pipe = Pipeline([("features", build_features(plan)), ("model", LogisticRegression(max_iter=500))])
    pipe.fit(prepare(frame, plan), y)
    return TabularModel(pipe, task="classification", plan=plan, classes=["No", "Yes"], threshold=0.4)


def _register(reg: Registry, model: TabularModel, auc: float, *, data_version: int = 1, **kw):
    return reg.register(
        "churn",
        task="classification",
        flavor="tabular",
        artifact=model.to_bytes(),
        metrics={"roc_auc": auc},
        params={"C": 1.0},
        dataset="customers",
        data_version=data_version,
        signature=model.signature,
        threshold=model.threshold,
        **kw,
    )


def test_register_get_and_load_round_trip(registry: Registry, model: TabularModel):
    v1 = _register(registry, model, 0.8)
    v2 = _register(registry, model, 0.82)
    assert (v1.version, v2.version) == (1, 2)
    assert v1.flavor == "tabular" and v1.artifact_sha256 and len(v1.artifact_sha256) == 64
    assert registry.get("churn", "latest").version == 2
    assert registry.get("churn", "1").version == 1
    registry.promote("churn", 1, reason="first")
    mv, loaded = registry.load("churn")  # champion by default
    assert mv.version == 1 and mv.aliases == ("champion",)
    frame = churn(5, seed=9)
    assert loaded.predict(frame).predictions == model.predict(frame).predictions
    assert mv.signature["inputs"][0] == {"name": "gender", "type": "String", "kind": "string"}
    with pytest.raises(NotFound, match="no alias 'challenger'"):
        registry.get("churn", "challenger")
    with pytest.raises(NotFound, match="no version 9"):
        registry.get("churn", 9)


def test_gate_refuses_a_worse_model_and_records_the_refusal(registry: Registry, model: TabularModel):
    _register(registry, model, 0.80)
    _register(registry, model, 0.79)
    _register(registry, model, 0.70)
    gate = PromoteRule(metric="roc_auc", at_least=0.75, beat_champion_by=0.0)
    registry.promote("churn", 1, reason="first", gate=gate)
    with pytest.raises(GateRefused, match=r"does not beat champion churn@1 \(0.8\)"):
        registry.promote("churn", 2, reason="retrained", gate=gate)
    with pytest.raises(GateRefused, match=r"below the floor 0\.75"):
        registry.promote("churn", 3, reason="retrained", gate=gate)
    assert registry.get("churn", "champion").version == 1
    refusals = [e for e in registry.history("churn") if e.action == "promote_refused"]
    assert [e.version for e in refusals] == [2, 3]
    assert refusals[0].details["gate"]["passed"] is False


def test_gate_compares_on_the_same_data_only(registry: Registry, model: TabularModel):
    _register(registry, model, 0.80, data_version=1)
    registry.promote("churn", 1, reason="first")
    _register(registry, model, 0.85, data_version=2)  # not scored against the champion on its data
    gate = PromoteRule(metric="roc_auc", beat_champion_by=0.01)
    with pytest.raises(GateRefused, match="same folds"):
        registry.promote("churn", 2, reason="new data", gate=gate)
    _register(
        registry,
        model,
        0.85,
        data_version=2,
        details={"champion_rescored": {"version": 1, "metrics": {"roc_auc": 0.83}}},
    )
    assert registry.promote("churn", 3, reason="new data", gate=gate).version == 3
    _register(
        registry,
        model,
        0.85,
        data_version=3,
        details={"champion_rescored": {"version": 3, "metrics": {"roc_auc": 0.849}}},
    )
    with pytest.raises(GateRefused, match=r"gain 0\.001"):
        registry.promote("churn", 4, reason="new data", gate=gate)


def test_gate_on_an_error_metric_wants_it_lower(registry: Registry, model: TabularModel):
    for rmse in (50_000.0, 52_000.0, 45_000.0):
        registry.register(
            "price", task="regression", flavor="tabular", artifact=model.to_bytes(), metrics={"rmse": rmse}
        )
    gate = PromoteRule(metric="rmse", at_most=60_000)
    registry.promote("price", 1, reason="first", gate=gate)
    with pytest.raises(GateRefused, match="does not beat"):
        registry.promote("price", 2, reason="x", gate=gate)
    assert registry.promote("price", 3, reason="better", gate=gate).aliases == ("champion",)


def test_rollback_restores_the_previous_champion(registry: Registry, model: TabularModel):
    for auc in (0.8, 0.81, 0.82):
        _register(registry, model, auc)
    registry.promote("churn", 1, reason="first")
    registry.promote("churn", 2, reason="better")
    registry.promote("churn", 3, reason="better still")
    assert registry.rollback("churn", reason="error rate up").version == 2
    assert registry.get("churn", "champion").version == 2
    assert registry.rollback("churn", reason="still bad").version == 1
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback("churn", reason="again")
    last = registry.history("churn")[-1]
    assert (last.action, last.version, last.previous_version, last.reason, last.actor) == (
        "rollback",
        1,
        2,
        "still bad",
        "t",
    )


def test_rollback_skips_retired_versions(registry: Registry, model: TabularModel):
    for auc in (0.8, 0.81, 0.82):
        _register(registry, model, auc)
    registry.promote("churn", 1, reason="a")
    registry.promote("churn", 2, reason="b")
    registry.promote("churn", 3, reason="c")
    registry.retire("churn", 2, reason="bad batch")
    assert registry.rollback("churn", reason="r").version == 1


def test_champion_at_answers_from_the_ledger(registry: Registry, model: TabularModel):
    _register(registry, model, 0.8)
    _register(registry, model, 0.81)
    before = utcnow()
    time.sleep(0.01)
    registry.promote("churn", 1, reason="a")
    time.sleep(0.01)
    middle = utcnow()
    time.sleep(0.01)
    registry.promote("churn", 2, reason="b")
    time.sleep(0.01)
    after_promote = utcnow()
    time.sleep(0.01)
    registry.rollback("churn", reason="r")
    assert registry.champion_at("churn", before) is None
    assert registry.champion_at("churn", middle) == 1
    assert registry.champion_at("churn", after_promote) == 2
    assert registry.champion_at("churn", utcnow()) == 1


def test_retire_removes_the_artifact_and_keeps_the_ledger(registry: Registry, model: TabularModel, tmp_path):
    v1 = _register(registry, model, 0.8)
    registry.register(
        "churn", task="classification", flavor="tabular", artifact=b"another artifact", metrics={}
    )
    registry.promote("churn", 2, reason="x")
    with pytest.raises(RegistryError, match="is the champion"):
        registry.retire("churn", 2, reason="no")
    retired = registry.retire("churn", 1, reason="superseded")
    assert retired.status == "retired"
    assert not registry.artifacts.exists(v1.artifact_sha256)
    with pytest.raises(RegistryError, match="retired"):
        registry.load("churn", 1)
    assert [e.action for e in registry.history("churn")][-1] == "retire"
    assert registry.get("churn", "latest").version == 2


def test_retire_keeps_an_artifact_another_version_shares(registry: Registry, model: TabularModel):
    data = model.to_bytes()
    v1, v2 = (
        registry.register("churn", task="classification", flavor="tabular", artifact=data) for _ in range(2)
    )
    assert v1.artifact_sha256 == v2.artifact_sha256  # the same bytes (a reproduced model)
    registry.retire("churn", 1, reason="dup")
    assert registry.load("churn", 2)[0].version == 2


def test_a_tampered_artifact_is_refused(registry: Registry, model: TabularModel):
    mv = _register(registry, model, 0.8)
    path = registry.artifacts.path(mv.artifact_sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt or was modified"):
        registry.load("churn", 1)


def test_an_artifact_with_untrusted_types_is_refused(registry: Registry):
    import skops.io as sio

    from headrace.train.tabular import FORMAT_VERSION

    class Planted:  # a type no trusted list names
        pass

    payload = sio.dumps({"format": FORMAT_VERSION, "pipeline": Planted()})
    registry.register("evil", task="classification", flavor="tabular", artifact=payload)
    with pytest.raises(ArtifactError, match="not trusted"):
        registry.load("evil", "latest")


def test_split_ref():
    assert split_ref("churn@3") == ("churn", 3)
    assert split_ref("churn@champion") == ("churn", "champion")
    assert split_ref("churn") == ("churn", None)
    with pytest.raises(UsageError):
        split_ref("churn@")


def test_predict_checks_inputs(model: TabularModel):
    frame = churn(3, seed=1)
    with pytest.raises(Exception, match="missing column"):
        model.predict(frame.drop("tenure"))
    bad = frame.with_columns(pl.lit("abc").alias("tenure"))
    with pytest.raises(Exception, match="does not fit its column's type"):
        model.predict(bad)
    proba = model.predict_proba(frame)
    expected = np.where(proba[:, 1] >= 0.4, "Yes", "No").tolist()
    assert model.predict(frame).predictions == expected
