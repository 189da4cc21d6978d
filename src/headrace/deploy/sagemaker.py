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
``create_endpoint``, or CloudWatch alarms on the new variant's 5XX share and p99 latency and a
blue/green ``update_endpoint`` that shifts traffic (canary, linear or all at once) and rolls back
automatically when an alarm fires), carried out by :func:`execute` when boto3 and credentials are
present. Placeholder values (account, bucket, role) are refused before any AWS call; the model and
endpoint-config names carry the version and an attempt suffix, so a retried or half-failed
deployment resumes instead of failing on "already exists". :func:`update_plan` moves a live endpoint
to another version's configuration (what the monitor calls, through ``targets.update_target``).
The AWS endpoint is boto3's, or ``SageMakerOptions.endpoint_url`` / ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ..errors import DataError, HeadraceError, NotFound, ServiceUnavailable, UsageError
from .plan import Plan, Step

__all__ = [
    "SageMakerOptions",
    "alarm_requests",
    "attempt_names",
    "deployment_config",
    "execute",
    "format_csv",
    "invocations_router",
    "parse_csv",
    "parse_json",
    "placeholders",
    "refuse_placeholders",
    "rollback_plan",
    "sagemaker_plan",
    "update_plan",
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
    predict: PredictFn | None = None,
    *,
    columns: Callable[[], Sequence[str]],
    kinds: Callable[[], Mapping[str, str]],
    ready: Callable[[], bool],
    model: str | None = None,
) -> APIRouter:
    """``GET /ping`` and ``POST /invocations``.

    Mounted in a headrace serving app (``create_app``: ``app.state.serving``), ``/invocations``
    answers through the app's one prediction path, as plain, batch and v2 requests do: the records
    are checked against the signature, the canary router picks the version that answers, and the
    prediction log records that version with route ``invocations`` (``model``: the served model,
    default the only one). ``predict(records) -> answer`` answers in an app without that path.
    """
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
        if content_type not in _CSV + _JSON_TYPES:
            return JSONResponse(
                {"error": f"content type {content_type!r} is not supported; {_SEND}"},
                status_code=415,
            )
        body = await request.body()
        try:
            limits = _limits(request)
            # a large body is parsed (and its record count checked) off the event loop
            if limits is not None and len(body) > limits.offload_bytes:
                records = await run_in_threadpool(_read, body, content_type, columns(), kinds(), limits)
            else:
                records = _read(body, content_type, columns(), kinds(), limits)
            answer = await _invoke(request, records, predict, model)
        except HeadraceError as exc:
            return JSONResponse({"error": exc.one_line()}, status_code=_status(exc))
        if accept in ("text/csv", "application/csv"):
            return Response(format_csv(answer), media_type="text/csv")
        return Response(
            orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    return router


_CSV = ("text/csv", "application/csv")
_SEND = "send application/json or text/csv"
_JSON_TYPES = ("application/json", "application/jsonlines", "*/*", "")


def _limits(request: Request) -> Any:
    """The serving app's ``serving.limits`` (None outside a headrace serving app)."""
    serving = getattr(request.app.state, "serving", None)
    return serving.spec.limits if serving is not None else None


def _read(
    body: bytes, content_type: str, columns: Sequence[str], kinds: Mapping[str, str], limits: Any
) -> list[dict[str, Any]]:
    """The records of an ``/invocations`` body, within the serving limits: at most
    ``max_batch_records`` of them (counted before any is read), nesting and strings bounded."""
    from ..serve.errors import PayloadTooLarge
    from ..serve.schema import check_body

    most = limits.max_batch_records if limits is not None else None
    if content_type in _CSV:
        text = body.decode("utf-8-sig", errors="replace")
        if most is not None and text.count("\n") > most + 1:
            raise PayloadTooLarge(f"more than {most} CSV rows; at most {most} per request", hint="split it")
        return parse_csv(text, columns, kinds)
    if limits is not None:
        check_body(body, limits.max_depth, limits.max_string_length)
    try:
        document = json.loads(body or b"null")
    except (ValueError, RecursionError) as exc:
        why = exc if isinstance(exc, ValueError) else "nested too deep"
        raise DataError(f"the body is not JSON ({why})", hint="send a JSON document") from None
    if limits is not None:
        inner = document
        if isinstance(document, Mapping):
            inner = next(
                (document[k] for k in ("records", "instances", "inputs", "data") if k in document), None
            )
        if isinstance(inner, list) and most is not None and len(inner) > most:
            raise PayloadTooLarge(f"{len(inner)} records; at most {most} per request", hint="split the batch")
    return parse_json(document, columns)


async def _invoke(
    request: Request, records: list[dict[str, Any]], predict: PredictFn | None, model: str | None
) -> dict[str, Any]:
    """The answer to ``/invocations``: through the serving app's shared path when there is one."""
    serving = getattr(request.app.state, "serving", None)
    if serving is None:
        if predict is None:
            raise UsageError(
                "/invocations has no model to answer with",
                hint="mount invocations_router in a headrace serving app, or pass predict=",
            )
        return predict(records)
    names = list(serving.host.names)
    name = model or (names[0] if len(names) == 1 else None)
    if name is None:
        raise UsageError(
            f"/invocations answers for one model and this server serves {len(names)}",
            hint="pass model= to invocations_router",
        )
    done = await serving.predict(request, serving.served(name, request), records, route="invocations")
    doc: dict[str, Any] = {
        "model": done.served.name,
        "version": done.served.version,
        "ids": done.ids,
        "predictions": done.answer.predictions,
    }
    if done.answer.probabilities is not None:
        doc["probabilities"] = done.answer.probabilities
    return doc


def _status(exc: HeadraceError) -> int:
    """The serving app's status for an error (422 for data the model cannot read, 404, 503...)."""
    from ..serve.errors import status_for

    return status_for(exc)


# -- deployment ---------------------------------------------------------------------------------
TRAFFIC = ("canary", "linear", "all_at_once")

# values the scaffold, the dry run and AWS's own documentation use in place of real ones
EXAMPLE_ACCOUNTS = frozenset({"123456789012", "111122223333", "000000000000"})
EXAMPLE_BUCKETS = frozenset(
    {"my-bucket", "bucket", "example-bucket", "your-bucket", "amzn-s3-demo-bucket", "doc-example-bucket"}
)
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]+$")


