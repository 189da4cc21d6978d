"""Project-level commands: init, status, demo."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from ..demo import StageResult
import contextlib

from ._app import app, console, emit_json, sigterm_interrupts, table, workspace


@app.command()
def init(
    directory: Path = typer.Argument(Path("."), help="folder for the new project (created if needed)"),
    more: list[str] | None = typer.Argument(
        None, hidden=True, metavar="PATH", help="more paths for --from (as a shell expands data/*.csv)"
    ),
    from_: list[str] | None = typer.Option(
        None,
        "--from",
        metavar="PATH",
        help="scaffold from your own files instead of sample data: a CSV, JSON, JSONL or Parquet file, "
        "a folder or a quoted glob (repeat --from for more sources); the data is profiled, not copied",
    ),
    name: str | None = typer.Option(None, help="project name (default: the folder's name)"),
    force: bool = typer.Option(False, help="overwrite an existing headrace.yaml"),
) -> None:
    """Scaffold a project: headrace.yaml and sample data with a few planted defects, or (--from) a
    headrace.yaml that ingests your own files as they stand."""
    from ..errors import UsageError

    if more and not from_:
        raise UsageError(
            f"init takes one folder; got {directory} and {' '.join(more)}",
            hint="to scaffold from files, pass them with --from",
        )
    if from_:
        from ..scaffold_from import read_summary, scaffold_project_from

        paths = [*from_, *(more or [])]
        if directory.is_file():
            raise UsageError(
                f"{directory} is a file, not a project folder",
                hint="name the folder first: headrace init DIR --from PATH...",
            )
        result = scaffold_project_from(paths, directory, name=name, force=force)
        console.print(
            f"wrote {result.path} (the data stays where it is)", markup=False, highlight=False, soft_wrap=True
        )
        for source in result.sources:
            console.print(f"  {read_summary(source)}", markup=False, highlight=False, soft_wrap=True)
        if result.model is not None:
            console.print(
                f"  model {result.model['name']} (commented out): target {result.model['target']}? "
                f"task {result.model['task']}? check them in headrace.yaml",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        console.print(
            f"next: cd {directory} && headrace ingest", markup=False, highlight=False, soft_wrap=True
        )
        return
    from ..scaffold import init_project

    path = init_project(directory, name=name, force=force)
    console.print(f"wrote {path} and sample data in {path.parent / 'data'}")
    console.print(f"next: cd {directory} && headrace status")


@app.command()
def status(
    ctx: typer.Context, json: bool = typer.Option(False, "--json", help="print one JSON document")
) -> None:
    """Datasets, runs, models and deployments at a glance."""
    from ..status import project_status

    ws = workspace(ctx)
    try:
        doc = project_status(ws)
    finally:
        ws.close()
    if json:
        emit_json(doc)
        return
    console.print(f"[bold]{doc['project']}[/bold]  ({doc['root']})")
    console.print(
        table(
            "datasets",
            ["name", "rows", "versions", "quarantined", "last batch", "source", "at"],
            [
                [
                    d["name"],
                    d["rows"],
                    d["versions"],
                    d["quarantined_rows"],
                    (d["last_batch"] or {}).get("batch_id"),
                    (d["last_batch"] or {}).get("source"),
                    (d["last_batch"] or {}).get("at"),
                ]
                for d in doc["datasets"]
            ],
        )
    )
    console.print(
        table(
            "recent ingestion runs",
            ["id", "source", "status", "read", "committed", "quarantined", "finished", "error"],
            [
                [
                    r["id"],
                    r["source"],
                    r["status"],
                    r["rows_read"],
                    r["rows_committed"],
                    r["rows_quarantined"],
                    r["finished_at"],
                    r["error"],
                ]
                for r in doc["ingestion_runs"]
            ],
        )
    )
    console.print(
        table(
            "models",
            ["name", "versions", "latest", "aliases"],
            [
                [
                    m["name"],
                    m["versions"],
                    m["latest"],
                    ", ".join(f"{k}=v{v}" for k, v in sorted(m["aliases"].items())),
                ]
                for m in doc["models"]
            ],
        )
    )


@app.command()
def demo(
    ctx: typer.Context,
    directory: Path | None = typer.Option(
        None, "--dir", help="where to build the demo project (default: a new temporary folder)"
    ),
    services: bool = typer.Option(
        False,
        "--services",
        help="only start the demo project's local orders API (its orders_api source) until Ctrl-C, "
        "for 'headrace ingest' after the demo; the project: --dir, else --project",
    ),
) -> None:
    """The whole lifecycle on generated data, as a project: each stage is a headrace command on it,
    printed beside what it did, to rerun in the demo's folder."""
    from ..demo import run_demo
    from ..demo import services as demo_services

    if services:
        import threading

        from ._app import state

        folder = directory or state(ctx).project or Path(".")
        with sigterm_interrupts(), demo_services(folder.resolve()) as url:
            console.print(f"the demo's orders API at {url} (Ctrl-C stops it)", markup=False, highlight=False)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
        return

    folder = (directory or Path(tempfile.mkdtemp(prefix="headrace-demo-"))).resolve()
    console.print(f"[bold]headrace demo[/bold] in {folder}", soft_wrap=True)
    console.print(
        f"    every command below reruns in that folder: cd {folder} (or headrace -p {folder} ...)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )

    def show(result: StageResult) -> None:
        console.print(f"[bold green]✓ {result.name}[/bold green] ({result.seconds:.1f} s)", soft_wrap=True)
        for command in result.commands:
            console.print(f"    $ {command}", markup=False, highlight=False, soft_wrap=True)
        for line in result.lines:
            console.print(f"    {line}", markup=False, highlight=False, soft_wrap=True)

    results = run_demo(folder, on_stage=show)
    total = sum(r.seconds for r in results)
    console.print(
        f"demo finished: {len(results)} stages in {total:.1f} s; the project is in {folder}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"next: headrace -p {folder} status | train price | serve | ui",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
