"""Batch scoring: ``headrace predict`` scores a dataset chunk by chunk into a new dataset in one commit,
with the model version, data version and batch id on every row, the same answers as the model's own
``predict`` on the whole frame, and a ledger entry; a failing run writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from broken_models import unfitted

from headrace.cli import main
from headrace.config import ModelSpec
from headrace.datagen import churn
from headrace.errors import HeadraceError, UsageError
from headrace.registry import Registry
from headrace.scaffold import init_project
from headrace.score import score_dataset
from headrace.store import BatchMeta
from headrace.train.run import train_model
from headrace.workspace import Workspace

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("scoring")
    ws = Workspace.open(init_project(folder, name="scoring", rows=100))
    ws.store.append("customers", churn(3000, seed=8), BatchMeta("test"))
    registry = Registry(ws.meta, ws.artifacts)
    spec = ModelSpec.model_validate(
        {
            "task": "classification",
            "dataset": "customers",
            "target": "Churn",
            "features": {"drop": ["customerID"]},
            "candidates": [{"estimator": "logistic_regression"}],
            "validation": {"strategy": "holdout"},
        }
    )
    mv = train_model("churn", spec, store=ws.store, registry=registry, promote=True).version
    regression = ModelSpec.model_validate(
        {
            "task": "regression",
            "dataset": "customers",
            "target": "MonthlyCharges",
            "features": {"drop": ["customerID", "Churn", "TotalCharges"]},
            "candidates": [{"estimator": "ridge"}],
            "validation": {"strategy": "holdout"},
        }
    )
    rv = train_model("charges", regression, store=ws.store, registry=registry, promote=True).version
    yield {"ws": ws, "registry": registry, "mv": mv, "rv": rv, "folder": folder}
    ws.close()


def test_a_dataset_is_scored_in_chunks_into_one_commit(project: Any) -> None:
    ws, registry = project["ws"], project["registry"]
    seen: list[int] = []
    result = score_dataset(
        ws.store, registry, "churn", "customers", "churn_scores", chunk_rows=700, on_chunk=seen.append
    )
    assert result.rows == 3000 and result.chunks == 5 and seen == [700, 700, 700, 700, 200]
    assert ws.store.versions("churn_scores")[-1].version == result.out_version == 0  # one commit
    scores = ws.store.read("churn_scores")
    assert scores.height == 3000
    assert set(scores.columns) >= {"customerID", "Churn", "prediction", "score", "model_version", "batch_id"}
    assert scores["model_version"].unique().to_list() == [project["mv"].version]
    assert scores["data_version"].unique().to_list() == [ws.store.version("customers")]
    assert scores["batch_id"].unique().to_list() == [result.batch_id]
    # the same answers as the model's own predict on the whole frame
    _, model = registry.load("churn")
    data = ws.store.read("customers")
    whole = model.predict(data)
    by_id = dict(
        zip(scores["customerID"], zip(scores["prediction"], scores["score"], strict=True), strict=True)
    )
    expected_score = np.asarray(model.predict_proba(data))[:, 1]
    for cid, label, p in zip(data["customerID"], whole.predictions, expected_score, strict=True):
        got_label, got_score = by_id[cid]
        assert got_label == label and got_score == pytest.approx(p, abs=1e-12)
    entry = [e for e in registry.history("churn") if e.action == "batch_score"][-1]
    assert entry.details["rows"] == 3000 and entry.details["out"] == "churn_scores"


def test_a_regressor_scores_values_and_a_version_of_the_data(project: Any) -> None:
    ws, registry = project["ws"], project["registry"]
    first = ws.store.version("customers")
    ws.store.append("customers", churn(500, seed=9, id_offset=50_000), BatchMeta("test"))
    result = score_dataset(
        ws.store, registry, "charges", f"customers@{first}", "charge_scores", keep=["customerID"]
    )
    scores = ws.store.read("charge_scores")
    assert result.data_version == first and scores.height == 3000  # the pinned version, not the newest
    assert scores.columns[:3] == ["customerID", "prediction", "score"]
    _, model = registry.load("charges")
    data = ws.store.read("customers", version=first)
    want = dict(zip(data["customerID"], model.predict(data).predictions, strict=True))
    for cid, value in zip(scores["customerID"], scores["prediction"], strict=True):
        assert value == pytest.approx(want[cid], rel=1e-12)


def test_a_failing_run_writes_nothing_and_bad_requests_are_one_line(project: Any) -> None:
    ws, registry = project["ws"], project["registry"]
    mv, good = registry.load("churn")
    broken = unfitted(good)
    bad = registry.register(
        "churn", task="classification", flavor="tabular", artifact=broken.to_bytes(), signature=mv.signature
    )
    with pytest.raises(HeadraceError, match=r"failed on rows 1-500 of customers@\d+ \(NotFittedError"):
        score_dataset(
            ws.store, registry, f"churn@{bad.version}", "customers", "never_written", chunk_rows=500
        )
    assert not ws.store.exists("never_written")
    with pytest.raises(UsageError, match="is the dataset being scored"):
        score_dataset(ws.store, registry, "churn", "customers", "customers")
    with pytest.raises(UsageError, match="does not have: nope"):
        score_dataset(ws.store, registry, "churn", "customers", "x", keep=["nope"])


def test_the_cli_scores_and_says_what_it_did(project: Any, capsys: pytest.CaptureFixture[str]) -> None:
    folder: Path = project["folder"]
    with pytest.raises(SystemExit) as done:
        main(
            [
                "--project",
                str(folder),
                "predict",
                "churn",
                "--dataset",
                "customers",
                "--out",
                "cli_scores",
                "--json",
            ]
        )
    assert done.value.code in (0, None)
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"] == project["ws"].store.read("customers").height and doc["out"] == "cli_scores"
    assert pl.Series(project["ws"].store.read("cli_scores")["model"]).unique().to_list() == ["churn"]