@dataclass(frozen=True)
class SageMakerOptions:
    region: str = "us-east-1"
    role: str | None = None  # the execution role ARN SageMaker assumes
    bucket: str | None = None
    image: str | None = None  # an ECR image URI; default: the account's ECR repository headrace-MODEL
    account: str | None = None
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    # how UpdateEndpoint moves traffic to a new version (blue/green): canary | linear | all_at_once
    traffic: str = "canary"
    canary_percent: int = 10
    linear_percent: int = 25
    wait_seconds: int = 300  # between traffic shifts, watched by the rollback alarms
    # the rollback alarms on the new variant (CloudWatch, namespace AWS/SageMaker)
    error_rate: float = 0.02  # Invocation5XXErrors / Invocations
    p99_latency_ms: float = 1000.0  # ModelLatency, p99
    alarm_periods: int = 2  # consecutive minutes over a limit before the alarm fires
    build_image: bool = True  # False: the image is already in its registry (no docker build/push)
    # an AWS API endpoint other than boto3's default (an emulator, a VPC endpoint); boto3 also reads
    # AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>) from the environment
    endpoint_url: str | None = None

    def resolved(self) -> dict[str, Any]:
        if self.traffic not in TRAFFIC:
            raise UsageError(
                f"unknown SageMaker traffic shift {self.traffic!r}", hint=f"use one of {', '.join(TRAFFIC)}"
            )
        account = self.account or "<ACCOUNT_ID>"
        return {
            "region": self.region,
            "account": account,
            "role": self.role or f"arn:aws:iam::{account}:role/<SAGEMAKER_EXECUTION_ROLE>",
            "bucket": self.bucket or "<BUCKET>",
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "traffic": self.traffic,
            "canary_percent": self.canary_percent,
            "linear_percent": self.linear_percent,
            "wait_seconds": self.wait_seconds,
            "error_rate": self.error_rate,
            "p99_latency_ms": self.p99_latency_ms,
            "alarm_periods": self.alarm_periods,
            "build_image": self.build_image,
            "endpoint_url": self.endpoint_url,
        }


