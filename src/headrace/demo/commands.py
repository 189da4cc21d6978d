"""How the demo runs a stage: the public ``headrace`` command, in this process, through the same
typer application as the console script (a new interpreter would pay seconds of imports per
command), with ``--json``; its document is what the demo summarises."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from pathlib import Path
from typing import Any

from ..errors import HeadraceError

__all__ = ["CommandFailed", "headrace", "shown"]


class CommandFailed(HeadraceError):
    """A command the demo ran failed; the message is the command's own error line."""


def shown(*args: str) -> str:
    """The command as the user reruns it from the demo's folder."""
    return "headrace " + " ".join(shlex.quote(a) for a in args)


def headrace(folder: Path, *args: str) -> Any:
    """Run ``headrace --project FOLDER ARGS --json`` here; returns its JSON document, or raises
    :class:`CommandFailed` with the command's error line."""
    from ..cli import app

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = app(
            args=["--project", str(folder), *args, "--json"], prog_name="headrace", standalone_mode=False
        )
    text = out.getvalue()
    try:
        doc = json.loads(text) if text.strip() else None
    except ValueError:
        doc = None
    failed = isinstance(doc, dict) and doc.get("ok") is False and "error" in doc
    if code or failed:
        error = doc.get("error") if isinstance(doc, dict) else text.strip()[-300:]
        hint = doc.get("hint") if isinstance(doc, dict) else None
        raise CommandFailed(f"'{shown(*args)}' failed (exit {code or 1}): {error}", hint=hint)
    return doc
