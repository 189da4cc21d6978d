"""``headrace predict``: score a dataset with a registered model, in bounded memory."""

from __future__ import annotations

import typer

from ._app import app, console, emit_json, workspace

__all__ = ["predict"]


@app.command()
def predict(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="MODEL or MODEL@VERSION (default: the champion)"),
    dataset: str = typer.Option(..., "--dataset", "-d", help="NAME or NAME@VERSION to score"),
    out: str = typer.Option(..., "--out", "-o", help="the dataset the scores are written to"),
    keep: list[str] = typer.Option(
        None, "--keep", help="columns to carry over (repeatable; default: those the model does not read)"
    ),
    chunk_rows: int = typer.Option(250_000, "--chunk-rows", min=1, help="rows scored at a time (memory)"),
    json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """Score a dataset with a model version: one commit to --out, with the model version, data version
    and batch id on every row; memory bounded by --chunk-rows whatever the row count."""
    from ..registry import Registry
    from ..score import score_dataset

    ws = workspace(ctx)
    try:
        registry = Registry(ws.meta, ws.artifacts, actor="predict")
        result = score_dataset(
            ws.store, registry, model, dataset, out, keep=keep or None, chunk_rows=chunk_rows
        )
    finally:
        ws.close()
    if json:
        emit_json(result.to_dict())
        return
    r = result
    console.print(
        f"{r.model}@{r.version} scored {r.rows:,} rows of {r.dataset}@{r.data_version} into "
        f"{r.out}@{r.out_version} in {r.seconds:.1f} s ({r.rows_per_second:,.0f} rows/s, "
        f"{r.chunks} chunks; batch {r.batch_id})",
        highlight=False,
        soft_wrap=True,
    )
