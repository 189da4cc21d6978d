"""The demo's stages. Each runs public ``headrace`` commands on the demo's project (see
``commands.headrace``), records them so that they are printed beside the stage, and returns the
lines that say what happened. The demo's own part is what a user would do around the commands:
start its little services, send traffic, let new data arrive."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from . import data
from .commands import headrace, shown
from .project import vision_installed, write_project

if TYPE_CHECKING:
    from collections.abc import Iterator

    from . import DemoContext

MODEL = "churn"
CHAMPION, CHALLENGER = "champion", "challenger"


def run(ctx: DemoContext, *args: str) -> Any:
    """Run one public command on the demo's project and note it for the stage's header."""
    ctx.commands.append(shown(*args))
    return headrace(ctx.folder, *args)


def _ingested(run_doc: dict[str, Any]) -> str:
    return (
        f"{run_doc['rows_read']} rows read, {run_doc['rows_committed']} committed to "
        f"'{run_doc['dataset']}', {run_doc['rows_quarantined']} quarantined"
    )


# -- project ------------------------------------------------------------------------------------
def project(ctx: DemoContext) -> list[str]:
    made = write_project(ctx.folder)
    ctx.project = made
    data.write_token()  # /feedback and /interactions take writes with it (the servers inherit it)
    doc = run(ctx, "status")
    from ..config import load_project

    spec = load_project(made.path)
    kinds = Counter(s.kind for s in spec.sources.values())
    tasks = ", ".join(f"{n} ({m.task})" for n, m in spec.models.items())
    lines = [
        f"project written to {made.path} ({doc['project']})",
        "  sources: " + ", ".join(f"{n} ({s.kind})" for n, s in spec.sources.items()),
        f"  models: {tasks}",
        f"  monitoring: window {spec.monitoring.window:g} s, drift share {spec.monitoring.drift_share:g}, "
        f"canary {spec.monitoring.canary.share:.0%} for {spec.monitoring.canary.window:g} s",
        f"  {len(kinds)} kinds of source; every stage below is a command you can rerun in this folder",
    ]
    if not vision_installed():
        lines.append("  (the vision extra is not installed: no image model declared)")
    else:
        lines.append(
            "  shapes (image classification) is declared on generated pictures but not trained here "
            "(transfer learning takes minutes on a CPU): headrace train shapes"
        )
    return lines


# -- ingest: files, HTTP, SQL, MQTT -------------------------------------------------------------
def ingest(ctx: DemoContext) -> list[str]:
    doc = run(ctx, "ingest", "customers", "houses", "interactions")
    lines = []
    for r in doc["runs"]:
        files = sum(1 for b in r["batches"] if b["status"] != "skipped")
        lines.append(f"{r['source']}: {_ingested(r)} ({files} files)")
    doc = run(ctx, "datasets", "quarantine", "customers", "--rows", "4")
    for row in doc.get("sample", [])[:4]:
        lines.append(
            f"  quarantined customerID={row.get('customerID')} line {row.get('position')}: "
            f"{row.get('reason')}"
        )
    return lines


def http(ctx: DemoContext) -> list[str]:
    from .api import serve_orders

    assert ctx.project is not None
    store = ctx.folder / "data" / "orders.json"
    with serve_orders(ctx.project.api_url, store) as api:
        first = run(ctx, "ingest", "orders_api")["runs"][0]
        api.insert(12)
        api.touch([3, 7, 11])
        second = run(ctx, "ingest", "orders_api")["runs"][0]
    columns = run(ctx, "datasets", "show", "orders").get("columns", [])
    names = [c["name"] if isinstance(c, dict) else str(c) for c in columns]
    return [
        f"the demo's REST API at {ctx.project.api_url.rsplit('/orders', 1)[0]}: "
        f"{first['rows_committed']} orders in {len(first['batches'])} batches (cursor pagination)",
        f"after 12 new and 3 updated orders, the incremental run read {second['rows_committed']} "
        f"(since {_cursor(second['cursor_before'])})",
        f"  nested JSON flattened to columns: {', '.join(names)}",
        f"  the API serves {store.name} again with: headrace -p {ctx.folder} demo --services",
    ]


def sql(ctx: DemoContext) -> list[str]:
    path = ctx.folder / "data" / "payments.db"
    first = run(ctx, "ingest", "payments_db")["runs"][0]
    data.add_payments(path, new=20, updated=(1, 2))
    second = run(ctx, "ingest", "payments_db")["runs"][0]
    return [
        f"SQLite database {path.name}: full load {first['rows_committed']} rows in "
        f"{len(first['batches'])} batches",
        f"after 20 inserts and 2 updates, the incremental run read {second['rows_committed']} rows "
        f"(cursor {_cursor(first['cursor_after'])} -> {_cursor(second['cursor_after'])})",
    ]


def _cursor(cursor: str | None) -> Any:
    if cursor is None:
        return None
    try:
        return json.loads(cursor).get("value")
    except (ValueError, AttributeError):
        return cursor


class _Subscribed:
    """Knows when the stream command has subscribed (its source logs one line when it has), so the
    simulated sensors publish nothing before anyone listens."""

    def __init__(self) -> None:
        import logging

        self.event = threading.Event()
        self.logger = logging.getLogger("headrace.stream.mqtt")
        self.saved = (self.logger.level, self.logger.propagate)

        class Handler(logging.Handler):
            def emit(inner, record: logging.LogRecord) -> None:
                if "subscribed to" in record.getMessage():
                    self.event.set()
                if record.levelno >= logging.WARNING:
                    logging.getLogger("headrace").handle(record)

        self.handler = Handler()

    def __enter__(self) -> _Subscribed:
        import logging

        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.saved[0])
        self.logger.propagate = self.saved[1]


def mqtt(ctx: DemoContext, count: int = 3000, devices: int = 20) -> list[str]:
    from ..stream.broker import LocalBroker
    from ..stream.simulator import simulate_sensors

    made = ctx.project
    assert made is not None
    local = None
    if made.local_broker:
        local = LocalBroker(port=int(made.broker.rsplit(":", 1)[1])).start()
    where = "an in-process broker" if local else "Mosquitto"
    protocol = "3.1.1" if local else "5"
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def stream() -> None:
        try:
            results["stream"] = run(ctx, "stream", "sensors", "--max-rows", str(count), "--idle-exit", "5")
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        with _Subscribed() as subscribed:
            worker = threading.Thread(target=stream, name="headrace-demo-stream", daemon=True)
            worker.start()
            while not subscribed.event.wait(0.1):
                if not worker.is_alive():
                    break
            if subscribed.event.is_set():
                results["sim"] = simulate_sensors(
                    made.broker, made.prefix, devices=devices, count=count, qos=1, malformed=0.02, seed=7,
                    protocol=protocol,
                )  # fmt: skip
            worker.join(timeout=120)
    finally:
        if local is not None:
            local.stop()
    if errors:
        raise errors[0]
    stats = results["stream"][0]
    sim = results["sim"]
    lines = [
        f"{sim.sent} simulated readings from {devices} devices published over MQTT to {where} at "
        f"{made.broker} ({sim.malformed} malformed, {sim.rate:,.0f} messages/s)",
        f"stream worker: {stats['rows_committed']} rows committed to 'sensor_readings' in "
        f"{stats['batches']} micro-batches, {stats['rows_quarantined']} quarantined, "
        f"{stats['duplicates']} duplicates dropped; acknowledged after each commit",
    ]
    quarantine = run(ctx, "datasets", "quarantine", "sensor_readings", "--rows", "1000")
    reasons = Counter(str(r.get("reason")).split(" (")[0] for r in quarantine.get("sample", []))
    for reason, n in reasons.most_common(4):
        lines.append(f"  quarantined {n}: {reason}")
    return lines


# -- train, evaluate ----------------------------------------------------------------------------
def _scores(summary: dict[str, dict[str, float]], names: tuple[str, ...]) -> str:
    parts = []
    for n in names:
        if n in summary:
            mean, std = summary[n]["mean"], summary[n]["std"]
            parts.append(
                f"{n} {mean:,.0f} ± {std:,.0f}" if abs(mean) > 100 else f"{n} {mean:.3f} ± {std:.3f}"
            )
    return ", ".join(parts)


def train(ctx: DemoContext) -> list[str]:
    churn = run(ctx, "train", "churn", "--promote")
    ratio = ", ".join(f"{k} {v:.1%}" for k, v in churn["class_ratio"]["shares"].items())
    lines = [
        f"churn: {churn['dataset']}@{churn['data_version']} ({ratio}); {churn['strategy']} {churn['folds']} "
        f"folds, the configuration chosen inside each training fold",
        f"  chosen: {churn['chosen']}",
        "  cross-validated: " + _scores(churn["summary"], ("roc_auc", "average_precision", "log_loss")),
        f"  threshold {churn['threshold']['value']:.3f} ({churn['threshold']['rule']} on out-of-fold "
        "predictions): " + _scores(churn["summary"], ("precision", "recall", "f1")),
        f"  registered churn@{churn['version']}, aliases: {', '.join(churn['aliases']) or 'none'}",
    ]
    price = run(ctx, "train", "price", "--promote")
    lines += [
        f"price: {price['dataset']}@{price['data_version']}, derived rooms_per_household, "
        f"bedrooms_per_room, population_per_household; {price['strategy']} {price['folds']} folds",
        f"  chosen: {price['chosen']}",
        "  cross-validated: " + _scores(price["summary"], ("rmse", "mae", "r2")),
        f"  registered price@{price['version']}, aliases: {', '.join(price['aliases']) or 'none'}",
    ]
    recs = run(ctx, "train", "recommendations", "--promote")
    table = ", ".join(
        f"{kind} {m.get('ndcg@10', 0):.3f}" for kind, m in recs["table"].items() if isinstance(m, dict)
    )
    lines.append(f"recommendations: {recs['chosen']} chosen by NDCG@10: {table}")
    return lines


def evaluate(ctx: DemoContext) -> list[str]:
    lines = []
    for name in ("churn", "price"):
        doc = run(ctx, "evaluate", name)
        sc = doc.get("scorecard", {})
        top = ", ".join(r["feature"] for r in sc.get("importance", [])[:3])
        where = doc.get("html") or doc.get("path") or ""
        lines.append(f"{name}@{doc.get('version')}: report {where}".rstrip())
        if top:
            lines.append(f"  most important columns (permutation, held-out folds): {top}")
    return lines


# -- deploy, monitor ----------------------------------------------------------------------------
def deploy(ctx: DemoContext) -> list[str]:
    from ..deploy.local import free_port

    bundle = run(ctx, "build", MODEL)
    checks = bundle["checks"]
    kube, lint = checks["kubernetes"], checks["dockerfile"]
    issues = lint["issues"]
    lint_state = lint["skipped"] or (f"{len(issues)} issues" if issues else "clean")
    kube_state = kube["skipped"] or ("valid" if kube["ok"] else "INVALID")
    lines = [
        f"bundle of churn@{bundle['version']}: {Path(bundle['path']).relative_to(ctx.folder)}",
        f"  {len(bundle['requirements'])} pinned packages; Dockerfile, Kubernetes, SageMaker, Azure ML files",
        f"  Kubernetes manifests: {kube_state} (schemas of {kube['kubernetes_version']}); "
        f"Dockerfile lint: {lint_state}",
    ]
    result = run(ctx, "deploy", MODEL, "--env", "inherit", "--port", str(free_port()))
    ctx.facts["deploy"] = result
    try:
        contract = result["contract"]
        ping = next(c for c in contract["checks"] if c["name"] == "ping")
        passed = sum(c["ok"] for c in contract["checks"])
        lines += [
            f"deployed locally at {result['endpoint']} (a venv over this one's packages, pins checked); "
            "it reports its predictions home",
            f"  contract: {passed}/{len(contract['checks'])} checks passed; /ping in "
            f"{ping['seconds'] * 1000:.0f} ms; /invocations in JSON and CSV agree",
        ]
        for target in ("sagemaker", "azureml"):
            plan = run(ctx, "deploy", MODEL, "--target", target, "--dry-run").get("plan") or {}
            steps = plan.get("steps", [])
            calls = ", ".join(s.get("call") or " ".join(s.get("argv", [])[:2]) for s in steps)
            lines.append(f"{target} --dry-run: {len(steps)} steps: {calls}")
    except BaseException:
        headrace(ctx.folder, "deploy", MODEL, "--stop")
        raise
    return lines


def _conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    return frame.select([pl.col(c).cast(t) for c, t in schema.items() if c in frame.columns])


def monitor(ctx: DemoContext) -> list[str]:
    import httpx

    from ..datagen import churn
    from ..monitor.routing import bucket
    from ..registry import Registry
    from ..train.tabular import TabularModel
    from ..workspace import Workspace

    endpoint = (ctx.facts.get("deploy") or {}).get("endpoint")
    if not endpoint:
        raise RuntimeError("the monitor stage runs against the deploy stage's local deployment")
    ws = Workspace.open(ctx.folder)
    registry = Registry(ws.meta, ws.artifacts, actor="demo")
    policy = ws.project.monitoring
    log_dataset = ws.project.serving.prediction_log.dataset
    schema = ws.store.read("customers").schema
    write = {"Authorization": f"Bearer {data.write_token()}"}
    client = httpx.Client(base_url=str(endpoint), timeout=30)
    lines = [f"watching the local deployment at {endpoint} (a bundle in its own process)"]

    def inputs() -> list[str]:
        return [i["name"] for i in (registry.get(MODEL, CHAMPION).signature or {}).get("inputs", [])]

    def send(frame: pl.DataFrame, tag: str, feedback: bool = False) -> list[dict[str, Any]]:
        out = []
        for cid, actual, record in zip(
            frame["customerID"].to_list(), frame["Churn"].to_list(), frame.select(inputs()).to_dicts(),
            strict=True,
        ):  # fmt: skip
            answer = client.post(
                f"/models/{MODEL}/predict", json={"records": [record]}, headers={"X-User-ID": f"{tag}{cid}"}
            ).json()
            out.append(answer)
            if feedback:
                client.post(
                    "/feedback", json={"prediction_id": answer["ids"][0], "actual": actual}, headers=write
                )
        return out

    def pending() -> int:
        return (
            ws.store.scan(log_dataset).select(pl.len()).collect().item()
            if ws.store.exists(log_dataset)
            else 0
        )

    def logged(rows: int) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and pending() < rows:
            time.sleep(0.05)

    def until(version: int) -> None:
        """Wait until the deployment routes canary-bound users to ``version`` (it polls the registry)."""
        user = next(
            f"probe-{i}" for i in range(10_000) if bucket(f"x-user-id=probe-{i}") < policy.canary.share
        )
        record = _conform(churn(1, seed=1), schema).select(inputs()).to_dicts()[0]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            answer = client.post(
                f"/models/{MODEL}/predict", json={"records": [record]}, headers={"X-User-ID": user}
            ).json()
            if answer.get("version") == version:
                return
            time.sleep(0.05)

    def act(*extra: str) -> dict[str, Any]:
        doc = run(ctx, "monitor", "--act", "--model", MODEL, *extra)
        return doc[0] if isinstance(doc, list) else doc

    def events(doc: dict[str, Any]) -> list[str]:
        decision = doc["decision"]
        return [f"{e['action']}: {e['reason']}" for e in doc["events"]] or [
            f"{decision['action']}: {decision['reason']}"
        ]

    try:
        champion = registry.aliases(MODEL)[CHAMPION]
        start = pending()
        send(_conform(churn(200, seed=41, shift=1.0, id_offset=900_000), schema), "u", feedback=True)
        lines.append(
            f"served 200 predictions to customers whose tenure and charges have shifted (v{champion})"
        )
        arrived = ctx.folder / "data" / "customers" / "customers-3.csv"
        churn(3000, seed=42, shift=1.0, id_offset=800_000).write_csv(arrived)
        new = run(ctx, "ingest", "customers")["runs"][0]
        lines.append(f"a new batch of customers arrived ({arrived.name}): {_ingested(new)}")
        logged(start + 200)

        report = ctx.folder / "monitoring" / f"{MODEL}-report.html"
        first = act("--report", str(report))
        lines += events(first)
        drift = first.get("drift") or {}
        top = sorted(drift.get("features", []), key=lambda f: f.get("psi") or 0, reverse=True)[:3]
        if top:
            lines.append("  PSI " + ", ".join(f"{f['feature']} {f['psi']:.2f}" for f in top))
        challenger = registry.aliases(MODEL).get(CHALLENGER)
        if challenger is not None:
            until(challenger)
            before = pending()
            answers = send(_conform(churn(80, seed=43, shift=1.0, id_offset=700_000), schema), "w")
            share = sum(a["version"] == challenger for a in answers) / len(answers)
            lines.append(
                f"canary v{challenger} answered {share:.0%} of the next 80 requests (sticky by user)"
            )
            logged(before + 80)
            time.sleep(policy.canary.window)
            lines += events(act())

        # a version whose decision threshold was mis-set: it validated well (ROC-AUC ignores the
        # threshold) but answers "No" to everyone; it reaches canary and the loop rolls it back
        serving_now = registry.aliases(MODEL)[CHAMPION]
        mv, good = registry.load(MODEL, serving_now)
        bad = TabularModel(good.pipeline, task=good.task, plan=good.plan, classes=good.classes_,
                           threshold=1.01, target=good.target)  # fmt: skip
        broken = registry.register(
            MODEL, task=mv.task, flavor="tabular", artifact=bad.to_bytes(), metrics=mv.metrics,
            dataset=mv.dataset, data_version=mv.data_version, signature=mv.signature, threshold=1.01,
            reason="demo: a hand-built version with threshold 1.01",
        )  # fmt: skip
        run(
            ctx,
            "models",
            "promote",
            f"{MODEL}@{broken.version}",
            "--alias",
            CHALLENGER,
            "--reason",
            "demo: a mis-set threshold",
        )
        lines.append(f"canary: v{broken.version} (threshold mis-set to 1.01) put on canary by hand")
        until(broken.version)
        before = pending()
        send(_conform(churn(60, seed=44, shift=1.0, id_offset=600_000), schema), "x")
        logged(before + 60)
        lines += events(act())
        metrics = client.get("/metrics").text
    finally:
        client.close()
        try:
            stopped = run(ctx, "deploy", MODEL, "--stop")
        finally:
            ws.close()
    versions = (stopped.get("details") or {}).get("stopped_versions", [])
    lines.append(f"local deployment stopped (v{', v'.join(map(str, versions))})")
    lines += [f"gauge {g}" for g in metrics.splitlines() if g.startswith("headrace_drift_share{")][:1]
    alerts = run(ctx, "monitor", "alerts")
    lines.append(
        f"alert rules, Grafana dashboard, Alertmanager example in {ctx.folder / 'monitoring'} "
        f"({'valid' if alerts.get('ok', True) else 'INVALID'})"
    )
    lines.append(f"report: {report}")
    history = run(ctx, "models", "history", MODEL)
    entries = history if isinstance(history, list) else history.get("history", history.get("entries", []))
    kept = [e for e in entries if e.get("action") in ("promote", "rollback", "remove_alias")]
    for entry in kept[-3:]:
        lines.append(
            f"ledger {str(entry.get('ts', ''))[11:19]} {entry['action']} "
            f"v{entry.get('version') or entry.get('previous_version')}: {entry.get('reason')}"
        )
    return lines


# -- serve --------------------------------------------------------------------------------------
@contextmanager
def _serving(ctx: DemoContext, port: int) -> Iterator[str]:
    """``headrace serve`` as the user starts it: its own process, stopped with SIGTERM."""
    import httpx

    args = ["serve", "--port", str(port)]
    ctx.commands.append(shown(*args))
    proc = subprocess.Popen(
        [sys.executable, "-m", "headrace", "--project", str(ctx.folder), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"'headrace serve' exited: {(proc.stderr.read() if proc.stderr else '')[-300:]}"
                )
            try:
                if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("'headrace serve' did not answer /health/live within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serve(ctx: DemoContext) -> list[str]:
    import httpx
    import numpy as np

    from ..datagen import churn
    from ..deploy.local import free_port
    from ..registry import Registry
    from ..workspace import Workspace

    ws = Workspace.open(ctx.folder)
    try:
        signature = Registry(ws.meta, ws.artifacts).get(MODEL, CHAMPION).signature or {}
        schema = ws.store.read("customers").schema
    finally:
        ws.close()
    names = [i["name"] for i in signature.get("inputs", [])]
    write = {"Authorization": f"Bearer {data.write_token()}"}
    lines: list[str] = []
    with _serving(ctx, free_port()) as url, httpx.Client(base_url=url, timeout=30) as client:
        lines.append(
            f"serving at {url} (docs at {url}/docs, metrics at {url}/metrics, dashboard at {url}/ui/)"
        )
        info = client.get("/models").json()["models"]
        for m in info:
            path = "" if m["task"] == "recommendation" else ", fast path" if m["fast_path"] else ", pipeline"
            lines.append(f"  {m['name']} v{m['version']} ({m['task']}{path})")
        records = _conform(churn(400, seed=9), schema).select(names).to_dicts()
        latencies = []
        for record in records:
            started = time.perf_counter()
            client.post(f"/models/{MODEL}/predict", json={"records": [record]}).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
        p50, p99 = np.percentile(latencies, [50, 99])
        one = client.post(f"/models/{MODEL}/predict", json={"records": records[:1]}).json()
        lines.append(
            f"{len(latencies)} one-row predictions: p50 {p50:.2f} ms, p99 {p99:.2f} ms (client-measured, "
            f"sequential); first: {one['predictions'][0]} (p(Yes)={one['scores'][0]:.3f}, "
            f"threshold {one['threshold']:.3f})"
        )
        user = "100000"
        before = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()["items"]
        client.post(
            "/interactions", json={"user_id": user, "item_id": 6, "weight": 1.0}, headers=write
        ).raise_for_status()
        after = client.get(f"/users/{user}/recommendations", params={"k": 5}).json()["items"]
        lines.append(f"user {user} (new) before: {[i['item_id'] for i in before]} (most popular)")
        lines.append(f"user {user} after one interaction with item 6: {[i['item_id'] for i in after]}")
    lines.append(f"the dashboard after the demo: headrace -p {ctx.folder} ui")
    return lines


def status(ctx: DemoContext) -> list[str]:
    doc = run(ctx, "status")
    lines = [f"datasets: {len(doc['datasets'])}, models: {len(doc['models'])}"]
    for d in doc["datasets"]:
        lines.append(
            f"  {d['name']}: {d['rows']} rows in {d['versions']} versions, "
            f"{d['quarantined_rows']} quarantined"
        )
    for m in doc["models"]:
        aliases = ", ".join(f"{k}=v{v}" for k, v in sorted(m["aliases"].items()))
        lines.append(f"  model {m['name']}: {m['versions']} versions ({aliases})")
    return lines
