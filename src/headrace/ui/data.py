"""What the dashboard shows, as plain data: read-only queries over the store, metadata and registry.

Every page is one call here (``overview``, ``dataset``, ``model``, ``monitoring``) returning plain
dicts the templates render; the same numbers ``headrace status --json``, ``headrace models`` and the
serving API give, computed by the same code where it exists (``Store.info``,
``monitor.metrics.ingestion_health``, ``Registry``); live accuracy is computed here with polars
(the monitor's own figures come from its stored reports, shown beside it).
"""

from __future__ import annotations

import io
import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from sqlalchemy import desc, select

from ..config.monitoring import MonitoringSpec
from ..config.serving import PredictionLogSpec
from ..errors import HeadraceError, NotFound, StoreError
from ..metadata import SCHEMA, Metadata
from ..monitor.feedback import join_feedback
from ..registry import CHALLENGER, CHAMPION, LedgerEntry, ModelVersion, Registry
from ..status import summarize_dataset
from ..store import QUARANTINE_SUFFIX, Store

__all__ = ["Dashboard", "binary_curves", "bucket_seconds", "histogram_quantile", "trapezoid"]

log = logging.getLogger("headrace.ui")

_STREAM_KINDS = ("mqtt", "nats")
_ERROR_ROUTES = ("canary_error", "shadow_error")
_SHADOW = "shadow"
_CURVE_POINTS = 160
_LIVE_DAYS = 7


