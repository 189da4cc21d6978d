"""The closed loop: measure, decide, act. ``check`` measures and stores; ``cycle`` also acts.

One cycle for one model:

1. **Measure** (``check``): the live window of the prediction log (the champion's answers of the last
   ``monitoring.window``) against the training reference (the champion's recorded dataset at its
   recorded data version), feature by feature, and its predictions against its predictions on the
   reference (drift); feedback joined to the prediction log (live performance); the challenger's
   health since its canary started. Reports go to ``monitor_reports`` (and so to the gauges).
2. **Decide** (``decide``, pure, in ``headrace.monitor.policy``).
3. **Act**: *retrain* on the newest data version (``headrace.train.run.train_model``), put the new
   version through the gate against the champion on the same data, and make it the ``challenger``
   (the serving app then routes the canary share to it, or shadows it); *promote* a healthy canary
   to champion (through the gate again); *roll back* a failing canary (its alias removed) or a
   failing new champion (``Registry.rollback``); then *retire* versions by the retention policy.
   Every change goes through the registry, so the ledger holds it with its reason.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import desc, select

from ..config.models import ModelSpec
from ..config.monitoring import MonitoringSpec
from ..errors import DataError, HeadraceError, NotFound
from ..metadata import SCHEMA, utcnow
from ..registry import CHALLENGER, CHAMPION, ModelVersion, Registry
from ..workspace import Workspace
from .drift import DriftReport, DriftThresholds, drift, reference_scores
from .feedback import decode_json, join_feedback, prediction_outputs
from .health import Measure, error_mask, version_health
from .health import windows as health_windows
from .images import confidences, mix_drift
from .performance import (
    PerformanceReport,
    WindowScore,
    compute_metrics,
    default_metric,
    live_performance,
    window_label,
    windows_report,
)
from .policy import CHAMPION_CHECKS, Decision, Signals, decide, judge_champion, retention_plan
from .recommender import interaction_events, judge_lists, replayed_lists, score_lists, served_lists
from .routing import SHADOW

__all__ = [
    "CheckResult",
    "CycleResult",
    "Decision",
    "Signals",
    "apply_retention",
    "check",
    "cycle",
    "decide",
    "live_frame",
    "watch",
]

log = logging.getLogger("headrace.monitor")

_REFERENCE_SAMPLE = 20_000


@dataclass
class CheckResult:
    """What the monitor measured for one model, and what the policy makes of it."""

    model: str
    champion: ModelVersion | None
    signals: Signals
    decision: Decision
    drift: DriftReport | None = None
    drift_error: str | None = None
    performance: PerformanceReport | None = None
    canary: dict[str, Any] | None = None
    champion_watch: dict[str, Any] | None = None  # the champion's windows and what it crossed

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "champion": None if self.champion is None else self.champion.version,
            "challenger": self.signals.challenger,
            "decision": self.decision.to_dict(),
            "drift": None if self.drift is None else self.drift.to_dict(),
            "drift_error": self.drift_error,
            "performance": None if self.performance is None else self.performance.to_dict(),
            "canary": self.canary,
            "champion_watch": self.champion_watch,
        }


@dataclass
class CycleResult:
    check: CheckResult
    events: list[dict[str, Any]] = field(default_factory=list)  # what was done, each with its reason

    @property
    def decision(self) -> Decision:
        return self.check.decision

    def lines(self) -> list[str]:
        return [f"{e['action']}: {e['reason']}" for e in self.events]

    def to_dict(self) -> dict[str, Any]:
        return {**self.check.to_dict(), "events": self.events}


# -- reading the prediction log -----------------------------------------------------------------


def _utc(ts: datetime) -> datetime:
    """UTC as polars compares it: PostgreSQL hands back zones named 'Etc/UTC', SQLite none at all."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def live_frame(
    ws: Workspace, model: str, since: datetime, *, routes: tuple[str, ...] | None = None
) -> pl.DataFrame:
    """The prediction log's rows of ``model`` since ``since`` (empty when there is no log yet)."""
    since = _utc(since)
    dataset = ws.project.serving.prediction_log.dataset
    if not ws.store.exists(dataset):
        return pl.DataFrame()
    lazy = ws.store.scan(dataset).filter((pl.col("model") == model) & (pl.col("ts") >= since))
    if routes is not None:
        lazy = lazy.filter(pl.col("route").is_in(list(routes)))
    return lazy.collect()


