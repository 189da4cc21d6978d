"""``headrace schema``: the JSON Schema of headrace.yaml, or its Markdown reference (docs/config.md)."""

from __future__ import annotations

import sys

import typer

from ._app import app, emit_json


@app.command("schema")
def schema_command(
    markdown: bool = typer.Option(False, "--markdown", help="print the Markdown reference (docs/config.md)"),
) -> None:
    """Print the JSON Schema of headrace.yaml, or with --markdown its reference of every key."""
    from ..config import reference  # pydantic and the spec classes load only for this command

    if markdown:
        sys.stdout.write(reference.markdown())
        sys.stdout.flush()
        return
    emit_json(reference.json_schema())