def _digest(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _named(base: str, version: int, suffix: str = "") -> str:
    """``{base}-v{version}[-{suffix}]`` in SageMaker's 63 characters, the base shortened first."""
    tail = f"-v{version}" + (f"-{suffix}" if suffix else "")
    return base[: 63 - len(tail)].rstrip("-") + tail


def names(model: str, version: int) -> dict[str, str]:
    """The stable names: the endpoint (one per model, it survives versions), the ECR repository, the
    variant. The model and endpoint-config names of a deployment attempt are in :func:`attempt_names`."""
    base = "headrace-" + "".join(c if c.isalnum() else "-" for c in model.lower()).strip("-")
    return {
        "endpoint": base[:63],
        "model": _named(base, version),
        "endpoint_config": _named(base, version),
        "repository": base,
        "variant": f"v{version}",
    }


def attempt_names(
    model: str,
    version: int,
    *,
    image: str,
    model_data: str,
    role: str,
    artifact: str,
    variant: dict[str, Any],
) -> dict[str, str]:
    """Model and endpoint-config names that carry the version and an attempt suffix: a digest of what
    the attempt deploys. A retry of the same attempt finds its own model and configuration and
    reuses them (a half-failed deployment resumes); an attempt that deploys something else (another
    image, role, instance type) gets names of its own, so nothing fails on "already exists"."""
    base = names(model, version)["repository"]
    model_name = _named(
        base,
        version,
        _digest({"image": image, "model_data": model_data, "role": role, "artifact": artifact}),
    )
    config = _named(base, version, _digest({"model": model_name, **variant}))
    return {"model": model_name, "endpoint_config": config}


def alarm_requests(endpoint: str, variant: str, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``cloudwatch.put_metric_alarm`` parameters of the two alarms that roll an update back: the new
    variant's 5XX share and its p99 model latency."""
    dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]

    def stat(metric: str, stat: str) -> dict[str, Any]:
        return {
            "Metric": {"Namespace": "AWS/SageMaker", "MetricName": metric, "Dimensions": dimensions},
            "Period": 60,
            "Stat": stat,
        }

    common = {
        "ComparisonOperator": "GreaterThanThreshold",
        "EvaluationPeriods": int(settings["alarm_periods"]),
        "DatapointsToAlarm": int(settings["alarm_periods"]),
        "TreatMissingData": "notBreaching",
        "ActionsEnabled": False,  # read by SageMaker's AutoRollbackConfiguration, not by notifications
        "Tags": [
            {"Key": "headrace:endpoint", "Value": endpoint},
            {"Key": "headrace:variant", "Value": variant},
        ],
    }
    return [
        {
            "AlarmName": f"{endpoint}-{variant}-5xx-rate"[:255],
            "AlarmDescription": f"headrace: roll {endpoint} back when {variant} answers over "
            f"{settings['error_rate']:.1%} of requests with 5XX",
            "Metrics": [
                {"Id": "errors", "MetricStat": stat("Invocation5XXErrors", "Sum"), "ReturnData": False},
                {"Id": "requests", "MetricStat": stat("Invocations", "Sum"), "ReturnData": False},
                {
                    "Id": "rate",
                    "Expression": "IF(requests > 0, errors / requests, 0)",
                    "Label": "5XX share",
                    "ReturnData": True,
                },
            ],
            "Threshold": float(settings["error_rate"]),
            **common,
        },
        {
            "AlarmName": f"{endpoint}-{variant}-p99-latency"[:255],
            "AlarmDescription": f"headrace: roll {endpoint} back when {variant}'s p99 model latency passes "
            f"{settings['p99_latency_ms']:g} ms",
            "Namespace": "AWS/SageMaker",
            "MetricName": "ModelLatency",
            "Dimensions": dimensions,
            "Period": 60,
            "ExtendedStatistic": "p99",
            "Unit": "Microseconds",
            "Threshold": float(settings["p99_latency_ms"]) * 1000.0,  # ModelLatency is in microseconds
            **common,
        },
    ]


def deployment_config(settings: Mapping[str, Any], alarms: Sequence[str]) -> dict[str, Any]:
    """UpdateEndpoint's DeploymentConfig: blue/green with the traffic shift asked for, rolled back
    automatically when one of ``alarms`` fires while traffic moves (and until the old fleet goes)."""
    wait = int(settings["wait_seconds"])
    kind = str(settings["traffic"])
    routing: dict[str, Any] = {"Type": kind.upper(), "WaitIntervalInSeconds": wait}
    if kind == "canary":
        routing["CanarySize"] = {"Type": "CAPACITY_PERCENT", "Value": int(settings["canary_percent"])}
    elif kind == "linear":
        routing["LinearStepSize"] = {"Type": "CAPACITY_PERCENT", "Value": int(settings["linear_percent"])}
    shifts = (
        2 if kind == "canary" else 1 if kind == "all_at_once" else math.ceil(100 / settings["linear_percent"])
    )
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": 600,
            "MaximumExecutionTimeoutInSeconds": max(600, min(28800, wait * shifts + 1800)),
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in alarms]},
    }


