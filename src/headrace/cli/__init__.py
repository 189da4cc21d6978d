"""``headrace`` on the command line (typer). ``main`` turns every error into one line and an exit code:
0 success, 1 a failed run, 2 bad usage or configuration, 130 interrupted."""

from __future__ import annotations

import logging
import sys
import traceback

from ..errors import HeadraceError
from . import (  # noqa: F401  (registers the commands)
    core,
    datasets,
    deploy,
    export,
    ingest,
    models,
    monitor,
    predict,
    schema,
    serve,
    simulate,
    stream,
    train,
    ui,
)
from ._app import app, err_console

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("-v", "-vv", "-vvv", "--verbose") for a in args)
    try:
        # standalone mode: typer's own click reports usage errors (exit 2) and --help itself
        app(args=args, prog_name="headrace", standalone_mode=True)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except HeadraceError as exc:
        if verbose:
            traceback.print_exc()
        err_console.print(f"error: {exc.one_line()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        logging.getLogger("headrace").debug("unexpected error", exc_info=True)
        if verbose:
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        err_console.print(
            f"error: unexpected {type(exc).__name__}: {first}; rerun with -v for the traceback and report it",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
