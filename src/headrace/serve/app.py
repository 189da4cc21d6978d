"""The prediction API: ``create_app(registry, spec, ...)`` returns a FastAPI (ASGI) application.

Routes (see ``headrace serve --help`` and ``/docs``):

- ``POST /models/{name}/predict``: ``{"records": [...]}`` -> labels (after the model's threshold),
  probabilities, the positive-class score, one prediction id per record, and the model version;
  an image model takes a multipart upload (``files``) or ``{"images": [base64, ...]}``;
- ``POST /models/{name}/predict/batch``: up to ``max_batch_rows`` records, vectorised, off the loop;
- the Open Inference Protocol v2: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``GET /v2/models/{name}[/versions/{v}]``, ``.../ready``, ``POST .../infer`` (one tensor per input
  column, numeric or BYTES; an image model takes one BYTES tensor of base64 images);
- ``GET /users/{user_id}/recommendations?k=10`` and ``POST /interactions`` (live recommender state);
- ``POST /feedback``: ground truth for earlier prediction ids, appended to the feedback dataset;
- ``GET /health/live``, ``GET /health/ready``, ``GET /metrics`` (Prometheus, ``headrace_*``);
- admin (``Authorization: Bearer <token>``): ``POST /admin/models/{name}/reload|promote|rollback``.

Hot paths read the body themselves (orjson) instead of through pydantic models: a one-row prediction
costs microseconds on the fast path and the framework must not cost a hundred times that. The
OpenAPI document still describes every body (``openapi_extra``). Errors become status codes in one
table (``headrace.serve.errors.STATUS``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gc
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..config.serving import ServingSpec
from ..errors import HeadraceError, NotFound, UsageError
from ..monitor.metrics import MonitorCollector
from ..monitor.routing import CanaryRouter
from ..store import Store
from .errors import Forbidden, PayloadTooLarge, RequestInvalid, Unauthorized, status_for
from .host import ModelHost, Served
from .metrics import ServeMetrics
from .writer import BatchWriter

__all__ = ["create_app"]

log = logging.getLogger("headrace.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = "application/json"
_PREDICTIONS_SCHEMA = {
    "id": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "model": pl.String(),
    "version": pl.Int64(),
    "route": pl.String(),
    "inputs": pl.String(),
    "output": pl.String(),
    "score": pl.Float64(),
    "latency_ms": pl.Float64(),
}
_FEEDBACK_SCHEMA = {
    "prediction_id": pl.String(),
    "model": pl.String(),
    "actual": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
}

# -- OpenAPI bodies (the routes parse bodies themselves, for speed) ----------------------------
_VALUE = {"type": ["string", "number", "boolean", "null"]}
_RECORDS_BODY = {
    "required": True,
    "content": {
        _JSON: {
            "schema": {
                "type": "object",
                "required": ["records"],
                "properties": {
                    "records": {
                        "type": "array",
                        "maxItems": 64,
                        "items": {"type": "object", "additionalProperties": _VALUE, "maxProperties": 40},
                    }
                },
            }
        }
    },
}
_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 64}, "maxItems": 3},
        "datatype": {
            "type": "string",
            "enum": ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "FP16", "FP32", "FP64", "BYTES"],
        },
        "data": {"type": "array", "maxItems": 64},
        "parameters": {"type": "object"},
    },
}
_INFER_BODY = {
    "required": True,
    "content": {
        _JSON: {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "inputs": {"type": "array", "items": _TENSOR, "maxItems": 40},
                    "outputs": {"type": "array", "items": {"type": "object"}},
                    "parameters": {"type": "object"},
                },
            }
        }
    },
}
_FEEDBACK_BODY = {
    "required": True,
    "content": {
        _JSON: {
            "schema": {
                "type": "object",
                "properties": {
                    "prediction_id": {"type": "string"},
                    "actual": _VALUE,
                    "feedback": {
                        "type": "array",
                        "maxItems": 100,
                        "items": {
                            "type": "object",
                            "required": ["prediction_id", "actual"],
                            "properties": {"prediction_id": {"type": "string"}, "actual": _VALUE},
                        },
                    },
                },
            }
        }
    },
}
_INTERACTION_BODY = {
    "required": True,
    "content": {
        _JSON: {
            "schema": {
                "type": "object",
                "required": ["user_id", "item_id"],
                "properties": {
                    "user_id": {"type": ["string", "integer"]},
                    "item_id": {"type": ["string", "integer"]},
                    "weight": {"type": "number"},
                    "ts": {"type": ["string", "number", "null"]},
                    "model": {"type": "string"},
                },
            }
        }
    },
}
_PROMOTE_BODY = {
    "required": True,
    "content": {
        _JSON: {
            "schema": {
                "type": "object",
                "required": ["version"],
                "properties": {"version": {"type": "integer"}, "reason": {"type": "string"}},
            }
        }
    },
}
_ADMIN: dict[str, Any] = {"security": [{"bearer": []}]}


def _json(doc: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=_JSON
    )


def _error_doc(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RequestInvalid):
        return {"detail": exc.problems, "error": "RequestInvalid"}
    text = exc.one_line() if isinstance(exc, HeadraceError) else f"internal error ({type(exc).__name__})"
    return {"detail": text, "error": type(exc).__name__}


class _Edge:
    """One pure-ASGI layer for every request: body size limit, in-flight gauge, counts and latency.

    The route template, model name and version label are read from the scope after the router and
    the handler filled them in (``route``, ``path_params``, ``headrace.version``).
    """

    def __init__(self, app: Any, metrics: ServeMetrics, max_body: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    too_big = int(value) > self.max_body
                except ValueError:
                    too_big = True
                if too_big:
                    await _send_json(
                        send,
                        413,
                        _error_doc(
                            PayloadTooLarge(
                                f"request body is larger than {self.max_body} bytes",
                                hint="send fewer records per request or use /models/{name}/predict/batch",
                            )
                        ),
                    )
                    self.metrics.observe("(body limit)", "", "", 413, 0.0)
                    return
                break
        started = time.perf_counter()
        status = 500
        seen = 0
        max_body = self.max_body

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_body:
                    raise PayloadTooLarge(f"request body is larger than {max_body} bytes")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        gauge = self.metrics.child(self.metrics.in_flight, "all")
        gauge.inc()
        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            status = 500
            raise
        finally:
            gauge.dec()
            route = scope.get("route")
            path = getattr(route, "path", None) or "(unmatched)"
            params = scope.get("path_params") or {}
            model = str(params.get("name", scope.get("headrace.model", "")))
            self.metrics.observe(
                path, model, scope.get("headrace.version", ""), status, time.perf_counter() - started
            )


async def _send_json(send: Send, status: int, doc: Any) -> None:
    body = orjson.dumps(doc)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    registry: Any,
    spec: ServingSpec | None = None,
    *,
    store: Store | None = None,
    models: list[str] | None = None,
    live: Any = None,
    title: str = "headrace",
    canary: Any = None,
) -> FastAPI:
    """The ASGI app serving ``models`` (default ``spec.models``) from ``registry``.

    ``store`` receives the prediction log, feedback and new interactions (nothing is logged without
    one); ``live`` is the recommender's live state (default: Redis at ``spec.redis_url`` when set,
    else in process).
    """
    from ..recommend.live import open_live_state

    spec = spec or ServingSpec()
    names = list(models if models is not None else spec.models)
    metrics = ServeMetrics()
    live_state = live if live is not None else open_live_state(spec.redis_url, spec.redis_prefix)
    token = spec.token()
    plog = spec.prediction_log
    writer: BatchWriter | None = None
    if store is not None and plog.enabled:
        writer = BatchWriter(
            store,
            flush_seconds=plog.flush_seconds,
            batch_rows=plog.batch_rows,
            max_queue=plog.max_queue,
            schemas={plog.dataset: _PREDICTIONS_SCHEMA, plog.feedback_dataset: _FEEDBACK_SCHEMA},
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
    # canary / shadow routing to the "challenger" alias (``canary``: monitoring.canary; None: off)
    router = CanaryRouter(
        registry,
        names,
        canary,
        load=host.load,
        reload_seconds=spec.reload_seconds,
        log_row=(lambda row: writer.put(plog.dataset, row)) if writer is not None else None,
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
            await live_state.close()
            metrics.process_stopped()

    app = FastAPI(
        title=title,
        version=__version__,
        lifespan=lifespan,
        description="Predictions, the Open Inference Protocol v2, real-time recommendations and metrics.",
    )
    app.state.host = host
    app.state.metrics = metrics
    app.state.writer = writer
    app.state.live = live_state
    app.add_middleware(_Edge, metrics=metrics, max_body=spec.max_body_bytes)

    # -- the edge: every error to a status, from one table ------------------------------------------
    @app.exception_handler(HeadraceError)
    async def _headrace_error(request: Request, exc: HeadraceError) -> Response:
        status = status_for(exc)
        _count_error(request, exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.one_line())
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        response = _json(_error_doc(exc), status)
        if headers:
            response.headers.update(headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": str(e.get("type"))}
            for e in exc.errors()
        ]
        _count_error(request, RequestInvalid(problems))
        return _json({"detail": problems, "error": "RequestInvalid"}, 422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        _count_error(request, exc)
        return _json(_error_doc(exc), 500)

    def _count_error(request: Request, exc: BaseException) -> None:
        route = getattr(request.scope.get("route"), "path", "(unmatched)")
        name = str((request.scope.get("path_params") or {}).get("name", ""))
        metrics.child(metrics.errors, route, name, type(exc).__name__).inc()

    # -- helpers ------------------------------------------------------------------------------------
    async def read_json(request: Request) -> Any:
        body = await request.body()
        if not body:
            raise RequestInvalid([{"loc": ["body"], "msg": "a JSON body is required", "type": "missing"}])
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestInvalid(
                [{"loc": ["body"], "msg": f"not valid JSON ({exc.msg})", "type": "json_invalid"}]
            ) from None

    def tabular(served: Served) -> Served:
        name = served.name
        if served.kind != "tabular":
            raise UsageError(
                f"model {name!r} is a {served.task} model",
                hint="image models take files or base64 images; "
                "recommenders answer /users/{id}/recommendations",
            )
        if served.schema is None:
            raise UsageError(
                f"model {name!r} has no input signature", hint="retrain it with 'headrace train'"
            )
        return served

    def log_predictions(
        served: Served, route: str, records: list[dict[str, Any]], answer: Any, ids: list[str], seconds: float
    ) -> None:
        if writer is None:
            return
        now = datetime.now(UTC)
        latency_ms = seconds * 1000.0
        probs = answer.probabilities
        scores = answer.scores
        for i, record in enumerate(records):
            output: dict[str, Any] = {"prediction": answer.predictions[i]}
            if probs is not None:
                output["probabilities"] = probs[i]
            writer.put(
                plog.dataset,
                {
                    "id": ids[i],
                    "ts": now,
                    "model": served.name,
                    "version": served.version,
                    "route": route,
                    "inputs": orjson.dumps(record).decode(),
                    "output": orjson.dumps(output).decode(),
                    "score": None if scores is None else float(scores[i]),
                    "latency_ms": latency_ms,
                },
            )

    def count_predictions(served: Served, answer: Any) -> None:
        if served.task == "classification":
            for label in answer.predictions:
                metrics.child(metrics.predictions, served.name, served.version_label, str(label)).inc()
        else:
            metrics.child(metrics.predictions, served.name, served.version_label, "").inc(
                len(answer.predictions)
            )
        if answer.scores is not None:
            hist = metrics.child(metrics.scores, served.name, served.version_label)
            for s in answer.scores:
                hist.observe(s)
        for said in getattr(answer, "notes", None) or []:
            for note in said:
                kind = "imputed" if "missing" in note else "unseen_category"
                metrics.child(metrics.notes, served.name, served.version_label, kind).inc()

    def answer_doc(served: Served, answer: Any, ids: list[str]) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "model": served.name,
            "version": served.version,
            "ids": ids,
            "predictions": answer.predictions,
        }
        if answer.probabilities is not None:
            doc["probabilities"] = answer.probabilities
        if getattr(answer, "notes", None):
            doc["notes"] = answer.notes  # per record: what was imputed or ignored
        if served.task == "classification" and served.classes and len(served.classes) == 2:
            doc["scores"] = answer.scores
            doc["threshold"] = served.threshold
            doc["positive"] = served.classes[1]
        return doc

    # -- health and metrics -------------------------------------------------------------------------
    @app.get("/health/live", tags=["health"])
    async def health_live() -> Response:
        return _json({"status": "live"})

    @app.get("/health/ready", tags=["health"])
    async def health_ready() -> Response:
        served = {n: s.version for n, s in host.served().items()}
        ready = host.ready()
        doc = {"status": "ready" if ready else "not ready", "models": served, "errors": host.errors()}
        return _json(doc, 200 if ready else 503)

    @app.get("/metrics", tags=["health"])
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/models", tags=["predict"])
    async def list_models() -> Response:
        return _json(
            {
                "models": [
                    {
                        "name": s.name,
                        "version": s.version,
                        "task": s.task,
                        "flavor": s.flavor,
                        "fast_path": s.compiled is not None,
                        "fast_path_note": s.not_compiled,
                    }
                    for s in host.served().values()
                ],
                "errors": host.errors(),
            }
        )

    # -- plain JSON predictions ---------------------------------------------------------------------
    @app.post("/models/{name}/predict", tags=["predict"], openapi_extra={"requestBody": _RECORDS_BODY})
    async def predict(name: str, request: Request) -> Response:
        started = time.perf_counter()
        served = host.get(name)
        request.scope["headrace.version"] = served.version_label
        if served.kind == "image":
            return await _predict_images(served, request, started)
        served = tabular(served)
        doc = await read_json(request)
        if not isinstance(doc, dict) or "records" not in doc:
            raise RequestInvalid(
                [{"loc": ["body", "records"], "msg": "field 'records' is required", "type": "missing"}]
            )
        records = served.schema.check(doc["records"])  # type: ignore[union-attr]
        if len(records) > 64:
            raise RequestInvalid(
                [
                    {
                        "loc": ["body", "records"],
                        "msg": "at most 64 records here; use /predict/batch",
                        "type": "too_long",
                    }
                ]
            )
        served, answer = await router.predict(served, records, router.key(request.headers, doc["records"]))
        request.scope["headrace.version"] = served.version_label
        ids = [uuid.uuid4().hex for _ in records]
        seconds = time.perf_counter() - started
        log_predictions(served, "predict", records, answer, ids, seconds)
        count_predictions(served, answer)
        return _json(answer_doc(served, answer, ids))

    @app.post("/models/{name}/predict/batch", tags=["predict"], openapi_extra={"requestBody": _RECORDS_BODY})
    async def predict_batch(name: str, request: Request) -> Response:
        started = time.perf_counter()
        served = host.get(name)
        request.scope["headrace.version"] = served.version_label
        served = tabular(served)
        doc = await read_json(request)
        if not isinstance(doc, dict) or "records" not in doc:
            raise RequestInvalid(
                [{"loc": ["body", "records"], "msg": "field 'records' is required", "type": "missing"}]
            )
        raw = doc["records"]
        if isinstance(raw, list) and len(raw) > spec.max_batch_rows:
            raise RequestInvalid(
                [
                    {
                        "loc": ["body", "records"],
                        "type": "too_long",
                        "msg": f"at most {spec.max_batch_rows} records per batch",
                    }
                ]
            )
        records = served.schema.check(raw)  # type: ignore[union-attr]
        answer = await run_in_threadpool(served.predict_records, records, allow_fast=False)
        ids = [uuid.uuid4().hex for _ in records]
        log_predictions(served, "batch", records, answer, ids, time.perf_counter() - started)
        count_predictions(served, answer)
        return _json(answer_doc(served, answer, ids))

    async def _predict_images(served: Served, request: Request, started: float) -> Response:
        content_type = request.headers.get("content-type", "")
        images: list[bytes] = []
        if content_type.startswith("multipart/form-data"):
            async with request.form() as form:  # closes the uploads' spooled temporary files
                for _, value in form.multi_items():
                    if hasattr(value, "read"):
                        images.append(await value.read())
        else:
            doc = await read_json(request)
            raw = doc.get("images") if isinstance(doc, dict) else None
            if not isinstance(raw, list) or not raw:
                raise RequestInvalid(
                    [
                        {
                            "loc": ["body", "images"],
                            "type": "missing",
                            "msg": "send 'images': a list of base64 strings, or a multipart upload",
                        }
                    ]
                )
            images = [_b64(v, ("body", "images", i)) for i, v in enumerate(raw)]
        if not images:
            raise RequestInvalid(
                [{"loc": ["body", "files"], "msg": "no image files uploaded", "type": "missing"}]
            )
        prediction = await run_in_threadpool(served.model.predict_images, images)
        ids = [uuid.uuid4().hex for _ in images]
        doc = {
            "model": served.name,
            "version": served.version,
            "ids": ids,
            "predictions": list(prediction.predictions),
            "probabilities": prediction.probabilities,
        }
        if writer is not None:
            now = datetime.now(UTC)
            for i, label in enumerate(prediction.predictions):
                writer.put(
                    plog.dataset,
                    {
                        "id": ids[i],
                        "ts": now,
                        "model": served.name,
                        "version": served.version,
                        "route": "predict",
                        "inputs": orjson.dumps({"bytes": len(images[i])}).decode(),
                        "output": orjson.dumps({"prediction": label}, default=str).decode(),
                        "score": None,
                        "latency_ms": (time.perf_counter() - started) * 1000.0,
                    },
                )
        for label in prediction.predictions:
            metrics.child(metrics.predictions, served.name, served.version_label, str(label)).inc()
        return _json(doc)

    # -- the Open Inference Protocol v2 -------------------------------------------------------------
    @app.get("/v2", tags=["v2"])
    async def v2_server() -> Response:
        return _json({"name": "headrace", "version": __version__, "extensions": []})

    @app.get("/v2/health/live", tags=["v2"])
    async def v2_live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready", tags=["v2"])
    async def v2_ready() -> Response:
        ready = host.ready()
        return _json({"ready": ready}, 200 if ready else 503)

    def v2_served(name: str, version: str | None, request: Request) -> Served:
        served = host.get(name)
        request.scope["headrace.version"] = served.version_label
        if version is not None and version != served.version_label:
            raise NotFound(
                f"model {name!r} version {version} is not served (serving v{served.version})",
                hint=f"use /v2/models/{name} or version {served.version}",
            )
        return served

    def v2_metadata(served: Served) -> dict[str, Any]:
        if served.kind == "image":
            inputs = [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
            outputs = [{"name": "label", "datatype": "BYTES", "shape": [-1]}]
        elif served.kind == "recommender":
            inputs = [{"name": "user_id", "datatype": "BYTES", "shape": [-1]}]
            outputs = [{"name": "items", "datatype": "BYTES", "shape": [-1, -1]}]
        else:
            fields = served.schema.fields if served.schema is not None else {}
            inputs = [
                {"name": n, "datatype": _V2_TYPE.get(k, "BYTES"), "shape": [-1]} for n, k in fields.items()
            ]
            label_type = "BYTES" if served.task == "classification" else "FP64"
            outputs = [{"name": "label", "datatype": label_type, "shape": [-1]}]
            if served.task == "classification":
                outputs.append(
                    {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(served.classes or [])]}
                )
        return {
            "name": served.name,
            "versions": [served.version_label],
            "platform": f"headrace_{served.flavor}",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {
                "task": served.task,
                "classes": [str(c) for c in served.classes or []],
                "threshold": served.threshold,
            },
        }

    @app.get("/v2/models/{name}", tags=["v2"])
    async def v2_model(name: str, request: Request) -> Response:
        return _json(v2_metadata(v2_served(name, None, request)))

    @app.get("/v2/models/{name}/versions/{version}", tags=["v2"])
    async def v2_model_version(name: str, version: str, request: Request) -> Response:
        return _json(v2_metadata(v2_served(name, version, request)))

    @app.get("/v2/models/{name}/ready", tags=["v2"])
    async def v2_model_ready(name: str, request: Request) -> Response:
        served = v2_served(name, None, request)
        return _json({"name": name, "ready": True, "version": served.version_label})

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["v2"])
    async def v2_model_version_ready(name: str, version: str, request: Request) -> Response:
        served = v2_served(name, version, request)
        return _json({"name": name, "ready": True, "version": served.version_label})

    async def v2_infer(name: str, version: str | None, request: Request) -> Response:
        started = time.perf_counter()
        served = v2_served(name, version, request)
        doc = await read_json(request)
        if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
            raise RequestInvalid(
                [
                    {
                        "loc": ["body", "inputs"],
                        "msg": "field 'inputs' (a list of tensors) is required",
                        "type": "missing",
                    }
                ]
            )
        tensors = {}
        for i, tensor in enumerate(doc["inputs"]):
            tensor_name = _tensor_name(tensor, i)  # checked before the values are read
            tensors[tensor_name] = _tensor_values(tensor, i)
        request_id = doc.get("id") if isinstance(doc.get("id"), str) else None
        wanted = _requested_outputs(doc.get("outputs"))
        if served.kind == "image":
            values = tensors.get("image") or (next(iter(tensors.values())) if len(tensors) == 1 else None)
            if values is None:
                raise RequestInvalid(
                    [{"loc": ["body", "inputs"], "msg": "send one BYTES tensor 'image'", "type": "missing"}]
                )
            images = [v if isinstance(v, bytes) else _b64(v, ("body", "inputs", "image")) for v in values]
            prediction = await run_in_threadpool(served.model.predict_images, images)
            outputs = [_tensor("label", "BYTES", [len(images)], [str(p) for p in prediction.predictions])]
            return _json(_v2_response(served, request_id, outputs, wanted))
        if served.kind == "recommender":
            raise UsageError(
                f"model {name!r} is a recommender", hint="use GET /users/{user_id}/recommendations"
            )
        if served.schema is None:
            raise UsageError(
                f"model {name!r} has no input signature", hint="retrain it with 'headrace train'"
            )
        records = _records_from_tensors(tensors, served.schema.fields)
        records = served.schema.check(records, where=("body", "inputs"))
        if served.compiled is not None and len(records) <= 64:
            answer = served.predict_records(records)
        else:
            answer = await run_in_threadpool(served.predict_records, records)
        n = len(records)
        ids = [uuid.uuid4().hex for _ in records]
        log_predictions(served, "v2_infer", records, answer, ids, time.perf_counter() - started)
        count_predictions(served, answer)
        if served.task == "classification":
            labels = answer.predictions
            label_tensor = (
                _tensor("label", "BYTES", [n], [str(v) for v in labels])
                if any(isinstance(v, str) for v in labels)
                else _tensor("label", "INT64", [n], [int(v) for v in labels])
            )
            names = [str(c) for c in served.classes or []]
            flat = [float(p[c]) for p in answer.probabilities or [] for c in names]
            outputs = [label_tensor, _tensor("probabilities", "FP64", [n, len(names)], flat)]
        else:
            outputs = [_tensor("label", "FP64", [n], [float(v) for v in answer.predictions])]
        outputs.append(_tensor("prediction_id", "BYTES", [n], ids))
        return _json(_v2_response(served, request_id, outputs, wanted))

    @app.post("/v2/models/{name}/infer", tags=["v2"], openapi_extra={"requestBody": _INFER_BODY})
    async def v2_infer_route(name: str, request: Request) -> Response:
        return await v2_infer(name, None, request)

    @app.post(
        "/v2/models/{name}/versions/{version}/infer", tags=["v2"], openapi_extra={"requestBody": _INFER_BODY}
    )
    async def v2_infer_version_route(name: str, version: str, request: Request) -> Response:
        return await v2_infer(name, version, request)

    # -- feedback -----------------------------------------------------------------------------------
    @app.post("/feedback", tags=["monitor"], status_code=202, openapi_extra={"requestBody": _FEEDBACK_BODY})
    async def feedback(request: Request) -> Response:
        doc = await read_json(request)
        items = _feedback_items(doc)
        if writer is not None:
            now = datetime.now(UTC)
            for item in items:
                writer.put(
                    plog.feedback_dataset,
                    {
                        "prediction_id": item["prediction_id"],
                        "model": item.get("model"),
                        "actual": orjson.dumps(item["actual"]).decode(),
                        "ts": now,
                    },
                )
        return _json(
            {
                "accepted": len(items),
                "stored": writer is not None,
                "dataset": plog.feedback_dataset if writer is not None else None,
            },
            202,
        )

    # -- recommendations ----------------------------------------------------------------------------
    def recommender(model: str | None, request: Request) -> Served:
        if model:
            served = host.get(model)
        else:
            found = host.of_kind("recommender")
            recommenders = [n for n in host.names if n in {s.name for s in found}]
            if len(recommenders) != 1:
                if not recommenders and any(n not in host.served() for n in host.names):
                    raise host_unavailable()
                raise UsageError(
                    "no recommender is served" if not recommenders else "several recommenders are served",
                    hint="add one to serving.models" if not recommenders else "pass ?model=NAME",
                )
            served = host.get(recommenders[0])
        request.scope["headrace.version"] = served.version_label
        request.scope["headrace.model"] = served.name
        if served.kind != "recommender":
            raise UsageError(f"model {served.name!r} is not a recommender", hint="pass ?model= a recommender")
        return served

    def host_unavailable() -> HeadraceError:
        from ..errors import ServiceUnavailable

        return ServiceUnavailable("the recommender is not loaded yet", hint="check /health/ready")

    @app.get("/users/{user_id}/recommendations", tags=["recommend"])
    async def recommendations(
        request: Request, user_id: str, k: int = 10, model: str | None = None
    ) -> Response:
        if not 1 <= k <= 1000:
            raise RequestInvalid(
                [{"loc": ["query", "k"], "msg": "k must be between 1 and 1000", "type": "range"}]
            )
        served = recommender(model, request)
        history = await live_state.history(served.name, user_id)
        items = served.model.recommend(user_id, k, live=history)
        doc: dict[str, Any] = {
            "user_id": user_id,
            "model": served.name,
            "version": served.version,
            "items": [{"item_id": item, "score": score} for item, score in items],
        }
        users = getattr(served.model, "user_index", None)
        if users is not None and str(user_id) not in users:
            resolve = served.model.resolve_item
            if not any(resolve(i) is not None for i in (history or {})):
                doc["notes"] = ["unknown user with no history: the most popular items"]
                metrics.child(metrics.notes, served.name, served.version_label, "popular_fallback").inc()
        return _json(doc)

    @app.post(
        "/interactions", tags=["recommend"], status_code=202, openapi_extra={"requestBody": _INTERACTION_BODY}
    )
    async def interactions(request: Request) -> Response:
        doc = await read_json(request)
        event = _interaction(doc)
        served = recommender(event.get("model"), request)
        user_id = str(event["user_id"])
        item = served.model.resolve_item(event["item_id"])
        item_id = item if item is not None else event["item_id"]
        await live_state.add(served.name, user_id, item_id, event["weight"])
        metrics.child(metrics.interactions, served.name).inc()
        if writer is not None:
            dataset = spec.interactions_dataset or (served.mv.dataset if served.mv is not None else None)
            columns = (served.mv.signature or {}) if served.mv is not None else {}
            if dataset:
                writer.put(
                    dataset,
                    {
                        columns.get("user") or "user_id": event["user_id"],
                        columns.get("item") or "item_id": item_id,
                        **({columns["weight"]: event["weight"]} if columns.get("weight") else {}),
                        **({columns["ts"]: event["ts"]} if columns.get("ts") else {"ts": event["ts"]}),
                    },
                )
        return _json({"accepted": True, "user_id": user_id, "item_id": item_id, "model": served.name}, 202)

    # -- admin --------------------------------------------------------------------------------------
    def admin(request: Request) -> str:
        if not token:
            raise Forbidden(
                "admin routes are disabled: no admin token is configured",
                hint=f"set {spec.admin_token_env} (or serving.admin_token) and restart",
            )
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if (
            scheme.lower() != "bearer"
            or not given
            or not hmac.compare_digest(given.strip().encode(), token.encode())
        ):
            raise Unauthorized(
                "admin routes need 'Authorization: Bearer <token>'",
                hint=f"send the token from {spec.admin_token_env}",
            )
        return request.headers.get("x-actor") or "serve-admin"

    @app.post("/admin/models/{name}/reload", tags=["admin"], openapi_extra=_ADMIN)
    async def admin_reload(name: str, request: Request) -> Response:
        admin(request)
        if name not in host.names:
            host.get(name)  # NotFound naming the served models
        swapped = await run_in_threadpool(host.check, name, force=True)
        served = host.get(name)
        return _json({"model": name, "version": served.version, "reloaded": swapped})

    @app.post(
        "/admin/models/{name}/promote", tags=["admin"], openapi_extra={**_ADMIN, "requestBody": _PROMOTE_BODY}
    )
    async def admin_promote(name: str, request: Request) -> Response:
        actor = admin(request)
        doc = await read_json(request)
        version = doc.get("version") if isinstance(doc, dict) else None
        if isinstance(version, bool) or not isinstance(version, int):
            raise RequestInvalid(
                [
                    {
                        "loc": ["body", "version"],
                        "msg": "field 'version' must be an integer",
                        "type": "int_type",
                    }
                ]
            )
        reason = str(doc.get("reason") or "promoted through the API")
        mv = await run_in_threadpool(lambda: registry.promote(name, version, reason=reason, actor=actor))
        if name in host.names:
            await run_in_threadpool(host.check, name)
        return _json({"model": name, "champion": mv.version})

    @app.post("/admin/models/{name}/rollback", tags=["admin"], openapi_extra=_ADMIN)
    async def admin_rollback(name: str, request: Request) -> Response:
        actor = admin(request)
        body = await request.body()
        reason = "rolled back through the API"
        if body:
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(body)
                if isinstance(doc, dict) and isinstance(doc.get("reason"), str):
                    reason = doc["reason"]
        mv = await run_in_threadpool(lambda: registry.rollback(name, reason=reason, actor=actor))
        if name in host.names:
            await run_in_threadpool(host.check, name)
        return _json({"model": name, "champion": mv.version})

    # the dashboard under /ui: read-only pages; its promote/rollback buttons call the admin routes
    from ..ui import mount_ui

    mount_ui(app, registry, store=store, spec=spec)
    _add_security_scheme(app)
    return app


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


_V2_TYPE = {"number": "FP64", "bool": "BOOL", "string": "BYTES", "date": "BYTES", "datetime": "BYTES"}
_NUMERIC_TYPES = {
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
}


def _tensor_name(tensor: Any, i: int) -> str:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise RequestInvalid(
            [{"loc": ["body", "inputs", i, "name"], "msg": "each tensor needs a 'name'", "type": "missing"}]
        )
    return str(tensor["name"])


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        out: list[Any] = []
        for item in data:
            out.extend(_flatten(item)) if isinstance(item, list) else out.append(item)
        return out
    return [data]


def _tensor_values(tensor: dict[str, Any], i: int) -> list[Any]:
    name = tensor["name"]
    datatype = tensor.get("datatype")
    where = ["body", "inputs", i]
    if datatype not in _NUMERIC_TYPES and datatype not in ("BOOL", "BYTES"):
        raise RequestInvalid(
            [
                {
                    "loc": [*where, "datatype"],
                    "type": "enum",
                    "msg": f"tensor {name!r}: datatype must be BOOL, BYTES, INT*, UINT* or FP*",
                }
            ]
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise RequestInvalid(
            [
                {
                    "loc": [*where, "shape"],
                    "msg": f"tensor {name!r}: shape must be a list of sizes",
                    "type": "list_type",
                }
            ]
        )
    if "data" not in tensor:
        raise RequestInvalid(
            [{"loc": [*where, "data"], "msg": f"tensor {name!r} has no 'data'", "type": "missing"}]
        )
    values = _flatten(tensor["data"])
    expected = 1
    for d in shape:
        expected *= d
    if len(values) != expected:
        raise RequestInvalid(
            [
                {
                    "loc": [*where, "data"],
                    "type": "shape",
                    "msg": f"tensor {name!r}: shape {shape} needs {expected} values, got {len(values)}",
                }
            ]
        )
    for value in values:
        ok = (
            (datatype == "BYTES" and isinstance(value, str))
            or (datatype == "BOOL" and isinstance(value, bool))
            or (datatype in _NUMERIC_TYPES and isinstance(value, int | float) and not isinstance(value, bool))
            or value is None
        )
        if not ok:
            raise RequestInvalid(
                [
                    {
                        "loc": [*where, "data"],
                        "type": "type_error",
                        "msg": f"tensor {name!r}: {value!r} is not a {datatype} value",
                    }
                ]
            )
    return values


def _records_from_tensors(tensors: dict[str, list[Any]], fields: dict[str, str]) -> list[dict[str, Any]]:
    unknown = [n for n in tensors if n not in fields]
    if unknown:
        raise RequestInvalid(
            [
                {
                    "loc": ["body", "inputs", n],
                    "type": "extra_forbidden",
                    "msg": f"input {n!r} is unknown to this model; it reads: {', '.join(fields)}",
                }
                for n in unknown
            ]
        )
    missing = [n for n in fields if n not in tensors]
    if missing:
        raise RequestInvalid(
            [
                {"loc": ["body", "inputs", n], "msg": f"input tensor {n!r} is required", "type": "missing"}
                for n in missing
            ]
        )
    sizes = {len(v) for v in tensors.values()}
    if len(sizes) > 1:
        raise RequestInvalid(
            [
                {
                    "loc": ["body", "inputs"],
                    "type": "shape",
                    "msg": "every input tensor must hold the same number of rows",
                }
            ]
        )
    n = sizes.pop() if sizes else 0
    return [{name: tensors[name][i] for name in fields} for i in range(n)]


def _tensor(name: str, datatype: str, shape: list[int], data: list[Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _requested_outputs(outputs: Any) -> set[str] | None:
    if not isinstance(outputs, list) or not outputs:
        return None
    return {o["name"] for o in outputs if isinstance(o, dict) and isinstance(o.get("name"), str)}


def _v2_response(
    served: Served, request_id: str | None, outputs: list[dict[str, Any]], wanted: set[str] | None
) -> dict[str, Any]:
    if wanted is not None:
        outputs = [o for o in outputs if o["name"] in wanted]
    doc: dict[str, Any] = {
        "model_name": served.name,
        "model_version": served.version_label,
        "outputs": outputs,
    }
    if request_id is not None:
        doc["id"] = request_id
    return doc


def _b64(value: Any, loc: tuple[Any, ...]) -> bytes:
    if not isinstance(value, str):
        raise RequestInvalid([{"loc": list(loc), "msg": "expected a base64 string", "type": "string_type"}])
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestInvalid([{"loc": list(loc), "msg": "not valid base64", "type": "value_error"}]) from None


def _feedback_items(doc: Any) -> list[dict[str, Any]]:
    if isinstance(doc, dict) and "feedback" in doc:
        raw = doc["feedback"]
        where: list[Any] = ["body", "feedback"]
    else:
        raw = [doc]
        where = ["body"]
    if not isinstance(raw, list) or not raw:
        raise RequestInvalid(
            [{"loc": where, "msg": "expected a non-empty list of feedback items", "type": "list_type"}]
        )
    out = []
    for i, item in enumerate(raw):
        loc = [*where, i] if where[-1] == "feedback" else where
        if not isinstance(item, dict):
            raise RequestInvalid([{"loc": loc, "msg": "expected an object", "type": "dict_type"}])
        pid = item.get("prediction_id")
        if not isinstance(pid, str) or not pid:
            raise RequestInvalid(
                [
                    {
                        "loc": [*loc, "prediction_id"],
                        "type": "missing",
                        "msg": "field 'prediction_id' (a string from a predict answer) is required",
                    }
                ]
            )
        if "actual" not in item:
            raise RequestInvalid(
                [
                    {
                        "loc": [*loc, "actual"],
                        "msg": "field 'actual' (the true label or value) is required",
                        "type": "missing",
                    }
                ]
            )
        actual = item["actual"]
        if isinstance(actual, dict | list):
            raise RequestInvalid(
                [
                    {
                        "loc": [*loc, "actual"],
                        "msg": "field 'actual' must be a string, number or boolean",
                        "type": "type_error",
                    }
                ]
            )
        model = item.get("model")
        out.append(
            {"prediction_id": pid, "actual": actual, "model": model if isinstance(model, str) else None}
        )
    return out


def _interaction(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise RequestInvalid([{"loc": ["body"], "msg": "expected an object", "type": "dict_type"}])
    problems = []
    for key in ("user_id", "item_id"):
        value = doc.get(key)
        if key not in doc:
            problems.append({"loc": ["body", key], "msg": f"field {key!r} is required", "type": "missing"})
        elif isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            problems.append(
                {
                    "loc": ["body", key],
                    "msg": f"field {key!r} must be a string or an integer",
                    "type": "type_error",
                }
            )
    weight = doc.get("weight", 1.0)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or weight != weight
        or abs(weight) > 1e12
    ):
        problems.append(
            {"loc": ["body", "weight"], "msg": "field 'weight' must be a finite number", "type": "type_error"}
        )
    ts = doc.get("ts")
    when: datetime
    if ts is None:
        when = datetime.now(UTC)
    elif isinstance(ts, int | float) and not isinstance(ts, bool) and 0 <= ts < 1e11:
        when = datetime.fromtimestamp(ts, UTC)
    elif isinstance(ts, str):
        try:
            when = datetime.fromisoformat(ts)
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
        except ValueError:
            problems.append(
                {
                    "loc": ["body", "ts"],
                    "msg": "field 'ts' must be an ISO time or unix seconds",
                    "type": "value_error",
                }
            )
    else:
        problems.append(
            {
                "loc": ["body", "ts"],
                "msg": "field 'ts' must be an ISO time or unix seconds",
                "type": "type_error",
            }
        )
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        problems.append(
            {"loc": ["body", "model"], "msg": "field 'model' must be a string", "type": "type_error"}
        )
    if problems:
        raise RequestInvalid(problems)
    return {
        "user_id": doc["user_id"],
        "item_id": doc["item_id"],
        "weight": float(weight),
        "ts": when,
        "model": model,
    }
