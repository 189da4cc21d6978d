from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from headrace.config.monitoring import MonitoringSpec, RetentionSpec
from headrace.monitor.policy import (
    Signals,
    VersionHealth,
    breaches,
    decide,
    last_served,
    retention_plan,
)
from headrace.monitor.routing import bucket, choose_version, request_key, route

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
POLICY = MonitoringSpec.model_validate(
    {
        "retrain_on": ["drift", "performance", "schedule"],
        "schedule": "7d",
        "canary": {"window": "10m", "min_requests": 100, "share": 0.2},
        "rollback_on": {"error_rate": 0.02, "metric_drop": 0.05, "p99_latency_ms": 200},
        "cooldown": "1h",
    }
)
HEALTHY = Signals(
    model="churn",
    now=NOW,
    champion=1,
    drift_status="ok",
    live_metric=0.83,
    reference_metric=0.84,
    live_drop=0.01,
    feedback_rows=500,
    last_trained_at=NOW - timedelta(days=1),
    data_version=3,
    trained_on=2,
)


def test_healthy_champion_needs_nothing():
    decision = decide(HEALTHY, POLICY)
    assert decision.action == "none"
    assert decision.reason == "champion v1 healthy: drift ok, live roc_auc 0.830"


def test_drift_triggers_a_retrain_with_its_reason():
    signals = replace(
        HEALTHY,
        drift_status="alert",
        dataset_drift=True,
        drifted=("tenure", "MonthlyCharges"),
        share_drifted=0.4,
    )
    decision = decide(signals, POLICY)
    assert decision.action == "retrain" and decision.triggers == ["drift"]
    assert decision.reason == "drift in tenure, MonthlyCharges (40.0% of features)"
    # drift only in the outputs counts too
    assert decide(replace(HEALTHY, prediction_drift=True), POLICY).action == "retrain"
    # ... unless the policy does not retrain on drift
    only_perf = POLICY.model_copy(update={"retrain_on": ["performance"]})
    assert decide(signals, only_perf).action == "none"


def test_live_metric_drop_triggers_a_retrain():
    signals = replace(HEALTHY, live_metric=0.74, live_drop=0.10)
    decision = decide(signals, POLICY)
    assert decision.action == "retrain" and decision.triggers == ["performance"]
    assert "live roc_auc 0.740 fell 0.100 below its validation score 0.840" in decision.reason
    # too little feedback: no verdict
    assert decide(replace(signals, feedback_rows=10), POLICY).action == "none"


def test_schedule_triggers_a_retrain():
    decision = decide(replace(HEALTHY, last_trained_at=NOW - timedelta(days=8)), POLICY)
    assert decision.action == "retrain" and decision.triggers == ["schedule"]
    assert "last trained 8.0 days ago" in decision.reason


def test_no_new_data_or_cooldown_holds_the_retrain_back():
    drifting = replace(HEALTHY, dataset_drift=True, drifted=("tenure",))
    stale = decide(replace(drifting, data_version=2, trained_on=2), POLICY)
    assert stale.action == "none" and stale.triggers == ["drift"]
    assert "ingest fresh data" in stale.reason
    cooling = decide(replace(drifting, last_retrain_at=NOW - timedelta(minutes=5)), POLICY)
    assert cooling.action == "none" and "cooldown" in cooling.reason


def _canary(**kw) -> Signals:
    base = {
        "challenger": 2,
        "canary_started": NOW - timedelta(minutes=3),
        "canary": VersionHealth(2, requests=40, errors=0, p99_ms=20, classes={"No": 30, "Yes": 10}),
        "baseline": VersionHealth(1, requests=160, errors=0, p99_ms=15, classes={"No": 120, "Yes": 40}),
    }
    return replace(HEALTHY, **{**base, **kw})


def test_canary_waits_then_promotes_when_healthy():
    waiting = decide(_canary(), POLICY)
    assert waiting.action == "wait" and waiting.version == 2
    assert waiting.reason == "canary v2: 40/100 requests, 180/600 s, healthy so far"
    done = decide(
        _canary(
            canary_started=NOW - timedelta(minutes=11),
            canary=VersionHealth(
                2, requests=150, p99_ms=20, metric=0.85, feedback_rows=150, classes={"No": 100, "Yes": 50}
            ),
            baseline=VersionHealth(
                1, requests=600, metric=0.80, feedback_rows=600, classes={"No": 400, "Yes": 200}
            ),
        ),
        POLICY,
    )
    assert done.action == "promote" and done.version == 2
    assert "canary v2 healthy for 660 s over 150 requests" in done.reason
    assert "live roc_auc 0.850 (champion 0.800)" in done.reason


