"""The prediction API: ``create_app(registry, spec, ...)`` returns a FastAPI (ASGI) application.

Routes (see ``headrace serve --help`` and ``/docs``), one router module per concern under
``headrace.serve.routes``:

- ``predictions``: ``GET /models``, ``POST /models/{name}/predict`` (a few records, the fast path;
  image models take files or base64 images) and ``POST /models/{name}/predict/batch``;
- ``v2``: the Open Inference Protocol v2 (``/v2/...``);
- ``recommend``: ``GET /users/{user_id}/recommendations`` and ``POST /interactions``;
- ``feedback``: ``POST /feedback``, ground truth for earlier prediction ids;
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
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..config.models import PromoteRule
from ..config.serving import ServingSpec
from ..monitor.metrics import MonitorCollector
from ..monitor.routing import CanaryRouter
from ..store import Store
from .edge import Edge, install_error_handlers
from .host import ModelHost, Served
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
        token=spec.token(),
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

    app = FastAPI(
        title=title,
        version=__version__,
        lifespan=lifespan,
        description="Predictions, the Open Inference Protocol v2, real-time recommendations and metrics.",
    )
    app.state.serving = serving
    app.state.host = host
    app.state.metrics = metrics
    app.state.writer = writer
    app.state.live = serving.live
    app.add_middleware(Edge, metrics=metrics, max_body=spec.max_body_bytes)
    install_error_handlers(app, metrics)
    for module in (health, predictions, v2, feedback, recommend, admin):
        _add_routes(app, module.build(serving))

    # the dashboard under /ui: read-only pages; its promote/rollback buttons call the admin routes
    from ..ui import mount_ui

    mount_ui(app, registry, store=store, spec=spec)
    _add_security_scheme(app)
    return app


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """The router's routes, added to the app itself. Not ``include_router``: since FastAPI 0.165 an
    included router is matched through a layer of its own on every request (about 190 more Python
    calls and 20-40 us for a one-row prediction, measured in process), and these routers have no
    prefix or dependencies to keep."""
    for route in router.routes:
        assert isinstance(route, APIRoute)
        app.router.add_api_route(
            route.path,
            route.endpoint,
            methods=sorted(route.methods or ()),
            name=route.name,
            tags=route.tags,
            status_code=route.status_code,
            openapi_extra=route.openapi_extra,
            include_in_schema=route.include_in_schema,
        )


def _add_security_scheme(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http",
                "scheme": "bearer",
            }
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
