"""Deployment pieces that need no server: manifests and their schema validation, the SageMaker and
Azure ML plans, the request parsers of the SageMaker contract, pins and the deterministic tarball."""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import json
import os
import tarfile
from dataclasses import replace

import httpx
import pytest
import yaml
from fastapi import FastAPI

from headrace.deploy import azureml, kubernetes, sagemaker
from headrace.deploy.bundle import _deterministic_tar, lint_dockerfile
from headrace.deploy.plan import Plan, Step
from headrace.deploy.requirements import pinned_closure
from headrace.errors import DataError, HeadraceError, NotFound, ServiceUnavailable, UsageError

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


def test_kubernetes_update_sets_the_image_waits_and_undoes_a_failed_rollout():
    options = kubernetes.KubernetesOptions(image="reg.example/churn:v4", namespace="ml")
    plan = kubernetes.update_plan("churn", 4, options)
    assert plan.action == "update" and plan.version == 4
    assert [(s.argv[:3], s.when) for s in plan.steps] == [
        (("docker", "build", "-t"), None),
        (("docker", "push", "reg.example/churn:v4"), None),
        (("kubectl", "set", "image"), None),
        (("kubectl", "annotate", "-n"), None),
        (("kubectl", "rollout", "status"), None),
        (("kubectl", "rollout", "undo"), "rollout failed"),
        (("kubectl", "rollout", "status"), "rollout failed"),
    ]
    assert plan.steps[2].argv == (
        "kubectl",
        "set",
        "image",
        "-n",
        "ml",
        "deployment/headrace-churn",
        "model=reg.example/churn:v4",
    )
    assert "kubernetes.io/change-cause=headrace: churn v4 (reg.example/churn:v4)" in plan.steps[3].argv
    assert "--timeout=300s" in plan.steps[4].argv
    pushed = kubernetes.update_plan("churn", 4, replace(options, build_image=False))
    assert [s.argv[1] for s in pushed.steps][:1] == ["set"]


def test_kubernetes_without_kubectl_is_one_clear_line_and_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither kubectl nor docker here
    plan = kubernetes.update_plan("churn", 4, kubernetes.KubernetesOptions())
    steps: list[dict] = []
    with pytest.raises(UsageError) as caught:
        kubernetes.execute(plan, tmp_path, steps=steps)
    assert caught.value.one_line() == (
        "docker and kubectl are not installed, so the update of churn@4 on Kubernetes cannot run; install "
        "docker, kubectl (with a context for the cluster), or run the plan's commands (--dry-run prints "
        "them) where they are"
    )
    assert steps == []
    quiet = kubernetes.update_plan("churn", 4, kubernetes.KubernetesOptions(build_image=False))
    with pytest.raises(UsageError, match=r"^kubectl is not installed, so the update of churn@4"):
        kubernetes.execute(quiet, tmp_path)


def test_kubernetes_executor_undoes_a_rollout_that_does_not_finish(tmp_path, monkeypatch):
    """The executor's control flow on kubectl's exit statuses: a program named kubectl that records
    its arguments and fails the first ``rollout status`` (as a rollout past its deadline does)."""
    calls = tmp_path / "calls.log"
    fake = tmp_path / "kubectl"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        f'if [ "$1 $2" = "rollout status" ] && [ ! -e {tmp_path}/failed-once ]; then\n'
        f"  touch {tmp_path}/failed-once\n"
        "  echo 'error: deployment exceeded its progress deadline' >&2; exit 1\n"
        "fi\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    plan = kubernetes.update_plan("churn", 4, kubernetes.KubernetesOptions(image="r/c:v4", build_image=False))
    steps: list[dict] = []
    with pytest.raises(HeadraceError) as caught:
        kubernetes.execute(plan, tmp_path, steps=steps)
    assert "did not finish and was undone with kubectl rollout undo" in caught.value.one_line()
    assert "exceeded its progress deadline" in caught.value.one_line()
    assert [line.split()[:2] for line in calls.read_text().splitlines()] == [
        ["set", "image"],
        ["annotate", "-n"],
        ["rollout", "status"],
        ["rollout", "undo"],
        ["rollout", "status"],
    ]
    assert [s["outcome"] for s in steps] == ["done", "done", "failed", "done", "done"]