def _update_steps(endpoint: str, config: str, variant: str, settings: Mapping[str, Any]) -> list[Step]:
    """The alarms, then UpdateEndpoint with traffic shifting and automatic rollback on them."""
    alarms = alarm_requests(endpoint, variant, settings)
    steps = [
        Step(
            "request",
            f"rollback alarm: {a['AlarmName']}",
            call="cloudwatch.put_metric_alarm",
            params=a,
            when="endpoint exists",
        )
        for a in alarms
    ]
    routing = deployment_config(settings, [a["AlarmName"] for a in alarms])
    shift = routing["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    how = {
        "CANARY": f"a canary of {settings['canary_percent']}% first",
        "LINEAR": f"{settings['linear_percent']}% at a time",
        "ALL_AT_ONCE": "all at once",
    }[shift["Type"]]
    steps.append(
        Step(
            "request",
            f"blue/green update: move traffic {how}, rolled back automatically when an alarm fires",
            call="sagemaker.update_endpoint",
            params={"EndpointName": endpoint, "EndpointConfigName": config, "DeploymentConfig": routing},
            when="endpoint exists",
        )
    )
    return steps


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
    model_data = f"s3://{s['bucket']}/{key}"
    variant = {
        "VariantName": n["variant"],
        "InitialInstanceCount": s["instance_count"],
        "InstanceType": s["instance_type"],
        "InitialVariantWeight": 1.0,
    }
    attempt = attempt_names(
        model,
        version,
        image=image,
        model_data=model_data,
        role=s["role"],
        artifact=str(bundle_info.get("artifact_sha256") or ""),
        variant=variant,
    )
    plan = Plan(
        target="sagemaker",
        model=model,
        version=version,
        settings={
            **s,
            "image": image,
            **{f"{k}_name": v for k, v in n.items()},
            "model_name": attempt["model"],
            "endpoint_config_name": attempt["endpoint_config"],
            "model_data": model_data,
        },
    )
    if s["build_image"]:
        plan.add(
            Step(
                "command",
                "build the serving image from the bundle",
                argv=("docker", "build", "-t", image, "."),
            )
        )
        plan.add(
            Step(
                "request",
                "make sure the ECR repository exists",
                call="ecr.create_repository",
                params={
                    "repositoryName": n["repository"],
                    "imageScanningConfiguration": {"scanOnPush": True},
                },
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
    else:
        plan.notes.append(f"the image {image} is expected in its registry already (not built or pushed)")
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
            "register the model with SageMaker (reused when this attempt made it already)",
            call="sagemaker.create_model",
            params={
                "ModelName": attempt["model"],
                "ExecutionRoleArn": s["role"],
                "PrimaryContainer": {
                    "Image": image,
                    "ModelDataUrl": model_data,
                    "Environment": {"HEADRACE_MODEL_DIR": "/opt/ml/model", "HEADRACE_LOG_FORMAT": "json"},
                },
                "Tags": [
                    {"Key": "headrace:model", "Value": model},
                    {"Key": "headrace:version", "Value": str(version)},
                ],
            },
            when="model missing",
        )
    )
    plan.add(
        Step(
            "request",
            "create the endpoint configuration (reused when this attempt made it already)",
            call="sagemaker.create_endpoint_config",
            params={
                "EndpointConfigName": attempt["endpoint_config"],
                "ProductionVariants": [{**variant, "ModelName": attempt["model"]}],
                "Tags": [
                    {"Key": "headrace:model", "Value": model},
                    {"Key": "headrace:version", "Value": str(version)},
                ],
            },
            when="endpoint config missing",
        )
    )
    plan.add(
        Step(
            "request",
            "find out whether the endpoint exists (a failed one is deleted, a busy one waited for)",
            call="sagemaker.describe_endpoint",
            params={"EndpointName": n["endpoint"]},
        )
    )
    plan.add(
        Step(
            "request",
            "create the endpoint",
            call="sagemaker.create_endpoint",
            params={"EndpointName": n["endpoint"], "EndpointConfigName": attempt["endpoint_config"]},
            when="endpoint missing",
        )
    )
    for step in _update_steps(n["endpoint"], attempt["endpoint_config"], n["variant"], s):
        plan.add(step)
    _finish(plan, n["endpoint"], attempt["endpoint_config"], sample)
    plan.notes.append(
        "the container answers GET /ping and POST /invocations on 8080 (JSON and CSV) and reads "
        "the model from /opt/ml/model, where SageMaker unpacks model.tar.gz"
    )
    return plan


