"""A churn model becomes a bundle, runs from it in its own environment on a real loopback server,
answers the SageMaker contract like the registry's in-process model, deploys and rolls back.

One project, one trained model and one bundle serve the whole module (building an environment is
the slow part); the environment here is ``inherit`` (offline), and one ``slow`` test installs the
pinned requirements into a truly fresh environment, as the container does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from sqlalchemy import select

from headrace.cli import main
from headrace.config import ModelSpec
from headrace.datagen import churn
from headrace.deploy import Bundle, DeployOptions, build_bundle, deploy, local_status, rollback, stop_local
from headrace.deploy import kubernetes as k8s
from headrace.deploy.local import check_contract, ensure_env, start_bundle, stop_process, wait_ready
from headrace.deploy.runtime import load_model_dir
from headrace.errors import ArtifactError, RegistryError
from headrace.metadata import SCHEMA
from headrace.registry import Registry
from headrace.scaffold import init_project
from headrace.store import BatchMeta
from headrace.train.run import train_model
from headrace.workspace import Workspace

pytestmark = pytest.mark.integration

SPEC = {
    "task": "classification",
    "dataset": "customers",
    "target": "Churn",
    "features": {"drop": ["customerID"]},
    "candidates": [{"estimator": "logistic_regression"}],
    "validation": {"strategy": "holdout"},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("deploy-project")
    ws = Workspace.open(init_project(folder, name="deploytest", rows=100))
    ws.store.append("customers", churn(800, seed=3), BatchMeta("test"))
    registry = Registry(ws.meta, ws.artifacts)
    result = train_model(
        "churn", ModelSpec.model_validate(SPEC), store=ws.store, registry=registry, promote=True
    )
    yield {"ws": ws, "registry": registry, "mv": result.version, "folder": folder}
    stop_local(ws, "churn")
    ws.close()


@pytest.fixture(scope="module")
def bundle(project: Any) -> Bundle:
    return build_bundle(project["ws"], "churn")


@pytest.fixture(scope="module")
def env_python(bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    python, facts = ensure_env(bundle, tmp_path_factory.mktemp("envs"), "inherit")
    assert facts["mode"] == "inherit" and not facts["reused"]
    return python


@pytest.fixture(scope="module")
def served(bundle: Bundle, env_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    # a copy far from the project: the bundle needs no headrace.yaml, metadata or artifact store
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "churn-bundle"
    shutil.copytree(bundle.path, elsewhere, symlinks=True)
    copy = Bundle.open(elsewhere)
    slot = start_bundle(copy, env_python, tmp_path_factory.mktemp("logs"))
    try:
        wait_ready(slot)
        yield slot
    finally:
        stop_process(slot)


def registry_answer(project: Any, records: list[dict[str, Any]]) -> Any:
    _mv, model = project["registry"].load("churn")
    return model.predict(pl.DataFrame(records, infer_schema_length=None))


def assert_same_predictions(answer: dict[str, Any], expected: Any) -> None:
    assert answer["predictions"] == list(expected.predictions)
    for got, want in zip(answer["probabilities"], expected.probabilities, strict=True):
        assert got.keys() == want.keys()
        for label in want:
            assert got[label] == pytest.approx(want[label], abs=1e-6)


# -- the bundle ---------------------------------------------------------------------------------
def test_bundle_holds_everything_to_run_anywhere(bundle: Bundle, project: Any):
    mv = project["mv"]
    assert (bundle.model, bundle.version) == ("churn", mv.version)
    for rel in (
        "bundle.json",
        "SHA256SUMS",
        "requirements.txt",
        "serve",
        "Dockerfile",
        ".dockerignore",
        "model/model.json",
        "model/model.bin",
        "model/input_example.json",
        "model/SHA256SUMS",
        "app/headrace/deploy/runtime.py",
        "app/score.py",
        "kubernetes/deployment.yaml",
        "kubernetes/canary.yaml",
        "kubernetes/service.yaml",
        "kubernetes/hpa.yaml",
        "kubernetes/pdb.yaml",
        "kubernetes/kustomization.yaml",
        "sagemaker/model.tar.gz",
        "azureml/endpoint.yml",
        "azureml/deployment.yml",
        "azureml/environment.yml",
        "azureml/conda.yaml",
        "azureml/sample-request.json",
    ):
        assert (bundle.path / rel).is_file(), rel
    assert os.access(bundle.path / "serve", os.X_OK)
    assert bundle.verify() > 20  # every file matches SHA256SUMS, model files their own
    assert bundle.info["artifact_sha256"] == mv.artifact_sha256
    # the pins: exact, from this environment, and only what serving needs
    pins = dict(line.split("==") for line in bundle.info["requirements"])
    import importlib.metadata as md

    for package in ("scikit-learn", "numpy", "polars", "skops", "fastapi", "uvicorn"):
        assert pins[package] == md.version(package), package
    assert "torch" not in pins and "pytest" not in pins and "headrace" not in pins
    text = (bundle.path / "requirements.txt").read_text()
    assert "pip install --no-deps -r requirements.txt && pip check" in text
    # checks made at build time
    assert bundle.info["checks"]["kubernetes"]["ok"]
    assert bundle.info["checks"]["kubernetes"]["skipped"] is None
    assert bundle.info["checks"]["dockerfile"]["issues"] == []
    dockerfile = (bundle.path / "Dockerfile").read_text()
    assert "-slim" in dockerfile and "USER 10001" in dockerfile and "HEALTHCHECK" in dockerfile
    assert "EXPOSE 8080" in dockerfile and "HEADRACE_MODEL_DIR=/opt/ml/model" in dockerfile
    # SageMaker's model.tar.gz unpacks the model folder's files at /opt/ml/model
    with tarfile.open(bundle.path / "sagemaker" / "model.tar.gz") as tar:
        assert {"model.json", "model.bin", "SHA256SUMS", "input_example.json"} <= set(tar.getnames())
    with tarfile.open(bundle.tarball) as tar:
        assert f"{bundle.path.name}/Dockerfile" in tar.getnames()


def test_a_modified_model_file_is_refused(bundle: Bundle, tmp_path: Path):
    copy = tmp_path / "model"
    shutil.copytree(bundle.model_dir, copy)
    data = bytearray((copy / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.bin").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        load_model_dir(copy)


# -- running it ---------------------------------------------------------------------------------
def test_the_bundle_passes_the_sagemaker_contract(served: Any, bundle: Bundle):
    report = check_contract(served.url, bundle.example(), bundle.columns)
    assert report.ok, report.failures()
    names = [c["name"] for c in report.checks]
    assert names == [
        "ping",
        "/health/live",
        "/health/ready",
        "invocations json",
        "invocations csv (header)",
        "invocations csv (signature order)",
        "invocations accept csv",
    ]
    assert report.checks[0]["seconds"] < 2.0


def test_bundle_predictions_equal_the_registry_model(served: Any, bundle: Bundle, project: Any):
    example = bundle.example()
    reply = httpx.post(f"{served.url}/invocations", json={"records": example}, timeout=30)
    assert reply.status_code == 200
    assert reply.json()["version"] == project["mv"].version
    assert_same_predictions(reply.json(), registry_answer(project, example))
    # more rows than the fast path takes: the pipeline path answers them
    rows = churn(120, seed=11).drop(["customerID", "Churn"]).to_dicts()
    reply = httpx.post(f"{served.url}/invocations", json={"instances": rows}, timeout=30)
    assert reply.status_code == 200
    assert_same_predictions(reply.json(), registry_answer(project, rows))
    # and the serving app's own route is there too: the same app as 'headrace serve'
    predict = httpx.post(f"{served.url}/models/churn/predict", json={"records": example}, timeout=30)
    assert predict.status_code == 200
    assert predict.json()["predictions"] == list(registry_answer(project, example).predictions)


def test_bad_input_is_a_client_error(served: Any):
    reply = httpx.post(f"{served.url}/invocations", json={"records": [{"tenure": 3}]}, timeout=30)
    assert 400 <= reply.status_code < 500
    assert "error" in reply.json() or "detail" in reply.json()


def test_non_finite_numbers_are_refused_alike_on_every_route(served: Any, bundle: Bundle):
    """Infinity in JSON (Python's parser accepts it), inf in CSV: 422 naming the field, never an answer
    that the fast path and the pipeline could disagree on."""
    record = dict(bundle.example()[0])
    columns = bundle.columns
    record["tenure"] = float("inf")
    body = json.dumps({"records": [record]})  # writes Infinity
    assert "Infinity" in body
    sagemaker_json = httpx.post(
        f"{served.url}/invocations", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    row = ",".join("inf" if c == "tenure" else str(record[c]) for c in columns)
    sagemaker_csv = httpx.post(
        f"{served.url}/invocations",
        content=",".join(columns) + "\n" + row,
        headers={"content-type": "text/csv"},
        timeout=30,
    )
    for reply in (sagemaker_json, sagemaker_csv):
        assert reply.status_code == 422, (reply.request.headers.get("content-type"), reply.text)
        assert "tenure" in reply.json()["error"] and "finite" in reply.json()["error"]
    plain = httpx.post(
        f"{served.url}/models/churn/predict", content=body, headers={"content-type": "application/json"}
    )
    assert plain.status_code == 422  # the same field named on the plain route
    assert plain.json()["detail"][0]["loc"][-1] == "tenure" and "finite" in plain.json()["detail"][0]["msg"]
    record["tenure"] = None  # the missing value is null, and it is answered
    assert httpx.post(f"{served.url}/invocations", json={"records": [record]}, timeout=30).status_code == 200


def test_azure_score_script_init_and_run(bundle: Bundle, project: Any, monkeypatch: pytest.MonkeyPatch):
    """Azure ML's contract, as its inference server drives it: import score.py, init(), run(body)."""
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(bundle.path))  # the model folder is mounted inside
    monkeypatch.delenv("HEADRACE_MODEL_DIR", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # score.py puts its own folder first
    spec = importlib.util.spec_from_file_location("bundle_score", bundle.path / "app" / "score.py")
    assert spec is not None and spec.loader is not None
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    score.init()
    example = bundle.example()
    answer = score.run(json.dumps({"records": example}))
    assert_same_predictions(answer, registry_answer(project, example))
    assert "error" in score.run("{not json")


# -- deploy and roll back -----------------------------------------------------------------------
class Load:
    """Requests through the front from two threads until stopped: every answer's status and version."""

    def __init__(self, url: str, record: dict[str, Any]) -> None:
        self.url, self.record = url, record
        self.answers: list[tuple[int, int | None]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(100_000):  # bounded; stopped long before
                if self._stop.is_set():
                    return
                try:
                    r = client.post(f"{self.url}/models/churn/predict", json={"records": [self.record]})
                    self.answers.append((r.status_code, r.json().get("version")))
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: Any) -> None:
        time.sleep(0.3)
        self._stop.set()
        for t in self._threads:
            t.join(30)


def test_deploy_switches_one_stable_address_with_no_failed_request(project: Any):
    ws, registry, mv = project["ws"], project["registry"], project["mv"]
    from headrace.deploy.local import free_port

    options = DeployOptions(env="inherit", port=free_port())
    first = deploy(ws, "churn", "local", options=options)
    assert first.status == "live" and first.contract is not None and first.contract.ok
    front = first.endpoint
    assert front == f"http://127.0.0.1:{options.port}"
    assert httpx.get(f"{front}/health/ready").json()["models"] == {"churn": mv.version}

    second_mv = registry.register(
        "churn",
        task=mv.task,
        flavor="tabular",
        artifact=ws.artifacts.get_bytes(mv.artifact_sha256),
        signature=mv.signature,
        threshold=mv.threshold,
        dataset=mv.dataset,
        data_version=mv.data_version,
        reason="second version for the deployment test",
    )
    registry.promote("churn", second_mv.version, reason="the version deployed next")
    record = Bundle.open(first.bundle or "").example()[0]
    with Load(front, record) as load:
        second = deploy(ws, f"churn@{second_mv.version}", "local", options=DeployOptions(env="inherit"))
    assert second.status == "live" and second.previous_version == mv.version
    assert second.endpoint == front  # one address across versions
    assert load.errors == [] and {s for s, _ in load.answers} == {200}, load.errors[:3]
    versions = [v for _, v in load.answers]
    assert versions[0] == mv.version and versions[-1] == second_mv.version
    switched = versions.index(second_mv.version)
    assert set(versions[switched:]) == {second_mv.version}  # atomic: never back to the old one
    state = local_status(ws, "churn")
    assert state["live"]["version"] == second_mv.version and state["front"]["running"]
    assert state["standby"]["version"] == mv.version and state["standby"]["running"]
    # the standby answers on its own port, for smoke tests
    standby = httpx.get(f"{state['standby']['url']}/health/ready").json()
    assert standby["models"] == {"churn": mv.version}

    with Load(front, record) as load:
        back = rollback(ws, "churn", "local")
    assert back.status == "live" and back.version == mv.version and back.endpoint == front
    assert load.errors == [] and {s for s, _ in load.answers} == {200}, load.errors[:3]
    assert load.answers[-1][1] == mv.version
    assert httpx.get(f"{front}/health/ready").json()["models"] == {"churn": mv.version}
    # the deploy rollback and the registry agree: the champion went back with it
    assert registry.aliases("churn")["champion"] == mv.version
    assert "the registry's champion is v" in back.details["registry"]
    state = local_status(ws, "churn")
    assert state["live"]["version"] == mv.version and state["standby"] is None
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{state['live']['url'].rsplit(':', 1)[0]}:{second.details['port']}/ping", timeout=2)
    with pytest.raises(RegistryError, match="no previous local deployment"):
        rollback(ws, "churn", "local")

    deployments = SCHEMA.tables["deployments"]
    ledger = SCHEMA.tables["ledger"]
    with ws.meta.begin() as conn:
        rows = conn.execute(
            select(deployments.c.version, deployments.c.status)
            .where(deployments.c.target == "local")
            .order_by(deployments.c.id)
        ).all()
        actions = conn.execute(
            select(ledger.c.action, ledger.c.version, ledger.c.previous_version)
            .where(ledger.c.action.in_(["deploy", "deploy_rollback", "rollback"]))
            .order_by(ledger.c.id)
        ).all()
    assert [tuple(r) for r in rows] == [
        (mv.version, "replaced"),
        (second_mv.version, "rolled_back"),
        (mv.version, "live"),
    ]
    assert [tuple(a) for a in actions] == [
        ("deploy", mv.version, None),
        ("deploy", second_mv.version, mv.version),
        ("rollback", mv.version, second_mv.version),  # the registry's champion
        ("deploy_rollback", mv.version, second_mv.version),
    ]
    # the local slots report home: their predictions are in the project's prediction log
    logged = ws.store.read("predictions")
    assert set(logged["version"].unique().to_list()) >= {mv.version, second_mv.version}
    stopped = stop_local(ws, "churn")
    assert stopped.details["stopped_versions"] == [mv.version]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{front}/ping", timeout=2)


def test_monitor_decisions_reach_the_local_deployment(project: Any):
    """follow(): after the champion moves in the registry, the local front serves it."""
    from headrace.deploy.follow import follow
    from headrace.deploy.local import free_port

    ws, registry = project["ws"], project["registry"]
    champion = registry.aliases("churn")["champion"]
    first = deploy(ws, f"churn@{champion}", "local", options=DeployOptions(env="inherit", port=free_port()))
    front = first.endpoint
    assert follow(ws, "churn", registry=registry) == []  # already the champion
    mv = registry.get("churn", champion)
    newer = registry.register(
        "churn",
        task=mv.task,
        flavor="tabular",
        artifact=ws.artifacts.get_bytes(mv.artifact_sha256 or ""),
        signature=mv.signature,
        threshold=mv.threshold,
        dataset=mv.dataset,
        data_version=mv.data_version,
        reason="a version the monitor promotes",
    )
    registry.promote("churn", newer.version, reason="test: the monitor promoted it")
    events = follow(ws, "churn", registry=registry)
    assert [(e["action"], e["target"], e["version"]) for e in events] == [("follow", "local", newer.version)]
    assert "deployed v" in events[0]["reason"]
    assert httpx.get(f"{front}/health/ready").json()["models"] == {"churn": newer.version}

    registry.rollback("churn", reason="test: the monitor rolled it back")
    events = follow(ws, "churn", registry=registry)
    assert [(e["action"], e["version"]) for e in events] == [("follow", champion)]
    assert "standby" in events[0]["reason"]  # the previous slot was still running: an instant switch
    assert httpx.get(f"{front}/health/ready").json()["models"] == {"churn": champion}
    assert registry.aliases("churn")["champion"] == champion  # the switch did not move the registry
    stop_local(ws, "churn")


# -- cloud targets without a cloud --------------------------------------------------------------
def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out = capsys.readouterr().out
    assert exit_info.value.code in (0, None), out
    return out


def test_dry_runs_for_sagemaker_and_azureml_are_complete_and_stable(project: Any, capsys):
    root = str(project["folder"])
    sm_args = ["--project", root, "deploy", "churn", "--target", "sagemaker", "--dry-run", "--json"]
    sm_args += ["--region", "eu-west-1", "--bucket", "models", "--account", "123456789012"]
    sm_args += ["--role", "arn:aws:iam::123456789012:role/sm"]
    first = run_cli(capsys, *sm_args)
    assert run_cli(capsys, *sm_args) == first  # stable: the same plan, byte for byte
    doc = json.loads(first)
    assert doc["status"] == "dry-run" and doc["target"] == "sagemaker"
    calls = [s.get("call") or " ".join(s["argv"][:2]) for s in doc["plan"]["steps"]]
    assert calls == [
        "docker build",
        "ecr.create_repository",
        "ecr.get_authorization_token",
        "docker login",
        "docker push",
        "s3.upload_file",
        "sagemaker.create_model",
        "sagemaker.create_endpoint_config",
        "sagemaker.describe_endpoint",
        "sagemaker.create_endpoint",
        "cloudwatch.put_metric_alarm",
        "cloudwatch.put_metric_alarm",
        "sagemaker.update_endpoint",
        "sagemaker.get_waiter('endpoint_in_service').wait",
        "sagemaker-runtime.invoke_endpoint",
    ]
    version = project["mv"].version
    create = doc["plan"]["steps"][6]["params"]
    assert create["PrimaryContainer"]["ModelDataUrl"] == f"s3://models/headrace/churn/v{version}/model.tar.gz"
    assert Path(doc["plan"]["settings"]["bundle"], "sagemaker", "model.tar.gz").is_file()

    aml_args = ["--project", root, "deploy", "churn", "--target", "azureml", "--dry-run", "--json"]
    aml_args += ["--subscription", "sub-1", "--resource-group", "rg", "--workspace", "ws"]
    first = run_cli(capsys, *aml_args)
    assert run_cli(capsys, *aml_args) == first
    doc = json.loads(first)
    calls = [s["call"] for s in doc["plan"]["steps"]]
    assert calls == [
        "azure.ai.ml.MLClient",
        "ml_client.online_endpoints.get",
        "ml_client.online_endpoints.begin_create_or_update",
        "ml_client.online_deployments.begin_create_or_update",
        "ml_client.online_endpoints.invoke",
        "ml_client.online_endpoints.begin_create_or_update",
    ]
    deployment = doc["plan"]["steps"][3]["params"]["deployment"]
    for rel in (deployment["model"]["path"], deployment["code_configuration"]["code"]):
        assert Path(doc["plan"]["settings"]["bundle"], rel).is_dir()
    assert Path(doc["plan"]["settings"]["bundle"], deployment["environment"]["conda_file"]).is_file()

    # the text form names every request too
    text = run_cli(capsys, *[a for a in aml_args if a != "--json"])
    for call in calls:
        assert call in text
    # a dry run changes nothing
    deployments = SCHEMA.tables["deployments"]
    with project["ws"].meta.begin() as conn:
        targets = conn.execute(select(deployments.c.target)).scalars().all()
    assert "sagemaker" not in targets and "azureml" not in targets


def test_kubernetes_without_a_cluster_writes_the_plan_and_records_it(project: Any):
    if k8s.cluster_reachable() is None:
        pytest.skip("a Kubernetes cluster answers here; not applying to it from a test")
    result = deploy(project["ws"], "churn", "kubernetes")
    assert result.status == "planned"
    assert result.plan is not None and any("kubectl" in s.argv[:1] for s in result.plan.steps)
    bundle_dir = Path(result.bundle or "")
    assert (bundle_dir / "kubernetes" / "deployment.yaml").is_file()
    deployments = SCHEMA.tables["deployments"]
    with project["ws"].meta.begin() as conn:
        statuses = (
            conn.execute(select(deployments.c.status).where(deployments.c.target == "kubernetes"))
            .scalars()
            .all()
        )
    assert statuses == ["planned"]


def test_build_command_reports_the_checks(project: Any, capsys):
    # next to the other bundles, where the probe of this flavor is remembered
    out_dir = project["folder"] / ".headrace" / "bundles" / "custom"
    root = str(project["folder"])
    doc = json.loads(run_cli(capsys, "--project", root, "build", "churn@1", "--out", str(out_dir), "--json"))
    assert doc["path"] == str(out_dir) and Path(doc["tarball"]).is_file()
    assert doc["checks"]["kubernetes"]["ok"] and doc["version"] == 1


@pytest.mark.slow
def test_a_fresh_environment_from_the_pins_serves_the_same_answers(
    bundle: Bundle, project: Any, tmp_path: Path
):
    """What the Dockerfile does: a new venv, pip install --no-deps -r requirements.txt, pip check
    (from the package index or pip's cache), then the contract and the registry's answers."""
    python, facts = ensure_env(bundle, tmp_path / "envs", "fresh")
    assert facts["mode"] == "fresh"
    probe = subprocess.run(
        [str(python), "-c", "import sys; print(sys.prefix); import torch"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr  # nothing leaks in
    slot = start_bundle(bundle, python, tmp_path / "logs")
    try:
        wait_ready(slot)
        example = bundle.example()
        report = check_contract(slot.url, example, bundle.columns)
        assert report.ok, report.failures()
        assert report.answer is not None
        assert_same_predictions(report.answer, registry_answer(project, example))
    finally:
        stop_process(slot)