# -- SageMaker ----------------------------------------------------------------------------------
SM = sagemaker.SageMakerOptions(
    region="eu-west-1", role="arn:aws:iam::210987654321:role/sm", bucket="models", account="210987654321"
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
        ("request", "sagemaker.create_model", "model missing"),
        ("request", "sagemaker.create_endpoint_config", "endpoint config missing"),
        ("request", "sagemaker.describe_endpoint", None),
        ("request", "sagemaker.create_endpoint", "endpoint missing"),
        ("request", "cloudwatch.put_metric_alarm", "endpoint exists"),
        ("request", "cloudwatch.put_metric_alarm", "endpoint exists"),
        ("request", "sagemaker.update_endpoint", "endpoint exists"),
        ("check", "sagemaker.get_waiter('endpoint_in_service').wait", None),
        ("check", "sagemaker-runtime.invoke_endpoint", None),
    ]
    image = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/headrace-churn:v3"
    by_call = {s.call: s.params for s in plan.steps if s.call}
    assert by_call["s3.upload_file"] == {
        "Filename": "sagemaker/model.tar.gz",
        "Bucket": "models",
        "Key": "headrace/churn/v3/model.tar.gz",
    }
    model = by_call["sagemaker.create_model"]
    assert model["ModelName"].startswith("headrace-churn-v3-") and len(model["ModelName"]) == 26
    assert model["ExecutionRoleArn"] == "arn:aws:iam::210987654321:role/sm"
    assert model["PrimaryContainer"]["Image"] == image
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://models/headrace/churn/v3/model.tar.gz"
    variant = by_call["sagemaker.create_endpoint_config"]["ProductionVariants"][0]
    assert variant["ModelName"] == model["ModelName"] and variant["VariantName"] == "v3"
    update = by_call["sagemaker.update_endpoint"]
    assert update["EndpointConfigName"] == plan.settings["endpoint_config_name"]
    policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"]["Type"] == "CANARY"
    alarms = [a["AlarmName"] for a in update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]]
    assert alarms == ["headrace-churn-v3-5xx-rate", "headrace-churn-v3-p99-latency"]
    invoke = by_call["sagemaker-runtime.invoke_endpoint"]
    assert json.loads(invoke["Body"]) == {"records": SAMPLE}
    assert plan.steps[0].argv == ("docker", "build", "-t", image, ".")
    given = sagemaker.sagemaker_plan(INFO, replace(SM, image="reg/x:v3", build_image=False), SAMPLE)
    assert not any(s.argv for s in given.steps) and "not built or pushed" in given.notes[0]


def test_sagemaker_names_carry_the_version_and_an_attempt_suffix():
    plan = sagemaker.sagemaker_plan(INFO, SM, SAMPLE)
    bigger = sagemaker.sagemaker_plan(INFO, replace(SM, instance_type="ml.m5.xlarge"), SAMPLE)
    other_role = sagemaker.sagemaker_plan(
        INFO, replace(SM, role="arn:aws:iam::210987654321:role/other"), SAMPLE
    )
    # another instance type: same model, a configuration of its own; another role: another model
    assert bigger.settings["model_name"] == plan.settings["model_name"]
    assert bigger.settings["endpoint_config_name"] != plan.settings["endpoint_config_name"]
    assert other_role.settings["model_name"] != plan.settings["model_name"]
    assert plan.settings["endpoint_name"] == bigger.settings["endpoint_name"] == "headrace-churn"
    long = sagemaker.sagemaker_plan({**INFO, "model": "m" * 80, "version": 12345}, SM, SAMPLE)
    for key in ("model_name", "endpoint_config_name", "endpoint_name"):
        assert len(long.settings[key]) <= 63, key
    assert long.settings["model_name"].split("-")[-2] == "v12345"


