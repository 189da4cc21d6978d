"""Deployment pieces that need no server: manifests and their schema validation, the SageMaker and
Azure ML plans, the request parsers of the SageMaker contract, pins and the deterministic tarball."""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import json
import tarfile

import httpx
import pytest
import yaml
from fastapi import FastAPI

from headrace.deploy import azureml, kubernetes, sagemaker
from headrace.deploy.bundle import _deterministic_tar, lint_dockerfile
from headrace.deploy.plan import Plan, Step
from headrace.deploy.requirements import pinned_closure
from headrace.errors import DataError

INFO = {"model": "churn", "version": 3, "flavor": "tabular", "task": "classification"}
SAMPLE = [{"tenure": 4, "Contract": "Month-to-month", "MonthlyCharges": 25.5}]


# -- Kubernetes ---------------------------------------------------------------------------------
def test_manifests_hold_every_object_and_validate_against_the_kubernetes_schemas():
    pytest.importorskip("kubernetes_validate")
    files = kubernetes.manifests("churn", 3, kubernetes.KubernetesOptions(image="reg.example/hr/churn:v3"))
    kinds = {name: [d["kind"] for d in docs] for name, docs in files.items()}
    assert kinds == {
        "deployment.yaml": ["Deployment"],
        "service.yaml": ["Service"],
        "hpa.yaml": ["HorizontalPodAutoscaler"],
        "pdb.yaml": ["PodDisruptionBudget"],
        "canary.yaml": ["Deployment"],
    }
    report = kubernetes.validate_manifests(files)
    assert report.ok, report.errors
    assert report.skipped is None and len(report.checked) == 5

    stable = files["deployment.yaml"][0]
    container = stable["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "reg.example/hr/churn:v3"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["ports"][0]["containerPort"] == 8080
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["securityContext"]["runAsNonRoot"] is True
    canary = files["canary.yaml"][0]
    assert canary["metadata"]["name"] == "headrace-churn-canary" and canary["spec"]["replicas"] == 1
    assert canary["spec"]["selector"]["matchLabels"]["headrace.dev/track"] == "canary"
    # the Service selects both tracks: the canary takes its share of traffic
    assert files["service.yaml"][0]["spec"]["selector"] == {"app.kubernetes.io/name": "headrace-churn"}
    assert files["hpa.yaml"][0]["spec"]["scaleTargetRef"]["name"] == "headrace-churn"
    pdb_selector = files["pdb.yaml"][0]["spec"]["selector"]["matchLabels"]
    assert pdb_selector["headrace.dev/track"] == "stable"


def test_schema_validation_reports_a_broken_manifest():
    pytest.importorskip("kubernetes_validate")
    files = kubernetes.manifests("churn", 3)
    files["deployment.yaml"][0]["spec"]["replicas"] = "two"
    files["service.yaml"][0]["spec"]["portz"] = []  # strict: unknown fields are errors
    report = kubernetes.validate_manifests(files)
    assert not report.ok
    assert any("Deployment/headrace-churn at spec.replicas" in e for e in report.errors)
    assert any("Service/headrace-churn" in e and "portz" in e for e in report.errors)


def test_rendered_manifests_are_yaml_with_a_kustomization():
    rendered = kubernetes.render(kubernetes.manifests("Churn_Model", 1))
    assert yaml.safe_load(rendered["kustomization.yaml"])["resources"] == [
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
        "pdb.yaml",
    ]
    deployment = yaml.safe_load(rendered["deployment.yaml"])
    assert deployment["metadata"]["name"] == "headrace-churn-model"  # a DNS-1123 name


def test_kubernetes_plan_applies_and_waits_and_rolls_back_with_rollout_undo():
    plan = kubernetes.kubernetes_plan(INFO, kubernetes.KubernetesOptions(image="reg.example/churn:v3"))
    assert [s.argv[:2] for s in plan.steps] == [
        ("docker", "build"),
        ("docker", "push"),
        ("kubectl", "apply"),
        ("kubectl", "rollout"),
    ]
    canary = kubernetes.kubernetes_plan(INFO, kubernetes.KubernetesOptions(), canary=True)
    assert "kubernetes/canary.yaml" in canary.steps[1].argv
    back = kubernetes.rollback_plan("churn", 3, {"version": 2}, kubernetes.KubernetesOptions())
    assert back.action == "rollback" and back.version == 2
    assert back.steps[0].argv[:3] == ("kubectl", "rollout", "undo")


# -- SageMaker ----------------------------------------------------------------------------------
SM = sagemaker.SageMakerOptions(
    region="eu-west-1", role="arn:aws:iam::123456789012:role/sm", bucket="models", account="123456789012"
)


def test_sagemaker_plan_is_complete_and_stable():
    plan = sagemaker.sagemaker_plan(INFO, SM, SAMPLE)
    assert plan.to_dict() == sagemaker.sagemaker_plan(INFO, SM, SAMPLE).to_dict()
    shape = [(s.kind, s.call or " ".join(s.argv[:2]), s.when) for s in plan.steps]
    assert shape == [
        ("command", "docker build", None),
        ("request", "ecr.create_repository", "repository missing"),
        ("request", "ecr.get_authorization_token", None),
        ("command", "docker login", None),
        ("command", "docker push", None),
        ("request", "s3.upload_file", None),
        ("request", "sagemaker.create_model", None),
        ("request", "sagemaker.create_endpoint_config", None),
        ("request", "sagemaker.describe_endpoint", None),
        ("request", "sagemaker.create_endpoint", "endpoint missing"),
        ("request", "sagemaker.update_endpoint", "endpoint exists"),
        ("check", "sagemaker.get_waiter('endpoint_in_service').wait", None),
        ("check", "sagemaker-runtime.invoke_endpoint", None),
    ]
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/headrace-churn:v3"
    by_call = {s.call: s.params for s in plan.steps if s.call}
    assert by_call["s3.upload_file"] == {
        "Filename": "sagemaker/model.tar.gz",
        "Bucket": "models",
        "Key": "headrace/churn/v3/model.tar.gz",
    }
    model = by_call["sagemaker.create_model"]
    assert model["ModelName"] == "headrace-churn-v3"
    assert model["ExecutionRoleArn"] == "arn:aws:iam::123456789012:role/sm"
    assert model["PrimaryContainer"]["Image"] == image
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://models/headrace/churn/v3/model.tar.gz"
    variant = by_call["sagemaker.create_endpoint_config"]["ProductionVariants"][0]
    assert variant["ModelName"] == "headrace-churn-v3" and variant["VariantName"] == "v3"
    policy = by_call["sagemaker.update_endpoint"]["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"]["Type"] == "CANARY"
    invoke = by_call["sagemaker-runtime.invoke_endpoint"]
    assert json.loads(invoke["Body"]) == {"records": SAMPLE}
    assert plan.steps[0].argv == ("docker", "build", "-t", image, ".")


def test_sagemaker_plan_without_settings_names_the_placeholders():
    plan = sagemaker.sagemaker_plan(INFO, sagemaker.SageMakerOptions(), SAMPLE)
    text = "\n".join(plan.render())
    for placeholder in ("<ACCOUNT_ID>", "<BUCKET>", "<SAGEMAKER_EXECUTION_ROLE>"):
        assert placeholder in text


def test_sagemaker_rollback_points_the_endpoint_at_the_previous_config():
    plan = sagemaker.rollback_plan("churn", 3, {"version": 2, "endpoint_config": "headrace-churn-v2"}, SM)
    assert plan.steps[0].call == "sagemaker.update_endpoint"
    assert plan.steps[0].params == {
        "EndpointName": "headrace-churn",
        "EndpointConfigName": "headrace-churn-v2",
    }


def test_sagemaker_execution_without_boto3_or_credentials_says_why():
    reason = sagemaker.available()
    if reason is None:
        pytest.skip("boto3 and AWS credentials are present here")
    with pytest.raises(Exception, match="cannot deploy to SageMaker"):
        sagemaker.execute(sagemaker.sagemaker_plan(INFO, SM, SAMPLE), __import__("pathlib").Path("."))


# -- Azure ML -----------------------------------------------------------------------------------
AML = azureml.AzureMLOptions(subscription="sub-1", resource_group="rg", workspace="ws")


def test_azureml_plan_is_complete_and_stable():
    plan = azureml.azureml_plan(INFO, AML, SAMPLE)
    assert plan.to_dict() == azureml.azureml_plan(INFO, AML, SAMPLE).to_dict()
    shape = [(s.kind, s.call, s.when) for s in plan.steps]
    assert shape == [
        ("request", "azure.ai.ml.MLClient", None),
        ("request", "ml_client.online_endpoints.get", None),
        ("request", "ml_client.online_endpoints.begin_create_or_update", "endpoint missing"),
        ("request", "ml_client.online_deployments.begin_create_or_update", None),
        ("check", "ml_client.online_endpoints.invoke", None),
        ("request", "ml_client.online_endpoints.begin_create_or_update", None),
    ]
    client = plan.steps[0].params
    assert (client["subscription_id"], client["resource_group_name"], client["workspace_name"]) == (
        "sub-1",
        "rg",
        "ws",
    )
    deployment = plan.steps[3].params["deployment"]
    assert deployment["name"] == "v3" and deployment["endpoint_name"] == "headrace-churn"
    assert deployment["code_configuration"] == {
        "type": "CodeConfiguration",
        "code": "app",
        "scoring_script": "score.py",
    }
    assert deployment["model"]["path"] == "model"
    assert deployment["environment"]["conda_file"] == "azureml/conda.yaml"
    assert plan.steps[-1].params == {"endpoint": {"name": "headrace-churn", "traffic": {"v3": 100}}}
    canary = azureml.azureml_plan(INFO, azureml.AzureMLOptions(canary_percent=10), SAMPLE)
    assert any(s.params.get("endpoint", {}).get("traffic") == {"v3": 10, "<LIVE>": 90} for s in canary.steps)


def test_azureml_rollback_moves_traffic_back():
    plan = azureml.rollback_plan("churn", 3, {"version": 2}, AML)
    assert plan.steps[-1].params == {"endpoint": {"name": "headrace-churn", "traffic": {"v2": 100, "v3": 0}}}


def test_azureml_files_reference_the_bundle_layout():
    files = azureml.azureml_files(INFO, ["numpy==2.0.0", "scikit-learn==1.5.0"], "3.11.7")
    assert set(files) == {"endpoint.yml", "deployment.yml", "environment.yml", "conda.yaml"}
    endpoint = yaml.safe_load(files["endpoint.yml"])
    assert endpoint["name"] == "headrace-churn" and endpoint["auth_mode"] == "key"
    deployment = yaml.safe_load(files["deployment.yml"])
    assert deployment["endpoint_name"] == "headrace-churn"
    assert deployment["model"]["path"] == "../model"
    assert deployment["code_configuration"] == {"code": "../app", "scoring_script": "score.py"}
    assert deployment["environment"]["conda_file"] == "conda.yaml"
    conda = yaml.safe_load(files["conda.yaml"])
    pip = conda["dependencies"][-1]["pip"]
    assert "python=3.11.7" in conda["dependencies"]
    assert "scikit-learn==1.5.0" in pip and any(p.startswith("azureml-inference-server-http") for p in pip)


# -- the SageMaker request contract -------------------------------------------------------------
class Client:
    """Requests through the ASGI app in process (httpx's ASGI transport)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, url: str, **kw) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, url, **kw)

        return asyncio.run(go())

    def get(self, url: str, **kw) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw) -> httpx.Response:
        return self.request("POST", url, **kw)


COLUMNS = ["tenure", "Contract", "MonthlyCharges"]
KINDS = {"tenure": "number", "Contract": "string", "MonthlyCharges": "number"}


def test_csv_with_a_header_row_is_read_by_name_and_typed_by_kind():
    records = sagemaker.parse_csv("Contract,tenure,MonthlyCharges\nOne year,12,50.5\n", COLUMNS, KINDS)
    assert records == [{"Contract": "One year", "tenure": 12.0, "MonthlyCharges": 50.5}]


def test_csv_without_a_header_follows_the_signature_order():
    records = sagemaker.parse_csv('4,"Month-to-month, promo",\n', COLUMNS, KINDS)
    assert records == [{"tenure": 4.0, "Contract": "Month-to-month, promo", "MonthlyCharges": None}]


def test_csv_with_the_wrong_number_of_values_is_refused():
    with pytest.raises(DataError, match="row 1 has 2 values, expected 3"):
        sagemaker.parse_csv("4,One year\n", COLUMNS, KINDS)


def test_json_bodies_in_every_shape_sagemaker_clients_send():
    row = {"tenure": 1, "Contract": "One year", "MonthlyCharges": 2.0}
    for body in ({"records": [row]}, {"instances": [row]}, [row], row, {"instances": [[1, "One year", 2.0]]}):
        assert sagemaker.parse_json(body, COLUMNS) == [row]
    with pytest.raises(DataError):
        sagemaker.parse_json({"records": "nope"}, COLUMNS)


def test_invocations_router_answers_json_and_csv():
    seen: list[list[dict]] = []

    def predict(records):
        seen.append(records)
        return {
            "predictions": ["Yes" for _ in records],
            "probabilities": [{"No": 0.25, "Yes": 0.75}] * len(records),
        }

    app = FastAPI()
    app.include_router(
        sagemaker.invocations_router(
            predict, columns=lambda: COLUMNS, kinds=lambda: KINDS, ready=lambda: True
        )
    )
    client = Client(app)
    assert client.get("/ping").status_code == 200
    reply = client.post("/invocations", json={"records": SAMPLE})
    assert reply.status_code == 200 and reply.json()["predictions"] == ["Yes"]
    reply = client.post(
        "/invocations", content=b"4,One year,20\n5,Two year,30\n", headers={"content-type": "text/csv"}
    )
    assert reply.status_code == 200 and len(reply.json()["predictions"]) == 2
    assert seen[-1][1] == {"tenure": 5.0, "Contract": "Two year", "MonthlyCharges": 30.0}
    reply = client.post("/invocations", json=SAMPLE, headers={"accept": "text/csv"})
    assert reply.headers["content-type"].startswith("text/csv")
    assert reply.text == "Yes,0.25,0.75\n"
    assert client.post("/invocations", content=b"x", headers={"content-type": "image/png"}).status_code == 415
    assert (
        client.post("/invocations", content=b"{", headers={"content-type": "application/json"}).status_code
        == 422
    )


def test_ping_is_503_until_the_model_is_ready():
    app = FastAPI()
    app.include_router(
        sagemaker.invocations_router(lambda r: {}, columns=list, kinds=dict, ready=lambda: False)
    )
    assert Client(app).get("/ping").status_code == 503


# -- pins, plans, tarballs, the Dockerfile ------------------------------------------------------
def test_pinned_closure_follows_declared_dependencies_at_installed_versions():
    pins = {p.name: p.version for p in pinned_closure(["fastapi"])}
    assert pins["fastapi"] == md.version("fastapi")
    assert pins["starlette"] == md.version("starlette")
    assert pins["pydantic"] == md.version("pydantic")
    assert "pytest" not in pins and "headrace" not in pins


def test_plan_renders_commands_and_requests():
    plan = Plan("sagemaker", "churn", 3)
    plan.add(Step("command", "build", argv=("docker", "build", "-t", "x y", ".")))
    plan.add(
        Step("request", "create", call="sagemaker.create_model", params={"B": 1, "A": 2}, when="missing")
    )
    lines = plan.render()
    assert lines[2] == "    $ docker build -t 'x y' ."
    assert lines[4] == '    [missing] sagemaker.create_model(**{"A": 2, "B": 1})'
    assert plan.to_dict()["steps"][1] == {
        "kind": "request",
        "title": "create",
        "call": "sagemaker.create_model",
        "params": {"B": 1, "A": 2},
        "when": "missing",
    }


def test_tarballs_are_reproducible(tmp_path):
    source = tmp_path / "src"
    (source / "model").mkdir(parents=True)
    (source / "model" / "a.bin").write_bytes(b"abc")
    (source / "serve").write_text("#!/bin/sh\n")
    (source / "serve").chmod(0o755)
    _deterministic_tar(source, tmp_path / "one.tar.gz", "bundle")
    (source / "model" / "a.bin").touch()  # a newer mtime changes nothing
    _deterministic_tar(source, tmp_path / "two.tar.gz", "bundle")
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()
    with tarfile.open(tmp_path / "one.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"bundle/model", "bundle/model/a.bin", "bundle/serve"}
    assert members["bundle/serve"].mode == 0o755 and members["bundle/model/a.bin"].mtime == 0


def test_dockerfile_template_passes_hadolint(tmp_path):
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    from headrace.deploy.bundle import TEMPLATES

    text = (
        Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined)
        .get_template("Dockerfile.j2")
        .render(
            model="churn", version=3, flavor="tabular", image="x:v3", python_version="3.11.7", built_by="test"
        )
    )
    assert "FROM python:3.11.7-slim" in text and "USER 10001:10001" in text
    assert "HEALTHCHECK" in text and "EXPOSE 8080" in text and 'CMD ["serve"]' in text
    (tmp_path / "Dockerfile").write_text(text)
    report = lint_dockerfile(tmp_path / "Dockerfile")
    if report["skipped"]:
        pytest.skip(report["skipped"])
    assert report["issues"] == []
