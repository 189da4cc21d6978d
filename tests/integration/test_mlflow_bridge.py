"""The MLflow bridge against a live MLflow tracking server started here on a free loopback port.

The server runs from its own virtual environment (full ``mlflow`` pins pyarrow and cryptography below
the project's, so the project's venv holds only the ``mlflow-skinny`` client); it is created once under
the temp folder (``HEADRACE_MLFLOW_SERVER_VENV`` names another) with pip from the package index.

- an exported version loaded with ``mlflow.pyfunc.load_model`` gives headrace's served answers on 100
  records (labels with the decision threshold, class names, probabilities);
- with an ``mlflow:`` block, a trained version is mirrored as a run with its metrics, parameters and
  report, and an MLflow model version whose aliases follow promote and rollback;
- an MLflow sklearn-flavor model is imported as a new version with its lineage.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import polars as pl
import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow import MlflowClient  # noqa: E402

from headrace.cli import main  # noqa: E402
from headrace.datagen import churn  # noqa: E402
from headrace.registry import Registry  # noqa: E402
from headrace.serve.examples import churn_records  # noqa: E402
from headrace.serve.project import app_from_workspace  # noqa: E402
from headrace.serve.runner import serve_in_thread  # noqa: E402
from headrace.store import BatchMeta  # noqa: E402
from headrace.train.run import train_model  # noqa: E402
from headrace.workspace import Workspace  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # MLflow's own agent types warn when mlflow.pyfunc is imported (not headrace's model)
    pytest.mark.filterwarnings("ignore:.*inferred as AnyType:UserWarning"),
    # loading a pyfunc without type hints on predict (the signature is explicit)
    pytest.mark.filterwarnings("ignore:.*Add type hints to the `predict` method:UserWarning"),
]

SERVER_REQUIREMENT = "mlflow>=3,<4"

PROJECT = """\
project: bridge
mlflow: {{tracking_uri: "{url}", experiment: bridge-tests}}
models:
  churn:
    task: classification
    dataset: customers
    target: Churn
    features: {{drop: [customerID]}}
    candidates: [{{estimator: logistic_regression, params: {{C: [0.3]}}}}]
    validation: {{strategy: stratified_kfold, folds: 3, threshold: max_f1}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_venv() -> Path:
    """A virtual environment with the MLflow server, made once (pip, from the package index)."""
    venv = Path(
        os.environ.get("HEADRACE_MLFLOW_SERVER_VENV")
        or Path(tempfile.gettempdir()) / "headrace-mlflow-server"
    )
    mlflow_bin = venv / "bin" / "mlflow"
    if mlflow_bin.exists():
        return venv
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True
    )
    if made.returncode == 0:
        made = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", SERVER_REQUIREMENT],
            capture_output=True,
            text=True,
            timeout=900,
        )
    if made.returncode != 0 or not mlflow_bin.exists():
        reason = f"the MLflow server could not be installed in {venv}: {made.stderr.strip()[-300:]}"
        if os.environ.get("HEADRACE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return venv


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    venv = _server_venv()
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [
            str(venv / "bin" / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination",
            str(folder / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers go with it at the end
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"MLflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def project(mlflow_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("bridge")
    (folder / "headrace.yaml").write_text(PROJECT.format(url=mlflow_url))
    ws = Workspace.open(folder)
    ws.store.append("customers", churn(1500, seed=21), BatchMeta("test"))
    registry = Registry(ws.meta, ws.artifacts)
    assert registry.mirror is not None  # the workspace attached the mlflow: block's mirror
    spec = ws.project.models["churn"]
    first = train_model("churn", spec, store=ws.store, registry=registry, promote=True).version
    assert first is not None
    yield {"ws": ws, "registry": registry, "folder": folder, "url": mlflow_url, "v1": first}
    ws.close()


def _cli(capsys: pytest.CaptureFixture[str], folder: Path, *args: str) -> Any:
    capsys.readouterr()  # what came before (MLflow's own run URLs from the test's runs)
    with pytest.raises(SystemExit) as done:
        main(["--project", str(folder), *args])
    captured = capsys.readouterr()
    assert done.value.code in (0, None), captured.err
    return json.loads(captured.out)


def _served(ws: Workspace, records: list[dict[str, Any]]) -> tuple[list[Any], np.ndarray]:
    """What headrace's server answers, one record per request (the serving fast path)."""
    labels, proba = [], []
    with serve_in_thread(app_from_workspace(ws)) as url, httpx.Client(base_url=url) as client:
        for record in records:
            doc = client.post("/models/churn/predict", json={"records": [record]}).raise_for_status().json()
            labels += doc["predictions"]
            proba.append([doc["probabilities"][0]["No"], doc["probabilities"][0]["Yes"]])
    return labels, np.array(proba)


def test_an_exported_pyfunc_answers_as_headrace_serves(
    project: dict[str, Any], capsys, tmp_path: Path
) -> None:
    out = tmp_path / "churn-mlflow"
    doc = _cli(
        capsys, project["folder"], "models", "export", "churn", str(out), "--format", "mlflow", "--json"
    )
    mv = project["registry"].get("churn", "champion")
    assert (
        doc["version"] == mv.version and doc["threshold"] == mv.threshold and doc["classes"] == ["No", "Yes"]
    )
    assert mv.threshold is not None and abs(mv.threshold - 0.5) > 0.01  # max_f1: not the argmax's 0.5

    loaded = mlflow.pyfunc.load_model(str(out))
    inputs = loaded.metadata.get_input_schema().input_names()
    assert inputs == [c["name"] for c in mv.signature["inputs"]]
    assert loaded.metadata.metadata["threshold"] == mv.threshold
    requirements = (out / "requirements.txt").read_text().split()
    assert f"scikit-learn=={mv.packages['scikit-learn']}" in requirements
    assert f"headrace=={mv.packages['headrace']}" in requirements

    records = churn_records(100, seed=33, missing=0.04)
    got = loaded.predict(pd.DataFrame(records, columns=inputs))
    labels, proba = _served(project["ws"], records)
    assert got["prediction"].tolist() == labels
    assert np.abs(got[["proba_No", "proba_Yes"]].to_numpy() - proba).max() <= 1e-6
    # the threshold decided some of them: a plain sklearn export (argmax) would answer otherwise
    flipped = ((proba[:, 1] >= mv.threshold) != (proba[:, 1] >= 0.5)).sum()
    assert flipped > 0


def test_a_mirrored_run_shows_its_metrics_report_and_alias(project: dict[str, Any], capsys) -> None:
    registry, url = project["registry"], project["url"]
    client = MlflowClient(url)
    v1 = project["v1"]
    champion = client.get_model_version_by_alias("churn", "champion")
    assert champion.tags["headrace.version"] == str(v1.version)
    run = client.get_run(champion.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == f"churn v{v1.version}"
    assert run.data.metrics["roc_auc"] == pytest.approx(v1.metrics["roc_auc"])
    assert run.data.params["headrace.dataset"] == "customers@0", run.data.params
    assert run.data.params["estimator"] == "logistic_regression"
    assert float(run.data.params["headrace.threshold"]) == pytest.approx(v1.threshold)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert f"churn-v{v1.version}.html" in artifacts and "model" in artifacts
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "bridge-tests"

    # the mirrored model answers as headrace does
    mlflow.set_tracking_uri(url)
    try:
        mirrored = mlflow.pyfunc.load_model("models:/churn@champion")
    finally:
        mlflow.set_tracking_uri(None)
    records = churn_records(30, seed=5)
    _, model = registry.load("churn")
    frame = pl.DataFrame(records)
    assert mirrored.predict(pd.DataFrame(records))["prediction"].tolist() == model.predict(frame).predictions

    # a second version, promoted from the CLI, then rolled back: the alias follows in MLflow
    ws = project["ws"]
    v2 = train_model("churn", ws.project.models["churn"], store=ws.store, registry=registry).version
    assert v2 is not None
    _cli(capsys, project["folder"], "models", "promote", f"churn@{v2.version}", "--json")
    moved = client.get_model_version_by_alias("churn", "champion")
    assert moved.tags["headrace.version"] == str(v2.version)
    _cli(capsys, project["folder"], "models", "rollback", "churn", "--json")
    back = client.get_model_version_by_alias("churn", "champion")
    assert back.tags["headrace.version"] == str(v1.version)
    registry.set_alias("churn", "challenger", v2.version, reason="test")
    assert client.get_model_version_by_alias("churn", "challenger").tags["headrace.version"] == str(
        v2.version
    )
    registry.remove_alias("churn", "challenger")
    assert "challenger" not in client.get_registered_model("churn").aliases


def test_a_mirror_that_cannot_reach_its_server_never_fails_training(project: dict[str, Any], caplog) -> None:
    from headrace.bridges.mlflow_bridge import MlflowMirror
    from headrace.config.mlflow import MlflowSpec

    ws = project["ws"]
    down = MlflowMirror(
        MlflowSpec(tracking_uri=f"http://127.0.0.1:{_free_port()}", timeout_s=1), experiment="x"
    )
    registry = Registry(ws.meta, ws.artifacts, mirror=down)
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="headrace.mlflow"):
        mv = train_model("churn", ws.project.models["churn"], store=ws.store, registry=registry).version
    assert mv is not None and registry.get("churn", mv.version).status == "registered"
    assert time.monotonic() - started < 60
    assert any(
        "MLflow mirror of register churn" in r.getMessage() and "unreachable" in r.getMessage()
        for r in caplog.records
    )


def test_an_mlflow_sklearn_model_is_imported_with_its_lineage(project: dict[str, Any], capsys) -> None:
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = churn(800, seed=3).drop("customerID", "TotalCharges").to_pandas()
    y = frame.pop("Churn")
    numeric = ["tenure", "MonthlyCharges"]
    categorical = ["Contract", "InternetService", "PaymentMethod"]
    X = frame[["Contract", "tenure", "InternetService", "MonthlyCharges", "PaymentMethod"]]  # mixed order
    # MLflow infers no schema from pandas 3's str dtype, and warns about integer columns
    X = X.astype({**{c: object for c in categorical}, "tenure": "float64"})
    pipeline = Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), numeric),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
                    ]
                ),
            ),
            ("model", LogisticRegression(C=0.5, max_iter=500)),
        ]
    ).fit(X, y)
    mlflow.set_tracking_uri(project["url"])
    try:
        mlflow.set_experiment("made-in-mlflow")
        with mlflow.start_run() as run:
            mlflow.log_param("C", 0.5)
            mlflow.log_metric("accuracy", 0.8)
            info = mlflow.sklearn.log_model(
                pipeline, name="model", signature=infer_signature(X, pipeline.predict(X))
            )
    finally:
        mlflow.set_tracking_uri(None)

    doc = _cli(
        capsys,
        project["folder"],
        "models",
        "import",
        f"mlflow:{info.model_uri}",
        "--name",
        "churn_mlflow",
        "--json",
    )
    assert doc["model"] == "churn_mlflow" and doc["version"] == 1 and doc["source_uri"] == info.model_uri
    registry = project["registry"]
    mv = registry.get("churn_mlflow", 1)
    assert mv.details["source"] == "mlflow" and mv.details["source_uri"] == info.model_uri
    assert mv.details["mlflow_run_id"] == run.info.run_id
    assert mv.metrics == {"accuracy": 0.8} and mv.params == {"C": "0.5"}
    assert [e.action for e in registry.history("churn_mlflow")] == ["register"]
    # headrace answers as the pipeline does, from raw records in any column order
    _, model = registry.load("churn_mlflow", 1)
    records = frame.head(50).to_dict("records")
    answer = model.predict(pl.DataFrame(records))
    assert answer.predictions == pipeline.predict(X.head(50)).tolist()
    want = pipeline.predict_proba(X.head(50))
    got = np.array([[p["No"], p["Yes"]] for p in answer.probabilities])
    assert np.abs(got - want).max() <= 1e-6


def test_an_unusable_import_is_one_line(project: dict[str, Any], capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(
            [
                "--project",
                str(project["folder"]),
                "models",
                "import",
                "mlflow:runs:/nope/model",
                "--name",
                "x",
            ]
        )
    err = capsys.readouterr().err
    assert done.value.code != 0
    assert "MLflow model runs:/nope/model cannot be read" in err and err.count("\n") == 1


def test_the_cli_exports_onnx_checked_on_probes(project: dict[str, Any], capsys, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from headrace.bridges.onnx_export import run_onnx

    out = tmp_path / "churn.onnx"
    doc = _cli(
        capsys, project["folder"], "models", "export", "churn@1", str(out), "--format", "onnx", "--json"
    )
    assert doc["version"] == 1 and doc["probes"] == 200 and doc["max_difference"] < 1e-5 and out.exists()
    _, model = project["registry"].load("churn", 1)
    records = churn_records(100, seed=44)
    labels, _ = run_onnx(ort.InferenceSession(str(out)), model, pl.DataFrame(records))
    assert labels == model.predict(pl.DataFrame(records)).predictions