def test_canary_rolls_back_on_errors_latency_one_class_or_metric():
    errors = decide(_canary(canary=VersionHealth(2, requests=12, errors=12)), POLICY)
    assert errors.action == "rollback"
    assert errors.reason == "canary v2: error rate 100.0% (12 of 12 requests) is above 2.0%"
    slow = decide(
        _canary(canary=VersionHealth(2, requests=50, p99_ms=900, classes={"No": 25, "Yes": 25})), POLICY
    )
    assert slow.action == "rollback" and "p99 latency 900 ms" in slow.reason
    one = decide(_canary(canary=VersionHealth(2, requests=50, classes={"No": 50})), POLICY)
    assert one.action == "rollback"
    assert (
        one.reason
        == "canary v2 predicts only 'No' (50 of 50 answers) while the champion v1 predicts 2 classes"
    )
    worse = decide(
        _canary(
            canary=VersionHealth(
                2, requests=80, metric=0.70, feedback_rows=80, classes={"No": 60, "Yes": 20}
            ),
            baseline=VersionHealth(
                1, requests=300, metric=0.82, feedback_rows=300, classes={"No": 200, "Yes": 100}
            ),
        ),
        POLICY,
    )
    assert worse.action == "rollback" and "0.120 below the champion's 0.820" in worse.reason
    # a couple of errors among few requests is not yet a verdict
    assert decide(_canary(canary=VersionHealth(2, requests=3, errors=1)), POLICY).action == "wait"


def test_a_starved_canary_is_rolled_back_eventually():
    starved = decide(
        _canary(canary_started=NOW - timedelta(minutes=45), canary=VersionHealth(2, requests=5)), POLICY
    )
    assert starved.action == "rollback" and "served only 5 requests" in starved.reason


def _failing(*healths: VersionHealth, previous: int | None = 2) -> Signals:
    return replace(HEALTHY, champion=3, previous_champion=previous, champion_windows=healths)


def test_a_failing_champion_is_rolled_back_after_its_windows():
    bad = VersionHealth(3, requests=100, errors=9)
    decision = decide(_failing(bad, bad, bad), POLICY)
    assert decision.action == "rollback" and decision.version == 3 and decision.triggers == ["champion"]
    assert decision.reason == (
        "champion v3: error rate 9.0% (9 of 100 requests) is above 2.0%, in each of the last 3 windows "
        "of 300 s (newest first: 9.0%, 9.0%, 9.0%); back to v2"
    )
    # one healthy window (or one with too little traffic for a verdict) breaks the run
    assert decide(_failing(bad, VersionHealth(3, requests=100, errors=1), bad), POLICY).action == "none"
    assert decide(_failing(bad, bad, VersionHealth(3, requests=5, errors=5)), POLICY).action == "none"
    assert decide(_failing(bad, bad), POLICY).action == "none"  # not yet three windows measured


def test_the_same_limit_must_be_crossed_in_every_window():
    slow = VersionHealth(3, requests=100, p99_ms=900.0)
    failing = VersionHealth(3, requests=100, errors=9)
    assert decide(_failing(slow, failing, slow), POLICY).action == "none"
    decision = decide(_failing(slow, slow, VersionHealth(3, requests=50, p99_ms=412.5)), POLICY)
    assert decision.action == "rollback"
    assert "p99 latency 900 ms is above 200 ms" in decision.reason
    assert "(newest first: 900 ms, 900 ms, 412 ms)" in decision.reason


def test_a_champion_whose_live_metric_falls_is_judged_against_its_validation_score_and_floor():
    low = VersionHealth(3, requests=200, metric=0.70, feedback_rows=80)
    decision = decide(_failing(low, low, low), POLICY)
    assert decision.action == "rollback"
    assert "champion v3: live roc_auc 0.700 is 0.140 below its validation score 0.840 (limit 0.05)" in (
        decision.reason
    )
    # too little feedback in a window: no verdict on the metric
    thin = VersionHealth(3, requests=200, metric=0.70, feedback_rows=10)
    assert decide(_failing(low, thin, low), POLICY).action == "none"
    # a floor judges a metric with no validation score (a recommender's hit rate, an image confidence)
    floor = POLICY.model_copy(update={"champion": POLICY.champion.model_copy(update={"metric_floor": 0.75})})
    unscored = replace(_failing(low, low, low), reference_metric=None, metric="confidence")
    floored = decide(unscored, floor)
    assert floored.action == "rollback" and "live confidence 0.700 is below its floor 0.75" in floored.reason
    assert decide(unscored, POLICY).action == "none"
    # an error metric's floor is a ceiling
    rmse = replace(
        unscored, metric="rmse", champion_windows=(VersionHealth(3, metric=52_000.0, feedback_rows=90),) * 3
    )
    ceiling = POLICY.model_copy(
        update={"champion": POLICY.champion.model_copy(update={"metric_floor": 45_000})}
    )
    assert "live rmse 52000.000 is above its ceiling 45000" in decide(rmse, ceiling).reason


