"""The prediction API: ``create_app(registry, spec, ...)`` returns a FastAPI (ASGI) application.

Routes (see ``headrace serve --help`` and ``/docs``), one router module per concern under
``headrace.serve.routes``:

- ``predictions``: ``GET /models``, ``POST /models/{name}/predict`` (a few records, the fast path;
  image models take files or base64 images) and ``POST /models/{name}/predict/batch``;
- ``v2``: the Open Inference Protocol v2 (``/v2/...``);
- ``recommend``: ``GET /users/{user_id}/recommendations`` and ``POST /interactions`` (write token);
- ``feedback``: ``POST /feedback``, ground truth for earlier prediction ids (write token);
- ``health``: ``GET /health/live``, ``GET /health/ready``, ``GET /metrics`` (``headrace_*``);
- ``admin`` (``Authorization: Bearer <token>``): ``POST /admin/models/{name}/reload|promote|rollback``,
  promotions through the model's ``promote_if`` gate.

SageMaker's ``/ping`` and ``/invocations`` live in ``headrace.deploy.sagemaker.invocations_router``
and answer through the same shared path. What the routers share (host, metrics, writer, canary
router, token, gates) is one :class:`~headrace.serve.shared.Serving`, on ``app.state.serving``.

Hot paths read the body themselves (orjson) instead of through pydantic models: a one-row prediction
costs microseconds on the fast path and the framework must not cost a hundred times that. The
OpenAPI document still describes every body (``openapi_extra``). Errors become status codes in one
table (``headrace.serve.errors.STATUS``, applied in ``headrace.serve.edge``).

What one request may carry is bounded (``serving.limits``, checked before any per-record work), and
large bodies are parsed and validated in the worker thread pool, so ``/health/*`` and ``/metrics``
answer while a batch is checked. Writes need the write token, admin routes the admin token; a
browser's request to either also needs the dashboard's CSRF token (``headrace.serve.shared``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..config.models import PromoteRule
from ..config.serving import ServingSpec
from ..errors import ConfigError
from ..monitor.metrics import MonitorCollector
from ..monitor.routing import CanaryRouter
from ..store import Store
from .edge import JSON, Edge, Receive, Scope, Send, install_error_handlers
from .host import ModelHost, Served
from .lane import FastLane
from .metrics import ServeMetrics
from .routes import admin, feedback, health, predictions, recommend, v2
from .shared import FEEDBACK_SCHEMA, PREDICTIONS_SCHEMA, Serving
from .writer import BatchWriter

__all__ = ["create_app"]

log = logging.getLogger("headrace.serve")


def create_app(
    registry: Any,
    spec: ServingSpec | None = None,
    *,
    store: Store | None = None,
    models: list[str] | None = None,
    live: Any = None,
    title: str = "headrace",
    canary: Any = None,
    gates: Mapping[str, PromoteRule] | None = None,
) -> FastAPI:
    """The ASGI app serving ``models`` (default ``spec.models``) from ``registry``.

    ``store`` receives the prediction log, feedback and new interactions (nothing is logged without
    one); ``live`` is the recommender's live state (default: Redis at ``spec.redis_url`` when set,
    else in process); ``canary`` is ``monitoring.canary`` (None: no canary or shadow routing);
    ``gates`` maps a model to its ``promote_if`` rule, which the admin (and dashboard) promote
    applies (a model without one is promoted ungated, as ``Registry.promote`` does without a gate).
    """
    from ..recommend.live import open_live_state

    spec = spec or ServingSpec()
    token, write_token = spec.token(), spec.write_token_value()
    if token and write_token and token == write_token:
        raise ConfigError(
            f"the write token (${spec.write_token_env}) equals the admin token (${spec.admin_token_env})",
            hint="give writers (feedback, interactions) a token of their own: it must not promote",
        )
    names = list(models if models is not None else spec.models)
    metrics = ServeMetrics()
    plog = spec.prediction_log
    writer: BatchWriter | None = None
    if store is not None and plog.enabled:
        writer = BatchWriter(
            store,
            flush_seconds=plog.flush_seconds,
            batch_rows=plog.batch_rows,
            max_queue=plog.max_queue,
            schemas={plog.dataset: PREDICTIONS_SCHEMA, plog.feedback_dataset: FEEDBACK_SCHEMA},
            on_written=lambda d, n: metrics.child(metrics.log_rows, d).inc(n),
            on_dropped=lambda d, n: metrics.child(metrics.log_dropped, d).inc(n),
        )
    refreeze = {"due": False}

    def on_loaded(served: Served, previous: Served | None) -> None:
        metrics.child(metrics.load_seconds, served.name, served.version_label).set(served.load_seconds)
        if previous is not None:
            refreeze["due"] = spec.gc_freeze
            metrics.model_info.labels(previous.name, previous.version_label, _path_of(previous)).set(0)
            if previous.version != served.version:
                metrics.child(metrics.swaps, served.name).inc()
        metrics.model_info.labels(served.name, served.version_label, _path_of(served)).set(1)

    host = ModelHost(registry, names, fast_path=spec.fast_path, on_loaded=on_loaded)
    if getattr(registry, "meta", None) is not None:  # drift, live metrics, ingestion health: headrace_*
        metrics.registry.register(MonitorCollector(registry.meta))
    serving = Serving(
        registry=registry,
        spec=spec,
        host=host,
        metrics=metrics,
        # canary / shadow routing to the "challenger" alias, on every tabular route
        router=CanaryRouter(
            registry,
            names,
            canary,
            load=host.load,
            reload_seconds=spec.reload_seconds,
            log_row=(lambda row: writer.put(plog.dataset, row)) if writer is not None else None,
        ),
        live=live if live is not None else open_live_state(spec.redis_url, spec.redis_prefix),
        writer=writer,
        token=token,
        write_token=write_token,
        gates=dict(gates) if gates is not None else None,
    )

    def thaw_swapped() -> None:
        """A swapped-out model was frozen with the rest: one cycle after a swap (its last requests
        long done), thaw everything, collect what is garbage by now, and freeze the rest again."""
        if refreeze["due"]:
            refreeze["due"] = False
            gc.unfreeze()
            gc.collect()
            gc.freeze()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.sweep_dead_workers()
        await run_in_threadpool(host.check_all)
        if serving.router.active:  # a challenger there at start answers its share from the first request
            await run_in_threadpool(serving.router.refresh)
        if spec.gc_freeze:
            # What is loaded by now (libraries, models) lives as long as the server: moved out of
            # the cyclic collector's reach, a full collection no longer walks it and stalls every
            # request in flight (0.2 s each time with scikit-learn and torch loaded; see
            # benchmarks/serve.py, where this took the Redis-state p99 from 130 ms to single digits).
            gc.collect()
            gc.freeze()
        if writer is not None:
            writer.start()
        watcher = asyncio.create_task(_watch(host, spec.reload_seconds, before=thaw_swapped))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if writer is not None:
                await run_in_threadpool(writer.close)
            await serving.live.close()
            metrics.process_stopped()

    app = ServingApp(
        title=title,
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served below, with a Content-Security-Policy naming their inline script
        redoc_url=None,
        description="Predictions, the Open Inference Protocol v2, real-time recommendations and metrics.",
    )
    app.state.serving = serving
    app.state.host = host
    app.state.metrics = metrics
    app.state.writer = writer
    app.state.live = serving.live
    limits = spec.limits
    app.add_middleware(
        Edge, metrics=metrics, max_body=limits.max_body_bytes, max_headers=limits.max_header_bytes
    )
    install_error_handlers(app, metrics)
    for module in (health, predictions, v2, feedback, recommend, admin):
        _add_routes(app, module.build(serving))
    if spec.fast_lane:
        app.lane = FastLane(app, metrics, limits.max_body_bytes, limits.max_header_bytes, spec.fast_lane)

    # the dashboard under /ui: read-only pages; its promote/rollback buttons call the admin routes
    from ..ui import mount_ui

    mount_ui(app, registry, store=store, spec=spec)
    _add_security_scheme(app)
    _add_docs(app)
    return app


class ServingApp(FastAPI):
    """The FastAPI app with the fast lane in front: a request the lane matches goes straight to its
    endpoint (``headrace.serve.lane``); every other request takes FastAPI's way."""

    lane: FastLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.lane
        if lane is not None and scope["type"] == "http" and self.middleware_stack is not None:
            found = lane.match(scope)
            if found is not None:
                await lane(scope, receive, send, found)
                return
        await super().__call__(scope, receive, send)


