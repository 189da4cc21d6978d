"""The demo's "mqtt" stage: simulated sensors streamed over MQTT into a dataset, with a quarantine.

It uses the Mosquitto on 127.0.0.1:1883 when one answers, and otherwise starts an in-process broker
(amqtt, MQTT 3.1.1) on a free loopback port for the length of the stage; the demo's session is not
persistent, so it leaves nothing behind on a real broker.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import polars as pl

from ..config.sources_stream import MqttSource
from ..stream.broker import LocalBroker, broker_reachable
from ..stream.simulator import SimulationResult, simulate_sensors
from ..stream.worker import StreamWorker

__all__ = ["demo_stage"]

DEMO_DATASET = "sensor_readings"


def demo_stage(ctx: Any, count: int = 3000, devices: int = 20) -> list[str]:
    """``(DemoContext) -> lines``: stream ``count`` simulated readings and report what landed where."""
    local: LocalBroker | None = None
    if broker_reachable("127.0.0.1", 1883):
        url, protocol, where, inflight = "mqtt://127.0.0.1:1883", "5", "Mosquitto on 127.0.0.1:1883", None
    else:
        local = LocalBroker().start()
        url, protocol, where, inflight = local.url, "3.1.1", f"an in-process broker on {local.url}", 5000
    prefix = f"headrace-demo-{uuid.uuid4().hex[:8]}"
    spec = MqttSource.model_validate(
        {
            "kind": "mqtt",
            "broker": url,
            "topics": [f"{prefix}/+/telemetry"],
            "protocol": protocol,
            "qos": 1,
            "client_id": prefix,
            "session_expiry_seconds": 0,
            "max_inflight": inflight,
            "dataset": DEMO_DATASET,
            "topic_pattern": prefix + "/{device}/telemetry",
            "payload": {"event_time": "ts"},
            "columns": {
                "temperature": {"type": "float", "required": True, "min": -40, "max": 45},
                "humidity": {"type": "float", "min": 0, "max": 100},
                "battery": {"type": "float", "min": 0, "max": 100},
            },
            "batch_seconds": 0.5,
            "compact_every_seconds": 0,
        }
    )
    ws = ctx.ws
    worker = StreamWorker("sensors", spec, ws.store, ws.meta)
    sim: dict[str, SimulationResult] = {}
    errors: list[BaseException] = []
    try:
        worker.source.start()  # type: ignore[attr-defined]  # subscribed before the first reading

        def publish() -> None:
            try:
                sim["result"] = simulate_sensors(
                    url,
                    prefix,
                    devices=devices,
                    count=count,
                    qos=1,
                    malformed=0.02,
                    seed=7,
                    protocol=protocol,
                )
            except BaseException as exc:  # reported below; the worker is stopped by idle_exit
                errors.append(exc)

        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()
        stats = worker.run(max_rows=count, idle_exit=5.0)
        publisher.join(timeout=30)
    finally:
        if local is not None:
            local.stop()
    if errors:
        raise errors[0]
    result = sim["result"]
    store = ws.store
    data = store.read(DEMO_DATASET)
    lines = [
        f"{result.sent} simulated readings from {devices} devices published over MQTT to {where} "
        f"({result.malformed} malformed, {result.rate:,.0f} messages/s)",
        f"stream worker: {stats.rows_committed} rows committed to '{DEMO_DATASET}' in {stats.batches} "
        f"micro-batches, {stats.rows_quarantined} quarantined, {stats.duplicates} duplicates dropped; "
        f"acknowledged after each commit",
    ]
    qname = store.quarantine_name(DEMO_DATASET)
    if store.exists(qname):
        reasons = Counter(
            str(r).split(" (")[0][:60] for r in store.read(qname).get_column("reason").to_list()
        )
        for reason, n in reasons.most_common(4):
            lines.append(f"  quarantined {n}: {reason}")
    if data.height:
        per = data.group_by("device").agg(
            pl.len().alias("n"), pl.col("temperature").n_unique().alias("distinct")
        )
        stuck = per.filter(pl.col("distinct") < pl.col("n") // 2).sort("device")
        lines.append(
            f"  {per.height} devices, about {int(per.get_column('n').mean() or 0)} readings each; "
            f"stuck sensors (one temperature repeated): {', '.join(stuck.get_column('device')) or 'none'}"
        )
    ctx.facts["mqtt"] = {**stats.to_dict(), "published": result.to_dict()}
    return lines
