"""Serving: the REST API (predictions, the Open Inference Protocol v2, recommendations, metrics),
the fast path that compiles fitted pipelines, the prediction log and the hot swap of champions."""

from __future__ import annotations

from .app import create_app
from .errors import STATUS, status_for
from .fastpath import CompiledPipeline, NotCompilable, compile_pipeline
from .host import ModelHost, Served
from .metrics import ServeMetrics
from .project import app_from_env, app_from_workspace
from .writer import BatchWriter

__all__ = [
    "STATUS",
    "BatchWriter",
    "CompiledPipeline",
    "ModelHost",
    "NotCompilable",
    "ServeMetrics",
    "Served",
    "app_from_env",
    "app_from_workspace",
    "compile_pipeline",
    "create_app",
    "status_for",
]
