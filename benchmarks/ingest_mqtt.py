"""MQTT ingestion: headrace's stream worker against a bare paho subscriber, on one broker, in one run.

    .venv/bin/python benchmarks/ingest_mqtt.py [--count 50000] [--broker-port PORT]

A Mosquitto of our own is started on a free port (``max_queued_messages 0``: the broker may hold the
whole backlog for an offline persistent session), so both sides drain the same backlog:

1. the limit: a bare paho subscriber (QoS 1, persistent session, automatic PUBACK) that only counts
   messages; its rate is messages / seconds from its connection to the last message;
2. headrace: ``StreamWorker`` on an ``MqttStream`` (QoS 1, manual acknowledgement after each commit,
   dedup, validation, Delta commits): rate is rows / seconds from its connection to the last commit;
   then lost and doubled readings are counted in the dataset by ``(topic, seq)``;
3. live: the simulator publishing while headrace consumes (publish-to-committed; the publisher is the
   bottleneck on a small machine), with the worker's delay from receipt to commit.

The backlog is published by ``headrace simulate sensors`` processes before each drain.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from headrace.config.sources_stream import MqttSource
from headrace.store import Store
from headrace.stream.broker import broker_reachable, free_port
from headrace.stream.mqtt import MqttStream
from headrace.stream.worker import StreamWorker

HEADRACE = [sys.executable, "-m", "headrace"]


def start_mosquitto(folder: Path, port: int) -> subprocess.Popen[bytes]:
    conf = folder / "mosquitto.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "max_queued_messages 0",
        "persistence false",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while not broker_reachable("127.0.0.1", port, 0.2):
        if time.time() > deadline:
            proc.kill()
            raise SystemExit("mosquitto did not start")
        time.sleep(0.05)
    return proc


def publish(port: int, prefix: str, count: int, processes: int = 2, rate: float = 0.0) -> float:
    """Publish ``count`` QoS 1 readings from ``processes`` simulator processes; return seconds."""
    started = time.perf_counter()
    share = count // processes
    procs = []
    for i in range(processes):
        n = share if i < processes - 1 else count - share * (processes - 1)
        args = [
            *HEADRACE,
            "simulate",
            "sensors",
            "--broker",
            f"mqtt://127.0.0.1:{port}",
            "--topic-prefix",
            f"{prefix}/p{i}",
            "--devices",
            "25",
            "--count",
            str(n),
            "--qos",
            "1",
            "--seed",
            str(i),
        ]
        if rate:
            args += ["--rate", str(rate / processes)]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"simulator failed: {err.decode()[-500:]}")
    return time.perf_counter() - started


def bare_subscriber(port: int, prefix: str, count: int) -> float:
    """Messages per second a paho subscriber that only counts drains from a backlog."""
    client_id = f"bare-{uuid.uuid4().hex[:8]}"
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 600
    props.ReceiveMaximum = 65535

    def session() -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        return c

    first = session()
    first.connect("127.0.0.1", port, clean_start=False, properties=props)
    first.subscribe(f"{prefix}/#", qos=1)
    first.loop_start()
    time.sleep(0.5)
    first.disconnect()
    first.loop_stop()
    publish(port, prefix, count)
    done = threading.Event()
    received = [0]

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        received[0] += 1
        if received[0] >= count:
            done.set()

    client = session()
    client.on_message = on_message
    started = time.perf_counter()
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    done.wait(600)
    seconds = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return received[0] / seconds


def _spec(port: int, prefix: str, **extra: object) -> MqttSource:
    return MqttSource.model_validate(
        {
            "kind": "mqtt",
            "broker": f"mqtt://127.0.0.1:{port}",
            "topics": [f"{prefix}/#"],
            "qos": 1,
            "dataset": "readings",
            "compact_every_seconds": 0,
            **extra,
        }
    )


def headrace_drain(
    port: int, prefix: str, count: int, lake: Path
) -> tuple[float, int, int, dict[str, object]]:
    spec = _spec(port, prefix, payload={"event_time": "ts"})
    client_id = f"hr-{uuid.uuid4().hex[:8]}"
    first = MqttStream("bench", spec, client_id=client_id)
    first.start()
    first.close()  # the persistent session now queues what is published
    publish(port, prefix, count)
    store = Store(lake)
    source = MqttStream("bench", spec, client_id=client_id)
    started = time.perf_counter()
    stats = StreamWorker("bench", spec, store, source=source).run(max_rows=count, idle_exit=20)
    seconds = time.perf_counter() - started
    data = store.read("readings", columns=["_topic", "seq"])
    unique = data.n_unique()
    lost = count - unique
    doubled = data.height - unique
    return stats.rows_committed / seconds, lost, doubled, stats.to_dict()


def headrace_live(port: int, prefix: str, count: int, lake: Path) -> tuple[float, float, int, int, float]:
    spec = _spec(port, prefix)
    store = Store(lake)
    source = MqttStream("bench", spec, client_id=f"hr-{uuid.uuid4().hex[:8]}")
    source.start()
    worker = StreamWorker("bench", spec, store, source=source)
    out: dict[str, float] = {}
    pub = threading.Thread(target=lambda: out.update(pub=publish(port, prefix, count)))
    started = time.perf_counter()
    pub.start()
    stats = worker.run(max_rows=count, idle_exit=20)
    seconds = time.perf_counter() - started
    pub.join()
    data = store.read("readings", columns=["_topic", "seq"])
    unique = data.n_unique()
    delays = sorted(stats.recent_delays) or [0.0]
    return (
        count / out["pub"],
        stats.rows_committed / seconds,
        count - unique,
        data.height - unique,
        delays[-1],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="messages per measurement")
    args = parser.parse_args()
    n = args.count
    with tempfile.TemporaryDirectory(prefix="headrace-bench-mqtt-") as tmp:
        folder = Path(tmp)
        port = free_port()
        broker = start_mosquitto(folder, port)
        try:
            tag = uuid.uuid4().hex[:6]
            bare = bare_subscriber(port, f"bench{tag}/bare", n)
            ours, lost, doubled, stats = headrace_drain(port, f"bench{tag}/hr", n, folder / "lake")
            pub_rate, live, live_lost, live_doubled, delay = headrace_live(
                port, f"bench{tag}/live", n, folder / "lake-live"
            )
        finally:
            broker.terminate()
            broker.wait(10)
    print(
        f"MQTT QoS 1, {n:,} messages, one Mosquitto (port {port}), drained from an offline session's backlog:"
    )
    print(f"  bare paho subscriber (receive + count, the limit): {bare:>10,.0f} messages/s")
    print(
        f"  headrace stream worker (received -> committed):    {ours:>10,.0f} rows/s  "
        f"({ours / bare:.2f}x the limit; lost {lost}, doubled {doubled}; {stats['batches']} commits)"
    )
    print(f"live, while the simulator publishes ({pub_rate:,.0f} messages/s published):")
    print(
        f"  headrace publish -> committed: {live:,.0f} rows/s; lost {live_lost}, doubled {live_doubled}; "
        f"max receive-to-commit delay {delay:.2f} s"
    )
    goal = ours >= 0.5 * bare and lost == 0 and doubled == 0 and live_lost == 0 and live_doubled == 0
    print(f"goal (>= 0.5x the limit, nothing lost or doubled): {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    main()
