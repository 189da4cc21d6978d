"""Azure ML managed online endpoints: the files the bundle carries and the SDK requests a deployment makes.

The bundle's ``azureml/`` folder holds ``endpoint.yml`` and ``deployment.yml`` (the schemas ``az ml
online-endpoint create`` and ``az ml online-deployment create`` read), ``environment.yml`` and
``conda.yaml`` (the pinned packages plus Azure's inference server); the scoring script ``score.py``
(``init()`` loads the model from ``AZUREML_MODEL_DIR``, ``run(raw_data)`` answers a JSON request)
sits in ``app/`` next to the bundle's copy of headrace, which is the deployment's code folder.

A deployment is blue/green by Azure's own means: each version is a deployment named ``vN`` under
one endpoint, and traffic moves to it (``--canary PERCENT`` first moves only a share); a rollback
moves traffic back to the previous deployment.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import HeadraceError, NotFound, ServiceUnavailable, UsageError
from .plan import Plan, Step

__all__ = ["AzureMLOptions", "azure_error", "azureml_files", "azureml_plan", "execute", "rollback_plan"]

log = logging.getLogger("headrace.deploy.azureml")

BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
INFERENCE_SERVER = "azureml-inference-server-http>=1.3,<2"


@dataclass(frozen=True)
class AzureMLOptions:
    subscription: str | None = None
    resource_group: str | None = None
    workspace: str | None = None
    instance_type: str = "Standard_DS3_v2"
    instance_count: int = 1
    canary_percent: int | None = None  # None: all traffic moves once the deployment is healthy

    def resolved(self) -> dict[str, Any]:
        return {
            "subscription_id": self.subscription or "<SUBSCRIPTION_ID>",
            "resource_group": self.resource_group or "<RESOURCE_GROUP>",
            "workspace": self.workspace or "<WORKSPACE>",
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "canary_percent": self.canary_percent,
        }


def names(model: str, version: int) -> dict[str, str]:
    # endpoint names: 3-32 characters, letters, digits and '-', starting with a letter
    base = "headrace-" + "".join(c if c.isalnum() else "-" for c in model.lower()).strip("-")
    return {
        "endpoint": base[:32].rstrip("-"),
        "deployment": f"v{version}",
        "model": base,
        "environment": base,
    }


def _dump(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False)


def azureml_files(info: Mapping[str, Any], requirements: Sequence[str], python: str) -> dict[str, str]:
    """``azureml/*`` file name -> content, for a bundle described by ``info`` (bundle.json)."""
    model, version = str(info["model"]), int(info["version"])
    n = names(model, version)
    options = AzureMLOptions()
    endpoint = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json",
        "name": n["endpoint"],
        "description": f"headrace model {model}",
        "auth_mode": "key",
        "tags": {"headrace_model": model},
    }
    deployment = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
        "name": n["deployment"],
        "endpoint_name": n["endpoint"],
        "model": {"name": n["model"], "version": str(version), "path": "../model"},
        "code_configuration": {"code": "../app", "scoring_script": "score.py"},
        "environment": {
            "name": n["environment"],
            "version": str(version),
            "image": BASE_IMAGE,
            "conda_file": "conda.yaml",
        },
        "environment_variables": {"HEADRACE_LOG_FORMAT": "json"},
        "instance_type": options.instance_type,
        "instance_count": options.instance_count,
        "request_settings": {"request_timeout_ms": 5000, "max_concurrent_requests_per_instance": 4},
        "liveness_probe": {"initial_delay": 30, "period": 10, "timeout": 2, "failure_threshold": 3},
        "readiness_probe": {"initial_delay": 10, "period": 10, "timeout": 2, "failure_threshold": 3},
        "tags": {"headrace_model": model, "headrace_version": str(version)},
    }
    environment = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/environment.schema.json",
        "name": n["environment"],
        "version": str(version),
        "image": BASE_IMAGE,
        "conda_file": "conda.yaml",
        "description": f"pinned packages of headrace model {model}@{version}",
    }
    conda = {
        "name": n["environment"],
        "channels": ["conda-forge"],
        "dependencies": [f"python={python}", "pip", {"pip": [*requirements, INFERENCE_SERVER]}],
    }
    return {
        "endpoint.yml": _dump(endpoint),
        "deployment.yml": _dump(deployment),
        "environment.yml": _dump(environment),
        "conda.yaml": _dump(conda),
    }


def _deployment_params(info: Mapping[str, Any], n: Mapping[str, str], s: Mapping[str, Any]) -> dict[str, Any]:
    version = int(info["version"])
    return {
        "deployment": {
            "type": "ManagedOnlineDeployment",
            "name": n["deployment"],
            "endpoint_name": n["endpoint"],
            "model": {"type": "Model", "name": n["model"], "version": str(version), "path": "model"},
            "environment": {
                "type": "Environment",
                "name": n["environment"],
                "version": str(version),
                "image": BASE_IMAGE,
                "conda_file": "azureml/conda.yaml",
            },
            "code_configuration": {"type": "CodeConfiguration", "code": "app", "scoring_script": "score.py"},
            "environment_variables": {"HEADRACE_LOG_FORMAT": "json"},
            "instance_type": s["instance_type"],
            "instance_count": s["instance_count"],
        }
    }


def azureml_plan(info: Mapping[str, Any], options: AzureMLOptions, sample: list[dict[str, Any]]) -> Plan:
    """Every Azure ML SDK (azure-ai-ml) request a deployment of the bundle makes, in order."""
    model, version = str(info["model"]), int(info["version"])
    n = names(model, version)
    s = options.resolved()
    plan = Plan(
        target="azureml",
        model=model,
        version=version,
        settings={**s, "endpoint_name": n["endpoint"], "deployment_name": n["deployment"]},
    )
    plan.add(
        Step(
            "request",
            "connect to the workspace",
            call="azure.ai.ml.MLClient",
            params={
                "credential": "DefaultAzureCredential()",
                "subscription_id": s["subscription_id"],
                "resource_group_name": s["resource_group"],
                "workspace_name": s["workspace"],
            },
        )
    )
    plan.add(
        Step(
            "request",
            "find out whether the endpoint exists (and which deployment takes traffic)",
            call="ml_client.online_endpoints.get",
            params={"name": n["endpoint"]},
        )
    )
    plan.add(
        Step(
            "request",
            "create the managed online endpoint",
            call="ml_client.online_endpoints.begin_create_or_update",
            params={
                "endpoint": {
                    "type": "ManagedOnlineEndpoint",
                    "name": n["endpoint"],
                    "auth_mode": "key",
                    "description": f"headrace model {model}",
                    "tags": {"headrace_model": model},
                }
            },
            when="endpoint missing",
        )
    )
    plan.add(
        Step(
            "request",
            f"create deployment {n['deployment']} (model, pinned environment, score.py)",
            call="ml_client.online_deployments.begin_create_or_update",
            params=_deployment_params(info, n, s),
        )
    )
    plan.add(
        Step(
            "check",
            "contract check: score one request against the new deployment only",
            call="ml_client.online_endpoints.invoke",
            params={
                "endpoint_name": n["endpoint"],
                "deployment_name": n["deployment"],
                "request_file": "azureml/sample-request.json",
            },
        )
    )
    canary = s["canary_percent"]
    if canary:
        plan.add(
            Step(
                "request",
                f"canary: move {canary}% of the traffic to {n['deployment']}",
                call="ml_client.online_endpoints.begin_create_or_update",
                params={
                    "endpoint": {
                        "name": n["endpoint"],
                        "traffic": {n["deployment"]: canary, "<LIVE>": 100 - canary},
                    }
                },
                when="endpoint exists",
            )
        )
    plan.add(
        Step(
            "request",
            f"switch all traffic to {n['deployment']} (the previous deployment stays for rollback)",
            call="ml_client.online_endpoints.begin_create_or_update",
            params={"endpoint": {"name": n["endpoint"], "traffic": {n["deployment"]: 100}}},
        )
    )
    plan.notes.append(
        "the same with the az CLI, from the bundle's azureml/ folder: az ml online-endpoint create -f "
        "endpoint.yml; az ml online-deployment create -f deployment.yml; az ml online-endpoint update "
        f"--name {n['endpoint']} --traffic '{n['deployment']}=100'"
    )
    plan.notes.append(f"sample request: {json.dumps({'records': sample}, sort_keys=True, default=str)}")
    return plan


def rollback_plan(model: str, version: int, previous: Mapping[str, Any], options: AzureMLOptions) -> Plan:
    n = names(model, version)
    back = names(model, int(previous["version"]))["deployment"]
    plan = Plan(
        target="azureml",
        model=model,
        version=int(previous["version"]),
        action="rollback",
        settings={**options.resolved(), "endpoint_name": n["endpoint"], "from_version": version},
    )
    plan.add(
        Step(
            "request",
            "connect to the workspace",
            call="azure.ai.ml.MLClient",
            params={
                "credential": "DefaultAzureCredential()",
                "subscription_id": plan.settings["subscription_id"],
                "resource_group_name": plan.settings["resource_group"],
                "workspace_name": plan.settings["workspace"],
            },
        )
    )
    plan.add(
        Step(
            "request",
            f"move all traffic back to {back}",
            call="ml_client.online_endpoints.begin_create_or_update",
            params={"endpoint": {"name": n["endpoint"], "traffic": {back: 100, n["deployment"]: 0}}},
        )
    )
    return plan


def available() -> str | None:
    try:
        import azure.ai.ml  # type: ignore[import-not-found,unused-ignore]
        import azure.identity  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return "the Azure ML SDK is not installed (pip install azure-ai-ml azure-identity)"
    return None


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return int(status) if isinstance(status, int) else None


def azure_error(exc: BaseException, what: str, settings: Mapping[str, Any]) -> HeadraceError:
    """An Azure SDK failure as one line naming the thing and the fix. Classified by the exception's
    class (and its bases: azure-core's ``ClientAuthenticationError``, ``ResourceNotFoundError``,
    ``HttpResponseError``, ``ServiceRequestError``; azure-identity's ``CredentialUnavailableError``)
    and HTTP status, so it needs no Azure package to import:

    - authentication (401, or no credential found) and authorization (403): ``UsageError``;
    - the workspace (or its resource group) not found: ``NotFound`` naming the workspace;
    - an endpoint or deployment not found: ``NotFound`` with ``missing = "endpoint"``;
    - throttling, 5xx and unreachable service: ``ServiceUnavailable`` (transient);
    - anything else: ``HeadraceError`` with the SDK's first line.
    """
    names, status = _names(exc), _status(exc)
    text = " ".join(str(getattr(exc, "message", None) or exc).split())
    first = text[:300]
    workspace = (
        f"workspace {settings.get('workspace')!r} (resource group {settings.get('resource_group')!r}, "
        f"subscription {settings.get('subscription_id')!r})"
    )
    if names & {"ClientAuthenticationError", "CredentialUnavailableError"} or status == 401:
        return UsageError(
            f"Azure ML refused the credentials while trying to {what}: {first}",
            hint="sign in with 'az login', or set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET "
            "for DefaultAzureCredential",
        )
    if status == 403 or "AuthorizationFailed" in text:
        return UsageError(
            f"Azure ML denied access to {workspace} while trying to {what}: {first}",
            hint="grant the signed-in identity a role on the workspace (e.g. AzureML Data Scientist)",
        )
    if "ResourceNotFoundError" in names or status == 404:
        lowered = text.lower()
        if "resourcegroupnotfound" in lowered or "resource group" in lowered or "workspace" in lowered:
            return NotFound(
                f"Azure ML {workspace} was not found while trying to {what}: {first}",
                hint="check --subscription, --resource-group and --workspace (az ml workspace list)",
            )
        error = NotFound(
            f"the Azure ML endpoint {settings.get('endpoint_name')!r} (or its deployment) was not found "
            f"in {workspace} while trying to {what}: {first}",
            hint="deploy it first with 'headrace deploy MODEL --target azureml'",
        )
        error.missing = "endpoint"  # type: ignore[attr-defined]
        return error
    if (
        names & {"ServiceRequestError", "ServiceResponseError"}
        or status in (408, 429)
        or (status or 0) >= 500
    ):
        return ServiceUnavailable(
            f"Azure ML did not answer while trying to {what}: {first}", hint="retry in a minute"
        )
    return HeadraceError(
        f"Azure ML failed to {what}: {type(exc).__name__}: {first}",
        hint="fix what Azure names (the deployment's logs: az ml online-deployment get-logs) and run again",
    )


def execute(plan: Plan, bundle_dir: Path) -> dict[str, Any]:
    """Carry the plan out with the azure-ai-ml SDK (credentials through DefaultAzureCredential);
    every SDK failure is classified by :func:`azure_error`."""
    reason = available()
    if reason is not None:
        raise UsageError(f"cannot deploy to Azure ML: {reason}", hint="pass --dry-run to see the plan")
    current = ["connect to the workspace"]
    try:
        return _execute(plan, bundle_dir, current)
    except HeadraceError:
        raise
    except Exception as exc:
        raise azure_error(exc, current[0], plan.settings) from None


def _execute(plan: Plan, bundle_dir: Path, current: list[str]) -> dict[str, Any]:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import (
        CodeConfiguration,
        Environment,
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
        Model,
    )
    from azure.identity import DefaultAzureCredential

    def entity(spec: Mapping[str, Any]) -> Any:
        kinds = {
            "ManagedOnlineEndpoint": ManagedOnlineEndpoint,
            "ManagedOnlineDeployment": ManagedOnlineDeployment,
            "Model": Model,
            "Environment": Environment,
            "CodeConfiguration": CodeConfiguration,
        }
        fields = {
            k: entity(v) if isinstance(v, Mapping) and "type" in v else v
            for k, v in spec.items()
            if k != "type"
        }
        for key in ("path", "code", "conda_file"):
            if key in fields:
                fields[key] = str(bundle_dir / fields[key])
        return kinds[str(spec["type"])](**fields)

    client: Any = None
    endpoint: Any = None
    answer: dict[str, Any] = {}
    for step in plan.steps:
        current[0] = step.title
        log.info("azureml: %s", step.title)
        if step.call == "azure.ai.ml.MLClient":
            params = {k: v for k, v in step.params.items() if k != "credential"}
            client = MLClient(DefaultAzureCredential(), **params)
        elif step.call == "ml_client.online_endpoints.get":
            try:
                endpoint = client.online_endpoints.get(**step.params)
            except Exception as exc:
                error = azure_error(exc, step.title, plan.settings)
                if getattr(error, "missing", None) != "endpoint":
                    raise error from None
                endpoint = None  # the endpoint is created by the next step
        elif (step.when == "endpoint missing" and endpoint is not None) or (
            step.when == "endpoint exists" and endpoint is None
        ):
            continue
        elif step.call == "ml_client.online_endpoints.invoke":
            params = dict(step.params)
            params["request_file"] = str(bundle_dir / params["request_file"])
            answer = json.loads(client.online_endpoints.invoke(**params))
        elif step.call == "ml_client.online_deployments.begin_create_or_update":
            client.online_deployments.begin_create_or_update(entity(step.params["deployment"])).result()
        elif step.call == "ml_client.online_endpoints.begin_create_or_update":
            spec = step.params["endpoint"]
            if "traffic" in spec:
                existing = client.online_endpoints.get(spec["name"])
                live = max(dict(existing.traffic or {}).items(), key=lambda kv: kv[1], default=(None, 0))[0]
                traffic = {
                    (live if k == "<LIVE>" else k): v
                    for k, v in spec["traffic"].items()
                    if k != "<LIVE>" or live
                }
                existing.traffic = traffic
                client.online_endpoints.begin_create_or_update(existing).result()
            else:
                client.online_endpoints.begin_create_or_update(entity(spec)).result()
    return answer
