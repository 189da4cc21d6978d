"""``headrace serve``: the REST API (predictions, Open Inference Protocol v2, recommendations, metrics)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    pass
from ._app import app, console, workspace


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    models: list[str] = typer.Argument(
        None, help="models to serve (default: serving.models in headrace.yaml)"
    ),
    host: str | None = typer.Option(None, "--host", help="address to listen on (default: serving.host)"),
    port: int | None = typer.Option(None, "--port", min=0, max=65535, help="port (default: serving.port)"),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="worker processes (default: serving.workers)"
    ),
    log_level: str = typer.Option("warning", "--log-level", help="uvicorn's access/error log level"),
) -> None:
    """Serve the champions of the project's models until stopped (Ctrl-C or SIGTERM).

    Every route is described at /docs. Admin routes (reload, promote, rollback) need
    'Authorization: Bearer <token>' with the token from $HEADRACE_ADMIN_TOKEN (or serving.admin_token).
    """
    import uvicorn

    from ..serve.project import PROJECT_ENV, app_from_workspace
    from ..serve.runner import UVICORN_OPTIONS

    ws = workspace(ctx)
    spec = ws.project.serving
    bind = host or spec.host
    listen = spec.port if port is None else port
    n = workers or spec.workers
    console.print(
        f"serving {', '.join(models or spec.models or list(ws.project.models)) or 'nothing'} "
        f"on http://{bind}:{listen} ({n} worker{'s' if n > 1 else ''}); docs at /docs"
    )
    if n == 1:
        application = app_from_workspace(ws, models=list(models or []) or None)
        uvicorn.run(application, host=bind, port=listen, log_level=log_level, **UVICORN_OPTIONS)
        return
    # several workers: each process builds its own app from the project file
    os.environ[PROJECT_ENV] = str(ws.root / "headrace.yaml")
    if models:
        os.environ["HEADRACE_SERVE_MODELS"] = ",".join(models)
    ws.close()
    # /metrics sums over the workers: they keep their values in files in one folder (unless the
    # environment already names one, as a process manager running several servers would).
    own_folder = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_folder = tempfile.mkdtemp(prefix="headrace-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_folder
    try:
        uvicorn.run(
            "headrace.serve.project:app_from_env",
            factory=True,
            host=bind,
            port=listen,
            workers=n,
            log_level=log_level,
            **UVICORN_OPTIONS,
        )
    finally:
        if own_folder is not None:
            shutil.rmtree(own_folder, ignore_errors=True)