def _aware(ts: Any) -> datetime | None:
    if not isinstance(ts, datetime):
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def bucket_seconds(span: float, target: int = 30) -> int:
    """A round bucket width giving at most about ``target`` buckets over ``span`` seconds."""
    for size in (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400):
        if span / size <= target:
            return size
    return 7 * 86400


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative ``(upper_bound, count)`` buckets."""
    if not buckets:
        return None
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            inside = count - previous_count
            share = (rank - previous_count) / inside if inside else 0.0
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return previous_bound


def _metric_value(metrics: Mapping[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    if isinstance(value, Mapping):
        value = value.get("mean")
    return _finite(value)


@dataclass
class Dashboard:
    """The dashboard's view of a project: a registry (and its metadata), a store, and optionally the
    project spec (thresholds, sources) and the serving app it is mounted in (served versions and
    request metrics)."""

    registry: Registry
    store: Store | None = None
    project: Any = None  # headrace.config.Project
    serving: Any = None  # headrace.config.ServingSpec
    metrics: Any = None  # headrace.serve.metrics.ServeMetrics of the app it is mounted in
    host: Any = None  # headrace.serve.host.ModelHost of the app it is mounted in
    title: str = "headrace"
    admin: bool = True  # the admin routes live in the same app
    _oof: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- settings -----------------------------------------------------------------------------------
    @property
    def meta(self) -> Metadata:
        meta: Metadata = self.registry.meta
        return meta

    @property
    def name(self) -> str:
        return str(self.project.project) if self.project is not None else self.title

    @property
    def policy(self) -> MonitoringSpec:
        return self.project.monitoring if self.project is not None else MonitoringSpec.model_validate({})

    @property
    def plog(self) -> PredictionLogSpec:
        if self.serving is not None:
            return self.serving.prediction_log
        if self.project is not None:
            return self.project.serving.prediction_log
        return PredictionLogSpec()

    def model_names(self) -> list[str]:
        names = list(self.registry.models())
        if self.project is not None:
            names += [m for m in self.project.models if m not in names]
        return names

    def dataset_names(self) -> list[str]:
        if self.store is None:
            return []
        try:
            names = self.store.datasets()
        except StoreError:  # object storage: list what the project names
            names = self._named_datasets()
        return [n for n in names if not n.endswith(QUARANTINE_SUFFIX)]

    def _named_datasets(self) -> list[str]:
        if self.project is None or self.store is None:
            return []
        named = [s.dataset for s in self.project.sources.values()]
        named += [m.dataset for m in self.project.models.values() if getattr(m, "dataset", None)]
        named += [self.plog.dataset, self.plog.feedback_dataset]
        return [n for n in dict.fromkeys(named) if self.store.exists(n)]

    def main_metric(self, name: str, mv: ModelVersion | None = None) -> str:
        if self.project is not None and name in self.project.models:
            metric = self.project.models[name].validation.metric
            if metric:
                return str(metric)
        if mv is not None:
            scorecard = mv.details.get("scorecard") or {}
            if scorecard.get("metric"):
                return str(scorecard["metric"])
            if mv.task == "recommendation":
                found = next((k for k in mv.metrics if k.startswith("ndcg")), None)
                if found:
                    return found
            if mv.task == "regression":
                return "rmse"
        return "roc_auc"

    # -- overview -------------------------------------------------------------------------------------
    def dataset_summary(
        self, name: str, health: Mapping[str, Mapping[str, Any]] | None = None
    ) -> dict[str, Any]:
        assert self.store is not None
        ratio = (health or {}).get(name, {}).get("quarantine_ratio")
        return {**summarize_dataset(self.store, name), "quarantine_ratio": ratio}

    def ingestion_health(self) -> dict[str, dict[str, Any]]:
        from ..monitor.metrics import ingestion_health

        try:
            return ingestion_health(self.meta)
        except HeadraceError as exc:
            log.warning("ingestion health unavailable: %s", exc.one_line())
            return {}

    def runs(self, limit: int = 15, dataset: str | None = None) -> list[dict[str, Any]]:
        table = SCHEMA.tables["ingestion_runs"]
        query = select(table).order_by(desc(table.c.id)).limit(limit)
        if dataset is not None:
            query = query.where(table.c.dataset == dataset)
        with self.meta.begin() as conn:
            rows = conn.execute(query).mappings().all()
        out = []
        for r in rows:
            started, finished = _aware(r["started_at"]), _aware(r["finished_at"])
            out.append(
                {
                    **{k: r[k] for k in ("id", "source", "dataset", "kind", "status", "version", "error")},
                    "rows_read": int(r["rows_read"] or 0),
                    "rows_committed": int(r["rows_committed"] or 0),
                    "rows_quarantined": int(r["rows_quarantined"] or 0),
                    "started_at": started,
                    "finished_at": finished,
                    "seconds": (finished - started).total_seconds() if started and finished else None,
                    "details": dict(r["details"] or {}),
                }
            )
        return out

    def streams(self) -> list[dict[str, Any]]:
        """The newest run of each streaming source (a worker session) with its commit rate."""
        table = SCHEMA.tables["ingestion_runs"]
        with self.meta.begin() as conn:
            rows = (
                conn.execute(
                    select(table).where(table.c.kind.in_(_STREAM_KINDS)).order_by(desc(table.c.id)).limit(200)
                )
                .mappings()
                .all()
            )
        seen: dict[str, dict[str, Any]] = {}
        sessions: dict[str, int] = {}
        now = datetime.now(UTC)
        for r in rows:
            sessions[r["source"]] = sessions.get(r["source"], 0) + 1
            if r["source"] in seen:
                continue
            details = dict(r["details"] or {})
            started, finished = _aware(r["started_at"]), _aware(r["finished_at"])
            seconds = _finite(details.get("seconds"))
            if seconds is None and started is not None:
                seconds = ((finished or now) - started).total_seconds()
            committed = int(r["rows_committed"] or 0)
            rate = _finite(details.get("rows_per_second"))
            if rate is None and seconds:
                rate = committed / seconds
            seen[r["source"]] = {
                "source": r["source"],
                "dataset": r["dataset"],
                "kind": r["kind"],
                "status": r["status"],
                "started_at": started,
                "finished_at": finished,
                "rows_read": int(r["rows_read"] or 0),
                "rows_committed": committed,
                "rows_quarantined": int(r["rows_quarantined"] or 0),
                "rows_per_second": rate,
                "seconds": seconds,
                "batches": details.get("batches"),
                "reconnects": details.get("reconnects"),
            }
        for source, doc in seen.items():
            doc["sessions"] = sessions[source]
        return list(seen.values())

    def model_summary(self, name: str, versions: list[ModelVersion]) -> dict[str, Any]:
        mine = [v for v in versions if v.name == name]
        by_version = {v.version: v for v in mine}
        aliases = self.registry.aliases(name)
        served = None
        if self.host is not None:
            found = self.host.served().get(name)
            served = found.version if found is not None else None

        def brief(alias: str) -> dict[str, Any] | None:
            number = aliases.get(alias)
            if number is None:
                return None
            mv = by_version.get(number)
            metric = self.main_metric(name, mv)
            return {
                "version": number,
                "metric": metric,
                "value": _metric_value(mv.metrics, metric) if mv else None,
                "created_at": mv.created_at if mv else None,
                "data": f"{mv.dataset}@{mv.data_version}" if mv and mv.dataset else None,
            }

        history = self.registry.history(name)
        last = next(
            (e for e in reversed(history) if e.action != "register"), history[-1] if history else None
        )
        return {
            "name": name,
            "task": mine[-1].task if mine else (self.project.models[name].task if self.project else None),
            "versions": len(mine),
            "latest": mine[-1].version if mine else None,
            "retired": sum(1 for v in mine if v.status == "retired"),
            "champion": brief(CHAMPION),
            "challenger": brief(CHALLENGER),
            "served": served,
            "last_change": None if last is None else _ledger_doc(last),
        }

    def overview(self) -> dict[str, Any]:
        health = self.ingestion_health()
        datasets = [self.dataset_summary(n, health) for n in self.dataset_names()]
        versions = self.registry.list()
        return {
            "project": self.name,
            "datasets": datasets,
            "runs": self.runs(),
            "models": [self.model_summary(n, versions) for n in self.model_names()],
            "streams": self.streams(),
            "thresholds": {"quarantine_ratio": self.policy.alerts.quarantine_ratio},
        }

    # -- one dataset ----------------------------------------------------------------------------------
    def dataset(self, name: str) -> dict[str, Any]:
        if self.store is None or name.endswith(QUARANTINE_SUFFIX) or not self.store.exists(name):
            raise NotFound(f"dataset {name!r} does not exist", hint="see the overview for the datasets")
        health = self.ingestion_health()
        summary = self.dataset_summary(name, health)
        schema = self.store.scan(name).collect_schema()
        rules: dict[str, Any] = {}
        sources: list[str] = []
        max_reject: float | None = None
        if self.project is not None:
            for source, spec in self.project.sources.items():
                if spec.dataset != name:
                    continue
                sources.append(source)
                max_reject = getattr(spec, "max_quarantine_ratio", max_reject)
                for column, rule in (getattr(spec, "columns", None) or {}).items():
                    rules[column] = _rule_text(rule)
        return {
            "summary": summary,
            "schema": [{"column": c, "dtype": str(t), "rule": rules.get(c, "")} for c, t in schema.items()],
            "sources": sources,
            "max_quarantine_ratio": max_reject,
            "alert_ratio": self.policy.alerts.quarantine_ratio,
            "reports": self.quality_reports(name),
            "runs": self.runs(limit=10, dataset=name),
            "quarantine": self.quarantine(name),
            "versions": [
                {
                    "version": v.version,
                    "at": v.timestamp,
                    "operation": v.operation,
                    "source": v.source,
                    "batch_id": v.batch_id,
                    "rows": v.rows,
                }
                for v in reversed(self.store.versions(name))
            ],
        }

    def quality_reports(self, name: str, limit: int = 60) -> list[dict[str, Any]]:
        table = SCHEMA.tables["quality_reports"]
        with self.meta.begin() as conn:
            rows = (
                conn.execute(
                    select(table).where(table.c.dataset == name).order_by(desc(table.c.id)).limit(limit)
                )
                .mappings()
                .all()
            )
        out = []
        for r in reversed(rows):
            doc = dict(r["report"] or {})
            rows_in = int(doc.get("rows_in") or 0)
            unparseable = int(doc.get("rows_unparseable") or 0)
            quarantined = int(doc.get("rows_quarantined") or 0)
            total = rows_in + unparseable
            origins = doc.get("origins") or ([doc["origin"]] if doc.get("origin") else [])
            out.append(
                {
                    "id": r["id"],
                    "run_id": r["run_id"],
                    "batch_id": r["batch_id"],
                    "at": _aware(r["created_at"]),
                    "status": doc.get("status", ""),
                    "origin": ", ".join(str(o).rsplit("/", 1)[-1] for o in origins),
                    "rows_in": rows_in,
                    "rows_clean": int(doc.get("rows_clean") or 0),
                    "rows_quarantined": quarantined,
                    "rows_unparseable": unparseable,
                    "reject_ratio": (quarantined + unparseable) / total if total else 0.0,
                    "failures": dict(doc.get("failures") or {}),
                    "imputed": {c: rec.get("count") for c, rec in (doc.get("imputed") or {}).items()},
                    "error": doc.get("error"),
                }
            )
        return out

    def quarantine(self, name: str, sample: int = 20) -> dict[str, Any]:
        assert self.store is not None
        qname = self.store.quarantine_name(name)
        if not self.store.exists(qname):
            return {"rows": 0, "columns": [], "sample": [], "reasons": []}
        lazy = self.store.scan(qname)
        columns = lazy.collect_schema().names()
        total = int(lazy.select(pl.len()).collect().item())
        reasons: list[dict[str, Any]] = []
        if "reason" in columns:
            counted = (
                lazy.group_by("reason")
                .agg(pl.len().alias("rows"))
                .sort("rows", descending=True)
                .head(12)
                .collect()
            )
            reasons = counted.to_dicts()
        front = [c for c in ("reason", "origin", "position") if c in columns]
        rest = [c for c in columns if c not in front and c not in ("batch_id", "raw")]
        shown = [*front, *rest]
        frame = lazy.select(shown).tail(sample).collect() if shown else pl.DataFrame()
        rows = [[_cell(v, c) for c, v in zip(shown, row, strict=True)] for row in frame.reverse().iter_rows()]
        return {"rows": total, "columns": shown, "sample": rows, "reasons": reasons}

    # -- one model ------------------------------------------------------------------------------------
    def model(self, name: str, version: int | None = None) -> dict[str, Any]:
        versions = self.registry.list(name)
        if not versions and (self.project is None or name not in self.project.models):
            raise NotFound(
                f"model {name!r} has no registered version", hint="see the overview for the models"
            )
        aliases = self.registry.aliases(name)
        if version is None:
            version = aliases.get(CHAMPION) or (versions[-1].version if versions else None)
        selected = next((v for v in versions if v.version == version), None)
        if version is not None and selected is None and versions:
            raise NotFound(
                f"model {name!r} has no version {version}", hint="pick one from the versions table"
            )
        metric = self.main_metric(name, selected or (versions[-1] if versions else None))
        history = self.registry.history(name)
        rows = []
        for mv in reversed(versions):
            rows.append(
                {
                    "version": mv.version,
                    "created_at": mv.created_at,
                    "status": mv.status,
                    "aliases": list(mv.aliases),
                    "value": _metric_value(mv.metrics, metric),
                    "std": _metric_value(mv.metrics, f"{metric}_std"),
                    "metrics": {
                        k: _finite(v)
                        for k, v in mv.metrics.items()
                        if not k.endswith("_std") and _finite(v) is not None
                    },
                    "threshold": mv.threshold,
                    "data": f"{mv.dataset}@{mv.data_version}" if mv.dataset else "",
                    "params": mv.params,
                    "code_version": mv.code_version,
                    "reason": next(
                        (e.reason for e in history if e.action == "register" and e.version == mv.version),
                        None,
                    ),
                }
            )
        return {
            "name": name,
            "task": versions[-1].task if versions else None,
            "metric": metric,
            "aliases": aliases,
            "versions": rows,
            "selected": None if selected is None else self.version_detail(selected, metric),
            "ledger": [_ledger_doc(e) for e in reversed(history)],
            "timeline": _timeline(history),
            "gate": self._gate(name),
        }

    def _gate(self, name: str) -> dict[str, Any] | None:
        if self.project is None or name not in self.project.models:
            return None
        rule = self.project.models[name].promote_if
        return rule.model_dump(mode="json") if rule is not None else None

    def version_detail(self, mv: ModelVersion, metric: str) -> dict[str, Any]:
        scorecard = dict(mv.details.get("scorecard") or {})
        folds = []
        for f in scorecard.get("folds") or []:
            folds.append(
                {
                    "fold": f.get("fold"),
                    "n_train": f.get("n_train"),
                    "n_test": f.get("n_test"),
                    "scores": {k: _finite(v) for k, v in (f.get("scores") or {}).items()},
                    "chosen": f.get("chosen"),
                }
            )
        fold_metrics = sorted({k for f in folds for k in f["scores"]}, key=lambda k: (k != metric, k))
        detail: dict[str, Any] = {
            "version": mv.version,
            "ref": mv.ref,
            "task": mv.task,
            "status": mv.status,
            "aliases": list(mv.aliases),
            "threshold": mv.threshold,
            "threshold_choice": scorecard.get("threshold"),
            "dataset": mv.dataset,
            "data_version": mv.data_version,
            "params": mv.params,
            "code_version": mv.code_version,
            "created_at": mv.created_at,
            "rows": scorecard.get("rows") or mv.details.get("rows"),
            "strategy": scorecard.get("strategy"),
            "folds": folds,
            "fold_metrics": fold_metrics[:8],
            "summary": {k: v for k, v in (scorecard.get("summary") or {}).items()},
            "classes": scorecard.get("classes"),
            "confusion": scorecard.get("confusion"),
            "importance": (scorecard.get("importance") or [])[:12],
            "metrics": {k: _finite(v) for k, v in mv.metrics.items()},
            "curves": None,
        }
        try:
            detail["curves"] = self._curves(mv)
        except HeadraceError as exc:  # no out-of-fold predictions recorded (not trained by headrace)
            detail["curves_note"] = exc.one_line()
        return detail

    def _curves(self, mv: ModelVersion) -> dict[str, Any] | None:
        key = (mv.name, mv.version)
        with self._lock:
            if key in self._oof:
                return self._oof[key]
        sha = mv.details.get("oof_sha256")
        if not sha or not self.registry.artifacts.exists(sha):
            raise NotFound(f"{mv.ref} has no recorded out-of-fold predictions", hint="retrain it")
        oof = pl.read_parquet(io.BytesIO(self.registry.artifacts.get_bytes(sha)))
        curves: dict[str, Any] | None = None
        if mv.task == "classification" and "prediction" in oof.columns:
            y = oof["y"].to_numpy().astype(int)
            p = oof["prediction"].to_numpy().astype(float)
            if 0 < y.sum() < y.size:
                fpr, tpr, precision, recall = binary_curves(y, p)
                point = None
                if mv.threshold is not None:
                    chosen = p >= mv.threshold
                    tp = float(np.sum(chosen & (y == 1)))
                    point = (tp / max(1.0, float(np.sum(y == 1))), tp / max(1.0, float(np.sum(chosen))))
                curves = {
                    "kind": "binary",
                    "roc": _thin(fpr, tpr),
                    "roc_auc": trapezoid(fpr, tpr),
                    "pr": _thin(recall, precision),
                    "base_rate": float(y.mean()),
                    "threshold_point": point,
                    "rows": int(y.size),
                }
        elif mv.task == "regression" and "prediction" in oof.columns:
            y = oof["y"].to_numpy().astype(float)
            pred = oof["prediction"].to_numpy().astype(float)
            rng = np.random.default_rng(0)
            idx = np.sort(rng.choice(y.size, size=min(y.size, 600), replace=False))
            residual = y - pred
            curves = {
                "kind": "regression",
                "residuals": list(
                    zip(pred[idx].round(6).tolist(), residual[idx].round(6).tolist(), strict=True)
                ),
                "quantiles": dict(
                    zip(
                        ("p05", "p50", "p95"),
                        np.quantile(residual, [0.05, 0.5, 0.95]).round(6).tolist(),
                        strict=True,
                    )
                ),
                "rows": int(y.size),
            }
        with self._lock:
            self._oof[key] = curves
        return curves

    # -- monitoring -----------------------------------------------------------------------------------
    def monitor_reports(self, name: str, kind: str, limit: int = 200) -> list[dict[str, Any]]:
        table = SCHEMA.tables["monitor_reports"]
        with self.meta.begin() as conn:
            rows = (
                conn.execute(
                    select(table)
                    .where((table.c.model == name) & (table.c.kind == kind))
                    .order_by(desc(table.c.id))
                    .limit(limit)
                )
                .mappings()
                .all()
            )
        return [
            {
                "id": r["id"],
                "at": _aware(r["created_at"]),
                "version": r["version"],
                "status": r["status"],
                "report": dict(r["report"] or {}),
            }
            for r in reversed(rows)
        ]

    def monitoring(self, name: str) -> dict[str, Any]:
        if name not in self.model_names():
            raise NotFound(f"model {name!r} is unknown", hint="see the overview for the models")
        policy = self.policy
        drift_reports = self.monitor_reports(name, "drift")
        perf_reports = self.monitor_reports(name, "performance")
        decisions = self.monitor_reports(name, "decision", limit=20)
        aliases = self.registry.aliases(name)
        champion = None
        if CHAMPION in aliases:
            champion = self.registry.get(name, aliases[CHAMPION])
        latest_drift = drift_reports[-1] if drift_reports else None
        thresholds = dict((latest_drift or {}).get("report", {}).get("thresholds") or {})
        psi_warn = float(thresholds.get("psi_warn", policy.psi_warn))
        psi_alert = float(thresholds.get("psi_alert", policy.psi_alert))
        live = self.live(name, champion)
        return {
            "model": name,
            "champion": None if champion is None else champion.version,
            "challenger": aliases.get(CHALLENGER),
            "drift": [
                {
                    "at": r["at"],
                    "version": r["version"],
                    "status": r["status"],
                    "share_drifted": r["report"].get("share_drifted"),
                    "live_rows": r["report"].get("live_rows"),
                    "psi": {f["feature"]: _finite(f.get("psi")) for f in r["report"].get("features", [])},
                    "prediction_psi": _finite((r["report"].get("prediction") or {}).get("psi")),
                }
                for r in drift_reports
            ],
            "latest_drift": None
            if latest_drift is None
            else {**latest_drift["report"], "at": latest_drift["at"], "version": latest_drift["version"]},
            "performance": [
                {
                    "at": r["at"],
                    "version": r["version"],
                    "status": r["status"],
                    "metric": r["report"].get("metric"),
                    "value": _finite(r["report"].get("value")),
                    "reference": _finite(r["report"].get("reference")),
                    "drop": _finite(r["report"].get("drop")),
                    "rows": r["report"].get("rows"),
                    "windows": r["report"].get("windows") or [],
                }
                for r in perf_reports
            ],
            "decisions": [
                {
                    "at": r["at"],
                    "status": r["status"],
                    "reason": r["report"].get("reason"),
                    "doc": r["report"],
                }
                for r in reversed(decisions)
            ],
            "thresholds": {
                "psi_warn": psi_warn,
                "psi_alert": psi_alert,
                "metric_drop": policy.rollback_on.metric_drop,
                "error_rate": policy.rollback_on.error_rate,
                "alert_error_rate": policy.alerts.error_rate,
                "p99_latency_ms": policy.rollback_on.p99_latency_ms or policy.alerts.p99_latency_ms,
            },
            "live": live,
            "server": self.server_stats(name),
        }

    def _log(self, dataset: str, since: datetime, model: str | None = None) -> pl.DataFrame:
        if self.store is None or not self.store.exists(dataset):
            return pl.DataFrame()
        lazy = self.store.scan(dataset).filter(pl.col("ts") >= since)
        if model is not None:
            lazy = lazy.filter(pl.col("model") == model)
        return lazy.collect()

    def live(self, name: str, champion: ModelVersion | None) -> dict[str, Any]:
        """Latency, error rate and live accuracy (feedback joined to the prediction log) over time."""
        since = datetime.now(UTC) - timedelta(days=_LIVE_DAYS)
        rows = self._log(self.plog.dataset, since, name)
        if rows.height == 0:
            return {"rows": 0}
        first, last = rows["ts"].min(), rows["ts"].max()
        span = (
            (last - first).total_seconds()
            if isinstance(first, datetime) and isinstance(last, datetime)
            else 0.0
        )
        every = bucket_seconds(span)
        served = rows.filter(pl.col("route") != _SHADOW)
        buckets = (
            served.sort("ts")
            .group_by_dynamic("ts", every=f"{every}s")
            .agg(
                pl.len().alias("rows"),
                pl.col("route").is_in(list(_ERROR_ROUTES)).sum().alias("errors"),
                pl.col("latency_ms")
                .filter(~pl.col("route").is_in(list(_ERROR_ROUTES)))
                .quantile(0.5)
                .alias("p50"),
                pl.col("latency_ms")
                .filter(~pl.col("route").is_in(list(_ERROR_ROUTES)))
                .quantile(0.95)
                .alias("p95"),
                pl.col("latency_ms")
                .filter(~pl.col("route").is_in(list(_ERROR_ROUTES)))
                .quantile(0.99)
                .alias("p99"),
            )
        )
        ok = served.filter(~pl.col("route").is_in(list(_ERROR_ROUTES)))
        total = served.height
        errors = total - ok.height
        overall = {
            "rows": total,
            "errors": errors,
            "error_rate": errors / total if total else None,
            "p50": _finite(ok["latency_ms"].quantile(0.5)) if ok.height else None,
            "p95": _finite(ok["latency_ms"].quantile(0.95)) if ok.height else None,
            "p99": _finite(ok["latency_ms"].quantile(0.99)) if ok.height else None,
            "versions": sorted({int(v) for v in served["version"].drop_nulls().to_list()}),
        }
        accuracy: dict[str, Any] = {"rows": 0}
        task = champion.task if champion is not None else None
        feedback = self._log(self.plog.feedback_dataset, since)
        if task in ("classification", "regression") and feedback.height:
            if "model" in feedback.columns:
                feedback = feedback.filter(pl.col("model").is_null() | (pl.col("model") == name))
            joined = join_feedback(ok, feedback)
            metric = "accuracy" if task == "classification" else "rmse"
            if joined.height:
                score = _score(metric)
                line = (
                    joined.sort("ts")
                    .group_by_dynamic("ts", every=f"{every}s", group_by="version")
                    .agg(pl.len().alias("rows"), score.alias("value"))
                    .sort("ts", "version")
                )
                reference = None
                if champion is not None:
                    reference = _metric_value(champion.metrics, metric)
                accuracy = {
                    "metric": metric,
                    "rows": joined.height,
                    "value": _finite(joined.select(score).item()),
                    "reference": reference,
                    "points": [
                        {
                            "ts": _aware(r["ts"]),
                            "version": r["version"],
                            "rows": r["rows"],
                            "value": _finite(r["value"]),
                        }
                        for r in line.iter_rows(named=True)
                    ],
                }
        return {
            "rows": total,
            "every": every,
            "since": first,
            "until": last,
            "overall": overall,
            "buckets": [
                {
                    "ts": _aware(r["ts"]),
                    "rows": int(r["rows"]),
                    "errors": int(r["errors"]),
                    "error_rate": int(r["errors"]) / int(r["rows"]) if r["rows"] else None,
                    "p50": _finite(r["p50"]),
                    "p95": _finite(r["p95"]),
                    "p99": _finite(r["p99"]),
                }
                for r in buckets.iter_rows(named=True)
            ],
            "accuracy": accuracy,
        }

    def server_stats(self, name: str) -> dict[str, Any] | None:
        """This server's requests since it started, from its own Prometheus metrics (when mounted)."""
        if self.metrics is None:
            return None
        requests: dict[tuple[str, str], float] = {}
        buckets: dict[str, dict[float, float]] = {}
        for family in self.metrics.registry.collect():
            for sample in family.samples:
                labels = sample.labels
                if labels.get("model") != name:
                    continue
                if sample.name == "headrace_requests_total":
                    key = (labels.get("route", ""), labels.get("status", ""))
                    requests[key] = requests.get(key, 0.0) + sample.value
                elif sample.name == "headrace_request_duration_seconds_bucket":
                    route = labels.get("route", "")
                    bound = float(labels.get("le", "inf"))
                    per = buckets.setdefault(route, {})
                    per[bound] = per.get(bound, 0.0) + sample.value
        routes = []
        for route in sorted({r for r, _ in requests if r != "/ui"}):
            total = sum(v for (r, _), v in requests.items() if r == route)
            server_errors = sum(v for (r, s), v in requests.items() if r == route and s.startswith("5"))
            client_errors = sum(v for (r, s), v in requests.items() if r == route and s.startswith("4"))
            hist = sorted(buckets.get(route, {}).items())
            q = {f"p{int(p * 100)}": histogram_quantile(hist, p) for p in (0.5, 0.95, 0.99)}
            routes.append(
                {
                    "route": route,
                    "requests": int(total),
                    "server_errors": int(server_errors),
                    "client_errors": int(client_errors),
                    "error_rate": server_errors / total if total else None,
                    **{k: None if v is None else v * 1000 for k, v in q.items()},
                }
            )
        return {"routes": routes}


