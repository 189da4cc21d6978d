"""The HTTP edge of the serving app: one pure-ASGI layer for every request (body limit, in-flight
gauge, request counts and latency) and the exception handlers that turn every error into a status
from one table (``headrace.serve.errors.STATUS``) and one JSON shape."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from ..errors import HeadraceError
from .errors import PayloadTooLarge, RequestInvalid, status_for
from .metrics import ServeMetrics

__all__ = ["JSON", "Edge", "error_doc", "install_error_handlers", "json_response"]

log = logging.getLogger("headrace.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = "application/json"


def json_response(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=JSON)


def error_doc(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RequestInvalid):
        return {"detail": exc.problems, "error": "RequestInvalid"}
    text = exc.one_line() if isinstance(exc, HeadraceError) else f"internal error ({type(exc).__name__})"
    return {"detail": text, "error": type(exc).__name__}


class Edge:
    """Body size limit, in-flight gauge, counts and latency for every HTTP request.

    The route template, model name and version label are read from the scope after the router and
    the handler filled them in (``route``, ``path_params``, ``headrace.model``, ``headrace.version``).
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
                    refusal = PayloadTooLarge(
                        f"request body is larger than {self.max_body} bytes",
                        hint="send fewer records per request or use /models/{name}/predict/batch",
                    )
                    await _send_json(send, 413, error_doc(refusal))
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


def install_error_handlers(app: FastAPI, metrics: ServeMetrics) -> None:
    """Every error to a status, from one table; each counted by route, model and error class."""

    def count(request: Request, exc: BaseException) -> None:
        route = getattr(request.scope.get("route"), "path", "(unmatched)")
        name = str((request.scope.get("path_params") or {}).get("name", ""))
        metrics.child(metrics.errors, route, name, type(exc).__name__).inc()

    @app.exception_handler(HeadraceError)
    async def headrace_error(request: Request, exc: HeadraceError) -> Response:
        status = status_for(exc)
        count(request, exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.one_line())
        response = json_response(error_doc(exc), status)
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": str(e.get("type"))}
            for e in exc.errors()
        ]
        count(request, RequestInvalid(problems))
        return json_response({"detail": problems, "error": "RequestInvalid"}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        count(request, exc)
        return json_response(error_doc(exc), 500)
