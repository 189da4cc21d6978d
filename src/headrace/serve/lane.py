"""The fast lane: the hot routes dispatched by a raw ASGI match in front of FastAPI's machinery.

A one-row prediction costs tens of microseconds of headrace's own work; FastAPI's request
machinery around it (the router's regex scan over every route, the exception and exit-stack
middleware, dependency solving, the parameter models) costs more than that again. The routes named
in ``serving.fast_lane`` are matched here on method and path and handed to **the same endpoint
function** FastAPI would call, inside the same :class:`~headrace.serve.edge.Edge` (header and body
limits, security headers, in-flight gauge, counts and latency), with errors turned into answers by
the same handlers (``headrace.serve.edge.error_response``). Nothing the endpoint does is
duplicated: body limits, validation errors, the canary, the prediction log and the metrics are the
endpoint's own. ``tests/integration/test_fast_lane.py`` sends a corpus of good and bad requests to
an app with the lane and one without and compares the answers byte for byte.

What the lane does not take goes to FastAPI unchanged: another method or path, a root path, and a
recommendation request whose query FastAPI would have to validate (anything but ``k`` as a plain
integer in range and ``model``, each at most once), so every 422 for a query comes from FastAPI
itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from .edge import Edge, Receive, Scope, Send, error_response
from .metrics import ServeMetrics

__all__ = ["LANE_ROUTES", "FastLane"]

log = logging.getLogger("headrace.serve")

# the routes that may take the lane: name in serving.fast_lane -> (method, path template)
LANE_ROUTES: dict[str, tuple[str, str]] = {
    "predict": ("POST", "/models/{name}/predict"),
    "batch": ("POST", "/models/{name}/predict/batch"),
    "recommendations": ("GET", "/users/{user_id}/recommendations"),
    "interactions": ("POST", "/interactions"),
}

Handler = Callable[[Request, APIRoute, dict[str, Any]], Awaitable[Response]]


class FastLane:
    """Matches the lane's routes on a request's method and path; :meth:`__call__` serves them."""

    def __init__(
        self, app: FastAPI, metrics: ServeMetrics, max_body: int, max_headers: int, routes: Sequence[str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        by_path = {
            (method, route.path): route
            for route in app.router.routes
            if isinstance(route, APIRoute)
            for method in route.methods or ()
        }
        self._routes = {name: by_path[LANE_ROUTES[name]] for name in routes if LANE_ROUTES[name] in by_path}
        # the Edge around the lane: the same limits, headers and metrics as every other request
        self._edged = Edge(self._serve, metrics, max_body, max_headers)
        self.taken = 0  # requests the lane served

    @property
    def routes(self) -> list[str]:
        return sorted(self._routes)

    def match(self, scope: Scope) -> tuple[APIRoute, dict[str, Any]] | None:
        """The route and its arguments when the lane takes this request, else None."""
        if scope.get("root_path"):
            return None
        method, path = scope["method"], scope["path"]
        routes = self._routes
        if method == "POST":
            if path.startswith("/models/"):
                rest = path[8:]
                if rest.endswith("/predict"):
                    name, kind = rest[:-8], "predict"
                elif rest.endswith("/predict/batch"):
                    name, kind = rest[:-14], "batch"
                else:
                    return None
                route = routes.get(kind)
                if route is None or not name or "/" in name:
                    return None
                return route, {"name": name}
            if path == "/interactions":
                route = routes.get("interactions")
                return None if route is None else (route, {})
            return None
        if method == "GET" and path.startswith("/users/") and path.endswith("/recommendations"):
            route = routes.get("recommendations")
            user_id = path[7:-16]
            if route is None or not user_id or "/" in user_id:
                return None
            query = _recommendation_query(scope.get("query_string", b""))
            if query is None:
                return None
            return route, {"user_id": user_id, **query}
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, found: Any) -> None:
        scope["headrace.lane"] = found
        self.taken += 1
        await self._edged(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        route, arguments = scope.pop("headrace.lane")
        scope["app"] = self.app
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {k: v for k, v in arguments.items() if k in ("name", "user_id")}
        request = Request(scope, receive)
        try:
            response = await route.endpoint(request=request, **arguments)
        except Exception as exc:  # as FastAPI's handlers answer it (and count it)
            response = await error_response(self.metrics, request, exc)
        await response(scope, receive, send)


def _recommendation_query(raw: bytes) -> dict[str, Any] | None:
    """``k`` and ``model`` when each is given at most once and ``k`` is a plain integer from 1 to
    1000; None for anything else (FastAPI then validates the query and words the 422)."""
    if not raw:
        return {}
    out: dict[str, Any] = {}
    for part in raw.split(b"&"):
        key, eq, value = part.partition(b"=")
        name = key.decode("latin-1")
        if not eq or name in out or not value.isascii():
            return None
        if name == "k":
            if not value.isdigit() or len(value) > 4 or value[0] == 48:  # no sign, no leading 0
                return None
            k = int(value)
            if not 1 <= k <= 1000:
                return None
            out["k"] = k
        elif name == "model":
            if b"%" in value or b"+" in value:
                return None  # percent-encoded: FastAPI decodes it
            out["model"] = value.decode()
        else:
            return None
    return out
