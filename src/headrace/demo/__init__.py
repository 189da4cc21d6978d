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

from ..scaffold import init_project
from ..status import project_status
from ..workspace import Workspace

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


# The demo's loop runs in a minute, not a day: short windows, a quick reload, a 30 % canary. These
# go into the demo's headrace.yaml (the deployed bundle serves with the project's settings).
DEMO_POLICY = """
  reload_seconds: 0.5
  prediction_log: {flush_seconds: 0.2}

monitoring:
  window: 1h
  min_rows: 100
  drift_share: 0.1
  cooldown: 1s
  canary: {share: 0.3, window: 2s, min_requests: 20}
"""


def _stage_project(ctx: DemoContext) -> list[str]:
    path = init_project(ctx.folder, name="headrace-demo", rows=4000, force=True)
    text = path.read_text()
    path.write_text(text.rstrip("\n") + "\n" + DEMO_POLICY.lstrip("\n"), encoding="utf-8")
    ctx.workspace = Workspace.open(path)
    from .serve import demo_write_token

    demo_write_token()  # the servers and the bundle the demo starts take writes with it
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


def _stage_ingest(ctx: DemoContext) -> list[str]:
    from ..ingest.runner import (
        ingest,
        open_source,
    )  # the ingest stage's own imports stay out of the CLI's path

    lines: list[str] = []
    for name, spec in ctx.ws.project.sources.items():
        if spec.kind != "file":
            continue
        result = ingest(open_source(name, spec), spec, store=ctx.ws.store, meta=ctx.ws.meta, source_name=name)
        lines.append(
            f"{name}: {result.rows_read} rows read from {len(result.batches)} files, "
            f"{result.rows_committed} committed to '{spec.dataset}', {result.rows_quarantined} quarantined"
        )
        for batch in result.batches:
            for col, rec in (batch.report.imputed if batch.report else {}).items():
                what = f"{rec['strategy']} {rec['value']}"
                lines.append(f"  {Path(batch.origin).name}: {col}: {rec['count']} values imputed ({what})")
        qname = ctx.ws.store.quarantine_name(spec.dataset)
        if ctx.ws.store.exists(qname):
            sample = ctx.ws.store.read(qname).head(4)
            key = next(iter(spec.columns), sample.columns[0])
            for row in sample.iter_rows(named=True):
                lines.append(f"  quarantined {key}={row.get(key)} line {row['position']}: {row['reason']}")
        ctx.facts.setdefault("ingested", {})[name] = result.to_dict()
    return lines


def _stage_http(ctx: DemoContext) -> list[str]:
    from .api import demo_http_stage  # uvicorn stays out of the CLI's import path

    return demo_http_stage(ctx)


def _stage_sql(ctx: DemoContext) -> list[str]:
    from .api import demo_sql_stage

    return demo_sql_stage(ctx)


def _stage_mqtt(ctx: DemoContext) -> list[str]:
    from .stream import demo_stage  # paho and the broker stay out of the CLI's import path

    return demo_stage(ctx)


def _stage_train(ctx: DemoContext) -> list[str]:
    from .train import demo_train_stage  # the trainer stays out of the CLI's import path

    return demo_train_stage(ctx)


def _stage_evaluate(ctx: DemoContext) -> list[str]:
    from .train import demo_evaluate_stage

    return demo_evaluate_stage(ctx)


def _stage_serve(ctx: DemoContext) -> list[str]:
    from .serve import demo_stage  # the churn champion and a recommender on a local server

    return demo_stage(ctx)


def _stage_deploy(ctx: DemoContext) -> list[str]:
    from .deploy import demo_stage  # bundle the champion, deploy it locally, contract checks

    return demo_stage(ctx)


def _stage_monitor(ctx: DemoContext) -> list[str]:
    from .monitor import demo_stage  # drift, retrain, canary, promote, rollback

    return demo_stage(ctx)


STAGES: list[tuple[str, Callable[[DemoContext], list[str]]]] = [
    ("project", _stage_project),
    ("ingest", _stage_ingest),
    ("http", _stage_http),
    ("sql", _stage_sql),
    ("mqtt", _stage_mqtt),
    ("train", _stage_train),
    ("evaluate", _stage_evaluate),
    ("serve", _stage_serve),
    ("deploy", _stage_deploy),
    ("monitor", _stage_monitor),
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
