"""``headrace export``: land a dataset (or a version of it) in a PostgreSQL or MariaDB table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    pass
from ._app import app, console, emit_json, workspace


@app.command()
def export(
    ctx: typer.Context,
    dataset: str = typer.Argument(..., help="dataset name"),
    url: str = typer.Argument(..., help="postgresql://USER@HOST/DB or mysql://USER@HOST/DB (MariaDB)"),
    table: str = typer.Option(..., "--table", "-t", help="target table, optionally schema.table"),
    version: int | None = typer.Option(None, "--version", help="a dataset version (default: the latest)"),
    if_exists: str = typer.Option(
        "append", "--if-exists", help="append to the table, replace it, or fail when it exists"
    ),
    chunk_rows: int = typer.Option(100_000, "--chunk-rows", min=1, help="rows sent per chunk"),
    json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """Write a dataset into a database table (PostgreSQL COPY, MariaDB batched inserts), all or nothing."""
    from ..ingest.export import export_dataset

    if if_exists not in ("append", "replace", "fail"):
        raise typer.BadParameter("must be append, replace or fail", param_hint="--if-exists")
    ws = workspace(ctx)
    try:
        result = export_dataset(
            ws.store,
            dataset,
            url,
            table,
            version=version,
            if_exists=if_exists,  # type: ignore[arg-type]
            chunk_rows=chunk_rows,
        )
    finally:
        ws.close()
    if json:
        emit_json(result.to_dict())
        return
    doc = result.to_dict()
    console.print(
        f"{result.dataset}@{result.version}: {result.rows} rows into {result.table} at {result.url} "
        f"in {doc['seconds']}s ({doc['rows_per_second']} rows/s, {result.mode})",
        markup=False,
        highlight=False,
    )
