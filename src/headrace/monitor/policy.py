"""The retraining policy as pure functions: what the loop should do next, and which versions to retire.

``decide(signals, policy)`` reads what the monitor measured (drift, live metric, the canary's health,
the champion's health window by window) and returns one :class:`Decision` (retrain, promote, roll
back, alert, wait or nothing) with its reasons, each a sentence a person can act on. The canary and
the champion are held to the same limits by the same function (:func:`breaches`). It does no I/O,
so every branch is tested directly; the loop (``headrace.monitor.loop``) gathers the signals and
carries the decision out.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ..config.monitoring import MonitoringSpec, RetentionSpec, RollbackRule
from .performance import LOWER_IS_BETTER, metric_drop

__all__ = [
    "CHAMPION_CHECKS",
    "Action",
    "Breach",
    "Decision",
    "Signals",
    "VersionHealth",
    "breaches",
    "decide",
    "judge_canary",
    "judge_champion",
    "last_served",
    "retention_plan",
]

Action = Literal["none", "retrain", "promote", "rollback", "wait", "alert"]

SERVING_ALIASES = ("champion", "challenger")
MIN_REQUESTS_FOR_ERRORS = 10  # an error rate over fewer requests says little
MIN_FEEDBACK_ROWS = 30
CHAMPION_CHECKS = ("error_rate", "p99_latency", "metric")


@dataclass(frozen=True)
class VersionHealth:
    """What one version did in a window: requests, failures, latency, live metric, predicted classes."""

    version: int
    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    metric: float | None = None
    feedback_rows: int = 0
    classes: Mapping[str, int] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["classes"] = dict(self.classes)
        doc["error_rate"] = self.error_rate
        return doc


@dataclass(frozen=True)
class Signals:
    """Everything ``decide`` looks at, gathered by the loop for one model."""

    model: str
    now: datetime
    metric: str = "roc_auc"
    champion: int | None = None
    challenger: int | None = None
    canary_started: datetime | None = None
    canary: VersionHealth | None = None  # the challenger since the canary started
    baseline: VersionHealth | None = None  # the champion over the same period
    drift_status: str | None = None  # ok | warn | alert
    dataset_drift: bool = False
    drifted: Sequence[str] = ()
    share_drifted: float | None = None
    prediction_drift: bool = False
    live_metric: float | None = None
    reference_metric: float | None = None
    live_drop: float | None = None
    feedback_rows: int = 0
    last_trained_at: datetime | None = None  # the newest version's registration
    last_retrain_at: datetime | None = None  # the loop's last retrain
    data_version: int | None = None  # the dataset's newest version
    trained_on: int | None = None  # the data version the newest model version was trained on
    champion_windows: Sequence[VersionHealth] = ()  # the champion's last windows, newest first
    champion_since: datetime | None = None
    previous_champion: int | None = None  # None when there is none to roll back to


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: list[str]
    version: int | None = None
    triggers: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reason": self.reason}


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


@dataclass(frozen=True)
class Breach:
    """One limit a version crossed in one window, with the numbers."""

    check: Literal["error_rate", "p99_latency", "metric"]
    value: float
    limit: float
    text: str


def breaches(
    health: VersionHealth,
    limits: RollbackRule,
    *,
    who: str,
    metric: str,
    reference: float | None = None,
    reference_rows: int | None = None,
    against: str = "its validation score",
    context: str = "",
    floor: float | None = None,
    min_requests: int = MIN_REQUESTS_FOR_ERRORS,
    min_feedback: int = MIN_FEEDBACK_ROWS,
    checks: Collection[str] = ("error_rate", "p99_latency", "metric"),
) -> list[Breach]:
    """The limits ``health`` crosses: error rate and p99 latency over ``min_requests`` requests or
    more, and the live metric (over ``min_feedback`` rows or more) against ``reference`` (drop above
    ``metric_drop``) and ``floor``. Canary and champion are judged by this one function."""
    out: list[Breach] = []
    enough = health.requests >= min_requests
    if "error_rate" in checks and health.errors and enough and health.error_rate > limits.error_rate:
        out.append(
            Breach(
                "error_rate",
                health.error_rate,
                limits.error_rate,
                f"{who}: error rate {_pct(health.error_rate)} ({health.errors} of {health.requests} "
                f"requests) is above {_pct(limits.error_rate)}",
            )
        )
    latency = limits.p99_latency_ms
    p99 = health.p99_ms
    if "p99_latency" in checks and latency is not None and p99 is not None and enough and p99 > latency:
        out.append(
            Breach("p99_latency", p99, latency, f"{who}: p99 latency {_ms(p99)} ms is above {latency:g} ms")
        )
    rows = health.feedback_rows if reference_rows is None else min(health.feedback_rows, reference_rows)
    if "metric" not in checks or health.metric is None or rows < min_feedback:
        return out
    worse = "above" if metric in LOWER_IS_BETTER else "below"
    drop = metric_drop(metric, reference, health.metric)
    if reference is not None and drop is not None and drop > limits.metric_drop:
        out.append(
            Breach(
                "metric",
                health.metric,
                reference,
                f"{who}: live {metric} {health.metric:.3f} is {drop:.3f} {worse} {against} "
                f"{reference:.3f}{context} (limit {limits.metric_drop:g})",
            )
        )
    elif floor is not None and (health.metric > floor if worse == "above" else health.metric < floor):
        limit = "ceiling" if worse == "above" else "floor"
        out.append(
            Breach(
                "metric",
                health.metric,
                floor,
                f"{who}: live {metric} {health.metric:.3f} is {worse} its {limit} {floor:g}",
            )
        )
    return out


def judge_canary(signals: Signals, policy: MonitoringSpec) -> Decision:
    """Promote the challenger, roll it back, or keep waiting, from its health against the champion's."""
    version = signals.challenger
    assert version is not None
    health = signals.canary or VersionHealth(version)
    base = signals.baseline
    mode = policy.canary.mode
    who = f"{mode} v{version}"
    crossed = breaches(
        health, policy.rollback_on, who=who, metric=signals.metric, checks=("error_rate", "p99_latency")
    )
    if crossed:
        return Decision("rollback", [crossed[0].text], version)
    answered = sum(health.classes.values())
    if len(health.classes) == 1 and answered >= MIN_REQUESTS_FOR_ERRORS and base is not None:
        base_total = sum(base.classes.values())
        varied = [c for c, n in base.classes.items() if base_total and n / base_total >= 0.05]
        if len(varied) >= 2:
            (label,) = health.classes
            return Decision(
                "rollback",
                [
                    f"{who} predicts only {label!r} ({answered} of {answered} answers) while the champion "
                    f"v{base.version} predicts {len(varied)} classes"
                ],
                version,
            )
    if base is not None:
        crossed = breaches(
            health,
            policy.rollback_on,
            who=who,
            metric=signals.metric,
            reference=base.metric,
            reference_rows=base.feedback_rows,
            against="the champion's",
            context=" on the same traffic",
            checks=("metric",),
        )
        if crossed:
            return Decision("rollback", [crossed[0].text], version)
    started = signals.canary_started or signals.now
    elapsed = (signals.now - started).total_seconds()
    window = policy.canary.window
    need = policy.canary.min_requests
    if elapsed >= window and health.requests >= need:
        detail = f"error rate {_pct(health.error_rate)}"
        if health.p99_ms is not None:
            detail += f", p99 {health.p99_ms:.3g} ms"
        if health.metric is not None:
            detail += f", live {signals.metric} {health.metric:.3f}"
            if base is not None and base.metric is not None:
                detail += f" (champion {base.metric:.3f})"
        return Decision(
            "promote",
            [f"{who} healthy for {elapsed:.0f} s over {health.requests} requests: {detail}"],
            version,
        )
    if elapsed >= 4 * window:
        return Decision(
            "rollback",
            [
                f"{who} served only {health.requests} requests in {elapsed:.0f} s "
                f"(needs {need} within {4 * window:.0f} s)"
            ],
            version,
        )
    return Decision(
        "wait",
        [f"{who}: {health.requests}/{need} requests, {elapsed:.0f}/{window:.0f} s, healthy so far"],
        version,
    )


