"""``headrace ui``: the dashboard on its own (the serving app with no model loaded, under ``/ui``)."""

from __future__ import annotations

import typer

from ._app import app, console, emit_json, workspace


def dashboard_app(ws: object) -> object:
    """The serving app of ``ws`` with no model loaded: the dashboard at ``/ui``, the admin routes
    (promote, rollback) its buttons call, ``/metrics`` and the health routes; ``/`` redirects."""
    from starlette.responses import RedirectResponse

    from ..registry import Registry
    from ..serve.app import create_app
    from ..workspace import Workspace

    assert isinstance(ws, Workspace)
    spec = ws.project.serving.model_copy(
        update={"prediction_log": ws.project.serving.prediction_log.model_copy(update={"enabled": False})}
    )
    registry = Registry(ws.meta, ws.artifacts, actor="dashboard")
    application = create_app(
        registry, spec, store=ws.store, models=[], title=f"headrace: {ws.project.project}", canary=None
    )
    application.state.ui.project = ws.project
    application.state.ui.serving = ws.project.serving
    application.state.ui.host = None

    @application.get("/", include_in_schema=False)
    async def _root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    return application


@app.command("ui")
def ui_command(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="address to listen on (default: serving.host)"),
    port: int = typer.Option(8050, "--port", min=0, max=65535, help="port to listen on"),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn's log level"),
    json_output: bool = typer.Option(False, "--json", help="print the address as JSON, then serve"),
) -> None:
    """Serve the dashboard (datasets, quality, models, the ledger, drift) until stopped.

    The same pages 'headrace serve' shows at /ui, without loading any model. Promote and rollback
    buttons need the admin token ($HEADRACE_ADMIN_TOKEN or serving.admin_token).
    """
    import uvicorn

    ws = workspace(ctx)
    bind = host or ws.project.serving.host
    url = f"http://{bind}:{port}/ui/"
    application = dashboard_app(ws)
    if json_output:
        emit_json({"project": ws.project.project, "url": url})
    else:
        console.print(f"dashboard of {ws.project.project} at {url} (Ctrl-C stops it)")
    uvicorn.run(
        application,  # type: ignore[arg-type]
        host=bind,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        access_log=False,
    )
