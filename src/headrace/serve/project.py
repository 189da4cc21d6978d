"""A serving app for a project: its registry, store and ``serving:`` spec; and the factory uvicorn
workers import (``--workers`` starts each worker from ``HEADRACE_PROJECT``)."""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError
from ..workspace import Workspace

__all__ = ["PROJECT_ENV", "app_from_env", "app_from_workspace", "project_gates"]

PROJECT_ENV = "HEADRACE_PROJECT"


def app_from_workspace(ws: Workspace, *, models: list[str] | None = None) -> Any:
    from ..registry import Registry
    from .app import create_app

    spec = ws.project.serving
    names = models if models else (spec.models or list(ws.project.models))
    registry = Registry(ws.meta, ws.artifacts, actor="serve")
    app = create_app(
        registry,
        spec,
        store=ws.store,
        models=names,
        title=f"headrace: {ws.project.project}",
        canary=ws.project.monitoring.canary,
        gates=project_gates(ws.project),
    )
    app.state.ui.project = ws.project  # the dashboard's thresholds and column rules
    return app


def project_gates(project: Any) -> dict[str, Any]:
    """Each model's ``promote_if`` rule: the gate the admin API and the dashboard promote apply."""
    return {name: spec.promote_if for name, spec in project.models.items()}


def app_from_env() -> Any:
    """The app for the project named by ``HEADRACE_PROJECT`` (what each uvicorn worker imports)."""
    path = os.environ.get(PROJECT_ENV)
    if not path:
        raise ConfigError(f"{PROJECT_ENV} is not set", hint="start the server with 'headrace serve'")
    models = [m for m in os.environ.get("HEADRACE_SERVE_MODELS", "").split(",") if m]
    return app_from_workspace(Workspace.open(path), models=models or None)