def _score(metric: str) -> pl.Expr:
    """Accuracy (labels compared as text) or RMSE (numbers) of the joined frame, as one expression."""
    if metric == "accuracy":
        return (pl.col("prediction") == pl.col("actual")).mean()
    error = pl.col("prediction").cast(pl.Float64, strict=False) - pl.col("actual").cast(
        pl.Float64, strict=False
    )
    return (error**2).mean().sqrt()


def binary_curves(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ROC (fpr, tpr) and precision-recall (precision, recall, by rising recall) of a binary
    score, one point per distinct score (what scikit-learn's curves give, without importing it)."""
    order = np.argsort(-score, kind="mergesort")
    truth, ranked = y[order], score[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), truth.size - 1]
    tps = np.cumsum(truth)[last].astype(float)
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    precision = np.r_[1.0, tps / (tps + fps)]
    recall = np.r_[0.0, tps / tps[-1]]
    return fpr, tpr, precision, recall


def trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    """The area under ``y(x)`` by the trapezoid rule (ROC-AUC from ``binary_curves``)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _thin(x: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
    n = len(x)
    keep = (
        np.unique(np.linspace(0, n - 1, min(n, _CURVE_POINTS)).astype(int)) if n else np.array([], dtype=int)
    )
    return list(
        zip(np.asarray(x)[keep].round(5).tolist(), np.asarray(y)[keep].round(5).tolist(), strict=True)
    )


def _cell(value: Any, column: str) -> str:
    text = "" if value is None else str(value)
    if column == "origin":
        text = text.rsplit("/", 1)[-1]
    limit = 200 if column == "reason" else 40
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rule_text(rule: Any) -> str:
    doc = rule.model_dump(exclude_defaults=True, mode="json") if hasattr(rule, "model_dump") else dict(rule)
    return ", ".join(f"{k}: {v}" if not isinstance(v, bool) else k for k, v in doc.items() if v is not False)


def _ledger_doc(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "ts": entry.ts,
        "action": entry.action,
        "version": entry.version,
        "alias": entry.alias,
        "previous_version": entry.previous_version,
        "reason": entry.reason,
        "actor": entry.actor,
    }


def _timeline(history: list[LedgerEntry]) -> dict[str, Any]:
    """Which version held each alias when: segments per lane (champion, challenger), from the ledger."""
    now = datetime.now(UTC)
    segments: list[dict[str, Any]] = []
    holding: dict[str, tuple[int, datetime, str]] = {}
    for e in history:
        if e.alias not in (CHAMPION, CHALLENGER):
            continue
        if e.action not in ("promote", "set_alias", "rollback", "remove_alias"):
            continue
        current = holding.pop(e.alias, None)
        if current is not None:
            segments.append(
                {"lane": e.alias, "version": current[0], "start": current[1], "end": e.ts, "why": current[2]}
            )
        if e.action != "remove_alias" and e.version is not None:
            holding[e.alias] = (e.version, e.ts, f"{e.action}: {e.reason or ''}")
    for alias, (version, start, why) in holding.items():
        segments.append(
            {"lane": alias, "version": version, "start": start, "end": now, "why": why, "current": True}
        )
    events = [
        {"ts": e.ts, "action": e.action, "version": e.version, "reason": e.reason or ""}
        for e in history
        if e.action in ("promote", "rollback", "promote_refused", "retire", "register")
    ]
    lanes = [lane for lane in (CHAMPION, CHALLENGER) if any(s["lane"] == lane for s in segments)]
    segments.sort(key=lambda s: (lanes.index(s["lane"]), s["start"]))
    return {"segments": segments, "events": events, "now": now}