def _finish(plan: Plan, endpoint: str, config: str, sample: list[dict[str, Any]] | None) -> None:
    plan.add(
        Step(
            "check",
            f"wait until the endpoint is in service on {config} (not rolled back)",
            call="sagemaker.get_waiter('endpoint_in_service').wait",
            params={"EndpointName": endpoint, "EndpointConfigName": config},
        )
    )
    if sample is not None:
        plan.add(
            Step(
                "check",
                "contract check: one prediction through the endpoint",
                call="sagemaker-runtime.invoke_endpoint",
                params={
                    "EndpointName": endpoint,
                    "ContentType": "application/json",
                    "Accept": "application/json",
                    "Body": json.dumps({"records": sample}, sort_keys=True, default=str),
                },
            )
        )


def update_plan(
    model: str,
    version: int,
    endpoint_config: str,
    options: SageMakerOptions,
    *,
    sample: list[dict[str, Any]] | None = None,
) -> Plan:
    """Move the model's live endpoint to ``endpoint_config`` (a configuration of ``version`` that
    exists): the rollback alarms on the new variant, then a blue/green UpdateEndpoint with the
    options' traffic shift and AutoRollbackConfiguration on those alarms, then the wait."""
    n = names(model, version)
    s = options.resolved()
    plan = Plan(
        target="sagemaker",
        model=model,
        version=version,
        action="update",
        settings={**s, "endpoint_name": n["endpoint"], "endpoint_config_name": endpoint_config},
    )
    plan.add(
        Step(
            "request",
            "find out whether the endpoint exists (a busy one is waited for)",
            call="sagemaker.describe_endpoint",
            params={"EndpointName": n["endpoint"]},
        )
    )
    for step in _update_steps(n["endpoint"], endpoint_config, n["variant"], s):
        plan.add(step)
    _finish(plan, n["endpoint"], endpoint_config, sample)
    return plan


def rollback_plan(model: str, version: int, previous: Mapping[str, Any], options: SageMakerOptions) -> Plan:
    """Point the endpoint back at the previous version's endpoint configuration, all at once."""
    n = names(model, version)
    previous_config = str(
        previous.get("endpoint_config") or names(model, int(previous["version"]))["endpoint_config"]
    )
    plan = Plan(
        target="sagemaker",
        model=model,
        version=int(previous["version"]),
        action="rollback",
        settings={
            **options.resolved(),
            "endpoint_name": n["endpoint"],
            "endpoint_config_name": previous_config,
            "from_version": version,
        },
    )
    plan.add(
        Step(
            "request",
            f"point the endpoint back at v{previous['version']}",
            call="sagemaker.update_endpoint",
            params={"EndpointName": n["endpoint"], "EndpointConfigName": previous_config},
        )
    )
    _finish(plan, n["endpoint"], previous_config, None)
    return plan


