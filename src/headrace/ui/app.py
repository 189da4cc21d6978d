"""The dashboard as an ASGI app, mounted under ``/ui`` in the serving app (``mount_ui``).

Pages are rendered on the server (Jinja2 templates, SVG charts), so they read without JavaScript;
the one script (``static/ui.js``) only drives the promote and rollback buttons, which call the
serving app's admin routes with the token the user types (kept in the tab's session storage).
Pages are read-only: whoever may read the API may read them.

Every page sets a CSRF cookie (``headrace_csrf``: random, HttpOnly, SameSite=Strict) when the browser
has none, and its forms carry the same value; the buttons send it as ``X-CSRF-Token``, which the
serving app requires of every browser's admin or write request. Every page is sent with the serving
app's security headers (a CSP with no inline script: no page has one, and style only in attributes).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import HeadraceError, NotFound
from ..serve.shared import CSRF_COOKIE
from .data import Dashboard
from .pages import dataset_charts, model_charts, monitoring_charts, when

__all__ = ["MOUNT_PATH", "create_ui_app", "dashboard_app", "mount_ui"]

log = logging.getLogger("headrace.ui")

MOUNT_PATH = "/ui"
_STATIC = Path(__file__).parent / "static"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,128}")


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{float(value) * 100:.{digits}f}%"


def _ago(value: Any) -> str:
    if not isinstance(value, datetime):
        return ""
    seconds = (datetime.now(UTC) - value).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{max(int(seconds), 0)}s ago"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("headrace.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, pct=_pct, when=when, ago=_ago)
    return env


def create_ui_app(dashboard: Dashboard) -> Any:
    """The dashboard's pages and static files (mount it; links follow the mount's ``root_path``)."""
    env = _environment()

    def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        started = request.scope.get("headrace.ui.started", time.perf_counter())
        csrf = request.cookies.get(CSRF_COOKIE, "")
        fresh = not _TOKEN.fullmatch(csrf)
        if fresh:
            csrf = secrets.token_urlsafe(32)
        html = env.get_template(template).render(
            csrf=csrf,
            base=base,
            api=base.removesuffix(MOUNT_PATH),
            project=dashboard.name,
            admin=dashboard.admin,
            models_nav=dashboard.model_names(),
            path=request.url.path,
            rendered_ms=(time.perf_counter() - started) * 1000,
            now=datetime.now(UTC),
            **context,
        )
        response = HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
        if fresh:  # path "/": the admin routes the forms post to must receive it
            response.set_cookie(
                CSRF_COOKIE,
                csrf,
                path="/",
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        return response

    def page(fn: Any) -> Any:
        def endpoint(request: Request) -> Response:
            request.scope["headrace.ui.started"] = time.perf_counter()
            try:
                result: Response = fn(request)
                return result
            except NotFound as exc:
                return render(request, "error.html", 404, title="Not found", message=exc.one_line())
            except HeadraceError as exc:
                log.warning("dashboard page %s failed: %s", request.url.path, exc.one_line())
                status = 503 if exc.transient else 500
                return render(request, "error.html", status, title="Unavailable", message=exc.one_line())

        return endpoint

    @page
    def overview(request: Request) -> Response:
        return render(request, "overview.html", doc=dashboard.overview(), title="Overview")

    @page
    def dataset(request: Request) -> Response:
        name = request.path_params["name"]
        doc = dashboard.dataset(name)
        return render(request, "dataset.html", doc=doc, charts=dataset_charts(doc), title=f"Dataset {name}")

    @page
    def model(request: Request) -> Response:
        name = request.path_params["name"]
        raw = request.query_params.get("version")
        if raw is not None and not (raw.isascii() and raw.isdigit()):
            raise NotFound(f"version {raw!r} is not a number", hint="pick one from the versions table")
        doc = dashboard.model(name, int(raw) if raw else None)
        return render(request, "model.html", doc=doc, charts=model_charts(doc), title=f"Model {name}")

    @page
    def monitoring_index(request: Request) -> Response:
        names = dashboard.model_names()
        base = request.scope.get("root_path", "").rstrip("/")
        if names:
            return RedirectResponse(f"{base}/monitoring/{names[0]}", status_code=307)
        return render(request, "error.html", 404, title="Monitoring", message="no model is registered yet")

    @page
    def monitoring(request: Request) -> Response:
        name = request.path_params["name"]
        doc = dashboard.monitoring(name)
        return render(
            request, "monitoring.html", doc=doc, charts=monitoring_charts(doc), title=f"Monitoring {name}"
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return render(
            request, "error.html", status, title="Not found", message=f"no page at {request.url.path}"
        )

    return _Labelled(
        Starlette(
            routes=[
                Route("/", overview, name="overview"),
                Route("/datasets/{name}", dataset, name="dataset"),
                Route("/models/{name}", model, name="model"),
                Route("/monitoring", monitoring_index, name="monitoring_index"),
                Route("/monitoring/{name}", monitoring, name="monitoring"),
                Mount("/static", StaticFiles(directory=_STATIC), name="static"),
            ],
            exception_handlers={404: not_found},
        )
    )


class _Labelled:
    """Every dashboard request counts as route ``/ui`` with no model in the serving app's metrics
    (its ``/models/{name}`` pages are not traffic of that model)."""

    path = MOUNT_PATH

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope.get("type") == "http":  # the serving app's edge reads these after the call
                scope["route"] = self
                scope["path_params"] = {}


def mount_ui(
    app: Any,
    registry: Any,
    *,
    store: Any = None,
    spec: Any = None,
    project: Any = None,
    path: str = MOUNT_PATH,
) -> Dashboard:
    """Mount the dashboard at ``path`` in a serving app (``create_app``) and return its
    :class:`Dashboard`, whose ``project`` may be set later (thresholds and sources come from it)."""
    dashboard = Dashboard(
        registry=registry,
        store=store,
        project=project,
        serving=spec,
        metrics=getattr(app.state, "metrics", None),
        host=getattr(app.state, "host", None),
        title=getattr(app, "title", "headrace"),
    )
    app.mount(path, create_ui_app(dashboard), name="ui")
    app.state.ui = dashboard
    return dashboard


def dashboard_app(ws: Any) -> Any:
    """The serving app of a workspace with no model loaded (what ``headrace ui`` serves): the
    dashboard at ``/ui``, the admin routes its buttons call, ``/metrics``; ``/`` redirects."""
    from ..registry import Registry
    from ..serve.app import create_app
    from ..serve.project import project_gates

    plog = ws.project.serving.prediction_log.model_copy(update={"enabled": False})
    spec = ws.project.serving.model_copy(update={"prediction_log": plog})
    registry = Registry(ws.meta, ws.artifacts, actor="dashboard")
    application = create_app(
        registry,
        spec,
        store=ws.store,
        models=[],
        title=f"headrace: {ws.project.project}",
        canary=None,
        gates=project_gates(ws.project),  # its promote button goes through each model's gate
    )
    dashboard: Dashboard = application.state.ui
    dashboard.project = ws.project
    dashboard.serving = ws.project.serving  # the prediction log the dashboard reads
    dashboard.host = None  # nothing is served here

    async def root(request: Request) -> Response:
        return RedirectResponse(f"{MOUNT_PATH}/", status_code=307)

    application.add_route("/", root, include_in_schema=False)
    return application
