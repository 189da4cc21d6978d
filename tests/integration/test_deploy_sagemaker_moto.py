"""The SageMaker execute path (boto3) against a local AWS API emulator: moto's server in its own
process on a free loopback port (``aws_emulator.py``: moto plus UpdateEndpoint and SageMaker's
"already exists" refusals, which moto leaves out). Nothing leaves loopback; the image is given (its
build and push stay out of tests), so the calls made are S3's, SageMaker's and CloudWatch's.

What the endpoint answers to the contract check is moto's canned reply (no container runs), so the
tests check that the check ran, not what a model predicted.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from headrace.config import ModelSpec
from headrace.datagen import churn
from headrace.deploy import DeployOptions, deploy, rollback
from headrace.deploy import sagemaker as sm
from headrace.deploy.records import history
from headrace.deploy.targets import STEP, update_target
from headrace.errors import HeadraceError, UsageError
from headrace.metadata import SCHEMA
from headrace.registry import Registry
from headrace.scaffold import init_project
from headrace.store import BatchMeta
from headrace.train.run import train_model
from headrace.workspace import Workspace

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

pytestmark = pytest.mark.integration

ACCOUNT = "210987654321"  # the emulator's account: not one of the placeholder accounts
REGION = "eu-west-1"
BUCKET = "headrace-models-test"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/headrace-sagemaker"
SPEC = {
    "task": "classification",
    "dataset": "customers",
    "target": "Churn",
    "features": {"drop": ["customerID"]},
    "candidates": [{"estimator": "logistic_regression"}],
    "validation": {"strategy": "holdout"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The emulator on a free loopback port, stopped after the module; credentials for it only."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    env = {**os.environ, "MOTO_ACCOUNT_ID": ACCOUNT}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("aws_emulator.py")),
                "-H",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    saved = {
        k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    }
    os.environ.update(AWS_ACCESS_KEY_ID="emulator", AWS_SECRET_ACCESS_KEY="emulator")
    os.environ.pop("AWS_SESSION_TOKEN", None)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the AWS emulator did not start: {log.read_text()[-2000:]}")
                time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        boto3.client("s3", region_name=REGION, endpoint_url=url).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def client(aws: str, service: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=aws)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("sagemaker-project")
    ws = Workspace.open(init_project(folder, name="smtest", rows=100))
    ws.store.append("customers", churn(600, seed=5), BatchMeta("test"))
    registry = Registry(ws.meta, ws.artifacts)
    spec = ModelSpec.model_validate(SPEC)
    first = train_model("churn", spec, store=ws.store, registry=registry, promote=True).version
    ws.store.append("customers", churn(300, seed=6), BatchMeta("test"))
    second = train_model("churn", spec, store=ws.store, registry=registry, promote=False).version
    yield {"ws": ws, "v1": first.version, "v2": second.version}
    ws.close()


def options(aws: str | None, **kw: Any) -> DeployOptions:
    version = kw.pop("version")
    so = sm.SageMakerOptions(
        region=REGION,
        role=ROLE,
        bucket=BUCKET,
        account=ACCOUNT,
        image=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/headrace-churn:v{version}",
        build_image=False,
        endpoint_url=aws,
        wait_seconds=60,
    )
    return DeployOptions(sagemaker=replace(so, **kw))


def steps_ledger(ws: Workspace) -> list[dict[str, Any]]:
    table = SCHEMA.tables["ledger"]
    with ws.meta.begin() as conn:
        rows = conn.execute(select(table).where(table.c.action == STEP).order_by(table.c.id)).mappings().all()
    return [dict(r) for r in rows]


def outcomes(steps: list[dict[str, Any]]) -> dict[str, str]:
    return {s["call"]: s["outcome"] for s in steps}


def test_placeholders_are_refused_before_any_aws_call(aws: str, project: dict[str, Any]) -> None:
    ws, v1 = project["ws"], project["v1"]
    scaffolded = DeployOptions(sagemaker=sm.SageMakerOptions(endpoint_url=aws))
    with pytest.raises(UsageError) as caught:
        deploy(ws, f"churn@{v1}", "sagemaker", options=scaffolded)
    message = caught.value.one_line()
    assert "\n" not in message and "placeholder values" in message
    assert "bucket '<BUCKET>'" in message and "--bucket" in message
    assert "<SAGEMAKER_EXECUTION_ROLE>" in message and "--role" in message
    assert "<ACCOUNT_ID>" in message
    docs_values = options(aws, version=v1, bucket="my-bucket", role="<role-arn>", account="123456789012")
    docs_values = replace(
        docs_values, sagemaker=replace(docs_values.sagemaker, image=None, account="123456789012")
    )
    with pytest.raises(UsageError, match=r"role '<role-arn>'.*bucket 'my-bucket'.*image '123456789012\."):
        deploy(ws, f"churn@{v1}", "sagemaker", options=docs_values)
    # nothing reached AWS: no model, no endpoint configuration, nothing uploaded
    assert client(aws, "sagemaker").list_models()["Models"] == []
    assert client(aws, "sagemaker").list_endpoint_configs()["EndpointConfigs"] == []
    assert client(aws, "s3").list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_deploy_creates_the_endpoint_and_a_retry_of_the_same_version_resumes(
    aws: str, project: dict[str, Any]
) -> None:
    ws, v1 = project["ws"], project["v1"]
    result = deploy(ws, f"churn@{v1}", "sagemaker", options=options(aws, version=v1))
    assert result.status == "live" and result.endpoint == "headrace-churn"
    config, model_name = result.details["endpoint_config"], result.details["model_name"]
    assert config.startswith(f"headrace-churn-v{v1}-") and model_name.startswith(f"headrace-churn-v{v1}-")
    assert len(config) <= 63 and len(model_name) <= 63
    done = outcomes(result.details["steps"])
    assert done["s3.upload_file"] == "uploaded"
    assert done["sagemaker.create_model"] == "created"
    assert done["sagemaker.create_endpoint_config"] == "created"
    assert done["sagemaker.create_endpoint"] == "created"
    assert done["sagemaker.update_endpoint"] == "skipped"  # a new endpoint is created, not updated
    assert done["sagemaker-runtime.invoke_endpoint"] == "answered"

    sagemaker = client(aws, "sagemaker")
    endpoint = sagemaker.describe_endpoint(EndpointName="headrace-churn")
    assert endpoint["EndpointStatus"] == "InService" and endpoint["EndpointConfigName"] == config
    described = sagemaker.describe_model(ModelName=model_name)
    assert described["ExecutionRoleArn"] == ROLE
    data = described["PrimaryContainer"]["ModelDataUrl"]
    assert data == f"s3://{BUCKET}/headrace/churn/v{v1}/model.tar.gz"
    head = client(aws, "s3").head_object(Bucket=BUCKET, Key=f"headrace/churn/v{v1}/model.tar.gz")
    assert head["ContentLength"] == (Path(result.bundle or "") / "sagemaker" / "model.tar.gz").stat().st_size

    # the same version again: the emulator refuses existing names as SageMaker does, and the
    # retry reuses what it made instead of failing on "already exists"
    again = deploy(ws, f"churn@{v1}", "sagemaker", options=options(aws, version=v1))
    assert again.status == "live" and again.details["endpoint_config"] == config
    done = outcomes(again.details["steps"])
    assert done["sagemaker.create_model"] == "reused"
    assert done["sagemaker.create_endpoint_config"] == "reused"
    assert done["sagemaker.create_endpoint"] == "skipped"
    assert done["sagemaker.update_endpoint"] == "skipped"  # it already serves this configuration
    with pytest.raises(Exception, match="Cannot create already existing model"):
        sagemaker.create_model(ModelName=model_name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "x"})

    rows = [r for r in history(ws.meta, "churn", "sagemaker")]
    assert [r["status"] for r in rows[:2]] == ["live", "replaced"]
    ledger = steps_ledger(ws)
    assert any("create the endpoint" in e["reason"] and e["reason"].endswith("created") for e in ledger)
    assert all(e["details"]["target"] == "sagemaker" and e["details"]["deployment_id"] for e in ledger)


def test_a_half_failed_deploy_resumes_and_updates_with_alarms_and_traffic_shifting(
    aws: str, project: dict[str, Any]
) -> None:
    ws, v1, v2 = project["ws"], project["v1"], project["v2"]
    sagemaker = client(aws, "sagemaker")
    before = sagemaker.describe_endpoint(EndpointName="headrace-churn")["EndpointConfigName"]

    bad = options(aws, version=v2, instance_type="ml.nonexistent.large")
    with pytest.raises(HeadraceError) as caught:
        deploy(ws, f"churn@{v2}", "sagemaker", options=bad)
    message = caught.value.one_line()
    assert "\n" not in message and "create the endpoint configuration" in message
    assert "ml.nonexistent.large" in message and "--instance-type" in message
    failed = history(ws.meta, "churn", "sagemaker")[0]
    assert failed["status"] == "failed" and failed["version"] == v2
    assert outcomes(failed["details"]["steps"])["sagemaker.create_model"] == "created"
    assert outcomes(failed["details"]["steps"])["sagemaker.create_endpoint_config"] == "failed"
    # the live endpoint was not touched
    assert sagemaker.describe_endpoint(EndpointName="headrace-churn")["EndpointConfigName"] == before
    assert history(ws.meta, "churn", "sagemaker")[1]["status"] == "live"

    result = deploy(ws, f"churn@{v2}", "sagemaker", options=options(aws, version=v2, traffic="canary"))
    done = outcomes(result.details["steps"])
    assert done["sagemaker.create_model"] == "reused"  # made by the failed attempt
    assert done["sagemaker.create_endpoint_config"] == "created"
    assert done["cloudwatch.put_metric_alarm"] == "set"
    assert done["sagemaker.update_endpoint"] == "updating"
    assert result.previous_version == v1

    endpoint = sagemaker.describe_endpoint(EndpointName="headrace-churn")
    assert endpoint["EndpointConfigName"] == result.details["endpoint_config"] != before
    policy = endpoint["LastDeploymentConfig"]
    routing = policy["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == "CANARY" and routing["CanarySize"]["Value"] == 10
    assert routing["WaitIntervalInSeconds"] == 60
    alarm_names = [a["AlarmName"] for a in policy["AutoRollbackConfiguration"]["Alarms"]]
    assert alarm_names == [f"headrace-churn-v{v2}-5xx-rate", f"headrace-churn-v{v2}-p99-latency"]

    alarms = {
        a["AlarmName"]: a
        for a in client(aws, "cloudwatch").describe_alarms(AlarmNames=alarm_names)["MetricAlarms"]
    }
    assert set(alarms) == set(alarm_names)
    latency = alarms[alarm_names[1]]
    assert (latency["Namespace"], latency["MetricName"]) == ("AWS/SageMaker", "ModelLatency")
    assert {d["Name"]: d["Value"] for d in latency["Dimensions"]} == {
        "EndpointName": "headrace-churn",
        "VariantName": f"v{v2}",
    }
    assert latency["Threshold"] == 1000.0 * 1000  # p99 of 1 s, in microseconds
    rate = alarms[alarm_names[0]]
    metrics = {m["Id"]: m for m in rate["Metrics"]}
    assert metrics["errors"]["MetricStat"]["Metric"]["MetricName"] == "Invocation5XXErrors"
    assert metrics["requests"]["MetricStat"]["Metric"]["MetricName"] == "Invocations"
    assert rate["Threshold"] == 0.02


def test_update_target_moves_the_endpoint_between_versions_as_the_monitor_does(
    aws: str, project: dict[str, Any]
) -> None:
    ws, v1, v2 = project["ws"], project["v1"], project["v2"]
    sagemaker = client(aws, "sagemaker")
    live = history(ws.meta, "churn", "sagemaker")[0]
    assert live["status"] == "live" and live["version"] == v2

    plan = update_target(ws, "churn", v1, "sagemaker", traffic="all_at_once", dry_run=True).plan
    assert plan is not None and plan.action == "update"
    assert plan.settings["image"].endswith(f"headrace-churn:v{v1}")  # the live one's, retagged

    ledger_before = len(steps_ledger(ws))
    back = update_target(ws, "churn", v1, "sagemaker", traffic="all_at_once")
    assert back.status == "live" and back.previous_version == v2 and back.action == "update"
    endpoint = sagemaker.describe_endpoint(EndpointName="headrace-churn")
    assert endpoint["EndpointConfigName"] == back.details["endpoint_config"]
    assert endpoint["EndpointConfigName"].startswith(f"headrace-churn-v{v1}-")
    routing = endpoint["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == "ALL_AT_ONCE"
    new_entries = steps_ledger(ws)[ledger_before:]
    reasons = [e["reason"] for e in new_entries]
    assert any("rollback alarm" in r and r.endswith("set") for r in reasons)
    assert any("blue/green update" in r and r.endswith("updating") for r in reasons)
    assert any("in service" in r for r in reasons)
    assert [r["status"] for r in history(ws.meta, "churn", "sagemaker")[:2]] == ["live", "replaced"]

    # something deleted between runs (v2's model and configuration): the next update makes them again
    v2_config = history(ws.meta, "churn", "sagemaker")[1]["details"]["endpoint_config"]
    v2_model = sagemaker.describe_endpoint_config(EndpointConfigName=v2_config)["ProductionVariants"][0][
        "ModelName"
    ]
    sagemaker.delete_endpoint_config(EndpointConfigName=v2_config)
    sagemaker.delete_model(ModelName=v2_model)
    forward = update_target(ws, "churn", v2, "sagemaker", traffic="linear")
    done = outcomes(forward.details["steps"])
    assert (
        done["sagemaker.create_model"] == "created" and done["sagemaker.create_endpoint_config"] == "created"
    )
    endpoint = sagemaker.describe_endpoint(EndpointName="headrace-churn")
    assert endpoint["EndpointConfigName"] == v2_config
    routing = endpoint["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == "LINEAR" and routing["LinearStepSize"]["Value"] == 25

    # and the deploy rollback points the endpoint back at the previous version's configuration
    undone = rollback(ws, "churn", "sagemaker")
    assert undone.status == "live" and undone.version == v1
    assert sagemaker.describe_endpoint(EndpointName="headrace-churn")["EndpointConfigName"].startswith(
        f"headrace-churn-v{v1}-"
    )


def test_the_endpoint_comes_from_aws_endpoint_url_when_the_options_name_none(
    aws: str, project: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    current = client(aws, "sagemaker").describe_endpoint(EndpointName="headrace-churn")["EndpointConfigName"]
    so = options(None, version=1).sagemaker
    plan = sm.update_plan("churn", 1, current, so)
    steps: list[dict[str, Any]] = []
    done = sm.execute(plan, Path("."), steps=steps)
    assert done["endpoint_config"] == current
    assert outcomes(steps)["sagemaker.describe_endpoint"] == "found"
    assert outcomes(steps)["sagemaker.update_endpoint"] == "skipped"  # it serves that configuration
    missing = sm.update_plan("other-model", 1, current, so)
    with pytest.raises(HeadraceError, match="headrace-other-model does not exist"):
        sm.execute(missing, Path("."))


def test_update_target_on_kubernetes_without_kubectl_is_one_line_and_recorded(
    project: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A Kubernetes deployment that was applied (recorded live) is moved by update_target through
    kubectl; where kubectl is missing, the monitor gets one line and the ledger the failed attempt."""
    from headrace.deploy import records

    ws, v1, v2 = project["ws"], project["v1"], project["v2"]
    records.record(
        ws.meta,
        model="churn",
        version=v1,
        target="kubernetes",
        status="live",
        endpoint="service/headrace-churn -n ml",
        details={"plan": {"settings": {"image": f"reg.example/churn:v{v1}", "namespace": "ml"}}},
    )
    plan = update_target(ws, "churn", v2, "kubernetes", dry_run=True).plan
    assert plan is not None
    assert plan.steps[2].argv[:6] == ("kubectl", "set", "image", "-n", "ml", "deployment/headrace-churn")
    assert plan.steps[2].argv[-1] == f"model=reg.example/churn:v{v2}"
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError) as caught:
        update_target(ws, "churn", v2, "kubernetes")
    assert caught.value.one_line().startswith(
        f"docker and kubectl are not installed, so the update of churn@{v2}"
    )
    latest = history(ws.meta, "churn", "kubernetes")
    assert [(r["status"], r["version"]) for r in latest[:2]] == [("failed", v2), ("live", v1)]