def placeholders(settings: Mapping[str, Any], uses: Sequence[str] = ("role", "bucket", "image")) -> list[str]:
    """The settings a real deployment would use that are still placeholders, each with its fix
    (of ``uses``, the settings the plan's calls use, and the region)."""
    found: list[str] = []
    role = str(settings.get("role") or "")
    match = _ROLE_ARN.match(role)
    if "role" in uses and ("<" in role or match is None or match.group(1) in EXAMPLE_ACCOUNTS):
        found.append(
            f"role {role!r} (pass --role or set HEADRACE_SAGEMAKER_ROLE to your execution role ARN, "
            "arn:aws:iam::ACCOUNT:role/NAME)"
        )
    bucket = str(settings.get("bucket") or "")
    if "bucket" in uses and (not bucket or "<" in bucket or bucket in EXAMPLE_BUCKETS):
        found.append(f"bucket {bucket!r} (pass --bucket or set HEADRACE_SAGEMAKER_BUCKET)")
    image = str(settings.get("image") or "")
    if "image" in uses and ("<" in image or image.split(".", 1)[0] in EXAMPLE_ACCOUNTS):
        found.append(f"image {image!r} (pass --account or set AWS_ACCOUNT_ID, or pass --image)")
    region = str(settings.get("region") or "")
    if not region or "<" in region:
        found.append(f"region {region!r} (pass --region or set AWS_REGION)")
    return found


def refuse_placeholders(plan: Plan) -> None:
    """Refuse, before any AWS call, a plan that still holds placeholder values."""
    calls = {s.call for s in plan.steps} | {s.argv[0] for s in plan.steps if s.argv}
    uses = [
        name
        for name, call in (
            ("role", "sagemaker.create_model"),
            ("bucket", "s3.upload_file"),
            ("image", "docker"),
        )
        if call in calls or (name == "image" and "sagemaker.create_model" in calls)
    ]
    found = placeholders(plan.settings, uses)
    if found:
        raise UsageError(
            f"the SageMaker {plan.action} of {plan.model}@{plan.version} still has placeholder values: "
            + "; ".join(found),
            hint="set them to your own (--dry-run shows the plan without them)",
        )


def available() -> str | None:
    """None when boto3 and AWS credentials are present, else why not."""
    try:
        import boto3  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "boto3 is not installed (pip install boto3)"
    if boto3.Session().get_credentials() is None:
        return "no AWS credentials are configured (aws configure, or AWS_* variables)"
    return None


_HINTS = (
    ("instancetype", "pass --instance-type with an instance type SageMaker hosts (e.g. ml.m5.large)"),
    ("nosuchbucket", "create the bucket (aws s3 mb s3://BUCKET) or pass --bucket with an existing one"),
    ("accessdenied", "grant the credentials (and the execution role) the SageMaker, S3 and CloudWatch calls"),
    (
        "notauthorized",
        "grant the credentials (and the execution role) the SageMaker, S3 and CloudWatch calls",
    ),
    ("resourcelimitexceeded", "ask AWS for a higher quota of this instance type, or use another type"),
)


