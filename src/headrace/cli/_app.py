"""The typer application and what every command shares: options, output, error handling."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from ..log import setup_logging

if TYPE_CHECKING:
    from ..workspace import Workspace

__all__ = [
    "CliState",
    "app",
    "console",
    "emit_json",
    "err_console",
    "sigterm_interrupts",
    "state",
    "table",
    "workspace",
]

app = typer.Typer(
    name="headrace",
    help="From raw data to a monitored, self-correcting model in production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
console = Console(soft_wrap=False)
err_console = Console(stderr=True)


@dataclass
class CliState:
    project: Path | None = None
    verbosity: int = 0
    log_format: str = "text"


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def workspace(ctx: typer.Context) -> Workspace:
    """The project named by --project (or found from the current folder), opened."""
    from ..workspace import Workspace  # store, metadata and pydantic load only for commands that need them

    return Workspace.open(state(ctx).project)


@app.callback()
def _root(
    ctx: typer.Context,
    project: Path | None = typer.Option(
        None, "--project", "-p", help="headrace.yaml to use (a file or its folder); default: ./ or above"
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="more logging; -vv for debug"),
    log_format: str = typer.Option("text", "--log-format", help="text or json (JSON lines on stderr)"),
) -> None:
    if log_format not in ("text", "json"):
        raise typer.BadParameter("must be 'text' or 'json'", param_hint="--log-format")
    ctx.obj = CliState(project=project, verbosity=verbose, log_format=log_format)
    setup_logging(log_format, verbose)


def emit_json(document: Any) -> None:
    """One JSON document on stdout, for scripts and CI."""
    sys.stdout.write(json.dumps(document, default=str, indent=2) + "\n")
    sys.stdout.flush()


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    out = Table(title=title, title_justify="left", header_style="bold")
    for name in columns:
        out.add_column(name, overflow="fold")
    for row in rows:
        out.add_row(*["" if v is None else str(v) for v in row])
    return out


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM stops a run as Ctrl-C does (a KeyboardInterrupt): what is in hand is not committed and
    the run is recorded as interrupted (exit code 130)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
