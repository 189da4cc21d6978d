"""``headrace datasets``: list, show, quarantine, drop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from ..errors import NotFound, UsageError

if TYPE_CHECKING:
    pass
from ._app import app, console, emit_json, table, workspace

datasets_app = typer.Typer(
    help="Datasets: list, show, quarantine, report, replay, drop.", no_args_is_help=False
)
app.add_typer(datasets_app, name="datasets")


@datasets_app.callback(invoke_without_command=True)
def _default(ctx: typer.Context, json: bool = typer.Option(False, "--json")) -> None:
    if ctx.invoked_subcommand is None:
        list_datasets(ctx, json=json)


@datasets_app.command("list")
def list_datasets(ctx: typer.Context, json: bool = typer.Option(False, "--json")) -> None:
    """Every dataset with its rows, versions and quarantined rows."""
    from ..status import dataset_summary
    from ..store import QUARANTINE_SUFFIX

    ws = workspace(ctx)
    names = [d for d in ws.store.datasets() if not d.endswith(QUARANTINE_SUFFIX)]
    docs = [dataset_summary(ws, n) for n in names]
    ws.close()
    if json:
        emit_json(docs)
        return
    console.print(
        table(
            "datasets",
            ["name", "rows", "versions", "quarantined", "columns"],
            [[d["name"], d["rows"], d["versions"], d["quarantined_rows"], len(d["columns"])] for d in docs],
        )
    )


@datasets_app.command("show")
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="dataset name"),
    version: int | None = typer.Option(None, help="a version (default: the latest)"),
    rows: int = typer.Option(10, help="how many rows to show"),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """A dataset's schema (which types were inferred, which declared), history and first rows."""
    from ..ingest.schema import load_schema
    from ..status import dataset_summary

    ws = workspace(ctx)
    summary = dataset_summary(ws, name)
    history = ws.store.versions(name)
    frame = ws.store.read(name, version).head(rows)
    pinned = load_schema(ws.meta, name)
    ws.close()
    types = {c: str(t) for c, t in frame.schema.items()}
    schema = [
        {
            "column": c,
            "dtype": dtype,
            "type": pinned.columns[c].type if pinned and c in pinned.columns else None,
            "origin": pinned.columns[c].origin if pinned and c in pinned.columns else "as read",
            "format": pinned.columns[c].format if pinned and c in pinned.columns else None,
        }
        for c, dtype in types.items()
    ]
    doc = {
        **summary,
        "schema": schema,
        "history": [
            {
                "version": v.version,
                "at": v.timestamp.isoformat() if v.timestamp else None,
                "operation": v.operation,
                "batch_id": v.batch_id,
                "source": v.source,
                "rows": v.rows,
            }
            for v in history
        ],
        "sample": frame.to_dicts(),
    }
    if json:
        emit_json(doc)
        return
    console.print(f"[bold]{name}[/bold]: {summary['rows']} rows, version {summary['version']}")
    console.print(
        table(
            "schema",
            ["column", "type", "origin", "stored as"],
            [[s["column"], s["type"] or "", s["origin"], s["dtype"]] for s in schema],
        )
    )
    console.print(
        table(
            "history",
            ["version", "at", "operation", "batch", "source", "rows"],
            [
                [h["version"], h["at"], h["operation"], h["batch_id"], h["source"], h["rows"]]
                for h in doc["history"]
            ],
        )
    )
    console.print(frame)


@datasets_app.command("quarantine")
def quarantine(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="dataset name"),
    rows: int = typer.Option(20, help="how many rows to show"),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """The rows rejected for a dataset, with the reasons."""
    ws = workspace(ctx)
    if not ws.store.exists(name):
        raise NotFound(f"dataset {name!r} does not exist", hint="see 'headrace datasets list'")
    qname = ws.store.quarantine_name(name)
    frame = ws.store.read(qname) if ws.store.exists(qname) else None
    ws.close()
    if frame is None:
        if json:
            emit_json({"dataset": name, "rows": 0, "sample": []})
        else:
            console.print(f"{name}: no quarantined rows")
        return
    if json:
        emit_json({"dataset": name, "rows": frame.height, "sample": frame.head(rows).to_dicts()})
        return
    console.print(f"[bold]{name}[/bold]: {frame.height} quarantined rows")
    meta_cols = [c for c in ("position", "reason", "origin", "batch_id") if c in frame.columns]
    data_cols = [c for c in frame.columns if c not in (*meta_cols, "raw")][:4]
    shown = frame.head(rows).select([*meta_cols, *data_cols])
    console.print(table("quarantine", shown.columns, [list(r) for r in shown.iter_rows()]))


@datasets_app.command("drop")
def drop(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="dataset name"),
    yes: bool = typer.Option(False, "--yes", help="confirm: the dataset and its history are deleted"),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """Delete a dataset, its quarantine and pinned types; its sources then load everything again.
    Models and the registry are not touched."""
    from ..ingest.reload import drop_dataset

    if not yes:
        raise UsageError(
            f"dropping {name!r} deletes it with its history and quarantine", hint="pass --yes to confirm"
        )
    ws = workspace(ctx)
    try:
        feeding = [n for n, s in ws.project.sources.items() if s.dataset == name]
        existed = drop_dataset(name, store=ws.store, meta=ws.meta, sources=feeding)
    finally:
        ws.close()
    if not existed and not feeding:
        raise NotFound(f"dataset {name!r} does not exist", hint="see 'headrace datasets list'")
    if json:
        emit_json({"dataset": name, "dropped": existed, "sources_reset": feeding})
        return
    reset = f"; sources {', '.join(feeding)} will load everything again" if feeding else ""
    console.print(f"{name}: {'dropped' if existed else 'was not there'}{reset}")
