"""``headrace monitor``: drift and live-performance checks; with ``--watch``, the closed loop."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Any

import typer

from ..errors import UsageError
from ._app import app, console, emit_json, table, workspace

monitor_app = typer.Typer(
    help="Drift and live-performance checks; retrain, canary, promote, roll back (--watch).",
    no_args_is_help=False,
)
app.add_typer(monitor_app, name="monitor")


def _models(ws: Any, names: list[str] | None) -> list[str]:
    known = list(ws.project.models)
    chosen = names or ws.project.serving.models or known
    for name in chosen:
        ws.project.model(name)  # ConfigError naming the known models
    return list(chosen)


def _show(result: Any) -> None:
    doc = result.to_dict()
    decision = doc["decision"]
    console.print(
        f"[bold]{doc['model']}[/bold]: champion v{doc['champion']}"
        + (f", challenger v{doc['challenger']}" if doc["challenger"] else "")
        + f" — [bold]{decision['action']}[/bold]: {decision['reason']}",
        highlight=False,
    )
    drift = doc["drift"]
    if drift is not None:
        console.print(
            table(
                f"drift: {drift['status']} ({drift['share_drifted']:.0%} of features drifted)",
                ["feature", "PSI", "test", "p-value", "JS", "status"],
                [
                    [f["feature"], _f(f["psi"]), f["test"], _f(f["p_value"]), _f(f["js"]), f["status"]]
                    for f in drift["features"] + ([drift["prediction"]] if drift["prediction"] else [])
                ],
            )
        )
    elif doc["drift_error"]:
        console.print(f"  drift not measured: {doc['drift_error']}", highlight=False)
    perf = doc["performance"]
    if perf is not None:
        console.print(
            table(
                f"live {perf['metric']} (validation {_f(perf['reference'])})",
                ["window", "rows", perf["metric"]],
                [[w["label"], w["rows"], _f(w["value"])] for w in perf["windows"]],
            )
        )

    watch = doc.get("champion_watch")
    if watch is not None:
        crossed = [check for check, bad in watch["unhealthy"].items() if bad]
        state = f"crossed: {', '.join(crossed)}" if crossed else "healthy"
        span = f"last {len(watch['windows'])} windows of {watch['window']:g} s"
        console.print(
            table(
                f"champion v{watch['version']}: {span} (policy: {watch['action']}; {state})",
                ["window", "requests", "error rate", "p99 ms", watch["metric"], "rows"],
                [
                    [f"-{i}" if i else "newest", w["requests"], _f(w["error_rate"]), _f(w["p99_ms"]),
                     _f(w["metric"]), w["feedback_rows"]]
                    for i, w in enumerate(watch["windows"])
                ],
            )
        )  # fmt: skip
        for note in watch["notes"]:
            console.print(f"  {note}", highlight=False)


def _f(value: Any) -> str:
    return "–" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


@monitor_app.callback(invoke_without_command=True)
def monitor(
    ctx: typer.Context,
    models: list[str] = typer.Option(None, "--model", "-m", help="models to watch (default: serving.models)"),
    watch: bool = typer.Option(False, "--watch", help="run the loop: retrain, canary, promote, roll back"),
    act: bool = typer.Option(False, "--act", help="one cycle that acts on its decision (as --watch does)"),
    interval: float | None = typer.Option(
        None, "--interval", help="seconds between cycles (monitoring.interval)"
    ),
    cycles: int | None = typer.Option(None, "--cycles", min=1, help="stop --watch after this many cycles"),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="with --watch: serve the headrace_* gauges on this port"
    ),
    report: Path | None = typer.Option(None, "--report", help="write an HTML report (one file per model)"),
    json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """Compare each model's live window with its training data (PSI, KS, Jensen-Shannon), measure live
    metrics from feedback, and say what the policy would do. --watch runs the loop until stopped."""
    if ctx.invoked_subcommand is not None:
        return
    from ..monitor.loop import check, cycle
    from ..monitor.loop import watch as run_watch
    from ..registry import Registry

    ws = workspace(ctx)
    try:
        names = _models(ws, models)
        if not names:
            raise UsageError("no model to monitor", hint="add one under models: in headrace.yaml")
        if watch:
            _watch(ws, names, interval, cycles, metrics_port, json, run_watch)
            return
        registry = Registry(ws.meta, ws.artifacts, actor="monitor")
        docs = []
        for name in names:
            result: Any = cycle(ws, name, registry=registry) if act else check(ws, name, registry=registry)
            checked = result.check if act else result
            if report is not None:
                from ..monitor.report import write_report

                target = report if len(names) == 1 and report.suffix == ".html" else report / f"{name}.html"
                write_report(checked, target)
                if not json:
                    console.print(f"report written to {target}")
            deployments = _deployments(ws, name)
            docs.append({**result.to_dict(), "deployments": deployments})
            if not json:
                _show(checked)
                for line in result.lines() if act else []:
                    console.print(f"  {line}", highlight=False)
                for d in deployments:
                    console.print(f"  deployment: {d['line']}", highlight=False, soft_wrap=True)
        if json:
            emit_json(docs[0] if len(docs) == 1 else docs)
    finally:
        ws.close()


def _deployments(ws: Any, model: str) -> list[dict[str, Any]]:
    """The live deployments of ``model``, whichever target serves them: the prediction log the
    monitor reads holds what each of them served (bundles report home)."""
    from ..deploy import records

    live = [r for r in records.history(ws.meta, model) if r["status"] == "live"]
    out = []
    for r in live:
        details = r.get("details") or {}
        follows = details.get("follows")
        how = f"follows {follows!r}" if follows and not str(follows).isdigit() else f"v{r['version']}"
        home = "reports home" if details.get("reports_home") else "logs nothing to the project"
        out.append(
            {
                "target": r["target"],
                "version": r["version"],
                "endpoint": r["endpoint"],
                "follows": follows,
                "reports_home": bool(details.get("reports_home")),
                "line": f"{r['target']} {how} at {r['endpoint'] or '(no address)'} ({home})",
            }
        )
    return out


def _watch(
    ws: Any,
    names: list[str],
    interval: float | None,
    cycles: int | None,
    port: int | None,
    json: bool,
    run_watch: Any,
) -> None:
    stopping = threading.Event()

    def stop(*_: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    if port is not None:
        from prometheus_client import CollectorRegistry, start_http_server

        from ..monitor.metrics import MonitorCollector

        gauges = CollectorRegistry()
        gauges.register(MonitorCollector(ws.meta))
        start_http_server(port, registry=gauges)
        if not json:
            console.print(f"headrace_* gauges on http://127.0.0.1:{port}/metrics")

    def on_cycle(result: Any) -> None:
        if json:
            emit_json(result.to_dict())
            return
        decision = result.decision
        console.print(f"{result.check.model}: {decision.action}: {decision.reason}", highlight=False)
        for line in result.lines():
            console.print(f"  {line}", highlight=False)

    with contextlib.suppress(KeyboardInterrupt):
        run_watch(ws, names, interval=interval, cycles=cycles, on_cycle=on_cycle, stop=stopping.is_set)


@monitor_app.command("alerts")
def alerts(
    ctx: typer.Context,
    out: Path | None = typer.Option(
        None, "--out", help="folder for the generated files (default: the project's monitoring/)"
    ),
    check_only: bool = typer.Option(False, "--check", help="only validate the files already in --out"),
    json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """Write Prometheus alerting rules, a Grafana dashboard and an Alertmanager example, then check
    them (promtool and amtool when installed, JSON schemas and the metric catalogue always)."""
    from ..monitor.alerts import check_alert_files, write_alert_files

    ws = workspace(ctx)
    out = out if out is not None else ws.root / "monitoring"
    try:
        written = [] if check_only else write_alert_files(ws.project.monitoring, out, ws.project.project)
    finally:
        ws.close()
    result = check_alert_files(out)
    doc = {"written": [str(p) for p in written], "checked": result.checked, "problems": result.problems}
    if json:
        emit_json(doc)
    else:
        for path in written:
            console.print(f"wrote {path}")
        for item in result.checked:
            console.print(f"checked: {item}")
        for problem in result.problems:
            console.print(f"[red]problem[/red]: {problem}", highlight=False)
    if result.problems:
        raise typer.Exit(1)
