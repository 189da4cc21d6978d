"""MQTT ingestion: headrace's stream worker against a bare paho subscriber, on one broker, in one run.

    .venv/bin/python benchmarks/ingest_mqtt.py [--count 50000] [--publisher python|c] [--pairs N]
    .venv/bin/python benchmarks/ingest_mqtt.py --workers 2 [--count 50000]

A Mosquitto of our own is started on a free port (``max_queued_messages 0``: the broker may hold the
whole backlog for an offline persistent session), so both sides drain the same backlog:

1. the limit: a bare paho subscriber (QoS 1, persistent session, automatic PUBACK) that only counts
   messages; its rate is messages / seconds from its connection to the last message;
2. headrace: ``StreamWorker`` on an ``MqttStream`` (QoS 1, manual acknowledgement after each commit,
   dedup, validation, Delta commits): rate is rows / seconds from its connection to the last commit;
   then lost and doubled readings are counted in the dataset by ``(topic, seq)``;
3. live: the simulator publishing while headrace consumes (publish-to-committed; the publisher is the
   bottleneck on a small machine), with the worker's delay from receipt to commit.

The backlog is published by ``headrace simulate sensors`` processes before each drain (``--publisher
c``: by ``mosquitto_pub -l`` processes, which is faster and gives the same drain). ``--pairs N`` repeats
1 and 2 N times, alternating, and prints the median ratio with its spread.

``--workers N``: instead, ``headrace stream --workers N`` (N processes on a shared subscription) while
``mosquitto_pub -l`` processes (C, so the publisher is not the bottleneck) publish ``--count`` readings
live; the rate is rows / seconds from the first publish to the last commit. Its baseline, from the same
run: N bare paho subscriber processes on the same shared subscription, messages / seconds from the
first publish to the last message.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from headrace.config.sources_stream import MqttSource
from headrace.store import Store
from headrace.stream.broker import broker_reachable, free_port
from headrace.stream.mqtt import MqttStream
from headrace.stream.simulator import SensorSimulator
from headrace.stream.worker import StreamWorker, preload_writer

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


def c_payloads(count: int, processes: int) -> list[bytes]:
    """One block of JSON lines per ``mosquitto_pub -l`` process (one device each; built before timing)."""
    share = count // processes
    out = []
    for i in range(processes):
        n = share if i < processes - 1 else count - share * (processes - 1)
        out.append(b"".join(p + b"\n" for _, p, _ in SensorSimulator(1, seed=i).readings(n)))
    return out


def publish_c(
    port: int, prefix: str, count: int, processes: int = 4, blocks: list[bytes] | None = None
) -> float:
    """Publish ``count`` QoS 1 readings from ``processes`` mosquitto_pub processes; return seconds."""
    exe = shutil.which("mosquitto_pub")
    if exe is None:
        raise SystemExit("mosquitto_pub is not installed (apt-get install mosquitto-clients)")
    blocks = blocks or c_payloads(count, processes)
    started = time.perf_counter()
    procs = []
    for i, block in enumerate(blocks):
        cmd = [exe, "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-q", "1", "-M", "1000", "-l"]
        cmd += ["-t", f"{prefix}/c{i}/dev-{i:04d}/telemetry"]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append((proc, block))
    for proc, block in procs:
        assert proc.stdin is not None
        proc.stdin.write(block)
        proc.stdin.close()
    for proc, _ in procs:
        proc.wait()
        if proc.returncode != 0:
            assert proc.stderr is not None
            raise SystemExit(f"mosquitto_pub failed: {proc.stderr.read().decode()[-500:]}")
    return time.perf_counter() - started


def bare_subscriber(port: int, prefix: str, count: int, publisher: str = "python") -> float:
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
    (publish_c if publisher == "c" else publish)(port, prefix, count)
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
    port: int, prefix: str, count: int, lake: Path, publisher: str = "python"
) -> tuple[float, int, int, dict[str, object]]:
    spec = _spec(port, prefix, payload={"event_time": "ts"})
    client_id = f"hr-{uuid.uuid4().hex[:8]}"
    first = MqttStream("bench", spec, client_id=client_id)
    first.start()
    first.close()  # the persistent session now queues what is published
    (publish_c if publisher == "c" else publish)(port, prefix, count)
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


def _bare_shared(port: int, group: str, prefix: str, ready: Any, results: Any) -> None:
    """One bare paho subscriber process on a shared subscription: counts, notes its last message."""
    state: dict[str, float] = {"n": 0, "last": 0.0}

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        state["n"] += 1
        state["last"] = time.time()

    def on_subscribe(c: mqtt.Client, u: object, mid: int, reasons: object, props: object) -> None:
        ready.release()

    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 65535
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.connect("127.0.0.1", port, properties=props)
    client.subscribe(f"$share/{group}/{prefix}/#", qos=1)
    client.loop_start()
    seen: float = -1
    while seen != state["n"] or not seen:  # until nothing came for 3 s
        seen = state["n"]
        time.sleep(3)
    client.disconnect()
    client.loop_stop()
    results.put((state["n"], state["last"]))


def bare_shared(port: int, prefix: str, count: int, workers: int) -> tuple[float, int]:
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Semaphore(0), ctx.Queue()
    group = f"bare{uuid.uuid4().hex[:6]}"
    procs = [
        ctx.Process(target=_bare_shared, args=(port, group, prefix, ready, results)) for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.acquire(timeout=60)
    blocks = c_payloads(count, 4)
    started = time.time()
    publish_c(port, prefix, count, blocks=blocks)
    out = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(30)
    received = int(sum(n for n, _ in out))
    return received / (max(last for _, last in out) - started), received


def headrace_workers(
    port: int, prefix: str, count: int, workers: int, folder: Path
) -> tuple[float, int, int, int]:
    """``headrace stream --workers N`` while mosquitto_pub publishes: rows/s publish -> last commit."""
    import yaml
    from deltalake import DeltaTable
    from sqlalchemy import create_engine, text

    doc = {
        "project": "bench",
        "store": str(folder / "lake"),
        "metadata": f"sqlite:///{folder / 'meta.db'}",
        "sources": {
            "sensors": {
                "kind": "mqtt",
                "broker": f"mqtt://127.0.0.1:{port}",
                "topics": [f"{prefix}/#"],
                "qos": 1,
                "dataset": "readings",
                "topic_pattern": prefix + "/+/{device}/telemetry",
                "payload": {"event_time": "ts"},
                "compact_every_seconds": 0,
            }
        },
    }
    project = folder / "headrace.yaml"
    project.write_text(yaml.safe_dump(doc))
    cmd = [*HEADRACE, "-p", str(project), "stream", "sensors", "--workers", str(workers), "--idle-exit", "3"]
    blocks = c_payloads(count, 4)  # before the workers start: they stop once idle for 3 s
    proc = subprocess.Popen([*cmd, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    engine = create_engine(f"sqlite:///{folder / 'meta.db'}")
    try:
        deadline = time.time() + 120
        while True:
            try:
                with engine.connect() as conn:
                    running = conn.execute(
                        text("select count(*) from ingestion_runs where status = 'running'")
                    ).scalar()
            except Exception:  # the table is not there yet
                running = 0
            if running == workers:
                break
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit(f"workers did not start: {proc.communicate()[1].decode()[-800:]}")
            time.sleep(0.2)
        started = time.time()
        publish_c(port, prefix, count, blocks=blocks)
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"headrace stream failed: {err.decode()[-800:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        engine.dispose()
    store = Store(folder / "lake")
    data = store.read("readings", columns=["_topic", "seq"])
    unique = data.n_unique()
    history = DeltaTable(str(folder / "lake" / "readings")).history()
    last = max(h["timestamp"] for h in history) / 1000
    return data.height / (last - started), count - unique, data.height - unique, len(history)


def main_workers(n: int, workers: int) -> None:
    with tempfile.TemporaryDirectory(prefix="headrace-bench-mqtt-") as tmp:
        folder = Path(tmp)
        port = free_port()
        broker = start_mosquitto(folder, port)
        try:
            tag = uuid.uuid4().hex[:6]
            pub = n / publish_c(port, f"bench{tag}/nobody", n)
            bare, bare_received = bare_shared(port, f"bench{tag}/bare", n, workers)
            ours, lost, doubled, commits = headrace_workers(port, f"bench{tag}/hr", n, workers, folder)
        finally:
            broker.terminate()
            broker.wait(10)
    print(
        f"MQTT QoS 1, {n:,} messages from 4 mosquitto_pub -l processes, "
        f"{workers} workers on a shared subscription:"
    )
    print(f"  mosquitto_pub alone (no subscriber):                {pub:>10,.0f} messages/s")
    print(
        f"  {workers} bare paho subscribers (receive + count):         {bare:>10,.0f} messages/s  "
        f"({bare_received:,} received)"
    )
    print(
        f"  headrace stream --workers {workers} (publish -> committed): {ours:>10,.0f} rows/s  "
        f"({ours / bare:.2f}x the bare subscribers; lost {lost}, doubled {doubled}; {commits} commits)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="messages per measurement")
    parser.add_argument(
        "--publisher", choices=["python", "c"], default="python", help="who publishes the backlog"
    )
    parser.add_argument("--pairs", type=int, default=1, help="bare/headrace drains, alternating")
    parser.add_argument(
        "--workers", type=int, default=0, help="measure headrace stream --workers N live instead"
    )
    args = parser.parse_args()
    n = args.count
    preload_writer()  # as 'headrace stream' does when its worker process starts
    if args.workers:
        main_workers(n, args.workers)
        return
    with tempfile.TemporaryDirectory(prefix="headrace-bench-mqtt-") as tmp:
        folder = Path(tmp)
        port = free_port()
        broker = start_mosquitto(folder, port)
        try:
            tag = uuid.uuid4().hex[:6]
            pairs = []
            for i in range(args.pairs):
                bare = bare_subscriber(port, f"bench{tag}/bare{i}", n, args.publisher)
                ours, lost, doubled, stats = headrace_drain(
                    port, f"bench{tag}/hr{i}", n, folder / f"lake{i}", args.publisher
                )
                pairs.append((bare, ours, lost, doubled, stats))
                if args.pairs > 1:
                    print(
                        f"  pair {i + 1}: bare {bare:,.0f} msg/s, headrace {ours:,.0f} rows/s, "
                        f"{ours / bare:.2f}x"
                    )
            pub_rate, live, live_lost, live_doubled, delay = headrace_live(
                port, f"bench{tag}/live", n, folder / "lake-live"
            )
        finally:
            broker.terminate()
            broker.wait(10)
    ratios = sorted(o / b for b, o, *_ in pairs)
    median = statistics.median(ratios)
    bare, ours, lost, doubled, stats = min(pairs, key=lambda p: abs(p[1] / p[0] - median))
    lost = sum(p[2] for p in pairs)
    doubled = sum(p[3] for p in pairs)
    print(
        f"MQTT QoS 1, {n:,} messages, one Mosquitto (port {port}), drained from an offline session's backlog:"
    )
    print(f"  bare paho subscriber (receive + count, the limit): {bare:>10,.0f} messages/s")
    print(
        f"  headrace stream worker (received -> committed):    {ours:>10,.0f} rows/s  "
        f"({ours / bare:.2f}x the limit; lost {lost}, doubled {doubled}; {stats['batches']} commits)"
    )
    if len(pairs) > 1:
        print(f"  median of {len(pairs)} pairs: {median:.2f}x (spread {ratios[0]:.2f}x to {ratios[-1]:.2f}x)")
    print(f"live, while the simulator publishes ({pub_rate:,.0f} messages/s published):")
    print(
        f"  headrace publish -> committed: {live:,.0f} rows/s; lost {live_lost}, doubled {live_doubled}; "
        f"max receive-to-commit delay {delay:.2f} s"
    )
    goal = median >= 0.5 and lost == 0 and doubled == 0 and live_lost == 0 and live_doubled == 0
    print(f"goal (>= 0.5x the limit, nothing lost or doubled): {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    main()
