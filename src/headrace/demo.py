"""``headrace demo``: the whole lifecycle on generated data, in a temporary or given folder.

Each stage is a function ``(DemoContext) -> list[str]`` that does its work on the example project and
returns the lines to print. Stages run in order; a failing stage stops the demo with its error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .scaffold import init_project
from .status import project_status
from .workspace import Workspace

__all__ = ["STAGES", "DemoContext", "StageResult", "run_demo"]


@dataclass
class DemoContext:
    folder: Path
    workspace: Workspace | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # what one stage leaves for the next

    @property
    def ws(self) -> Workspace:
        assert self.workspace is not None, "the project stage runs first"
        return self.workspace


@dataclass
class StageResult:
    name: str
    seconds: float
    lines: list[str]


def _stage_project(ctx: DemoContext) -> list[str]:
    path = init_project(ctx.folder, name="headrace-demo", rows=4000, force=True)
    ctx.workspace = Workspace.open(path)
    files = sorted(p.name for p in (ctx.folder / "data" / "customers").glob("*.csv"))
    return [f"project written to {path}", f"sample data: {', '.join(files)}"]


def _stage_status(ctx: DemoContext) -> list[str]:
    status = project_status(ctx.ws)
    lines = [f"datasets: {len(status['datasets'])}, models: {len(status['models'])}"]
    for d in status["datasets"]:
        lines.append(
            f"  {d['name']}: {d['rows']} rows in {d['versions']} versions, "
            f"{d['quarantined_rows']} quarantined"
        )
    return lines


STAGES: list[tuple[str, Callable[[DemoContext], list[str]]]] = [
    ("project", _stage_project),
    ("status", _stage_status),
]


def run_demo(folder: Path, on_stage: Callable[[StageResult], None] | None = None) -> list[StageResult]:
    folder.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(folder=folder.resolve())
    results: list[StageResult] = []
    try:
        for name, stage in STAGES:
            started = time.perf_counter()
            lines = stage(ctx)
            result = StageResult(name, time.perf_counter() - started, lines)
            results.append(result)
            if on_stage is not None:
                on_stage(result)
    finally:
        if ctx.workspace is not None:
            ctx.workspace.close()
    return results
