"""Deployment: bundles (``headrace build``) and their deployment to local, Kubernetes, SageMaker
and Azure ML targets (``headrace deploy``), with dry runs, contract checks and rollback."""

from __future__ import annotations

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