def _feedback(ws: Workspace, model: str, since: datetime) -> pl.DataFrame:
    dataset = ws.project.serving.prediction_log.feedback_dataset
    if not ws.store.exists(dataset):
        return pl.DataFrame()
    # feedback may arrive long after the prediction: read all that came since the window opened
    frame = ws.store.scan(dataset).filter(pl.col("ts") >= _utc(since)).collect()
    if frame.height and "model" in frame.columns:
        frame = frame.filter(pl.col("model").is_null() | (pl.col("model") == model))
    return frame


def _inputs(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    decoded = decode_json(frame["inputs"].to_list())
    records = [d if isinstance(d, dict) else {} for d in decoded]
    return pl.DataFrame({c: [r.get(c) for r in records] for c in columns}, strict=False)


# -- measuring ------------------------------------------------------------------------------------


def _features(mv: ModelVersion, reference: pl.DataFrame) -> list[str]:
    inputs = (mv.signature or {}).get("inputs")
    if isinstance(inputs, list):
        return [str(i["name"]) for i in inputs if str(i["name"]) in reference.columns]
    if isinstance(inputs, dict):
        return [str(k) for k in inputs if str(k) in reference.columns]
    return [c for c in reference.columns if c != (mv.details.get("spec") or {}).get("target")]


def measure_drift(
    ws: Workspace, registry: Registry, mv: ModelVersion, live: pl.DataFrame, policy: MonitoringSpec
) -> DriftReport:
    """Drift of the champion's live inputs (and scores) against its training data."""
    if mv.dataset is None:
        raise DataError(f"{mv.ref} records no training dataset", hint="retrain it with 'headrace train'")
    reference = ws.store.read(mv.dataset, mv.data_version)
    if reference.height > _REFERENCE_SAMPLE:
        reference = reference.sample(_REFERENCE_SAMPLE, seed=0)
    features = _features(mv, reference)
    current = _inputs(live, features)
    prediction = None
    ref_scores = reference_scores(registry, mv, reference)  # out-of-fold (in-sample for old versions)
    if ref_scores is not None and live["score"].drop_nulls().len() > 0:
        prediction = (ref_scores.values, live["score"].drop_nulls())
    return drift(
        reference.select(features),
        current,
        DriftThresholds.from_spec(policy),
        features=features,
        prediction=prediction,
        prediction_reference=ref_scores.source if ref_scores is not None else None,
    )


def _metric_for(spec: ModelSpec | None, mv: ModelVersion, policy: MonitoringSpec) -> str:
    if mv.task == "recommendation":
        base = "ndcg" if (policy.metric or "").startswith("ndcg") else "hit_rate"
        return f"{base}@{policy.recommendations.k}"
    if mv.task == "image_classification":
        return "confidence"
    if policy.metric:
        return policy.metric
    if spec is not None and spec.promote_if.metric:
        return spec.promote_if.metric
    if spec is not None and spec.validation.metric:
        return spec.validation.metric
    return default_metric(mv.task)


def _reference_metric(mv: ModelVersion, metric: str) -> float | None:
    value = mv.metrics.get(metric)
    if isinstance(value, dict):
        value = value.get("mean")
    return float(value) if isinstance(value, int | float) else None


def _canary_start(registry: Registry, model: str, version: int) -> datetime | None:
    for entry in reversed(registry.history(model)):
        if (
            entry.alias == CHALLENGER
            and entry.action in ("set_alias", "promote")
            and entry.version == version
        ):
            return _utc(entry.ts)
    return None


def _champion_since(registry: Registry, model: str, version: int) -> tuple[datetime | None, int | None]:
    for entry in reversed(registry.history(model)):
        if entry.alias == CHAMPION and entry.version == version and entry.action in ("promote", "set_alias"):
            return _utc(entry.ts), entry.previous_version
        if entry.alias == CHAMPION and entry.action == "rollback" and entry.version == version:
            return _utc(entry.ts), None  # a rollback target is never rolled back automatically
    return None, None


def _last_retrain(ws: Workspace, model: str) -> datetime | None:
    table = SCHEMA.tables["monitor_reports"]
    with ws.meta.begin() as conn:
        row = conn.execute(
            select(table.c.created_at)
            .where((table.c.model == model) & (table.c.kind == "decision") & (table.c.status == "retrain"))
            .order_by(desc(table.c.id))
            .limit(1)
        ).first()
    if row is None:
        return None
    ts = row[0]
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _store_report(ws: Workspace, model: str, version: int | None, kind: str, status: str, doc: Any) -> None:
    table = SCHEMA.tables["monitor_reports"]
    with ws.meta.begin() as conn:
        conn.execute(
            table.insert().values(
                created_at=utcnow(),
                model=model,
                version=version,
                kind=kind,
                status=status,
                report=json.loads(json.dumps(doc, default=str)),
            )
        )


@dataclass
class _Measured:
    """What a task-specific measurement gives the check: drift, live performance, and the live
    metric of a version over any span (for the champion's windows and the canary)."""

    drift: DriftReport | None
    drift_error: str | None
    performance: PerformanceReport
    measure: Callable[[int], Measure | None]
    notes: list[str] = field(default_factory=list)


def _score_windows(
    values: Callable[[datetime, datetime], tuple[float | None, int]],
    metric: str,
    windows: list[float],
    now: datetime,
    *,
    version: int,
    reference: float | None = None,
    min_rows: int = 30,
) -> PerformanceReport:
    """A PerformanceReport from a function giving the metric over [start, end) and its rows."""
    scores = []
    for seconds in sorted(windows):
        value, rows = values(now - timedelta(seconds=seconds), now)
        scores.append(WindowScore(window_label(seconds), seconds, rows, value, {metric: value}))
    return windows_report(scores, metric, version=version, reference=reference, min_rows=min_rows)


def _measure_tabular(
    ws: Workspace,
    registry: Registry,
    champion: ModelVersion,
    policy: MonitoringSpec,
    *,
    metric: str,
    rows: pl.DataFrame,
    feedback: pl.DataFrame,
    window_rows: pl.DataFrame,
    now: datetime,
) -> _Measured:
    drift_report: DriftReport | None = None
    drift_error: str | None = None
    if window_rows.height >= policy.min_rows:
        try:
            drift_report = measure_drift(ws, registry, champion, window_rows, policy)
        except HeadraceError as exc:
            drift_error = exc.one_line()
    else:
        drift_error = (
            f"{window_rows.height} predictions by v{champion.version} in the last {policy.window:.0f} s; "
            f"drift needs {policy.min_rows}"
        )
    joined = join_feedback(rows, feedback)
    positive = _positive(champion)
    performance = live_performance(
        joined,
        champion.task,
        metric=metric,
        windows=policy.performance_windows,
        now=now,
        version=champion.version,
        reference=_reference_metric(champion, metric),
        positive=positive,
    )

    def measure(version: int) -> Measure:
        mine = joined.filter(pl.col("version") == version) if joined.height else joined

        def value(start: datetime, end: datetime) -> tuple[float | None, int]:
            part = mine.filter((pl.col("ts") >= start) & (pl.col("ts") < end)) if mine.height else mine
            if part.height == 0:
                return None, 0
            return compute_metrics(part, champion.task, positive).get(metric), part.height

        return value

    return _Measured(drift_report, drift_error, performance, measure)


def _measure_recommender(
    ws: Workspace,
    registry: Registry,
    champion: ModelVersion,
    policy: MonitoringSpec,
    *,
    metric: str,
    rows: pl.DataFrame,
    now: datetime,
) -> _Measured:
    watch = policy.recommendations
    notes: list[str] = []
    events = pl.DataFrame()
    columns = champion.signature or {}
    if champion.dataset is None or not ws.store.exists(champion.dataset):
        notes.append(f"{champion.ref} names no interactions dataset that exists: no live hit rate")
    elif not columns.get("ts"):
        notes.append(f"{champion.ref} recorded no time column for its interactions: no live hit rate")
    else:
        wanted = [c for c in (columns.get("user"), columns.get("item"), columns.get("ts")) if c]
        frame = ws.store.scan(champion.dataset).select(wanted).collect()
        events = interaction_events(frame, columns)
    lists = served_lists(rows, watch.horizon)
    logged = lists.filter(pl.col("version") == champion.version).height > 0
    model: Any = None
    if not logged and events.height:
        notes.append(
            "no served recommendation lists in the prediction log: the champion's top "
            f"{watch.k} is replayed for each user active in the window"
        )
        _, model = registry.load(champion.name, champion.version)
    elif logged:
        notes.append("hit rate and NDCG from the recommendation lists served (prediction log)")

    def measure(version: int) -> Measure | None:
        if events.height == 0:
            return None
        if logged:
            mine = lists.filter(pl.col("version") == version)

            def from_log(start: datetime, end: datetime) -> tuple[float | None, int]:
                # a list is judged once its horizon has passed: the window's lists end in [start, end)
                due = mine.filter(
                    (pl.col("until") >= start) & (pl.col("until") < end) & (pl.col("until") <= now)
                )
                score = score_lists(judge_lists(due, events, watch.k))
                return score.value(metric), score.lists

            return from_log
        if version != champion.version:
            return None

        def replayed(start: datetime, end: datetime) -> tuple[float | None, int]:
            recs = replayed_lists(model, events, since=start, now=min(end, now), k=watch.k, version=version)
            score = score_lists(judge_lists(recs, events, watch.k))
            return score.value(metric), score.lists

        return replayed

    value = measure(champion.version)
    performance = (
        _score_windows(value, metric, policy.performance_windows, now, version=champion.version)
        if value is not None
        else _score_windows(lambda s, e: (None, 0), metric, policy.performance_windows, now,
                            version=champion.version)
    )  # fmt: skip
    return _Measured(None, "drift is not measured for recommenders", performance, measure, notes)


def _measure_images(
    champion: ModelVersion,
    policy: MonitoringSpec,
    *,
    metric: str,
    rows: pl.DataFrame,
    window_rows: pl.DataFrame,
    now: datetime,
) -> _Measured:
    drift_report: DriftReport | None = None
    drift_error: str | None = None
    labels = prediction_outputs(window_rows) if window_rows.height else []
    if len(labels) >= policy.min_rows:
        try:
            drift_report = mix_drift(champion, labels, DriftThresholds.from_spec(policy))
        except HeadraceError as exc:
            drift_error = exc.one_line()
    else:
        drift_error = (
            f"{len(labels)} predictions by v{champion.version} in the last {policy.window:.0f} s; "
            f"the prediction mix needs {policy.min_rows}"
        )
    answered = rows.filter(~error_mask()) if rows.height else rows
    notes = []
    if answered.height and not confidences(answered):
        notes.append("the prediction log holds no class probabilities for this model: no live confidence")

    def measure(version: int) -> Measure:
        mine = answered.filter(pl.col("version") == version) if answered.height else answered

        def value(start: datetime, end: datetime) -> tuple[float | None, int]:
            part = mine.filter((pl.col("ts") >= start) & (pl.col("ts") < end)) if mine.height else mine
            top = confidences(part)
            return (float(np.mean(top)) if top else None), len(top)

        return value

    performance = _score_windows(
        measure(champion.version), metric, policy.performance_windows, now, version=champion.version
    )
    return _Measured(drift_report, drift_error, performance, measure, notes)


def check(
    ws: Workspace,
    model: str,
    *,
    registry: Registry | None = None,
    now: datetime | None = None,
    policy: MonitoringSpec | None = None,
    store: bool = True,
) -> CheckResult:
    """Measure one model (drift, live performance, canary health, the champion's windows), store the
    reports, and decide."""
    registry = registry or Registry(ws.meta, ws.artifacts, actor="monitor")
    policy = policy or ws.project.monitoring
    now = _utc(now or datetime.now(UTC))
    spec = ws.project.models.get(model)
    aliases = registry.aliases(model)
    champion_version = aliases.get(CHAMPION)
    challenger_version = aliases.get(CHALLENGER)
    if challenger_version == champion_version:
        challenger_version = None
    try:
        newest = registry.get(model, "latest")
    except NotFound:
        newest = None
    data_version = None
    dataset = spec.dataset if spec is not None else (newest.dataset if newest is not None else None)
    if dataset is not None and ws.store.exists(dataset):
        data_version = ws.store.version(dataset)
    if champion_version is None:
        signals = Signals(model=model, now=now, challenger=challenger_version)
        return CheckResult(model, None, signals, decide(signals, policy))
    champion = registry.get(model, champion_version)
    metric = _metric_for(spec, champion, policy)
    canary_started = (
        _canary_start(registry, model, challenger_version) if challenger_version is not None else None
    )
    watch = policy.champion
    since = now - timedelta(seconds=policy.window)
    feedback_since = now - timedelta(seconds=max(policy.performance_windows))
    windows_since = now - timedelta(seconds=watch.window * watch.windows)
    starts = [since, feedback_since, windows_since]
    if champion.task == "recommendation":
        # a list served up to one horizon before a window is judged in it
        starts.append(windows_since - timedelta(seconds=policy.recommendations.horizon))
        starts.append(feedback_since - timedelta(seconds=policy.recommendations.horizon))
    if canary_started is not None:
        starts.append(canary_started)
    earliest = min(starts)
    rows = live_frame(ws, model, earliest)
    served = rows.filter(~error_mask() & (pl.col("route") != SHADOW)) if rows.height else rows
    window_rows = served.filter(pl.col("ts") >= since) if served.height else served
    champion_rows = (
        window_rows.filter(pl.col("version") == champion.version) if window_rows.height else window_rows
    )
    if champion.task == "recommendation":
        measured = _measure_recommender(ws, registry, champion, policy, metric=metric, rows=rows, now=now)
    elif champion.task == "image_classification":
        measured = _measure_images(
            champion, policy, metric=metric, rows=rows, window_rows=champion_rows, now=now
        )
    else:
        feedback = _feedback(ws, model, earliest)
        measured = _measure_tabular(
            ws, registry, champion, policy, metric=metric, rows=rows, feedback=feedback,
            window_rows=champion_rows, now=now,
        )  # fmt: skip
    result_drift, drift_error, performance = measured.drift, measured.drift_error, measured.performance
    canary_doc = None
    canary_health = baseline = None
    if challenger_version is not None and canary_started is not None:
        period = rows.filter(pl.col("ts") >= canary_started) if rows.height else rows
        span = (canary_started, now + timedelta(microseconds=1))
        classes = champion.task in ("classification", "image_classification")
        canary_health = version_health(
            period,
            challenger_version,
            measure=measured.measure(challenger_version),
            span=span,
            classes=classes,
        )
        baseline = version_health(
            period, champion.version, measure=measured.measure(champion.version), span=span, classes=classes
        )
        canary_doc = {
            "state": "running",
            "version": challenger_version,
            "mode": policy.canary.mode,
            "share": policy.canary.share,
            "started": canary_started.isoformat(),
            "canary": canary_health.to_dict(),
            "champion": baseline.to_dict(),
        }
    since_champion, previous = _champion_since(registry, model, champion.version)
    champion_windows = health_windows(
        rows,
        champion.version,
        now=now + timedelta(microseconds=1),  # a row logged at ``now`` is in the newest window
        window=watch.window,
        count=watch.windows,
        since=since_champion,
        measure=measured.measure(champion.version),
    )
    signals = Signals(
        model=model,
        now=now,
        metric=metric,
        champion=champion.version,
        challenger=challenger_version,
        canary_started=canary_started,
        canary=canary_health,
        baseline=baseline,
        drift_status=None if result_drift is None else result_drift.status,
        dataset_drift=bool(result_drift and result_drift.dataset_drift),
        drifted=tuple(result_drift.drifted) if result_drift else (),
        share_drifted=None
        if result_drift is None or not result_drift.features
        else result_drift.share_drifted,
        prediction_drift=bool(result_drift and result_drift.prediction and result_drift.prediction.drifted),
        live_metric=performance.value,
        reference_metric=performance.reference,
        live_drop=performance.drop,
        feedback_rows=performance.rows,
        last_trained_at=newest.created_at if newest is not None else None,
        last_retrain_at=_last_retrain(ws, model),
        data_version=data_version,
        trained_on=newest.data_version if newest is not None else None,
        champion_windows=tuple(champion_windows),
        champion_since=since_champion,
        previous_champion=previous,
    )
    decision = decide(signals, policy)
    unhealthy = judge_champion(signals, policy)
    champion_doc = {
        "version": champion.version,
        "metric": metric,
        "action": watch.action,
        "window": watch.window,
        "windows": [h.to_dict() for h in champion_windows],
        "unhealthy": {check: check in unhealthy for check in CHAMPION_CHECKS},
        "reasons": list(unhealthy.values()),
        "notes": measured.notes,
    }
    result = CheckResult(
        model, champion, signals, decision, result_drift, drift_error, performance, canary_doc, champion_doc
    )
    if store:
        if result_drift is not None:
            _store_report(ws, model, champion.version, "drift", result_drift.status, result_drift.to_dict())
        status = (
            "ok"
            if not performance.enough or (performance.drop or 0) <= policy.rollback_on.metric_drop
            else "alert"
        )
        _store_report(ws, model, champion.version, "performance", status, performance.to_dict())
        _store_report(ws, model, champion.version, "champion", "alert" if unhealthy else "ok", champion_doc)
        if canary_doc is not None:
            _store_report(ws, model, challenger_version, "canary", "running", canary_doc)
    return result


def _positive(mv: ModelVersion) -> Any:
    classes = ((mv.signature or {}).get("output") or {}).get("classes")
    return classes[1] if isinstance(classes, list) and len(classes) == 2 else None


# -- acting ---------------------------------------------------------------------------------------

Trainer = Callable[..., Any]


def _default_trainer(ws: Workspace, registry: Registry, model: str, reason: str) -> ModelVersion:
    spec = ws.project.model(model)
    version: Any
    if spec.task == "recommendation":
        from ..recommend import train_recommender

        data_version = ws.store.version(spec.dataset)
        version = train_recommender(
            spec,
            ws.store.read(spec.dataset, data_version),
            registry=registry,
            name=model,
            data_version=data_version,
            promote=False,
        ).version
    elif spec.task == "image_classification":
        from ..vision.train import train_image_model

        version = train_image_model(
            spec,
            store=ws.store,
            meta=ws.meta,
            artifacts=ws.artifacts,
            name=model,
            promote=False,
            reason=reason,
            out_dir=ws.root / ".headrace" / "reports",
            project_root=ws.root,
        ).version
    else:
        from ..train.run import train_model

        version = train_model(
            model, spec, store=ws.store, registry=registry, reason=reason, project_root=ws.root
        ).version
    assert version is not None
    return registry.get(model, version.version)


def cycle(
    ws: Workspace,
    model: str,
    *,
    registry: Registry | None = None,
    now: datetime | None = None,
    policy: MonitoringSpec | None = None,
    trainer: Trainer | None = None,
    follow_deployments: bool = True,
) -> CycleResult:
    """One turn of the loop for one model: measure, decide, act, retire. When the champion moved
    (a promotion, a rollback), the live deployments are brought to it (``deploy.follow``)."""
    registry = registry or Registry(ws.meta, ws.artifacts, actor="monitor")
    policy = policy or ws.project.monitoring
    result = check(ws, model, registry=registry, now=now, policy=policy)
    decision = result.decision
    out = CycleResult(result)
    spec = ws.project.models.get(model)
    gate = spec.promote_if if spec is not None else None
    _store_report(ws, model, result.signals.champion, "decision", decision.action, decision.to_dict())
    if decision.action == "retrain":
        reason = f"retrain: {decision.reason}"
        for trigger, why in zip(decision.triggers, decision.reasons, strict=False):
            out.events.append({"action": trigger, "reason": why})
        started = time.perf_counter()
        train = trainer or _default_trainer
        mv = train(ws, registry, model, reason)
        out.events.append(
            {
                "action": "retrain",
                "version": mv.version,
                "reason": f"v{mv.version} trained on {mv.dataset}@{mv.data_version} in "
                f"{time.perf_counter() - started:.1f} s ({', '.join(decision.triggers)})",
            }
        )
        verdict = registry.check_gate(model, mv.version, gate)
        if not verdict.passed:
            text = "; ".join(verdict.reasons)
            out.events.append({"action": "gate_refused", "version": mv.version, "reason": text})
            _store_report(ws, model, mv.version, "gate", "refused", verdict.to_dict())
        else:
            summary = _gate_summary(verdict)
            canary = policy.canary
            reason = (
                f"{canary.mode} at {canary.share:.0%} for {canary.window:.0f} s: {summary}; "
                f"retrained because {decision.reason}"
            )
            registry.set_alias(model, CHALLENGER, mv.version, reason=reason)
            _store_report(ws, model, mv.version, "gate", "passed", verdict.to_dict())
            _store_report(
                ws, model, mv.version, "canary", "running",
                {"state": "running", "version": mv.version, "mode": canary.mode, "share": canary.share},
            )  # fmt: skip
            out.events.append({"action": canary.mode, "version": mv.version, "reason": reason})
    elif decision.action == "promote" and decision.version is not None:
        mv = registry.promote(model, decision.version, reason=f"promoted: {decision.reason}", gate=gate)
        _store_report(
            ws, model, mv.version, "canary", "promoted", {"state": "promoted", **(result.canary or {})}
        )
        out.events.append({"action": "promote", "version": mv.version, "reason": decision.reason})
        if follow_deployments:
            out.events += _follow(ws, model, registry, urgent=False)
    elif decision.action == "rollback" and decision.version is not None:
        if decision.version == result.signals.challenger:
            registry.remove_alias(model, CHALLENGER, reason=f"rolled back: {decision.reason}")
            doc = {**(result.canary or {}), "state": "rolled_back", "version": decision.version}
            _store_report(ws, model, decision.version, "canary", "rolled_back", doc)
        else:
            back = registry.rollback(model, reason=f"rolled back: {decision.reason}")
            doc = {**(result.champion_watch or {}), "decision": decision.to_dict(), "to": back.version}
            _store_report(ws, model, decision.version, "champion", "rolled_back", doc)
        out.events.append({"action": "rollback", "version": decision.version, "reason": decision.reason})
        if follow_deployments and decision.version != result.signals.challenger:
            out.events += _follow(ws, model, registry, urgent=True)
    elif decision.action == "alert":
        # the champion stays: the alert is the stored report (and headrace_champion_unhealthy)
        doc = {**(result.champion_watch or {}), "decision": decision.to_dict()}
        _store_report(ws, model, decision.version, "alert", "alert", doc)
        out.events.append({"action": "alert", "version": decision.version, "reason": decision.reason})
        log.warning("%s v%s: %s", model, decision.version, decision.reason)
    for version, why in apply_retention(ws, registry, model, policy, now=now):
        out.events.append({"action": "retire", "version": version, "reason": why})
    for event in out.events:
        log.info("%s %s: %s", model, event["action"], event["reason"])
    return out


def _follow(ws: Workspace, model: str, registry: Registry, *, urgent: bool) -> list[dict[str, Any]]:
    """The champion moved: bring every live deployment to it; a failure is an event, not a crash."""
    from ..deploy.follow import follow

    try:
        return follow(ws, model, registry=registry, urgent=urgent)
    except HeadraceError as exc:
        return [{"action": "follow_failed", "reason": exc.one_line()}]


def _gate_summary(verdict: Any) -> str:
    if verdict.metric is None or verdict.candidate is None:
        return "no gate configured"
    text = f"gate passed with {verdict.metric} {verdict.candidate:.4f}"
    if verdict.champion is not None:
        text += f" against champion v{verdict.champion_version}'s {verdict.champion:.4f} on the same data"
    return text


def apply_retention(
    ws: Workspace, registry: Registry, model: str, policy: MonitoringSpec, *, now: datetime | None = None
) -> list[tuple[int, str]]:
    """Retire what the retention policy says (artifacts removed, ledger kept); returns what it did."""
    plan = retention_plan(
        registry.list(model),
        registry.aliases(model),
        registry.history(model),
        policy.retention,
        now or datetime.now(UTC),
    )
    for version, why in plan:
        registry.retire(model, version, reason=why)
    return plan


def watch(
    ws: Workspace,
    models: list[str],
    *,
    interval: float | None = None,
    cycles: int | None = None,
    on_cycle: Callable[[CycleResult], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> int:
    """Run cycles every ``interval`` seconds (``monitoring.interval``) until ``stop()`` or ``cycles``."""
    registry = Registry(ws.meta, ws.artifacts, actor="monitor")
    every = interval if interval is not None else ws.project.monitoring.interval
    done = 0
    while cycles is None or done < cycles:
        started = time.monotonic()
        for model in models:
            try:
                result = cycle(ws, model, registry=registry)
            except HeadraceError as exc:
                log.error("monitor cycle for %s failed: %s", model, exc.one_line())
                continue
            if on_cycle is not None:
                on_cycle(result)
        done += 1
        if stop is not None and stop():
            break
        if cycles is not None and done >= cycles:
            break
        time.sleep(max(0.0, every - (time.monotonic() - started)))
    return done
