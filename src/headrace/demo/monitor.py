"""The demo's "monitor" stage: drift, a retrain, a canary promoted, a broken canary rolled back.

It runs against the churn bundle the deploy stage left running locally (its own process behind the
local front, reporting its predictions and feedback home), sends traffic whose tenure and charges
have shifted, lets a new batch of customers arrive, and runs the loop: drift is found, a new version
is trained on the new data version, passes the project's own gate, serves a canary share on that
deployment and is promoted, and the deployment follows the new champion; then a version with a
mis-set threshold (it only ever says "No") reaches canary and is rolled back. Each step is printed
with its reason; the local deployment is stopped at the end.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import polars as pl

from ..datagen import churn
from ..store import BatchMeta

__all__ = ["demo_stage"]

MODEL = "churn"


def _light(spec: Any) -> Any:
    """The demo's spec: one candidate, 3 folds, no permutation importance (seconds, not minutes)."""
    from ..config.models import Candidate

    validation = spec.validation.model_copy(update={"folds": 3, "importance": False})
    return spec.model_copy(
        update={
            "candidates": [Candidate(estimator="logistic_regression", params={"C": 1.0})],
            "validation": validation,
        }
    )


def _conform(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    return frame.select([pl.col(c).cast(t) for c, t in schema.items() if c in frame.columns])


def demo_stage(ctx: Any) -> list[str]:
    import httpx

    from ..deploy.targets import stop_local
    from ..monitor.alerts import check_alert_files, write_alert_files
    from ..monitor.loop import cycle
    from ..monitor.report import write_report
    from ..monitor.routing import bucket
    from ..registry import Registry
    from ..train.run import train_model
    from ..train.tabular import TabularModel

    ws = ctx.ws
    policy = ws.project.monitoring  # the demo's headrace.yaml: short windows, a 30 % canary
    spec = _light(ws.project.model(MODEL))
    share_ = policy.canary.share
    registry = Registry(ws.meta, ws.artifacts, actor="demo")
    lines: list[str] = []

    def trainer(ws_: Any, reg: Registry, name: str, reason: str) -> Any:
        result = train_model(name, spec, store=ws_.store, registry=reg, reason=reason, project_root=ws_.root)
        return result.version

    aliases = registry.aliases(MODEL)
    current = registry.get(MODEL, aliases[CHAMPION]) if CHAMPION in aliases else None
    if current is None or current.data_version is None or not current.metrics:
        # the loop needs a champion with lineage (its training data version and validation score)
        seeded = train_model(MODEL, spec, store=ws.store, registry=registry, reason="demo: first model")
        assert seeded.version is not None
        why = "no champion yet" if current is None else f"v{current.version} records no training data version"
        registry.promote(MODEL, seeded.version.version, reason=f"demo: trained on {spec.dataset} ({why})")
        lines.append(
            f"champion v{seeded.version.version} trained on {spec.dataset}@{seeded.data_version} "
            f"(roc_auc {seeded.metrics['roc_auc']:.3f}; {why})"
        )
    schema = ws.store.read(spec.dataset).schema
    champion = registry.aliases(MODEL)[CHAMPION]

    endpoint = (ctx.facts.get("deploy") or {}).get("endpoint")
    if not endpoint:
        raise RuntimeError("the monitor stage runs against the deploy stage's local deployment")
    lines.append(f"watching the local deployment at {endpoint} (a bundle in its own process)")
    try:
        client = httpx.Client(base_url=str(endpoint), timeout=30)
        from .serve import demo_write_token  # the bundle took it from the demo's environment

        write = {"Authorization": f"Bearer {demo_write_token()}"}

        def send(frame: pl.DataFrame, tag: str, feedback: bool = False) -> list[dict[str, Any]]:
            out = []
            ids = frame["customerID"].to_list()
            truth = frame["Churn"].to_list()
            inputs = [i["name"] for i in (registry.get(MODEL, CHAMPION).signature or {}).get("inputs", [])]
            for cid, actual, record in zip(ids, truth, frame.select(inputs).to_dicts(), strict=True):
                answer = client.post(
                    f"/models/{MODEL}/predict",
                    json={"records": [record]},
                    headers={"X-User-ID": f"{tag}{cid}"},
                ).json()
                out.append(answer)
                if feedback:
                    client.post(
                        "/feedback",
                        json={"prediction_id": answer["ids"][0], "actual": actual},
                        headers=write,
                    )
            return out

        def logged(rows: int) -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                dataset = ws.project.serving.prediction_log.dataset
                if (
                    ws.store.exists(dataset)
                    and ws.store.scan(dataset).select(pl.len()).collect().item() >= rows
                ):
                    return
                time.sleep(0.05)

        def until(version: int) -> None:
            """Wait until the server routes canary-bound users to ``version`` (it polls the registry)."""
            user = next(f"probe-{i}" for i in range(10_000) if bucket(f"x-user-id=probe-{i}") < share_)
            probe = _conform(churn(1, seed=1), schema)
            inputs = [i["name"] for i in (registry.get(MODEL, CHAMPION).signature or {}).get("inputs", [])]
            record = probe.select(inputs).to_dicts()[0]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                answer = client.post(
                    f"/models/{MODEL}/predict", json={"records": [record]}, headers={"X-User-ID": user}
                ).json()
                if answer.get("version") == version:
                    return
                time.sleep(0.05)

        def pending() -> int:
            dataset = ws.project.serving.prediction_log.dataset
            return ws.store.scan(dataset).select(pl.len()).collect().item() if ws.store.exists(dataset) else 0

        start = pending()
        since = time.time()
        shifted = _conform(churn(200, seed=41, shift=1.0, id_offset=900_000), schema)
        send(shifted, "u", feedback=True)
        lines.append(
            f"served 200 predictions to customers whose tenure and charges have shifted (v{champion})"
        )
        new_batch = _conform(churn(3000, seed=42, shift=1.0, id_offset=800_000), schema)
        version = ws.store.append(spec.dataset, new_batch, BatchMeta(source="demo: new customers"))
        lines.append(f"a new batch of 3000 customers arrived: {spec.dataset}@{version}")
        logged(start + 200)

        # the live window is this stage's traffic alone (earlier stages served unshifted customers)
        window = time.time() - since + 1.0
        ws.project = ws.project.model_copy(
            update={"monitoring": ws.project.monitoring.model_copy(update={"window": window})}
        )
        first = cycle(ws, MODEL, registry=registry, trainer=trainer)
        lines += [f"{e['action']}: {e['reason']}" for e in first.events]
        report = first.check.drift
        if report is not None:
            top = sorted(report.features, key=lambda f: f.psi, reverse=True)[:3]
            lines.append("  PSI " + ", ".join(f"{f.feature} {f.psi:.2f}" for f in top))
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
            second = cycle(ws, MODEL, registry=registry, trainer=trainer)
            lines += [f"{e['action']}: {e['reason']}" for e in second.events] or [
                f"{second.decision.action}: {second.decision.reason}"
            ]

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
        registry.set_alias(MODEL, CHALLENGER, broken.version, reason="demo: canary for a hand-built version")
        lines.append(f"canary: v{broken.version} (threshold mis-set to 1.01) put on canary by hand")
        until(broken.version)
        before = pending()
        send(_conform(churn(60, seed=44, shift=1.0, id_offset=600_000), schema), "x")
        logged(before + 60)
        third = cycle(ws, MODEL, registry=registry, trainer=trainer)
        lines += [f"{e['action']}: {e['reason']}" for e in third.events] or [
            f"{third.decision.action}: {third.decision.reason}"
        ]
        metrics = client.get("/metrics").text
        client.close()
    finally:
        stopped = stop_local(ws, MODEL)
    lines.append(f"local deployment stopped (v{', v'.join(map(str, stopped.details['stopped_versions']))})")
    gauges = [m for m in metrics.splitlines() if m.startswith("headrace_drift_share{")]
    lines += [f"gauge {g}" for g in gauges[:1]]
    files = write_alert_files(policy, ws.root / "monitoring", ws.project.project)
    checked = check_alert_files(ws.root / "monitoring")
    lines.append(
        f"alert rules, Grafana dashboard, Alertmanager example in {files[0].parent} "
        f"({'valid' if checked.ok else 'INVALID'}: {len(checked.checked)} checks)"
    )
    html = write_report(first.check, ws.root / "monitoring" / f"{MODEL}-report.html")
    lines.append(f"report: {html}")
    history = [e for e in registry.history(MODEL) if e.action in ("promote", "rollback", "remove_alias")]
    for entry in history[-3:]:
        when = entry.ts.astimezone(UTC).strftime("%H:%M:%S")
        lines.append(
            f"ledger {when} {entry.action} v{entry.version or entry.previous_version}: {entry.reason}"
        )
    ctx.facts["monitor"] = {
        "at": datetime.now(UTC).isoformat(),
        "champion": registry.aliases(MODEL).get(CHAMPION),
    }
    return lines


CHAMPION = "champion"
CHALLENGER = "challenger"
