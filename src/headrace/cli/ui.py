"""``headrace ui``: the dashboard on its own (the serving app with no model loaded, under ``/ui``)."""

from __future__ import annotations

import typer

from ._app import app, console, emit_json, workspace


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
    from ..serve.runner import UVICORN_OPTIONS
    from ..ui import dashboard_app

    application = dashboard_app(ws)
    if json_output:
        emit_json({"project": ws.project.project, "url": url})
    else:
        console.print(f"dashboard of {ws.project.project} at {url} (Ctrl-C stops it)")
    uvicorn.run(application, host=bind, port=port, log_level=log_level, **UVICORN_OPTIONS)
