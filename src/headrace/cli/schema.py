"""``headrace schema``: the JSON Schema of headrace.yaml, or its Markdown reference (docs/config.md)."""

from __future__ import annotations

import sys

import typer

from ._app import app, emit_json


@app.command("schema")
def schema_command(
    markdown: bool = typer.Option(False, "--markdown", help="print the Markdown reference (docs/config.md)"),
    json: bool = typer.Option(False, "--json", help="the JSON Schema (the default output)"),
) -> None:
    """Print the JSON Schema of headrace.yaml, or with --markdown its reference of every key."""
    from ..config import reference  # pydantic and the spec classes load only for this command

    if markdown and json:
        from ..errors import UsageError

        raise UsageError("--markdown is not JSON", hint="drop --json, or --markdown for the JSON Schema")
    if markdown:
        sys.stdout.write(reference.markdown())
        sys.stdout.flush()
        return
    emit_json(reference.json_schema())
