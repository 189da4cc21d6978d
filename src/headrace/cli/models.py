"""``headrace models``: list, show, promote, rollback, retire, history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from ..errors import UsageError

if TYPE_CHECKING:
    from ..registry import ModelVersion, Registry
from ._app import app, console, emit_json, table, workspace

__all__ = ["models_app"]

models_app = typer.Typer(
    help="Registered models: list, show, promote, rollback, retire, history.", no_args_is_help=False
)
app.add_typer(models_app, name="models")

_KEY_METRICS = ("roc_auc", "f1", "accuracy", "rmse", "mae", "r2")


def _registry(ctx: typer.Context) -> tuple[Any, Registry]:
    from ..registry import Registry

    ws = workspace(ctx)
    return ws, Registry(ws.meta, ws.artifacts)


def _summary(mv: ModelVersion) -> dict[str, Any]:
    return {
        "model": mv.name,
        "version": mv.version,
        "task": mv.task,
        "status": mv.status,
        "aliases": list(mv.aliases),
        "created_at": mv.created_at.isoformat(),
        "dataset": mv.dataset,
        "data_version": mv.data_version,
        "metrics": {k: v for k, v in mv.metrics.items() if not k.endswith("_std")},
        "params": mv.params,
        "threshold": mv.threshold,
    }


@models_app.callback(invoke_without_command=True)
def _default(ctx: typer.Context, json: bool = typer.Option(False, "--json")) -> None:
    if ctx.invoked_subcommand is None:
        list_models(ctx, name=None, json=json)


@models_app.command("list")
def list_models(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="one model (default: all)"),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """Every registered version with its aliases and key metrics."""
    ws, registry = _registry(ctx)
    try:
        versions = registry.list(name)
    finally:
        ws.close()
    docs = [_summary(v) for v in versions]
    if json:
        emit_json(docs)
        return
    rows = []
    for d in docs:
        shown = ", ".join(f"{k} {d['metrics'][k]:.4g}" for k in _KEY_METRICS if k in d["metrics"])
        rows.append(
            [
                d["model"],
                d["version"],
                ", ".join(d["aliases"]),
                d["status"],
                f"{d['dataset']}@{d['data_version']}",
                shown,
                d["created_at"][:19],
            ]
        )
    console.print(
        table("models", ["model", "version", "aliases", "status", "data", "metrics", "created"], rows)
    )


@models_app.command("show")
def show(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="MODEL or MODEL@VERSION (default: latest)"),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """One version: metrics, parameters, signature, lineage."""
    from ..registry import split_ref

    name, ref = split_ref(model)
    ws, registry = _registry(ctx)
    try:
        mv = registry.get(name, ref)
    finally:
        ws.close()
    doc = mv.to_dict()
    doc["details"] = {k: v for k, v in mv.details.items() if k not in ("scorecard",)}
    sc = mv.details.get("scorecard") or {}
    if sc.get("folds"):
        doc["validation"] = {
            "metric": sc.get("metric"),
            "summary": sc.get("summary"),
            "nested_summary": sc.get("nested_summary"),
            "selection": sc.get("selection"),
            "chosen_per_fold": [f.get("chosen") for f in sc["folds"]],
            "target_transform": sc.get("target_transform"),
            "notes": sc.get("notes") or [],
        }
    if json:
        emit_json(doc)
        return
    console.print(
        f"[bold]{mv.ref}[/bold] ({mv.task}, {mv.status}) aliases: {', '.join(mv.aliases) or 'none'}; "
        f"created {mv.created_at.isoformat()}"
    )
    console.print(
        f"data: {mv.dataset}@{mv.data_version}; code: {mv.code_version}; artifact "
        f"{(mv.artifact_sha256 or '')[:12]} ({mv.flavor}); threshold: {mv.threshold}"
    )
    metrics = [[k, f"{v:.6g}" if isinstance(v, float) else v] for k, v in mv.metrics.items()]
    console.print(table("metrics", ["metric", "value"], metrics))
    console.print(table("parameters", ["parameter", "value"], [[k, v] for k, v in mv.params.items()]))
    val = doc.get("validation")
    if val and val.get("nested_summary"):
        m = val["metric"]
        kept, nested = val["summary"][m], val["nested_summary"][m]
        console.print(
            f"{m}: {kept['mean']:.6g} ± {kept['std']:.3g} for the kept configuration (chosen by the inner "
            f"scores pooled over the folds); fully nested {nested['mean']:.6g} ± {nested['std']:.3g}",
            highlight=False,
        )
        rows = [
            [i, c.get("estimator"), {k: v for k, v in c.items() if k != "estimator"}]
            for i, c in enumerate(val["chosen_per_fold"])
        ]
        console.print(table("chosen per fold", ["fold", "estimator", "parameters"], rows))
    inputs = (mv.signature or {}).get("inputs", [])
    if isinstance(inputs, dict):  # an image model: what its input is, as one mapping
        console.print(table("input", ["key", "value"], [[k, v] for k, v in inputs.items()]))
    elif inputs:
        console.print(table("inputs", ["column", "type"], [[c["name"], c["type"]] for c in inputs]))
    splits = mv.details.get("splits")
    if isinstance(splits, dict):
        from json import dumps

        console.print(f"splits: {dumps(splits, default=str)[:400]}", markup=False, highlight=False)


@models_app.command("promote")
def promote(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="MODEL@VERSION, or MODEL with VERSION as the next argument"),
    version: int | None = typer.Argument(None, help="the version to promote"),
    alias: str = typer.Option("champion", "--alias", help="champion (gated), challenger or any alias"),
    reason: str = typer.Option("promoted by hand", "--reason", help="recorded in the ledger"),
    force: bool = typer.Option(
        False, "--force", help="promote even if the promote_if gate refuses (marked forced in the ledger)"
    ),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """Point an alias (champion by default) at a version; the champion goes through the gate."""
    from ..registry import split_ref

    name, ref = split_ref(model)
    target = version if version is not None else ref
    if target is None:
        raise UsageError("which version?", hint=f"headrace models promote {name}@3, or {name} 3")
    ws, registry = _registry(ctx)
    try:
        number = registry.get(name, target).version
        gate = None
        if alias == "champion" and name in ws.project.models:
            gate = ws.project.models[name].promote_if
        # --force: the gate is still judged, and the ledger says it was forced past it
        mv = registry.promote(name, number, reason=reason, gate=gate, alias=alias, forced=force)
    finally:
        ws.close()
    if json:
        emit_json(_summary(mv))
        return
    console.print(f"{mv.ref} is now {alias}" + (" (forced past the gate)" if force else ""))


@models_app.command("rollback")
def rollback(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="model"),
    reason: str = typer.Option("rolled back by hand", "--reason", help="recorded in the ledger"),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """Make the previous champion the champion again."""
    ws, registry = _registry(ctx)
    try:
        mv = registry.rollback(name, reason=reason)
    finally:
        ws.close()
    if json:
        emit_json(_summary(mv))
        return
    console.print(f"{name}: champion is v{mv.version} again")


@models_app.command("retire")
def retire(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="MODEL@VERSION, or MODEL with VERSION as the next argument"),
    version: int | None = typer.Argument(None, help="the version to retire"),
    reason: str = typer.Option("retired by hand", "--reason", help="recorded in the ledger"),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """Retire a version: its artifact is removed, its record and ledger entries stay."""
    from ..registry import split_ref

    name, ref = split_ref(model)
    target = version if version is not None else ref
    if target is None:
        raise UsageError("which version?", hint=f"headrace models retire {name}@3")
    ws, registry = _registry(ctx)
    try:
        mv = registry.retire(name, registry.get(name, target).version, reason=reason)
    finally:
        ws.close()
    if json:
        emit_json(_summary(mv))
        return
    console.print(f"{mv.ref} retired")


@models_app.command("verify")
def verify(
    ctx: typer.Context,
    model: str | None = typer.Argument(None, help="a model (default: every model)"),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """Check every version's artifact against its recorded sha256; exit 1 if one is missing or
    corrupt (each named with its file)."""
    from ..errors import ArtifactError, HeadraceError

    ws, registry = _registry(ctx)
    rows: list[dict[str, Any]] = []
    try:
        for mv in registry.list(model):
            if mv.status == "retired":
                state = "retired (no artifact)"
            else:
                try:
                    registry.verify(mv)
                    state = "ok"
                except ArtifactError as exc:
                    state = exc.one_line()
            rows.append(
                {"model": mv.name, "version": mv.version, "aliases": list(mv.aliases), "state": state}
            )
    finally:
        ws.close()
    bad = [r for r in rows if r["state"] != "ok" and not r["state"].startswith("retired")]
    if json:
        emit_json({"versions": rows, "bad": len(bad)})
    else:
        console.print(
            table(
                f"{len(rows)} versions checked, {len(bad)} bad",
                ["model", "version", "aliases", "artifact"],
                [[r["model"], r["version"], ", ".join(r["aliases"]), r["state"]] for r in rows],
            )
        )
    if bad:
        first = bad[0]
        raise HeadraceError(
            f"{len(bad)} version(s) have a missing or corrupt artifact, "
            f"first {first['model']}@{first['version']}",
            hint="retrain or restore them; never promote or deploy them",
        )


@models_app.command("history")
def history(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="one model (default: all)"),
    at: str | None = typer.Option(
        None, "--at", help="also say which version was champion at this time (ISO 8601, UTC if no zone)"
    ),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """The ledger: every registration, promotion, rollback and retirement, with reason and actor."""
    when: datetime | None = None
    if at is not None:
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise UsageError(
                f"--at {at!r} is not an ISO 8601 time", hint="e.g. 2026-01-31T12:00:00"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if name is None:
            raise UsageError("--at needs a model name", hint="headrace models history churn --at ...")
    ws, registry = _registry(ctx)
    try:
        entries = registry.history(name)
        champion = registry.champion_at(name, when) if when is not None and name is not None else None
    finally:
        ws.close()
    if json:
        doc: dict[str, Any] = {"entries": [e.to_dict() for e in entries]}
        if when is not None:
            doc["at"] = when.isoformat()
            doc["champion"] = champion
        emit_json(doc)
        return
    console.print(
        table(
            "ledger",
            ["at", "model", "action", "version", "alias", "previous", "reason", "actor"],
            [
                [
                    e.ts.isoformat()[:19],
                    e.model,
                    e.action,
                    e.version,
                    e.alias,
                    e.previous_version,
                    e.reason,
                    e.actor,
                ]
                for e in entries
            ],
        )
    )
    if when is not None:
        console.print(f"champion at {when.isoformat()}: " + (f"v{champion}" if champion else "none"))


@models_app.command("export")
def export(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="MODEL or MODEL@VERSION (default: the champion, else the latest)"),
    out: str = typer.Argument(..., help="the folder (mlflow) or file (onnx) to write"),
    format: str = typer.Option(..., "--format", help="mlflow (a pyfunc model folder) or onnx (one file)"),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """Export a version as an MLflow pyfunc model (threshold, classes, signature, pinned requirements)
    or as an ONNX graph checked against the pipeline on probe records."""
    from pathlib import Path

    from ..registry import split_ref

    if format not in ("mlflow", "onnx"):
        raise UsageError(f"--format {format!r} is not known", hint="use --format mlflow or --format onnx")
    name, ref = split_ref(model)
    ws, registry = _registry(ctx)
    try:
        if ref is None:
            ref = "champion" if "champion" in registry.aliases(name) else "latest"
        mv = registry.get(name, ref)
        if format == "mlflow":
            from ..bridges.mlflow_bridge import export_pyfunc

            doc = export_pyfunc(registry, mv, Path(out))
        else:
            from ..bridges.onnx_export import export_onnx

            _, loaded = registry.load(name, mv.version)
            doc = {
                "model": mv.name,
                "version": mv.version,
                **export_onnx(
                    loaded, Path(out), ref=mv.ref, metadata={"artifact_sha256": mv.artifact_sha256}
                ),
            }
    finally:
        ws.close()
    if json:
        emit_json(doc)
        return
    extra = f", checked on {doc['probes']} probe records" if format == "onnx" else ""
    console.print(f"{mv.ref} exported as {format} to {doc['path']}{extra}", highlight=False)


@models_app.command("import")
def import_(
    ctx: typer.Context,
    source: str = typer.Argument(
        ..., help="mlflow:runs:/RUN_ID/PATH, mlflow:models:/NAME/VERSION (or @ALIAS)"
    ),
    name: str | None = typer.Option(
        None, "--name", help="the headrace model (default: the MLflow model's name)"
    ),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking URI (default: mlflow.tracking_uri, else MLFLOW_TRACKING_URI)",
    ),
    reason: str | None = typer.Option(None, "--reason", help="recorded in the ledger"),
    json: bool = typer.Option(False, "--json"),
) -> None:
    """Register an MLflow model (sklearn flavor) as a new version, its source noted in the lineage."""
    scheme, sep, uri = source.partition(":")
    if scheme != "mlflow" or not sep or not uri:
        raise UsageError(
            f"{source!r} is not an MLflow URI",
            hint="write mlflow:runs:/RUN_ID/model or mlflow:models:/NAME/1",
        )
    if name is None:
        if not uri.startswith("models:/"):
            raise UsageError(
                "which headrace model should it become?", hint=f"headrace models import {source} --name NAME"
            )
        name = uri.removeprefix("models:/").split("/")[0].split("@")[0]
    from ..bridges.mlflow_bridge import import_model

    ws, registry = _registry(ctx)
    try:
        spec = ws.project.mlflow
        mv = import_model(
            registry,
            uri,
            name,
            tracking_uri=tracking_uri or (spec.tracking_uri if spec else None),
            reason=reason,
        )
    finally:
        ws.close()
    if json:
        emit_json({**_summary(mv), "source_uri": uri})
        return
    console.print(f"{mv.ref} registered from MLflow {uri}", highlight=False)
