"""``headrace train`` for ``task: image_classification``: one call from the CLI, one JSON document back.

Progress follows the CLI's convention for long steps (``headrace.cli.train``): on a terminal a live
bar per stage (augmented views, fine-tuning epochs with the current selection accuracy) on stderr,
gone when training ends; when the output is not a terminal, one line per stage and nothing per
epoch; under ``--json`` (``progress`` None) nothing at all. Each epoch is logged through
``headrace.vision.fit``'s logger in every case (shown with ``-v``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..config.models import ModelSpec
from ..errors import ConfigError

__all__ = ["step_progress", "train_in_workspace"]


@contextmanager
def step_progress(name: str, console: Any) -> Iterator[Callable[[str, int, int, str], None] | None]:
    """An ``on_step`` for :func:`headrace.vision.train.train_image_model`: a live bar per stage on
    ``console`` (a rich Console) when it is a terminal; otherwise one that shows nothing (the steps
    are still logged, and ``progress`` still gets one line per stage)."""
    if not console.is_terminal:
        yield lambda stage, done, total, line: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def on_step(stage: str, done: int, total: int, line: str) -> None:
            detail = line.split(": ", 1)[-1]
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"{name}: {stage}", total=total, detail="")
            bar.update(tasks[stage], completed=done, total=total, detail=detail)

        yield on_step


def train_in_workspace(
    ws: Any,
    name: str,
    spec: ModelSpec,
    *,
    promote: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train, evaluate and register ``name`` in the project ``ws`` (a :class:`headrace.Workspace`).

    The HTML report goes to ``.headrace/reports/<name>-report.html`` (and into the artifact store).
    ``progress`` (None under ``--json``) gets one line per stage; epochs go to a live bar on a
    terminal (see the module docstring).
    """
    if importlib.util.find_spec("torch") is None:
        raise ConfigError(
            f"model {name!r} is an image model and needs torch, which is not installed",
            hint="pip install 'headrace[vision]'",
        )
    from .train import train_image_model

    if progress is None:
        on_steps: Any = _silent()
    else:
        from ..cli._app import err_console

        on_steps = step_progress(name, err_console)
    with on_steps as on_step:
        result = train_image_model(
            spec,
            store=ws.store,
            meta=ws.meta,
            artifacts=ws.artifacts,
            name=name,
            promote=promote,
            out_dir=ws.root / ".headrace" / "reports",
            project_root=ws.root,
            progress=progress,
            on_step=on_step,
        )
    doc = result.summary()
    doc["metrics"] = result.metrics
    doc["aliases"] = list(getattr(result.version, "aliases", ()) or ())
    doc["report"] = str(ws.root / ".headrace" / "reports" / f"{name}-report.html")
    return doc


@contextmanager
def _silent() -> Iterator[None]:
    yield None
