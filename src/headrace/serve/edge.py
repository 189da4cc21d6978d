"""The HTTP edge of the serving app: one pure-ASGI layer for every request (header and body limits,
security headers, in-flight gauge, request counts and latency) and the exception handlers that turn
every error into a status from one table (``headrace.serve.errors.STATUS``) and one JSON shape.

Every answer says ``X-Content-Type-Options: nosniff``; every HTML answer (the dashboard, ``/docs``)
also carries a Content-Security-Policy without inline script (``script-src 'self'``; a page that
needs one inline script sets its own policy naming the script's hash), ``frame-ancestors 'none'``,
``X-Frame-Options: DENY`` and ``Referrer-Policy: no-referrer``."""

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
from .errors import HeadersTooLarge, PayloadTooLarge, RequestInvalid, status_for
from .metrics import ServeMetrics

__all__ = [
    "CSP",
    "JSON",
    "Edge",
    "count_error",
    "error_doc",
    "error_response",
    "install_error_handlers",
    "json_response",
]

log = logging.getLogger("headrace.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = "application/json"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_HTML_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


def json_response(doc: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type=JSON)


def error_doc(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RequestInvalid):
        doc: dict[str, Any] = {"detail": exc.problems, "error": "RequestInvalid"}
        if exc.total > len(exc.problems):
            doc["problems"] = exc.total  # found in all; only the first few are listed
        return doc
    text = exc.one_line() if isinstance(exc, HeadraceError) else f"internal error ({type(exc).__name__})"
    return {"detail": text, "error": type(exc).__name__}


class Edge:
    """Header and body size limits, security headers, in-flight gauge, counts and latency for every
    HTTP request.

    The route template, model name and version label are read from the scope after the router and
    the handler filled them in (``route``, ``path_params``, ``headrace.model``, ``headrace.version``).
    """

    def __init__(self, app: Any, metrics: ServeMetrics, max_body: int, max_headers: int = 16_384) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", ())
        if sum(len(k) + len(v) for k, v in headers) > self.max_headers:
            refused = HeadersTooLarge(
                f"the request's headers are larger than {self.max_headers} bytes together",
                hint="send fewer or shorter headers (serving.limits.max_header_bytes)",
            )
            await _send_json(send, 431, error_doc(refused))
            self.metrics.observe("(header limit)", "", "", 431, 0.0)
            return
        for key, value in headers:
            if key == b"content-length":
                try:
                    too_big = int(value) > self.max_body
                except ValueError:
                    too_big = True
                if too_big:
                    refusal = PayloadTooLarge(
                        f"request body is larger than {self.max_body} bytes",
                        hint="send fewer records per request (serving.limits.max_body_bytes)",
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
                message["headers"] = _secured(message.get("headers") or [])
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


def _secured(headers: Any) -> list[tuple[bytes, bytes]]:
    """The response headers with nosniff, and the HTML ones on an HTML page (a CSP the page set
    itself is kept)."""
    out = list(headers)
    html = False
    has_csp = False
    for key, value in out:
        lowered = key.lower()
        if lowered == b"content-type":
            html = value.startswith(b"text/html")
        elif lowered == b"content-security-policy":
            has_csp = True
    out.append(_NOSNIFF)
    if html:
        out.extend(_HTML_HEADERS)
        if not has_csp:
            out.append((b"content-security-policy", CSP.encode()))
    return out


async def _send_json(send: Send, status: int, doc: Any) -> None:
    body = orjson.dumps(doc)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                _NOSNIFF,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def count_error(metrics: ServeMetrics, request: Request, exc: BaseException) -> None:
    """Count an error by route, model and error class."""
    route = getattr(request.scope.get("route"), "path", "(unmatched)")
    name = str((request.scope.get("path_params") or {}).get("name", ""))
    metrics.child(metrics.errors, route, name, type(exc).__name__).inc()


async def error_response(metrics: ServeMetrics, request: Request, exc: BaseException) -> Response:
    """The answer to an error a route raised, counted: a status from one table and the one error
    shape. Used by FastAPI's exception handlers and by the fast lane, so both answer alike."""
    if isinstance(exc, HeadraceError):
        status = status_for(exc)
        count_error(metrics, request, exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.one_line())
        response = json_response(error_doc(exc), status)
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    count_error(metrics, request, exc)
    return json_response(error_doc(exc), 500)


def install_error_handlers(app: FastAPI, metrics: ServeMetrics) -> None:
    """Every error to a status, from one table; each counted by route, model and error class."""

    @app.exception_handler(HeadraceError)
    async def headrace_error(request: Request, exc: HeadraceError) -> Response:
        return await error_response(metrics, request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": str(e.get("type"))}
            for e in exc.errors()
        ]
        count_error(metrics, request, RequestInvalid(problems))
        return json_response({"detail": problems, "error": "RequestInvalid"}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return await error_response(metrics, request, exc)