def aws_error(exc: BaseException, what: str) -> HeadraceError:
    """A boto3 / botocore failure as one line naming the step and the fix; throttling and
    unreachable endpoints are transient."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping) and "Error" in response:
        code = str(response["Error"].get("Code") or "Error")
        message = " ".join(str(response["Error"].get("Message") or "").split())
        lowered = f"{code} {message}".lower().replace(" ", "").replace("_", "")
        if code in ("ThrottlingException", "Throttling", "ServiceUnavailable", "InternalFailure"):
            return ServiceUnavailable(f"{what} failed: {code}: {message}", hint="retry in a minute")
        hint = next((h for key, h in _HINTS if key in lowered), "fix what AWS names and run the deploy again")
        return HeadraceError(f"{what} failed: {code}: {message}", hint=hint)
    name = type(exc).__name__
    if name in (
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
    ):
        return ServiceUnavailable(
            f"{what} failed: AWS is not reachable ({exc})",
            hint="check the network, --region and AWS_ENDPOINT_URL, then run the deploy again",
        )
    if name == "WaiterError":
        return HeadraceError(f"{what} failed: {exc}", hint="see the endpoint's FailureReason in the console")
    return HeadraceError(f"{what} failed: {name}: {exc}", hint="run the deploy again; it resumes")


class _Run:
    """One execution of a plan: the clients, what was found, and a record of every step."""

    def __init__(self, plan: Plan, bundle_dir: Path, steps: list[dict[str, Any]]) -> None:
        import boto3

        self.plan, self.bundle_dir, self.steps = plan, bundle_dir, steps
        self.session = boto3.Session(region_name=plan.settings["region"])
        self.endpoint_url = plan.settings.get("endpoint_url")
        self.clients: dict[str, Any] = {}
        self.state: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self.clients:
            extra = {"endpoint_url": self.endpoint_url} if self.endpoint_url else {}
            self.clients[service] = self.session.client(service, **extra)
        return self.clients[service]

    def note(self, step: Step, outcome: str, started: float, **facts: Any) -> None:
        self.steps.append(
            {
                "step": step.title,
                "call": step.call or " ".join(step.argv[:2]),
                "outcome": outcome,
                "seconds": round(time.monotonic() - started, 3),
                **facts,
            }
        )

    def exists(self, call: Callable[..., Any], **params: Any) -> bool:
        try:
            call(**params)
            return True
        except (
            Exception
        ) as exc:  # botocore's ClientError: SageMaker says ValidationException "Could not find"
            message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", exc)).lower()
            if "could not find" in message or "does not exist" in message or "not found" in message:
                return False
            raise

    def endpoint(self, name: str) -> dict[str, Any] | None:
        sm = self.client("sagemaker")
        try:
            return dict(sm.describe_endpoint(EndpointName=name))
        except Exception as exc:
            message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", exc)).lower()
            if "could not find" in message:
                return None
            raise


BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed", "Deleting")


def execute(plan: Plan, bundle_dir: Path, *, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Carry a deploy, update or rollback plan out with boto3 (and docker for the image).

    Placeholders are refused before any call. Each step is recorded in ``steps`` (a list the caller
    passes to keep the records when a step fails): the step, the call, its outcome (``created``,
    ``reused``, ``skipped``, ``updated``, ``in service``, ``failed``...), and how long it took. Every
    step can be run again: a model or endpoint configuration this attempt made is reused, a failed
    endpoint is deleted and created again, an endpoint busy updating is waited for, an endpoint
    already serving the configuration is left alone. Returns the endpoint's answer to the contract
    check (when the plan has one) and the names it ended on."""
    refuse_placeholders(plan)
    reason = available()
    if reason is not None:
        raise UsageError(f"cannot deploy to SageMaker: {reason}", hint="pass --dry-run to see the plan")
    run = _Run(plan, bundle_dir, steps if steps is not None else [])
    answer: dict[str, Any] = {}
    for step in plan.steps:
        started = time.monotonic()
        if step.when is not None and not _applies(run, step):
            made = step.when in ("model missing", "endpoint config missing")
            run.note(step, "reused" if made else "skipped", started, reason=f"not {step.when}")
            continue
        log.info("sagemaker: %s", step.title)
        try:
            outcome, facts = _run_step(run, step)
        except HeadraceError as exc:
            run.note(step, "failed", started, error=exc.one_line())
            raise
        except Exception as exc:
            error = aws_error(exc, f"SageMaker step '{step.title}'")
            run.note(step, "failed", started, error=error.one_line())
            raise error from None
        if "answer" in facts:
            answer = facts.pop("answer")
        run.note(step, outcome, started, **facts)
    return {
        "answer": answer,
        "endpoint": plan.settings.get("endpoint_name"),
        "endpoint_config": plan.settings.get("endpoint_config_name"),
        "model_name": plan.settings.get("model_name"),
    }


def _applies(run: _Run, step: Step) -> bool:
    state = run.state
    if step.when == "repository missing":
        ecr = run.client("ecr")
        try:
            ecr.describe_repositories(repositoryNames=[step.params["repositoryName"]])
            return False
        except ecr.exceptions.RepositoryNotFoundException:
            return True
    if step.when == "model missing":
        sm = run.client("sagemaker")
        return not run.exists(sm.describe_model, ModelName=step.params["ModelName"])
    if step.when == "endpoint config missing":
        sm = run.client("sagemaker")
        return not run.exists(
            sm.describe_endpoint_config, EndpointConfigName=step.params["EndpointConfigName"]
        )
    if step.when == "endpoint missing":
        return state.get("endpoint") is None
    if step.when == "endpoint exists":
        current = state.get("endpoint")
        # an endpoint already serving this configuration needs neither alarms nor an update
        return current is not None and current.get("EndpointConfigName") != state.get("config")
    raise UsageError(f"unknown step condition {step.when!r} in the plan", hint="rebuild the plan")


