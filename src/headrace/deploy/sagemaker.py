"""The AWS SageMaker serving contract and deployment.

Contract (what SageMaker asks of a container): ``serve`` starts an HTTP server on port 8080 that
answers ``GET /ping`` with 200 once the model is loaded and ``POST /invocations`` with predictions;
the model arrives unpacked from ``model.tar.gz`` in ``/opt/ml/model``. ``invocations_router`` adds
those two routes to the serving app; it reads JSON (``{"records": [...]}``, ``{"instances": [...]}``,
a list of objects, or a list of rows in the signature's column order) and CSV (with a header row
naming the columns, or without one in the signature's column order) and answers JSON, or CSV when
``Accept: text/csv`` (one line per record: the prediction, then each class probability).

Deployment: a :class:`~headrace.deploy.plan.Plan` of the docker commands and boto3 requests (ECR
push, S3 upload of ``model.tar.gz``, ``create_model``, ``create_endpoint_config``, then
``create_endpoint`` or a blue/green ``update_endpoint`` with a canary traffic shift and automatic
rollback), carried out by :func:`execute` when boto3 and credentials are present.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ..errors import DataError, HeadraceError, UsageError
from .plan import Plan, Step

__all__ = [
    "SageMakerOptions",
    "execute",
    "format_csv",
    "invocations_router",
    "parse_csv",
    "parse_json",
    "rollback_plan",
    "sagemaker_plan",
]

log = logging.getLogger("headrace.deploy.sagemaker")

PredictFn = Callable[[list[dict[str, Any]]], dict[str, Any]]


# -- the contract -------------------------------------------------------------------------------
def _convert(value: str, kind: str | None) -> Any:
    """A CSV cell read as its column's kind (CSV has no types); an empty cell is missing."""
    text = value.strip()
    if text == "":
        return None
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            return text  # the model refuses it with a message naming the column
        return number  # inf and nan are refused by the model's input schema, as in JSON
    if kind == "bool":
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    return text