def test_follow_moves_the_endpoint_to_the_registry_champion(
    aws: str, project: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The monitor's decision reaches SageMaker: after the champion moves, follow() updates the live
    endpoint (all at once for a rollback); a target it cannot reach is one line, not a crash."""
    from headrace.deploy.follow import follow

    ws = project["ws"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    monkeypatch.setenv("PATH", str(tmp_path))  # no kubectl: the kubernetes deployment cannot move
    registry = Registry(ws.meta, ws.artifacts)
    serving = history(ws.meta, "churn", "sagemaker")[0]
    assert serving["status"] == "live"
    other = project["v1"] if serving["version"] == project["v2"] else project["v2"]
    registry.promote("churn", other, reason="test: the monitor's decision")
    events = {e["target"]: e for e in follow(ws, "churn", registry=registry, urgent=True)}
    assert events["sagemaker"]["action"] == "follow", events["sagemaker"]["reason"]
    assert events["sagemaker"]["version"] == other and "all at once" in events["sagemaker"]["reason"]
    endpoint = client(aws, "sagemaker").describe_endpoint(EndpointName="headrace-churn")
    assert endpoint["EndpointConfigName"].startswith(f"headrace-churn-v{other}-")
    routing = endpoint["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == "ALL_AT_ONCE"
    if "kubernetes" in events:
        assert events["kubernetes"]["action"] == "follow_failed"
        assert "kubectl" in events["kubernetes"]["reason"]
    assert follow(ws, "churn", registry=registry, urgent=True) == [
        e for e in follow(ws, "churn", registry=registry) if e["target"] == "kubernetes"
    ]  # nothing left to move on SageMaker