def _run_step(run: _Run, step: Step) -> tuple[str, dict[str, Any]]:
    plan, state = run.plan, run.state
    if step.kind == "command":
        if shutil.which(step.argv[0]) is None:
            raise UsageError(f"{step.argv[0]} is not installed", hint=f"install it to {step.title}")
        stdin = state.get("token", "") if "--password-stdin" in step.argv else None
        subprocess.run(list(step.argv), cwd=run.bundle_dir, input=stdin, text=True, check=True)
        return "done", {}
    assert step.call is not None
    service, _, operation = step.call.partition(".")
    if step.call == "ecr.get_authorization_token":
        import base64

        data = run.client("ecr").get_authorization_token()["authorizationData"][0]
        state["token"] = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)[1]
        return "done", {}
    if step.call == "s3.upload_file":
        path = run.bundle_dir / step.params["Filename"]
        if not path.is_file():
            raise UsageError(f"{path} does not exist", hint="rebuild the bundle with 'headrace build MODEL'")
        run.client("s3").upload_file(str(path), step.params["Bucket"], step.params["Key"])
        return "uploaded", {"uri": f"s3://{step.params['Bucket']}/{step.params['Key']}"}
    if step.call == "sagemaker.describe_endpoint":
        name = step.params["EndpointName"]
        state["config"] = plan.settings.get("endpoint_config_name")
        current = run.endpoint(name)
        sm = run.client("sagemaker")
        if current is not None and current.get("EndpointStatus") in BUSY:
            sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 15})
            current = run.endpoint(name)
        if current is not None and current.get("EndpointStatus") == "Failed":
            # a failed endpoint can only be deleted; the step after this creates it again
            sm.delete_endpoint(EndpointName=name)
            sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig={"Delay": 15})
            state["endpoint"] = None
            return "deleted a failed endpoint", {"failure": current.get("FailureReason")}
        state["endpoint"] = current
        if current is None and plan.action == "update":
            raise NotFound(
                f"SageMaker endpoint {name} does not exist, so it cannot be updated",
                hint=f"deploy the model first: headrace deploy {plan.model} --target sagemaker",
            )
        if current is None:
            return "missing", {}
        state["from_config"] = current.get("EndpointConfigName")
        return "found", {"status": current.get("EndpointStatus"), "config": current.get("EndpointConfigName")}
    if step.call.startswith("sagemaker.get_waiter"):
        name, config = step.params["EndpointName"], step.params.get("EndpointConfigName")
        sm = run.client("sagemaker")
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 15})
        current = run.endpoint(name) or {}
        if config and current.get("EndpointConfigName") != config:
            raise HeadraceError(
                f"SageMaker endpoint {name} is back on {current.get('EndpointConfigName')}, not {config}: "
                f"the update was rolled back ({current.get('FailureReason') or 'an alarm fired'})",
                hint="see the alarms and the endpoint's events; the previous version still serves",
            )
        return "in service", {"config": current.get("EndpointConfigName")}
    if step.call == "sagemaker-runtime.invoke_endpoint":
        response = run.client("sagemaker-runtime").invoke_endpoint(**step.params)
        body = response["Body"].read()
        try:
            document = json.loads(body)
        except ValueError:
            document = {"raw": body.decode("utf-8", "replace")[:2000]}
        return "answered", {"answer": document if isinstance(document, dict) else {"answer": document}}
    if step.call == "sagemaker.update_endpoint" and plan.action == "rollback":
        current = run.endpoint(step.params["EndpointName"])
        if current is not None and current.get("EndpointConfigName") == step.params["EndpointConfigName"]:
            return "already serving", {}
    getattr(run.client(service), operation)(**step.params)
    outcome = {
        "create_model": "created",
        "create_endpoint_config": "created",
        "create_endpoint": "created",
        "update_endpoint": "updating",
        "put_metric_alarm": "set",
    }.get(operation, "done")
    facts: dict[str, Any] = {}
    if operation == "update_endpoint":
        facts["from_config"] = state.get("from_config")
        facts["to_config"] = step.params["EndpointConfigName"]
    elif operation == "put_metric_alarm":
        facts["alarm"] = step.params["AlarmName"]
    return outcome, facts
