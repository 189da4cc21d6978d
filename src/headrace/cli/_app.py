"""The typer application and what every command shares: options, output, error handling."""

from __future__ import annotations

import copy
import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.table import Table
from typer._click.globals import get_current_context  # typer's own click (vendored since 0.20)
from typer.core import TyperGroup

from ..errors import HeadraceError, UsageError
from ..log import redact, setup_logging

if TYPE_CHECKING:
    from ..workspace import Workspace

__all__ = [
    "FORMATS",
    "CliState",
    "HeadraceGroup",
    "app",
    "console",
    "emit_json",
    "err_console",
    "json_error",
    "sigterm_interrupts",
    "state",
    "table",
    "workspace",
]

JSON_KEY = "headrace.json"  # in the click context's meta (shared by a command and its groups)
FORMATS = ("auto", "table", "tsv")


class HeadraceGroup(TyperGroup):
    """The root command. Before it runs, every group and command is given the CLI's manners once
    (``--json`` everywhere: honoured, passed down from a group, or refused); under ``--json`` an error
    is one JSON document on stdout, ``{"ok": false, "error": ..., "hint": ...}``, with the exit code
    the plain error line would have had."""

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        apply_manners(self)
        argv = list(sys.argv[1:] if args is None else args)
        given = argv[: argv.index("--")] if "--" in argv else argv
        if "--json" not in given:
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(argv, prog_name, complete_var, False, **extra)
            code = rv if isinstance(rv, int) else 0
        except typer.TyperException as exc:  # click's usage errors (exit 2)
            where = getattr(getattr(exc, "ctx", None), "command_path", None)
            code = json_error(exc.format_message(), f"see '{where} --help'" if where else None, exc.exit_code)
        except typer.Abort:
            code = json_error("aborted", None, 1)
        except HeadraceError as exc:
            code = json_error(exc.message, exc.hint, exc.exit_code)
        except Exception as exc:  # the same line cli.main prints, as JSON
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            code = json_error(
                f"unexpected {type(exc).__name__}: {first}",
                "rerun with -v for the traceback and report it",
                1,
            )
        if standalone_mode:
            sys.exit(code)
        return code


def json_error(error: str, hint: str | None, code: int) -> int:
    """Write the JSON form of an error line on stdout; returns ``code`` (the exit status)."""
    emit_json(
        {
            "ok": False,
            "error": redact(" ".join(error.split())),
            "hint": redact(" ".join(hint.split())) if hint else None,
            "exit_code": code,
        }
    )
    return code


def _json_param(command: Any) -> Any:
    return next((p for p in command.params if "--json" in getattr(p, "opts", ())), None)


def apply_manners(root: TyperGroup) -> None:
    """Give every command of the tree a ``--json`` (once per command object): a group's ``--json``
    (and the root's) reaches the command that follows, so ``datasets --json list`` is ``datasets list
    --json``; a command with no JSON output refuses it in one line instead of ignoring it."""
    template = _json_param(root)
    assert template is not None, "the root callback declares --json"

    def visit(command: Any, path: tuple[str, ...]) -> None:
        if getattr(command, "_headrace_manners", False):
            return
        command._headrace_manners = True
        own = _json_param(command)
        added = own is None
        if own is None:
            own = copy.copy(template)
            own.name = "json"
            own.help = "JSON output for the command that follows"
            command.params.append(own)
        refuse = added and not isinstance(command, TyperGroup)
        if refuse:
            own.help = "refused: this command has no JSON output"
        name = own.name
        original = command.callback
        where = " ".join(path)

        def callback(**kwargs: Any) -> Any:
            given = kwargs.pop(name, False) if added else kwargs.get(name)
            ctx = get_current_context()
            wanted = bool(given) or bool(ctx.meta.get(JSON_KEY))
            if wanted:
                ctx.meta[JSON_KEY] = True
            if refuse and wanted:
                raise UsageError(f"'{where}' has no JSON output", hint="run it without --json")
            if not added:
                kwargs[name] = wanted
            return original(**kwargs) if original is not None else None

        command.callback = callback
        for sub_name, sub in getattr(command, "commands", {}).items():
            visit(sub, (*path, sub_name))

    visit(root, (root.name or "headrace",))