def judge_champion(signals: Signals, policy: MonitoringSpec) -> dict[str, str]:
    """What the champion crossed in each of its last ``champion.windows`` windows (the same limit in
    every one of them), one sentence per limit with the numbers; empty when it is healthy or when a
    window has too little traffic for a verdict. Keyed by the check (one of ``CHAMPION_CHECKS``)."""
    watch = policy.champion
    recent = list(signals.champion_windows)[: watch.windows]
    if signals.champion is None or len(recent) < watch.windows:
        return {}
    who = f"champion v{signals.champion}"
    found: list[dict[str, Breach]] = [
        {
            str(b.check): b
            for b in breaches(
                health,
                policy.rollback_on,
                who=who,
                metric=signals.metric,
                reference=signals.reference_metric,
                floor=watch.metric_floor,
                min_requests=watch.min_requests,
                min_feedback=watch.min_feedback,
            )
        }
        for health in recent
    ]
    out: dict[str, str] = {}
    for check in CHAMPION_CHECKS:
        if not all(check in window for window in found):
            continue
        newest = found[0][check]
        if len(found) == 1:
            out[check] = f"{newest.text} in the last {watch.window:g} s"
            continue
        values = ", ".join(_shown(check, window[check].value) for window in found)
        out[check] = (
            f"{newest.text}, in each of the last {len(found)} windows of {watch.window:g} s "
            f"(newest first: {values})"
        )
    return out