# what the API documentation pages load: Swagger UI and ReDoc from their CDN, fonts from Google
_DOCS_SOURCES = "https://cdn.jsdelivr.net"
_FONTS = "font-src 'self' https://fonts.gstatic.com"
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.S)


def _docs_csp(html: str) -> str:
    """A policy for an API documentation page: its CDN, and its inline script and style by hash
    (no 'unsafe-inline' script)."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for tag, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes[tag].append(f"'sha256-{digest}'")
    return (
        f"default-src 'self'; script-src 'self' {_DOCS_SOURCES} {' '.join(hashes['script'])}; "
        f"style-src 'self' {_DOCS_SOURCES} https://fonts.googleapis.com {' '.join(hashes['style'])}; "
        f"style-src-attr 'unsafe-inline'; {_FONTS}; img-src 'self' data: https:; "
        "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def _add_docs(app: FastAPI) -> None:
    def page(make: Callable[[], HTMLResponse]) -> Callable[[], Any]:
        async def endpoint() -> HTMLResponse:
            response = make()
            html = bytes(response.body).decode()
            response.headers["Content-Security-Policy"] = _docs_csp(html)
            return response

        return endpoint

    openapi_url = app.openapi_url or "/openapi.json"
    app.add_api_route(
        "/docs",
        page(lambda: get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - Swagger UI")),
        include_in_schema=False,
    )
    app.add_api_route(
        "/redoc",
        page(lambda: get_redoc_html(openapi_url=openapi_url, title=f"{app.title} - ReDoc")),
        include_in_schema=False,
    )


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """The router's routes, added to the app itself. Not ``include_router``: since FastAPI 0.165 an
    included router is matched through a layer of its own on every request (about 190 more Python
    calls and 20-40 us for a one-row prediction, measured in process), and these routers have no
    prefix or dependencies to keep."""
    for route in router.routes:
        assert isinstance(route, APIRoute)
        responses = {**_error_responses(route), **route.responses}
        if route.path == "/metrics":
            responses[200] = {"description": "Prometheus text format", "content": {"text/plain": {}}}
        app.router.add_api_route(
            route.path,
            route.endpoint,
            methods=sorted(route.methods or ()),
            name=route.name,
            tags=route.tags,
            status_code=route.status_code,
            openapi_extra=route.openapi_extra,
            include_in_schema=route.include_in_schema,
            responses=responses,
        )


_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_WHY = {
    400: "the model cannot answer this kind of request (one line says what to use)",
    401: "no valid bearer token",
    403: "no token is configured for this route, or a browser's request came without the CSRF token",
    404: "no such model or version",
    409: "refused by the promote_if gate, or a registry conflict",
    413: "more than serving.limits allow (body, records, items)",
    415: "the body is not JSON (or a documented binary type)",
    422: "the body or a parameter is invalid: each problem names its field",
    431: "the request's headers are larger than serving.limits.max_header_bytes",
    503: "the model is not loaded yet",
}


def _error_responses(route: APIRoute) -> dict[int | str, dict[str, Any]]:
    """The error answers a route can give, each in the one error shape (``Error``)."""
    codes = {431}
    extra = route.openapi_extra or {}
    if "POST" in (route.methods or ()):
        codes |= {413, 415, 422}
    if "{" in route.path or route.path == "/interactions":
        codes |= {400, 404, 422, 503}
    if extra.get("security"):
        codes |= {401, 403}
    if route.path.startswith("/admin/"):
        codes |= {409}
    out: dict[int | str, dict[str, Any]] = {
        code: {"description": _WHY[code], "content": {JSON: {"schema": _ERROR_REF}}} for code in sorted(codes)
    }
    if route.path in ("/health/ready", "/v2/health/ready"):  # not ready: the same shape as ready
        out[503] = {"description": "a served model is not loaded yet", "content": {JSON: {"schema": {}}}}
    return out


_PROBLEM = {
    "type": "object",
    "required": ["loc", "msg", "type"],
    "properties": {
        "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
        "msg": {"type": "string"},
        "type": {"type": "string"},
    },
}
_ERROR_SCHEMA = {
    "type": "object",
    "description": "every error: one line naming the thing and the fix, or (422) each problem by field",
    "required": ["detail", "error"],
    "properties": {
        "detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": _PROBLEM}]},
        "error": {"type": "string", "description": "the error class"},
        "problems": {"type": "integer", "description": "problems found, when more than those listed"},
    },
}


def _add_security_scheme(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {})
            components.setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
            components.setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def _watch(host: ModelHost, every: float, before: Callable[[], None] | None = None) -> None:
    """Poll the registry's aliases; load and swap in a new champion off the event loop."""
    while True:
        await asyncio.sleep(every)
        if before is not None:
            before()
        try:
            await run_in_threadpool(host.check_all)
        except Exception:  # a registry outage must not stop the watcher
            log.exception("checking the registry for new champions failed")


def _path_of(served: Served) -> str:
    if served.kind != "tabular":
        return served.kind
    return "fast" if served.compiled is not None else "pipeline"