app = typer.Typer(
    name="headrace",
    help="From raw data to a monitored, self-correcting model in production.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
    rich_markup_mode=None,
    cls=HeadraceGroup,
)


class _Console(Console):
    """A console whose output to a file or a pipe is neither cropped nor wrapped at 80 columns: a line
    stays one line (an error is one line), tables are as wide as their words, tab-separated lines
    are whole."""

    def print(self, *objects: Any, crop: bool | None = None, **kwargs: Any) -> None:
        if not self.is_terminal:
            kwargs.setdefault("soft_wrap", True)
        super().print(*objects, crop=self.is_terminal if crop is None else crop, **kwargs)


console = _Console(soft_wrap=False)
err_console = _Console(stderr=True)


@dataclass
class CliState:
    project: Path | None = None
    verbosity: int = 0
    log_format: str = "text"
    json: bool = False
    format: str = "auto"  # tables: auto (tab-separated when stdout is not a terminal), table or tsv


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def workspace(ctx: typer.Context) -> Workspace:
    """The project named by --project (or found from the current folder), opened."""
    from ..workspace import Workspace  # store, metadata and pydantic load only for commands that need them

    return Workspace.open(state(ctx).project)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        sys.stdout.write(f"headrace {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    project: Path | None = typer.Option(
        None,
        "--project",
        "-p",
        envvar="HEADRACE_PROJECT",
        help="headrace.yaml to use (a file or its folder); default: $HEADRACE_PROJECT, else ./ or above",
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="more logging; -vv for debug"),
    log_format: str = typer.Option("text", "--log-format", help="text or json (JSON lines on stderr)"),
    json: bool = typer.Option(
        False, "--json", help="one JSON document on stdout (errors too); a command without one refuses it"
    ),
    output_format: str = typer.Option(
        "auto",
        "--format",
        help="tables: auto (tab-separated when stdout is not a terminal), table or tsv",
    ),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="print the version and exit"
    ),
) -> None:
    if log_format not in ("text", "json"):
        raise typer.BadParameter("must be 'text' or 'json'", param_hint="--log-format")
    if output_format not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}", param_hint="--format")
    ctx.obj = CliState(
        project=project, verbosity=verbose, log_format=log_format, json=json, format=output_format
    )
    setup_logging(log_format, verbose)


def emit_json(document: Any) -> None:
    """One JSON document on stdout, for scripts and CI."""
    sys.stdout.write(json.dumps(document, default=str, indent=2) + "\n")
    sys.stdout.flush()


class _Table(Table):
    """A rich table that never cuts a word: tab-separated lines (a header, then a line a row) when the
    format says tsv, or by default when stdout is not a terminal; as wide as its words need when a
    table goes to a file or pipe (rich would fold it into 80 columns: 'register' / 'ed')."""

    def __init__(self, *args: Any, tsv: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tsv = tsv
        self.plain_rows: list[list[str]] = []

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.tsv:
            header = [str(c.header) for c in self.columns]
            if self.title:  # what the table is, as a comment line a reader can skip
                yield Segment(f"# {' '.join(str(self.title).split())}\n")
            for line in (header, *self.plain_rows):
                yield Segment("\t".join(" ".join(v.split()) for v in line) + "\n")
            return
        if not console.is_terminal:
            wide = Measurement.get(console, options.update(width=10_000), self).maximum
            options = options.update(width=max(wide, options.max_width))
        yield from super().__rich_console__(console, options)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A table for ``console.print``; tab-separated under ``--format tsv`` or when stdout is no terminal."""
    ctx = get_current_context(silent=True)
    chosen = state(ctx).format if ctx is not None else "auto"  # type: ignore[arg-type]
    tsv = chosen == "tsv" or (chosen == "auto" and not console.is_terminal)
    out = _Table(title=title, title_justify="left", header_style="bold", tsv=tsv)
    for name in columns:
        out.add_column(name, overflow="fold")
    for row in rows:
        cells = ["" if v is None else str(v) for v in row]
        out.add_row(*cells)
        out.plain_rows.append(cells)
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