def _shown(check: str, value: float) -> str:
    if check == "error_rate":
        return _pct(value)
    if check == "p99_latency":
        return f"{_ms(value)} ms"
    return f"{value:.3f}"


def decide(signals: Signals, policy: MonitoringSpec) -> Decision:
    """The next step for one model, with its reasons."""
    if signals.challenger is not None and signals.canary_started is not None:
        return judge_canary(signals, policy)
    if signals.champion is None:
        return Decision("none", [f"{signals.model} has no champion to watch; promote a version"])
    limits = policy.rollback_on
    unhealthy = list(judge_champion(signals, policy).values())
    if unhealthy and policy.champion.action == "rollback":
        if signals.previous_champion is not None:
            return Decision(
                "rollback",
                [*unhealthy, f"back to v{signals.previous_champion}"],
                signals.champion,
                ["champion"],
            )
        return Decision(
            "alert",
            [
                *unhealthy,
                "no previous champion to roll back to (or it is itself a rollback target): alert only",
            ],
            signals.champion,
            ["champion"],
        )
    if unhealthy and policy.champion.action == "alert":
        return Decision("alert", [*unhealthy, "policy: alert only"], signals.champion, ["champion"])
    triggers: list[str] = ["champion"] if unhealthy else []
    reasons: list[str] = list(unhealthy)
    if (
        "performance" in policy.retrain_on
        and signals.live_drop is not None
        and signals.feedback_rows >= MIN_FEEDBACK_ROWS
        and signals.live_drop > limits.metric_drop
    ):
        triggers.append("performance")
        reasons.append(
            f"live {signals.metric} {signals.live_metric:.3f} fell {signals.live_drop:.3f} below "
            f"its validation score {signals.reference_metric:.3f} (limit {limits.metric_drop:g})"
        )
    if "drift" in policy.retrain_on and (signals.dataset_drift or signals.prediction_drift):
        triggers.append("drift")
        what = ", ".join(signals.drifted) or "the predictions"
        share = f" ({_pct(signals.share_drifted)} of features)" if signals.share_drifted is not None else ""
        reasons.append(f"drift in {what}{share}")
    if (
        "schedule" in policy.retrain_on
        and policy.schedule is not None
        and signals.last_trained_at is not None
        and signals.now - signals.last_trained_at >= timedelta(seconds=policy.schedule)
    ):
        triggers.append("schedule")
        age = (signals.now - signals.last_trained_at).total_seconds()
        reasons.append(f"last trained {age / 86400:.1f} days ago (schedule {policy.schedule / 86400:g} days)")
    if not triggers:
        state = signals.drift_status or "not measured"
        live = (
            f"live {signals.metric} {signals.live_metric:.3f}"
            if signals.live_metric is not None
            else "no live metric yet"
        )
        return Decision("none", [f"champion v{signals.champion} healthy: drift {state}, {live}"])
    if (
        signals.data_version is not None
        and signals.trained_on is not None
        and signals.data_version <= signals.trained_on
    ):
        return Decision(
            "alert" if unhealthy else "none",
            [
                *reasons,
                f"but the dataset has no version newer than {signals.trained_on}, which the newest model "
                "was trained on; ingest fresh data to retrain",
            ],
            signals.champion if unhealthy else None,
            triggers=triggers,
        )
    if signals.last_retrain_at is not None and signals.now - signals.last_retrain_at < timedelta(
        seconds=policy.cooldown
    ):
        return Decision(
            "alert" if unhealthy else "none",
            [*reasons, f"but the last retrain was under {policy.cooldown:.0f} s ago (cooldown)"],
            signals.champion if unhealthy else None,
            triggers=triggers,
        )
    return Decision("retrain", reasons, triggers=triggers)


