"""``headrace train`` and ``headrace evaluate``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..errors import ConfigError, RegistryError, UsageError

if TYPE_CHECKING:
    pass
from ._app import app, console, emit_json, err_console, sigterm_interrupts, table, workspace

__all__ = ["evaluate", "train"]

_SHOWN = (
    "roc_auc",
    "average_precision",
    "f1",
    "precision",
    "recall",
    "accuracy",
    "log_loss",
    "rmse",
    "mae",
    "r2",
    "mape",
)


def _scores_rows(summary: dict[str, Any]) -> list[list[Any]]:
    return [[m, f"{summary[m]['mean']:.4f}", f"{summary[m]['std']:.4f}"] for m in _SHOWN if m in summary]


@app.command()
def train(
    ctx: typer.Context,
    models: list[str] | None = typer.Argument(None, help="models to train (default: every tabular model)"),
    reproduce: int | None = typer.Option(
        None, "--reproduce", help="retrain this version from its recorded data version, spec and seed"
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        envvar="HEADRACE_DASK",
        help="Dask scheduler, e.g. tcp://10.0.0.5:8786: the search and folds run on its workers, which "
        "read the dataset version from the store themselves (the store URL must reach them)",
    ),
    jobs: int | None = typer.Option(None, "--jobs", "-j", help="outer folds in parallel (-1: every core)"),
    promote: bool = typer.Option(False, "--promote", help="promote through the promote_if gate"),
    data_version: int | None = typer.Option(None, "--data-version", help="train on this dataset version"),
    json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """Train, cross-validate and register a new version of each model."""
    from ..lineage import LineageEmitter
    from ..registry import Registry
    from ..train.run import reproduce as run_reproduce
    from ..train.run import train_model

    ws = workspace(ctx)
    try:
        registry = Registry(ws.meta, ws.artifacts)
        if reproduce is not None:
            if not models or len(models) != 1:
                raise UsageError(
                    "--reproduce takes exactly one model", hint="headrace train churn --reproduce 3"
                )
            rep, result = run_reproduce(
                models[0], reproduce, store=ws.store, registry=registry, n_jobs=jobs, scheduler=scheduler
            )
            if json:
                emit_json(rep.to_dict())
            else:
                console.print(
                    f"[bold]{rep.name}@{rep.version}[/bold] retrained on data version {rep.data_version}"
                )
                console.print(
                    table(
                        "metrics",
                        ["metric", "recorded", "reproduced", "same"],
                        [
                            [
                                r["metric"],
                                _num(r["recorded"]),
                                _num(r["reproduced"]),
                                "yes" if r["same"] else "NO",
                            ]
                            for r in rep.rows
                        ],
                    )
                )
                console.print("reproduced: same metrics" if rep.same else "NOT reproduced: metrics differ")
            if not rep.same:
                raise RegistryError(
                    f"{rep.name}@{rep.version} did not reproduce: metrics differ",
                    hint="check the package versions recorded with the version ('headrace models show')",
                )
            return
        names = models or [
            n
            for n, s in ws.project.models.items()
            if s.task in ("classification", "regression", "recommendation")
        ]
        if not names:
            raise ConfigError(
                "no tabular or recommendation model in headrace.yaml", hint="add one under models:"
            )
        docs = []
        for name in names:
            spec = ws.project.model(name)
            if spec.task == "image_classification":  # headrace.vision (the torch extra)
                from ..vision.run import train_in_workspace

                say = None if json else (lambda line: console.print(line, markup=False, highlight=False))
                docs.append(train_in_workspace(ws, name, spec, promote=promote, progress=say))
                continue
            if spec.task == "recommendation":  # headrace.recommend: popularity, item-kNN, EASE
                from ..recommend import train_recommender

                version = data_version if data_version is not None else ws.store.version(spec.dataset)
                with _fold_progress(name, enabled=not json, steps=True) as on_steps:
                    trained = train_recommender(
                        spec,
                        ws.store.read(spec.dataset, version),
                        registry=registry,
                        name=name,
                        data_version=version,
                        promote=promote,
                        progress=on_steps,
                    )
                rec_doc = {"model": name, **trained.to_dict()}
                docs.append(rec_doc)
                if not json:
                    console.print(
                        f"{name}: chosen {trained.chosen} ({trained.protocol}, k={trained.k}); "
                        + ", ".join(f"{m} {v:.4f}" for m, v in sorted(trained.metrics.items()))
                    )
                continue
            with _fold_progress(name, enabled=not json) as on_folds, sigterm_interrupts():
                result = train_model(
                    name,
                    spec,
                    store=ws.store,
                    registry=registry,
                    data_version=data_version,
                    n_jobs=jobs,
                    scheduler=scheduler,
                    promote=promote,
                    project_root=ws.root,
                    progress=on_folds,
                    lineage=LineageEmitter.for_project(ws.project),
                )
            mv = result.version
            assert mv is not None
            sc = result.scorecard
            doc = {
                "model": name,
                "version": mv.version,
                "dataset": mv.dataset,
                "data_version": mv.data_version,
                "metric": sc["metric"],
                "strategy": sc["strategy"],
                "folds": len(sc["folds"]),
                "summary": sc["summary"],
                "nested_summary": sc.get("nested_summary"),
                "selection": sc.get("selection"),
                "chosen_per_fold": [f["chosen"] for f in sc["folds"]],
                "target_transform": sc.get("target_transform"),
                "notes": sc.get("notes") or [],
                "threshold": sc["threshold"],
                "chosen": sc["chosen"],
                "class_ratio": sc.get("class_ratio"),
                "aliases": list(mv.aliases),
                "seconds": round(result.seconds, 2),
            }
            docs.append(doc)
            if not json:
                _print_trained(doc)
        if json:
            emit_json(docs if len(docs) != 1 else docs[0])
    finally:
        ws.close()


def _num(value: Any) -> str:
    return "" if value is None else f"{value:.6g}"


def _print_trained(doc: dict[str, Any]) -> None:
    console.print(
        f"[bold]{doc['model']}@{doc['version']}[/bold] on {doc['dataset']}@{doc['data_version']}: "
        f"{doc['strategy']} ({doc['folds']} folds), chosen {doc['chosen']}, {doc['seconds']} s"
    )
    console.print(table("cross-validated scores", ["metric", "mean", "std"], _scores_rows(doc["summary"])))
    nested = doc.get("nested_summary")
    if nested:
        m = doc["metric"]
        console.print(
            f"chosen by the inner scores pooled over the folds; fully nested estimate (each fold with its "
            f"own choice): {m} {nested[m]['mean']:.4f} ± {nested[m]['std']:.4f}",
            highlight=False,
        )
        folds: dict[str, list[int]] = {}
        for i, c in enumerate(doc["chosen_per_fold"]):
            shown = str(c.get("estimator")) + "".join(f" {k}={v}" for k, v in c.items() if k != "estimator")
            folds.setdefault(shown, []).append(i)
        for shown, where in folds.items():
            console.print(f"chosen in fold(s) {', '.join(map(str, where))}: {shown}", highlight=False)
    for note in doc.get("notes") or []:
        console.print(f"note: {note}", markup=False, highlight=False)
    if doc["threshold"]:
        t = doc["threshold"]
        console.print(f"threshold {t['value']:.4f} ({t['rule']}, on out-of-fold predictions)")
    if doc["class_ratio"]:
        shares = ", ".join(f"{k} {v:.1%}" for k, v in doc["class_ratio"]["shares"].items())
        console.print(f"class ratio: {shares}")
    if doc["aliases"]:
        console.print(f"aliases: {', '.join(doc['aliases'])}")


@app.command()
def evaluate(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="MODEL or MODEL@VERSION (a number, champion, challenger, latest)"),
    out: Path | None = typer.Option(None, "--out", help="folder for the report (default: .headrace/reports)"),
    json: bool = typer.Option(False, "--json", help="print the report's JSON document"),
) -> None:
    """Write the validation report (HTML and JSON) of a model version."""
    from ..registry import Registry, split_ref
    from ..train.report import write_report

    name, ref = split_ref(model)
    ws = workspace(ctx)
    try:
        registry = Registry(ws.meta, ws.artifacts)
        folder = out if out is not None else ws.root / ".headrace" / "reports"
        written = write_report(registry, name, ref, folder)
    finally:
        ws.close()
    if json:
        emit_json({**written["doc"], "html": written["html"], "json": written["json"]})
        return
    doc = written["doc"]
    sc = doc["scorecard"]
    console.print(
        f"[bold]{name}@{doc['version']}[/bold]: {sc['strategy']}, {len(sc['folds'])} folds, "
        f"data {doc['dataset']}@{doc['data_version']}"
    )
    console.print(table("cross-validated scores", ["metric", "mean", "std"], _scores_rows(sc["summary"])))
    console.print(f"report: {written['html']}")
    console.print(f"json:   {written['json']}")


@contextmanager
def _fold_progress(name: str, *, enabled: bool, steps: bool = False) -> Iterator[Any]:
    """Outer folds done, with an estimate of the time left, on a terminal (a line per stage when the
    output is not one; nothing under --json). ``steps``: one bar whose label is the step just done (a
    recommender's candidates), a line per step off a terminal."""
    if not enabled:
        yield None
        return
    started = time.monotonic()
    live = err_console.is_terminal
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not live,
    ) as bar:
        tasks: dict[str, Any] = {}

        def on_folds(done: int, total: int, label: str) -> None:
            if steps:
                if "steps" not in tasks:
                    tasks["steps"] = bar.add_task(name, total=total)
                bar.update(tasks["steps"], completed=done, description=f"{name}: {label}")
                if not live:
                    err_console.print(f"{name}: [{done}/{total}] {label}", markup=False, highlight=False)
                return
            if label not in tasks:
                tasks[label] = bar.add_task(f"{name}: {label}", total=total)
            bar.update(tasks[label], completed=done)
            if not live and done == total:
                err_console.print(
                    f"{name}: {label} done ({time.monotonic() - started:.1f} s)", highlight=False
                )

        yield on_folds