def test_the_champion_policy_alerts_or_retrains_instead_of_rolling_back():
    bad = VersionHealth(3, requests=100, errors=9)
    alert = POLICY.model_copy(update={"champion": POLICY.champion.model_copy(update={"action": "alert"})})
    decision = decide(_failing(bad, bad, bad), alert)
    assert decision.action == "alert" and decision.version == 3
    assert decision.reason.endswith("policy: alert only")
    retrain = POLICY.model_copy(update={"champion": POLICY.champion.model_copy(update={"action": "retrain"})})
    again = decide(_failing(bad, bad, bad), retrain)
    assert again.action == "retrain" and again.triggers == ["champion"]
    # a retrain held back (no new data) still raises the alert
    held = decide(replace(_failing(bad, bad, bad), data_version=2, trained_on=2), retrain)
    assert held.action == "alert" and "ingest fresh data" in held.reason
    # nothing to roll back to: an alert
    alone = decide(_failing(bad, bad, bad, previous=None), POLICY)
    assert alone.action == "alert" and "no previous champion to roll back to" in alone.reason


def test_canary_and_champion_share_one_judge():
    limits = POLICY.rollback_on
    health = VersionHealth(2, requests=40, errors=4, p99_ms=250.0, metric=0.7, feedback_rows=40)
    found = breaches(health, limits, who="canary v2", metric="roc_auc", reference=0.8)
    assert [b.check for b in found] == ["error_rate", "p99_latency", "metric"]
    assert [b.value for b in found] == [0.1, 250.0, 0.7]
    only = breaches(health, limits, who="x", metric="roc_auc", reference=0.8, checks=("metric",))
    assert [b.check for b in only] == ["metric"]


@dataclass
class _V:
    version: int
    status: str
    created_at: datetime


@dataclass
class _E:
    ts: datetime
    action: str
    alias: str | None
    version: int | None


def test_retention_keeps_the_newest_and_the_aliased():
    versions = [_V(i, "registered", NOW - timedelta(days=40 - i)) for i in range(1, 9)]
    versions[0] = _V(1, "retired", versions[0].created_at)
    plan = retention_plan(versions, {"champion": 2, "challenger": 8}, [], RetentionSpec(keep_last=3), NOW)
    reason = "retention: older than the newest 3 versions"
    assert plan == [(3, reason), (4, reason), (5, reason)]


def test_retention_by_days_unused_reads_the_ledger():
    day = timedelta(days=1)
    versions = [
        _V(1, "registered", NOW - 60 * day),
        _V(2, "registered", NOW - 50 * day),
        _V(3, "registered", NOW - 45 * day),
    ]
    history = [
        _E(NOW - 60 * day, "promote", "champion", 1),
        _E(NOW - 10 * day, "promote", "champion", 2),  # v1 served until 10 days ago
    ]
    served = last_served(history, NOW)
    assert served == {1: NOW - 10 * day, 2: NOW}
    plan = retention_plan(versions, {"champion": 2}, history, RetentionSpec(keep_last=5, unused_days=30), NOW)
    assert plan == [(3, "retention: unused for 45 days (never served) (limit 30)")]


def test_routing_is_sticky_and_near_the_share():
    keys = [f"customerID=C{i:08d}" for i in range(20_000)]
    chosen = [choose_version(k, 1, 2, 0.1) for k in keys]
    share = chosen.count(2) / len(chosen)
    assert 0.09 < share < 0.11
    assert chosen == [choose_version(k, 1, 2, 0.1) for k in keys]  # same key, same version
    assert all(choose_version(k, 1, None, 0.5) == 1 for k in keys[:100])
    assert 0 <= bucket("x") < 1 and bucket("x") == bucket("x")
    shadow = route("customerID=C1", 1, 2, share=1 - 1e-9, mode="shadow")
    assert shadow.version == 1 and shadow.shadow == 2 and not shadow.canary
    assert route("k", 1, 2, share=1 - 1e-9).canary
    assert request_key([{"customerID": "C7"}], "customerID") == "customerID=C7"
    assert request_key([{"x": 1}], "customerID", "req-1") == "req-1"
