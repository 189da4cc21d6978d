"""``headrace ingest`` (batch sources), ``headrace datasets replay`` and ``headrace datasets report``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import Progress, ProgressColumn, SpinnerColumn, Task, TextColumn
from rich.text import Text

from ..errors import UsageError

if TYPE_CHECKING:
    from ..ingest.runner import RunResult
from ._app import app, console, emit_json, err_console, sigterm_interrupts, table, workspace
from .datasets import datasets_app

STREAMING_KINDS = {"mqtt", "nats"}  # run by 'headrace stream', not here


class _RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        rows = int(task.fields.get("rows", 0))
        elapsed = task.elapsed or 0.0
        rate = rows / elapsed if elapsed > 0 else 0.0
        return Text(f"{rows:,} rows  {rate:,.0f} rows/s", style="cyan")


def _progress(enabled: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        _RowsPerSecond(),
        console=err_console,
        transient=True,
        disable=not enabled,
    )


@app.command("ingest")
def ingest_command(
    ctx: typer.Context,
    sources: list[str] = typer.Argument(
        None, help="source names from headrace.yaml (default: all batch sources)"
    ),
    force: bool = typer.Option(False, "--force", help="reload files already loaded (same fingerprint)"),
    reload: bool = typer.Option(
        False,
        "--reload",
        help="rebuild the datasets of these sources (all by default) from every source feeding them, "
        "with the current rules, as a new version",
    ),
    wait: float = typer.Option(
        0.0, "--wait", help="seconds to wait for a source that another run is loading (default: fail at once)"
    ),
    html: Path | None = typer.Option(None, "--html", help="also write the quality reports to this HTML file"),
    json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """Run batch sources: validate, cleanse, quarantine bad rows, commit. Exit 1 if a batch failed or
    quarantined more than the source's max_quarantine_ratio."""
    from ..ingest.report import report_html
    from ..ingest.runner import ingest, open_source
    from ..lineage import LineageEmitter

    ws = workspace(ctx)
    try:
        names = list(sources or [])
        if not names:
            names = [n for n, s in ws.project.sources.items() if s.kind not in STREAMING_KINDS]
            if not names:
                raise UsageError("no batch sources in headrace.yaml", hint="add one under 'sources:'")
        specs = {n: ws.project.source(n) for n in names}
        for n, s in specs.items():
            if s.kind in STREAMING_KINDS:
                raise UsageError(f"source {n!r} is a {s.kind} stream", hint=f"run 'headrace stream {n}'")
        results: list[RunResult] = []
        with _progress(not json and err_console.is_terminal) as bar, sigterm_interrupts():

            def progress_for(name: str) -> Any:
                task = bar.add_task(name, rows=0)

                def on_progress(origin: str, rows: int) -> None:
                    bar.update(task, description=f"{name}: {Path(origin).name}", rows=rows)

                return on_progress

            if reload:
                results = _reload(ws, specs, progress_for)
            for name, spec in {} if reload else specs.items():
                started = time.perf_counter()
                result = ingest(
                    open_source(name, spec),
                    spec,
                    store=ws.store,
                    meta=ws.meta,
                    source_name=name,
                    force=force,
                    progress=progress_for(name),
                    wait=wait,
                    lineage=LineageEmitter.for_project(ws.project),
                )
                result.seconds = result.seconds or time.perf_counter() - started
                results.append(result)
    finally:
        ws.close()
    reports = [b.report.to_dict() for r in results for b in r.batches if b.report is not None]
    if html is not None:
        html.write_text(report_html(reports, title=", ".join(names)), encoding="utf-8")
    failed = [r for r in results if not r.ok]
    if json:
        emit_json({"ok": not failed, "runs": [r.to_dict() for r in results]})
    else:
        _print_results(results)
    for r in results:
        if r.warning:
            err_console.print(f"warning: {r.warning}", markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _reload(ws: Any, specs: dict[str, Any], progress_for: Any) -> list[RunResult]:
    """Reload the datasets of ``specs``, each from every batch source that feeds it."""
    from ..ingest.reload import reload_dataset

    results: list[RunResult] = []
    for dataset in dict.fromkeys(s.dataset for s in specs.values()):
        feeding = {n: s for n, s in ws.project.sources.items() if s.dataset == dataset}
        streams = [n for n, s in feeding.items() if s.kind in STREAMING_KINDS]
        if streams:
            raise UsageError(
                f"dataset {dataset!r} is also fed by the stream {streams[0]!r}: it cannot be reloaded",
                hint="reload a dataset that only batch sources feed, or drop it: 'headrace datasets drop'",
            )
        results += reload_dataset(dataset, feeding, store=ws.store, meta=ws.meta, progress=progress_for)
    return results


def _print_results(results: list[RunResult]) -> None:
    from ..ingest.report import report_tables

    rows = []
    for r in results:
        counts = {s: sum(1 for b in r.batches if b.status == s) for s in ("committed", "skipped", "failed")}
        counts["failed"] += sum(1 for b in r.batches if b.status == "failed_checks")
        rate = f"{r.rows_read / r.seconds:,.0f}" if r.seconds > 0 and r.rows_read else ""
        rows.append(
            [
                r.source,
                r.dataset,
                r.status,
                f"{counts['committed']}/{counts['skipped']}/{counts['failed']}",
                r.rows_read,
                r.rows_committed,
                r.rows_quarantined,
                rate,
            ]
        )
    console.print(
        table(
            "ingestion",
            [
                "source",
                "dataset",
                "status",
                "batches ok/skipped/failed",
                "read",
                "committed",
                "quarantined",
                "rows/s",
            ],
            rows,
        )
    )
    for r in results:
        for b in r.batches:
            if b.report is not None and b.status == "committed":
                console.print(report_tables(b.report.to_dict(), columns=False))
    failures = [(r.source, b.origin, b.error) for r in results for b in r.batches if b.status == "failed"]
    errors = [(r.source, "(source)", r.error) for r in results if r.error and not r.failed]
    errors = [e for e in errors if not any(r.source == e[0] and r.status == "failed_checks" for r in results)]
    if failures or errors:
        console.print(table("failed", ["source", "origin", "reason"], [list(f) for f in failures + errors]))
        err_console.print(
            f"{len(failures) + len(errors)} batch(es) failed; the others were committed", highlight=False
        )
    for r in results:  # too much quarantined: one line each, naming the source, the ratio and the rules
        for b in r.batches:
            if b.excess:
                err_console.print(f"failed checks: {b.excess}", markup=False, highlight=False, soft_wrap=True)


@datasets_app.command("replay")
def replay_command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="dataset name"),
    source: str | None = typer.Option(None, help="the source whose rules to apply (when several feed NAME)"),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """Re-check a dataset's quarantined rows with the current rules; rows that now pass are committed."""
    from ..ingest.replay import replay_quarantine

    ws = workspace(ctx)
    try:
        feeding = [n for n, s in ws.project.sources.items() if s.dataset == name]
        if source is not None:
            if ws.project.source(source).dataset != name:
                raise UsageError(f"source {source!r} does not feed dataset {name!r}")
            feeding = [source]
        if not feeding:
            raise UsageError(f"no source in headrace.yaml feeds dataset {name!r}", hint="check the name")
        if len(feeding) > 1:
            raise UsageError(
                f"several sources feed {name!r}: {', '.join(feeding)}", hint="pass --source NAME"
            )
        spec = ws.project.source(feeding[0])
        result, unparsed = replay_quarantine(spec, store=ws.store, meta=ws.meta, source_name=feeding[0])
    finally:
        ws.close()
    doc: dict[str, Any] = {
        "dataset": name,
        "replayed": 0 if result is None else result.rows_read,
        "committed": 0 if result is None else result.rows_committed,
        "still_quarantined": 0 if result is None else result.rows_quarantined,
        "unparseable_kept": unparsed,
        "run": None if result is None else result.to_dict(),
    }
    if json:
        emit_json(doc)
    else:
        console.print(
            f"{name}: replayed {doc['replayed']} rows: {doc['committed']} committed, "
            f"{doc['still_quarantined']} still quarantined, {unparsed} unparseable records kept"
        )
    if result is not None and not result.ok:
        raise typer.Exit(1)


@datasets_app.command("report")
def report_command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="dataset name"),
    last: int = typer.Option(1, help="how many of the newest reports"),
    html: Path | None = typer.Option(None, "--html", help="write them to this HTML file"),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """The stored quality reports of a dataset's newest batches."""
    from ..ingest.report import latest_reports, report_html, report_tables

    ws = workspace(ctx)
    try:
        reports = latest_reports(ws.meta, name, limit=last)
    finally:
        ws.close()
    if html is not None:
        html.write_text(report_html(reports, title=name), encoding="utf-8")
    if json:
        emit_json({"dataset": name, "reports": reports})
        return
    if not reports:
        console.print(f"{name}: no quality reports (run 'headrace ingest' first)")
    for r in reports:
        console.print(report_tables(r))
