"""moto's AWS server, run as its own process by the SageMaker tests, with the SageMaker behaviour a
deployment depends on that moto (5.x) leaves out, added the way the real service behaves:

- ``UpdateEndpoint`` (moto has none): the endpoint must exist and be ``InService``, the new endpoint
  configuration must exist, and a ``DeploymentConfig`` is checked for a known traffic routing type with
  its size; the update completes at once (the endpoint is ``InService`` on the new configuration and
  ``DescribeEndpoint`` reports ``LastDeploymentConfig``).
- ``CreateModel``, ``CreateEndpointConfig`` and ``CreateEndpoint`` refuse a name that exists, with
  SageMaker's own message ("Cannot create already existing ..."); moto silently overwrites, which
  would hide exactly the failure a retried deployment must not run into.

Everything else (S3, CloudWatch alarms, the rest of SageMaker) is moto's. Usage, as moto's server:
``python aws_emulator.py -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import sys
from typing import Any

from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.sagemaker import models, responses
from moto.sagemaker.exceptions import ValidationError

Backend = models.SageMakerModelBackend

ROUTING = {"ALL_AT_ONCE": None, "CANARY": "CanarySize", "LINEAR": "LinearStepSize"}


def _refuse_existing(kind: str, arn_kind: str, table: str, create: Any) -> Any:
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        name = kwargs.get(f"{kind}_name") if kwargs else args[0]
        if name in getattr(self, table):
            arn = models.arn_formatter(arn_kind, name, self.account_id, self.region_name)
            label = kind.replace("_", " ").replace("config", "configuration")
            raise ValidationError(message=f'Cannot create already existing {label} "{arn}".')
        return create(self, *args, **kwargs)

    return wrapped


def update_endpoint(
    self: Any, endpoint_name: str, endpoint_config_name: str, deployment_config: dict[str, Any] | None
) -> str:
    endpoint = self.endpoints.get(endpoint_name)
    if endpoint is None:
        arn = models.FakeEndpoint.arn_formatter(endpoint_name, self.account_id, self.region_name)
        raise ValidationError(message=f"Could not find endpoint '{arn}'.")
    if endpoint.endpoint_status != "InService":
        raise ValidationError(
            message=f"Cannot update in-progress endpoint '{endpoint.arn}' "
            f"(status {endpoint.endpoint_status})."
        )
    config = self.describe_endpoint_config(endpoint_config_name)  # refuses a missing one
    if deployment_config:
        routing = (deployment_config.get("BlueGreenUpdatePolicy") or {}).get("TrafficRoutingConfiguration")
        if not routing or routing.get("Type") not in ROUTING:
            raise ValidationError(
                message="TrafficRoutingConfiguration.Type must be one of ALL_AT_ONCE, CANARY, LINEAR."
            )
        size = ROUTING[routing["Type"]]
        if size is not None and size not in routing:
            raise ValidationError(message=f"{size} is required for {routing['Type']} traffic routing.")
    endpoint.endpoint_config_name = endpoint_config_name
    endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
    endpoint.last_deployment_config = deployment_config
    endpoint.last_modified_time = utcnow()
    return str(endpoint.arn)


def update_endpoint_response(self: Any) -> ActionResult:
    arn = self.sagemaker_backend.update_endpoint(
        endpoint_name=self._get_param("EndpointName"),
        endpoint_config_name=self._get_param("EndpointConfigName"),
        deployment_config=self._get_param("DeploymentConfig"),
    )
    return ActionResult({"EndpointArn": arn})


def install() -> None:
    Backend.update_endpoint = update_endpoint  # type: ignore[attr-defined]
    responses.SageMakerResponse.update_endpoint = update_endpoint_response  # type: ignore[attr-defined]
    Backend.create_model = _refuse_existing("model", "model", "_models", Backend.create_model)  # type: ignore[method-assign]
    Backend.create_endpoint_config = _refuse_existing(  # type: ignore[method-assign]
        "endpoint_config", "endpoint-config", "endpoint_configs", Backend.create_endpoint_config
    )
    Backend.create_endpoint = _refuse_existing(  # type: ignore[method-assign]
        "endpoint", "endpoint", "endpoints", Backend.create_endpoint
    )


if __name__ == "__main__":
    install()
    from moto.server import main

    main(sys.argv[1:])