# -- retention ----------------------------------------------------------------------------------


def last_served(entries: Iterable[Any], until: datetime) -> dict[int, datetime]:
    """When each version last held the champion or challenger alias (``until`` if it still does),
    replayed from ledger entries (objects with ``ts``, ``action``, ``alias``, ``version``)."""
    holder: dict[str, int | None] = {}
    served: dict[int, datetime] = {}
    for entry in entries:
        alias = entry.alias
        if alias not in SERVING_ALIASES:
            continue
        previous = holder.get(alias)
        if previous is not None:
            served[previous] = max(served.get(previous, entry.ts), entry.ts)
        if entry.action in ("promote", "set_alias", "rollback"):
            holder[alias] = entry.version
            if entry.version is not None:
                served[entry.version] = max(served.get(entry.version, entry.ts), entry.ts)
        elif entry.action == "remove_alias":
            holder[alias] = None
    for version in holder.values():
        if version is not None:
            served[version] = until
    return served


def retention_plan(
    versions: Sequence[Any],
    aliases: Mapping[str, int],
    history: Iterable[Any],
    policy: RetentionSpec,
    now: datetime,
) -> list[tuple[int, str]]:
    """Which registered versions to retire and why: those past the newest ``keep_last``, and those not
    served for ``unused_days``. A version an alias points at is always kept.

    ``versions`` are objects with ``version``, ``status`` and ``created_at`` (registry.ModelVersion).
    """
    live = sorted((v for v in versions if v.status != "retired"), key=lambda v: v.version, reverse=True)
    protected = set(aliases.values())
    newest = {v.version for v in live[: policy.keep_last]}
    served = last_served(history, now)
    plan: list[tuple[int, str]] = []
    for mv in live:
        if mv.version in protected:
            continue
        if mv.version not in newest:
            plan.append((mv.version, f"retention: older than the newest {policy.keep_last} versions"))
            continue
        if policy.unused_days is not None:
            last = served.get(mv.version, mv.created_at)
            idle = (now - last).total_seconds() / 86400
            if idle >= policy.unused_days:
                never = "" if mv.version in served else " (never served)"
                plan.append(
                    (
                        mv.version,
                        f"retention: unused for {idle:.0f} days{never} (limit {policy.unused_days:g})",
                    )
                )
    return sorted(plan)
