"""``headrace stream``: the real-time ingestion worker for the ``kind: mqtt`` and ``kind: nats`` sources."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from ..errors import SourceError, UsageError

if TYPE_CHECKING:
    pass
from ._app import app, console, emit_json, state, table, workspace

STREAM_KINDS = ("mqtt", "nats")


@app.command("stream")
def stream_command(
    ctx: typer.Context,
    sources: list[str] = typer.Argument(
        None, help="stream sources from headrace.yaml (default: all of them)"
    ),
    workers: int = typer.Option(
        1, "--workers", "-w", min=1, help="processes per source, on a shared subscription ($share/GROUP/...)"
    ),
    max_rows: int | None = typer.Option(
        None, "--max-rows", min=1, help="stop once this many rows are committed or quarantined (per worker)"
    ),
    idle_exit: float | None = typer.Option(
        None, "--idle-exit", min=0.1, help="stop once nothing has arrived for this many seconds"
    ),
    json: bool = typer.Option(False, "--json", help="print one JSON document when the workers stop"),
) -> None:
    """Run the stream workers until stopped (SIGTERM or Ctrl-C commits and acknowledges, then exits).

    Messages are committed in micro-batches and acknowledged to the broker only after the commit;
    duplicates are dropped by message key; bad payloads go to the dataset's quarantine.
    """
    from ..stream.worker import run_source, run_workers

    ws = workspace(ctx)
    try:
        names = list(sources or [])
        if not names:
            names = [n for n, s in ws.project.sources.items() if s.kind in STREAM_KINDS]
            if not names:
                raise UsageError(
                    "no stream sources (kind: mqtt or nats) in headrace.yaml", hint="add one under 'sources:'"
                )
        for name in names:
            spec = ws.project.source(name)
            if spec.kind not in STREAM_KINDS:
                raise UsageError(
                    f"source {name!r} is a {spec.kind} source", hint=f"run 'headrace ingest {name}'"
                )
        if workers == 1 and len(names) == 1:
            results: list[dict[str, Any]] = [
                run_source(ws, names[0], max_rows=max_rows, idle_exit=idle_exit).to_dict()
            ]
        else:
            st = state(ctx)
            ws.meta.migrate()  # once, here: worker processes opening a new database at once would race
            project_file = ws.root / "headrace.yaml"
            results = run_workers(
                project_file,
                names,
                workers,
                max_rows=max_rows,
                idle_exit=idle_exit,
                log_format=st.log_format,
                verbosity=st.verbosity,
            )
    finally:
        ws.close()
    if json:
        emit_json(results)
    else:
        console.print(
            table(
                "stream workers",
                ["source", "status", "received", "committed", "quarantined", "duplicates", "rows/s", "error"],
                [
                    [
                        r.get("source"),
                        r.get("status"),
                        r.get("received"),
                        r.get("rows_committed"),
                        r.get("rows_quarantined"),
                        r.get("duplicates"),
                        r.get("rows_per_second"),
                        r.get("error"),
                    ]
                    for r in results
                ],
            )
        )
    failed = [r for r in results if r.get("status") != "succeeded"]
    if failed:
        raise SourceError(f"{len(failed)} stream worker(s) failed: {failed[0].get('error')}")
