"""Liveness, readiness and the Prometheus metrics: ``GET /health/live``, ``GET /health/ready``
(503 until every served model is loaded) and ``GET /metrics`` (``headrace_*``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ..edge import json_response
from ..shared import Serving

__all__ = ["build"]


def build(s: Serving) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health/live")
    async def health_live() -> Response:
        return json_response({"status": "live"})

    @router.get("/health/ready")
    async def health_ready() -> Response:
        served = {n: m.version for n, m in s.host.served().items()}
        ready = s.host.ready()
        doc = {"status": "ready" if ready else "not ready", "models": served, "errors": s.host.errors()}
        return json_response(doc, 200 if ready else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(s.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return router