@pytest.mark.parametrize(
    ("traffic", "routing"),
    [
        ("canary", {"Type": "CANARY", "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}}),
        ("linear", {"Type": "LINEAR", "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25}}),
        ("all_at_once", {"Type": "ALL_AT_ONCE"}),
    ],
)
def test_sagemaker_update_shifts_traffic_and_rolls_back_on_its_alarms(traffic, routing):
    options = replace(SM, traffic=traffic, wait_seconds=120, error_rate=0.05, p99_latency_ms=250)
    plan = sagemaker.update_plan("churn", 4, "headrace-churn-v4-abcdef12", options)
    assert plan.action == "update"
    assert [s.call for s in plan.steps] == [
        "sagemaker.describe_endpoint",
        "cloudwatch.put_metric_alarm",
        "cloudwatch.put_metric_alarm",
        "sagemaker.update_endpoint",
        "sagemaker.get_waiter('endpoint_in_service').wait",
    ]
    rate, latency = (s.params for s in plan.steps[1:3])
    dims = [{"Name": "EndpointName", "Value": "headrace-churn"}, {"Name": "VariantName", "Value": "v4"}]
    assert rate["Threshold"] == 0.05 and rate["EvaluationPeriods"] == 2
    assert {m["Id"] for m in rate["Metrics"]} == {"errors", "requests", "rate"}
    assert all(m["MetricStat"]["Metric"]["Dimensions"] == dims for m in rate["Metrics"] if "MetricStat" in m)
    assert latency["MetricName"] == "ModelLatency" and latency["ExtendedStatistic"] == "p99"
    assert latency["Threshold"] == 250_000 and latency["Dimensions"] == dims
    update = plan.steps[3].params
    assert update["EndpointConfigName"] == "headrace-churn-v4-abcdef12"
    config = update["DeploymentConfig"]
    assert config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        **routing,
        "WaitIntervalInSeconds": 120,
    }
    assert config["AutoRollbackConfiguration"] == {
        "Alarms": [{"AlarmName": rate["AlarmName"]}, {"AlarmName": latency["AlarmName"]}]
    }
    # the wait checks the endpoint ended on the new configuration (not rolled back)
    assert plan.steps[-1].params["EndpointConfigName"] == "headrace-churn-v4-abcdef12"
    with pytest.raises(UsageError, match="unknown SageMaker traffic shift 'blue'"):
        sagemaker.update_plan("churn", 4, "x", replace(SM, traffic="blue"))


def test_sagemaker_plan_without_settings_names_the_placeholders():
    plan = sagemaker.sagemaker_plan(INFO, sagemaker.SageMakerOptions(), SAMPLE)
    text = "\n".join(plan.render())
    for placeholder in ("<ACCOUNT_ID>", "<BUCKET>", "<SAGEMAKER_EXECUTION_ROLE>"):
        assert placeholder in text


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (sagemaker.SageMakerOptions(), ["role", "bucket '<BUCKET>'", "image '<ACCOUNT_ID>"]),
        (
            replace(SM, account="123456789012", role="arn:aws:iam::123456789012:role/sm", bucket="my-bucket"),
            ["role 'arn:aws:iam::123456789012", "bucket 'my-bucket'", "image '123456789012."],
        ),
        (replace(SM, role="<role-arn>"), ["role '<role-arn>'"]),
        (replace(SM, role="sagemaker-role"), ["role 'sagemaker-role'"]),
    ],
)
def test_sagemaker_placeholders_are_refused_in_one_line_before_any_call(options, named):
    plan = sagemaker.sagemaker_plan(INFO, options, SAMPLE)
    with pytest.raises(UsageError) as caught:
        sagemaker.execute(plan, __import__("pathlib").Path("."))  # no credentials or boto3 needed
    message = caught.value.one_line()
    assert "\n" not in message and message.startswith("the SageMaker deploy of churn@3 still has placeholder")
    for name in named:
        assert name in message
    assert sagemaker.placeholders(sagemaker.sagemaker_plan(INFO, SM, SAMPLE).settings) == []


def test_sagemaker_rollback_points_the_endpoint_at_the_previous_config():
    plan = sagemaker.rollback_plan(
        "churn", 3, {"version": 2, "endpoint_config": "headrace-churn-v2-1234"}, SM
    )
    assert plan.steps[0].call == "sagemaker.update_endpoint"
    assert plan.steps[0].params == {
        "EndpointName": "headrace-churn",
        "EndpointConfigName": "headrace-churn-v2-1234",
    }
    assert plan.steps[-1].params["EndpointConfigName"] == "headrace-churn-v2-1234"
    # a rollback uses neither the role nor the bucket: placeholders there do not stop it
    unset = sagemaker.rollback_plan("churn", 3, {"version": 2}, sagemaker.SageMakerOptions())
    assert sagemaker.placeholders(unset.settings, ()) == []


def test_sagemaker_errors_name_the_step_and_the_fix():
    class ClientError(Exception):
        def __init__(self, code: str, message: str) -> None:
            super().__init__(message)
            self.response = {"Error": {"Code": code, "Message": message}}

    bad_type = sagemaker.aws_error(
        ClientError("ValidationException", "Value 'ml.x' at 'instanceType' failed\nto satisfy"), "step x"
    )
    assert bad_type.one_line() == (
        "step x failed: ValidationException: Value 'ml.x' at 'instanceType' failed to satisfy; "
        "pass --instance-type with an instance type SageMaker hosts (e.g. ml.m5.large)"
    )
    throttled = sagemaker.aws_error(ClientError("ThrottlingException", "Rate exceeded"), "step y")
    assert isinstance(throttled, ServiceUnavailable) and throttled.transient


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


# -- Azure ML errors ------------------------------------------------------------------------------
AZ_SETTINGS = {
    "subscription_id": "sub-1",
    "resource_group": "rg",
    "workspace": "ws",
    "endpoint_name": "headrace-churn",
}


def _azure_http_error(status: int, body: dict):
    """A real azure-core HttpResponseError: a request through azure-core's pipeline to a loopback
    server that answers like Azure Resource Manager."""
    import http.server
    import threading

    from azure.core import PipelineClient
    from azure.core.exceptions import ResourceNotFoundError, map_error
    from azure.core.rest import HttpRequest

    payload = json.dumps(body).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        with PipelineClient(base_url=base) as client:
            response = client.send_request(HttpRequest("GET", f"{base}/onlineEndpoints/headrace-churn"))
            try:
                map_error(
                    status_code=response.status_code,
                    response=response,
                    error_map={404: ResourceNotFoundError},
                )
                response.raise_for_status()
            except Exception as exc:
                return exc
    finally:
        server.shutdown()
        server.server_close()
    raise AssertionError("the server answered without an error")


def test_azure_errors_are_classified_with_azure_cores_own_exceptions():
    exceptions = pytest.importorskip("azure.core.exceptions")
    auth = azureml.azure_error(
        exceptions.ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token"),
        "connect to the workspace",
        AZ_SETTINGS,
    )
    assert isinstance(auth, UsageError) and "refused the credentials" in auth.one_line()
    assert "az login" in auth.one_line() and "\n" not in auth.one_line()

    forbidden = azureml.azure_error(
        _azure_http_error(403, {"error": {"code": "AuthorizationFailed", "message": "no access"}}),
        "find out whether the endpoint exists",
        AZ_SETTINGS,
    )
    assert isinstance(forbidden, UsageError) and "denied access to workspace 'ws'" in forbidden.one_line()

    no_workspace = azureml.azure_error(
        _azure_http_error(
            404,
            {
                "error": {
                    "code": "ResourceNotFound",
                    "message": "The Resource 'Microsoft.MachineLearningServices/workspaces/ws' under "
                    "resource group 'rg' was not found.",
                }
            },
        ),
        "find out whether the endpoint exists",
        AZ_SETTINGS,
    )
    assert isinstance(no_workspace, NotFound) and not hasattr(no_workspace, "missing")
    assert (
        "workspace 'ws' (resource group 'rg', subscription 'sub-1') was not found" in no_workspace.one_line()
    )
    assert "--resource-group" in no_workspace.one_line()

    no_endpoint = azureml.azure_error(
        _azure_http_error(404, {"error": {"code": "UserError", "message": "Could not find online endpoint"}}),
        "move all traffic back to v2",
        AZ_SETTINGS,
    )
    assert isinstance(no_endpoint, NotFound) and no_endpoint.missing == "endpoint"
    assert "endpoint 'headrace-churn' (or its deployment) was not found" in no_endpoint.one_line()

    busy = azureml.azure_error(_azure_http_error(503, {"error": {"code": "x"}}), "create", AZ_SETTINGS)
    assert isinstance(busy, ServiceUnavailable) and busy.transient
    other = azureml.azure_error(
        _azure_http_error(400, {"error": {"code": "BadArgument", "message": "instance type"}}),
        "create deployment v3",
        AZ_SETTINGS,
    )
    assert type(other) is HeadraceError and "Azure ML failed to create deployment v3" in other.one_line()


def test_azure_errors_are_classified_by_type_name_and_status_without_azure_installed():
    class HttpResponseError(Exception):
        def __init__(self, message: str, status_code: int) -> None:
            super().__init__(message)
            self.status_code = status_code

    class CredentialUnavailableError(Exception):
        pass

    assert isinstance(
        azureml.azure_error(CredentialUnavailableError("no credential"), "connect", AZ_SETTINGS), UsageError
    )
    assert isinstance(
        azureml.azure_error(HttpResponseError("Unauthorized", 401), "get", AZ_SETTINGS), UsageError
    )
    missing = azureml.azure_error(HttpResponseError("Not found: endpoint", 404), "get", AZ_SETTINGS)
    assert isinstance(missing, NotFound) and missing.missing == "endpoint"
    group = azureml.azure_error(
        HttpResponseError("Resource group 'rg' could not be found.", 404), "get", AZ_SETTINGS
    )
    assert isinstance(group, NotFound) and "workspace 'ws'" in group.one_line()
    assert isinstance(
        azureml.azure_error(HttpResponseError("slow down", 429), "get", AZ_SETTINGS), ServiceUnavailable
    )