def parse_csv(
    body: str, columns: Sequence[str], kinds: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """CSV rows -> records. A first row made only of known column names is a header."""
    rows = [r for r in csv.reader(io.StringIO(body)) if any(cell.strip() for cell in r)]
    if not rows:
        raise DataError("the CSV body has no rows", hint="send one record per line")
    kinds = kinds or {}
    header = [c.strip() for c in rows[0]]
    if columns and set(header) <= set(columns) and len(set(header)) == len(header):
        names, data = header, rows[1:]
    else:
        names, data = list(columns), rows
    if not names:
        raise DataError(
            "the CSV body has no header row and the model has no signature to read it by",
            hint="send a header row naming the columns",
        )
    records = []
    for number, row in enumerate(data, 1):
        if len(row) != len(names):
            raise DataError(
                f"CSV row {number} has {len(row)} values, expected {len(names)} ({', '.join(names)})",
                hint="send one value per column, in the header's (or the signature's) order",
            )
        records.append({n: _convert(v, kinds.get(n)) for n, v in zip(names, row, strict=True)})
    return records


def parse_json(document: Any, columns: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON shapes SageMaker clients send -> records."""
    if isinstance(document, Mapping):
        for key in ("records", "instances", "inputs", "data"):
            if key in document:
                document = document[key]
                break
        else:
            document = [document]
    if not isinstance(document, list):
        raise DataError(
            "the JSON body is not a list of records",
            hint='send {"records": [{"column": value, ...}, ...]}',
        )
    records = []
    for number, item in enumerate(document, 1):
        if isinstance(item, Mapping):
            records.append(dict(item))
        elif isinstance(item, list) and columns and len(item) == len(columns):
            records.append(dict(zip(columns, item, strict=True)))
        else:
            raise DataError(
                f"record {number} is neither an object nor a row of {len(columns)} values",
                hint=f"send objects, or rows in this order: {', '.join(columns) or '(no signature)'}",
            )
    return records


def format_csv(answer: Mapping[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    probabilities = answer.get("probabilities") or []
    for i, prediction in enumerate(answer.get("predictions") or []):
        row: list[Any] = [prediction]
        if i < len(probabilities):
            proba = probabilities[i]
            row.extend(proba.values() if isinstance(proba, Mapping) else [proba])
        writer.writerow(row)
    return out.getvalue()


def invocations_router(
    predict: PredictFn,
    *,
    columns: Callable[[], Sequence[str]],
    kinds: Callable[[], Mapping[str, str]],
    ready: Callable[[], bool],
) -> APIRouter:
    """``GET /ping`` and ``POST /invocations`` over a ``predict(records) -> answer`` callable."""
    router = APIRouter(tags=["sagemaker"])

    @router.get("/ping")
    def ping() -> Response:
        if not ready():
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @router.post("/invocations")
    async def invocations(request: Request) -> Response:
        content_type = (request.headers.get("content-type") or "application/json").split(";")[0].strip()
        accept = (request.headers.get("accept") or "application/json").split(",")[0].split(";")[0].strip()
        body = await request.body()
        try:
            if content_type in ("text/csv", "application/csv"):
                records = parse_csv(body.decode("utf-8-sig"), columns(), kinds())
            elif content_type in ("application/json", "application/jsonlines", "*/*", ""):
                try:
                    document = json.loads(body or b"null")
                except ValueError as exc:
                    raise DataError(f"the body is not JSON ({exc})", hint="send a JSON document") from None
                records = parse_json(document, columns())
            else:
                return JSONResponse(
                    {
                        "error": f"content type {content_type!r} is not supported; "
                        "send application/json or text/csv"
                    },
                    status_code=415,
                )
            answer = predict(records)
        except HeadraceError as exc:
            return JSONResponse({"error": exc.one_line()}, status_code=422 if exc.exit_code == 1 else 400)
        if accept in ("text/csv", "application/csv"):
            return Response(format_csv(answer), media_type="text/csv")
        return JSONResponse(answer)

    return router


# -- deployment ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SageMakerOptions:
    region: str = "us-east-1"
    role: str | None = None  # the execution role ARN SageMaker assumes
    bucket: str | None = None
    image: str | None = None  # an ECR image URI; default: the account's ECR repository headrace-MODEL
    account: str | None = None
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    canary_percent: int = 10

    def resolved(self) -> dict[str, Any]:
        account = self.account or "<ACCOUNT_ID>"
        return {
            "region": self.region,
            "account": account,
            "role": self.role or f"arn:aws:iam::{account}:role/<SAGEMAKER_EXECUTION_ROLE>",
            "bucket": self.bucket or "<BUCKET>",
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "canary_percent": self.canary_percent,
        }


def names(model: str, version: int) -> dict[str, str]:
    base = "headrace-" + "".join(c if c.isalnum() else "-" for c in model.lower()).strip("-")
    return {
        "endpoint": base[:63],
        "model": f"{base}-v{version}"[:63],
        "endpoint_config": f"{base}-v{version}"[:63],
        "repository": base,
        "variant": f"v{version}",
    }


def sagemaker_plan(
    bundle_info: Mapping[str, Any], options: SageMakerOptions, sample: list[dict[str, Any]]
) -> Plan:
    """Every command and boto3 request a SageMaker deployment of the bundle makes, in order."""
    model, version = str(bundle_info["model"]), int(bundle_info["version"])
    n = names(model, version)
    s = options.resolved()
    registry = f"{s['account']}.dkr.ecr.{s['region']}.amazonaws.com"
    image = options.image or f"{registry}/{n['repository']}:v{version}"
    key = f"headrace/{model}/v{version}/model.tar.gz"
    plan = Plan(
        target="sagemaker",
        model=model,
        version=version,
        settings={
            **s,
            "image": image,
            **{f"{k}_name": v for k, v in n.items()},
            "model_data": f"s3://{s['bucket']}/{key}",
        },
    )
    plan.add(
        Step("command", "build the serving image from the bundle", argv=("docker", "build", "-t", image, "."))
    )
    plan.add(
        Step(
            "request",
            "make sure the ECR repository exists",
            call="ecr.create_repository",
            params={"repositoryName": n["repository"], "imageScanningConfiguration": {"scanOnPush": True}},
            when="repository missing",
        )
    )
    plan.add(Step("request", "get a registry login token", call="ecr.get_authorization_token", params={}))
    plan.add(
        Step(
            "command",
            "log docker in to ECR (the token on stdin)",
            argv=("docker", "login", "--username", "AWS", "--password-stdin", registry),
        )
    )
    plan.add(Step("command", "push the image", argv=("docker", "push", image)))
    plan.add(
        Step(
            "request",
            "upload the model artifacts",
            call="s3.upload_file",
            params={"Filename": "sagemaker/model.tar.gz", "Bucket": s["bucket"], "Key": key},
        )
    )
    plan.add(
        Step(
            "request",
            "register the model with SageMaker",
            call="sagemaker.create_model",
            params={
                "ModelName": n["model"],
                "ExecutionRoleArn": s["role"],
                "PrimaryContainer": {
                    "Image": image,
                    "ModelDataUrl": f"s3://{s['bucket']}/{key}",
                    "Environment": {"HEADRACE_MODEL_DIR": "/opt/ml/model", "HEADRACE_LOG_FORMAT": "json"},
                },
                "Tags": [
                    {"Key": "headrace:model", "Value": model},
                    {"Key": "headrace:version", "Value": str(version)},
                ],
            },
        )
    )
    plan.add(
        Step(
            "request",
            "create the endpoint configuration",
            call="sagemaker.create_endpoint_config",
            params={
                "EndpointConfigName": n["endpoint_config"],
                "ProductionVariants": [
                    {
                        "VariantName": n["variant"],
                        "ModelName": n["model"],
                        "InitialInstanceCount": s["instance_count"],
                        "InstanceType": s["instance_type"],
                        "InitialVariantWeight": 1.0,
                    }
                ],
            },
        )
    )
    plan.add(
        Step(
            "request",
            "find out whether the endpoint exists",
            call="sagemaker.describe_endpoint",
            params={"EndpointName": n["endpoint"]},
        )
    )
    plan.add(
        Step(
            "request",
            "create the endpoint",
            call="sagemaker.create_endpoint",
            params={"EndpointName": n["endpoint"], "EndpointConfigName": n["endpoint_config"]},
            when="endpoint missing",
        )
    )
    plan.add(
        Step(
            "request",
            "blue/green update: shift a canary share first, roll back automatically on failure",
            call="sagemaker.update_endpoint",
            params={
                "EndpointName": n["endpoint"],
                "EndpointConfigName": n["endpoint_config"],
                "DeploymentConfig": {
                    "BlueGreenUpdatePolicy": {
                        "TrafficRoutingConfiguration": {
                            "Type": "CANARY",
                            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": s["canary_percent"]},
                            "WaitIntervalInSeconds": 300,
                        },
                        "TerminationWaitInSeconds": 600,
                        "MaximumExecutionTimeoutInSeconds": 3600,
                    }
                },
            },
            when="endpoint exists",
        )
    )
    plan.add(
        Step(
            "check",
            "wait until the endpoint is in service",
            call="sagemaker.get_waiter('endpoint_in_service').wait",
            params={"EndpointName": n["endpoint"]},
        )
    )
    plan.add(
        Step(
            "check",
            "contract check: one prediction through the endpoint",
            call="sagemaker-runtime.invoke_endpoint",
            params={
                "EndpointName": n["endpoint"],
                "ContentType": "application/json",
                "Accept": "application/json",
                "Body": json.dumps({"records": sample}, sort_keys=True, default=str),
            },
        )
    )
    plan.notes.append(
        "the container answers GET /ping and POST /invocations on 8080 (JSON and CSV) and reads "
        "the model from /opt/ml/model, where SageMaker unpacks model.tar.gz"
    )
    return plan


def rollback_plan(model: str, version: int, previous: Mapping[str, Any], options: SageMakerOptions) -> Plan:
    """Point the endpoint back at the previous version's endpoint configuration."""
    n = names(model, version)
    previous_config = str(
        previous.get("endpoint_config") or names(model, int(previous["version"]))["endpoint_config"]
    )
    plan = Plan(
        target="sagemaker",
        model=model,
        version=int(previous["version"]),
        action="rollback",
        settings={**options.resolved(), "endpoint_name": n["endpoint"], "from_version": version},
    )
    plan.add(
        Step(
            "request",
            f"point the endpoint back at v{previous['version']}",
            call="sagemaker.update_endpoint",
            params={"EndpointName": n["endpoint"], "EndpointConfigName": previous_config},
        )
    )
    plan.add(
        Step(
            "check",
            "wait until the endpoint is in service",
            call="sagemaker.get_waiter('endpoint_in_service').wait",
            params={"EndpointName": n["endpoint"]},
        )
    )
    return plan


def available() -> str | None:
    """None when boto3 and AWS credentials are present, else why not."""
    try:
        import boto3  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "boto3 is not installed (pip install boto3)"
    if boto3.Session().get_credentials() is None:
        return "no AWS credentials are configured (aws configure, or AWS_* variables)"
    return None


def execute(plan: Plan, bundle_dir: Path) -> dict[str, Any]:
    """Carry the plan out with boto3 and docker; returns what the endpoint answered."""
    reason = available()
    if reason is not None:
        raise UsageError(f"cannot deploy to SageMaker: {reason}", hint="pass --dry-run to see the plan")
    import boto3

    session = boto3.Session(region_name=plan.settings["region"])
    clients: dict[str, Any] = {}

    def client(service: str) -> Any:
        if service not in clients:
            clients[service] = session.client(service)
        return clients[service]

    endpoint_exists = False
    repository_exists = True
    token = ""
    answer: dict[str, Any] = {}
    for step in plan.steps:
        if step.when == "endpoint missing" and endpoint_exists:
            continue
        if step.when == "endpoint exists" and not endpoint_exists:
            continue
        if step.when == "repository missing" and repository_exists:
            try:
                client("ecr").describe_repositories(repositoryNames=[step.params["repositoryName"]])
                continue
            except client("ecr").exceptions.RepositoryNotFoundException:
                repository_exists = False
        log.info("sagemaker: %s", step.title)
        if step.kind == "command":
            if shutil.which(step.argv[0]) is None:
                raise UsageError(f"{step.argv[0]} is not installed", hint=f"install it to {step.title}")
            stdin = token if "--password-stdin" in step.argv else None
            subprocess.run(list(step.argv), cwd=bundle_dir, input=stdin, text=True, check=True)
            continue
        assert step.call is not None
        service, _, operation = step.call.partition(".")
        if step.call == "ecr.get_authorization_token":
            import base64

            data = client("ecr").get_authorization_token()["authorizationData"][0]
            token = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)[1]
        elif step.call == "s3.upload_file":
            client("s3").upload_file(
                str(bundle_dir / step.params["Filename"]), step.params["Bucket"], step.params["Key"]
            )
        elif step.call == "sagemaker.describe_endpoint":
            try:
                client("sagemaker").describe_endpoint(**step.params)
                endpoint_exists = True
            except client("sagemaker").exceptions.ClientError:
                endpoint_exists = False
        elif operation.startswith("get_waiter"):
            client("sagemaker").get_waiter("endpoint_in_service").wait(**step.params)
        elif step.call == "sagemaker-runtime.invoke_endpoint":
            response = client("sagemaker-runtime").invoke_endpoint(**step.params)
            answer = json.loads(response["Body"].read())
        else:
            getattr(client(service), operation)(**step.params)
    return answer
