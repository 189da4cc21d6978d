"""Deployment: bundles (``headrace build``) and their deployment to local, Kubernetes, SageMaker
and Azure ML targets (``headrace deploy``), with dry runs, contract checks and rollback.

The names below are imported on first use (PEP 562): the bundle's runtime (``headrace.deploy.runtime``)
lives in this package and must not pull the builder's dependencies into every served container.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bundle import Bundle, build_bundle, lint_dockerfile, write_bundle
    from .kubernetes import ValidationReport, manifests, validate_manifests
    from .plan import Plan, Step
    from .targets import TARGETS, DeployOptions, DeployResult, deploy, local_status, rollback, stop_local

__all__ = [
    "TARGETS",
    "Bundle",
    "DeployOptions",
    "DeployResult",
    "Plan",
    "Step",
    "ValidationReport",
    "build_bundle",
    "deploy",
    "lint_dockerfile",
    "local_status",
    "manifests",
    "rollback",
    "stop_local",
    "validate_manifests",
    "write_bundle",
]

_WHERE = {
    "Bundle": "bundle",
    "build_bundle": "bundle",
    "lint_dockerfile": "bundle",
    "write_bundle": "bundle",
    "ValidationReport": "kubernetes",
    "manifests": "kubernetes",
    "validate_manifests": "kubernetes",
    "Plan": "plan",
    "Step": "plan",
    "TARGETS": "targets",
    "DeployOptions": "targets",
    "DeployResult": "targets",
    "deploy": "targets",
    "local_status": "targets",
    "rollback": "targets",
    "stop_local": "targets",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'headrace.deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
