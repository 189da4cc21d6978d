"""``headrace demo``: the whole lifecycle on generated data, as a project in a temporary or given folder.

The demo writes a complete project (``project.py``: every source, model and the monitoring policy in
its headrace.yaml, and the data beside it), then runs each stage as the public commands on it
(``stages.py``, through ``commands.headrace``), printing each command beside its stage so that it can
be rerun in that folder. What is only the demo's lives here: its local orders API (``api.py``), its
generated data (``data.py``) and the traffic it sends. Nothing outside this package imports it but
the ``demo`` command.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import stages
from .project import DemoProject

__all__ = ["STAGES", "DemoContext", "StageResult", "run_demo", "services"]


@dataclass
class DemoContext:
    folder: Path
    project: DemoProject | None = None
    commands: list[str] = field(default_factory=list)  # what the running stage ran
    facts: dict[str, Any] = field(default_factory=dict)  # what one stage leaves for the next


@dataclass
class StageResult:
    name: str
    seconds: float
    lines: list[str]
    commands: list[str] = field(default_factory=list)


STAGES: list[tuple[str, Callable[[DemoContext], list[str]]]] = [
    ("project", stages.project),
    ("ingest", stages.ingest),
    ("http", stages.http),
    ("sql", stages.sql),
    ("mqtt", stages.mqtt),
    ("train", stages.train),
    ("evaluate", stages.evaluate),
    ("deploy", stages.deploy),
    ("monitor", stages.monitor),
    ("serve", stages.serve),  # after the loop: the live window the monitor reads is its traffic alone
    ("status", stages.status),
]


def run_demo(folder: Path, on_stage: Callable[[StageResult], None] | None = None) -> list[StageResult]:
    folder.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(folder=folder.resolve())
    results: list[StageResult] = []
    for name, stage in STAGES:
        ctx.commands = []
        started = time.perf_counter()
        lines = stage(ctx)
        result = StageResult(name, time.perf_counter() - started, lines, list(ctx.commands))
        results.append(result)
        if on_stage is not None:
            on_stage(result)
    return results


@contextmanager
def services(folder: Path) -> Iterator[str]:
    """The demo project's local orders API (the ``orders_api`` source's address), for ``headrace
    ingest`` after the demo; yields its URL."""
    from ..config import load_project
    from ..errors import UsageError
    from .api import serve_orders

    project = load_project(folder)
    spec = project.sources.get("orders_api")
    if spec is None or spec.kind != "http":
        raise UsageError(
            f"{folder} is not a headrace demo project", hint="run 'headrace demo --dir DIR' first"
        )
    url = str(spec.url)
    with serve_orders(url, Path(folder) / "data" / "orders.json"):
        yield url
