"""MQTT stream ingestion against real Mosquitto brokers: the one on 127.0.0.1:1883 and instances the
tests start on other ports (a large ``max_queued_messages``, persistence, TLS)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import polars as pl
import pytest
import yaml

from headrace.config.sources_stream import MqttSource
from headrace.errors import ServiceUnavailable, SourceError
from headrace.store import Store
from headrace.stream import StreamWorker, simulate_sensors
from headrace.stream.broker import broker_reachable, free_port
from headrace.stream.mqtt import MqttStream

pytestmark = pytest.mark.integration

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HEADRACE = [sys.executable, "-m", "headrace"]


def tag() -> str:
    return "hrtest" + uuid.uuid4().hex[:10]


@contextmanager
def mosquitto(
    folder: Path,
    *,
    port: int | None = None,
    persistence: bool = False,
    max_queued: int = 1_000_000,
    tls: dict[str, str] | None = None,
) -> Iterator[int]:
    """A Mosquitto of our own (stopped in the end, whatever happens)."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        f"max_queued_messages {max_queued}",
        f"persistence {'true' if persistence else 'false'}",
        f"persistence_location {folder}/",
        "autosave_interval 1",
        "log_type error",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        lines.append("user root")  # stay root so the persistence file in our folder stays writable
    if tls:
        lines += [f"{k} {v}" for k, v in tls.items()]
    conf = folder / f"mosquitto-{port}.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = folder / f"mosquitto-{port}.log"
    with log.open("ab") as err:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.time() + 10
        while not broker_reachable("127.0.0.1", port, 0.2):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mosquitto did not start: {log.read_text()}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def forget_session(port: int, client_id: str) -> None:
    """End a persistent session on a shared broker (clean start, no expiry)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    try:
        client.connect("127.0.0.1", port, clean_start=True)
        client.loop_start()
        time.sleep(0.2)
        client.disconnect()
        client.loop_stop()
    except OSError:
        pass


def source_spec(port: int, prefix: str, **kw: object) -> MqttSource:
    doc = {
        "kind": "mqtt",
        "broker": f"mqtt://127.0.0.1:{port}",
        "topics": [f"{prefix}/#"],
        "qos": 1,
        "dataset": "readings",
        "topic_pattern": prefix + "/{device}/telemetry",
        "payload": {"event_time": "ts"},
        "compact_every_seconds": 0,
        **kw,
    }
    return MqttSource.model_validate(doc)


def publish_subprocess(broker: str, prefix: str, count: int, **kw: object) -> subprocess.Popen[bytes]:
    """``headrace simulate sensors`` in its own process (the publisher gets its own core)."""
    args = [
        *HEADRACE,
        "simulate",
        "sensors",
        "--broker",
        broker,
        "--topic-prefix",
        prefix,
        "--count",
        str(count),
    ]
    for key, value in kw.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def assert_exact(frame: pl.DataFrame, expected: int) -> None:
    assert frame.height == expected, f"{frame.height} rows, expected {expected}"
    assert frame.select("_topic", "seq").n_unique() == expected, "a reading is doubled"


def run_in_thread(worker: StreamWorker, **kw: object) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def target() -> None:
        try:
            out["stats"] = worker.run(**kw)  # type: ignore[arg-type]
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def test_100k_qos1_messages_give_exactly_100k_rows(tmp_path, mqtt_broker):
    host, port = mqtt_broker
    prefix = tag()
    spec = source_spec(port, prefix)
    source = MqttStream("sensors", spec, client_id=prefix)
    store = Store(tmp_path / "lake")
    try:
        source.start()
        # paced: the shared broker keeps Mosquitto's default max_queued_messages (1000) per client, so
        # a consumer that falls behind a faster publisher loses messages there (see the benchmark for
        # the unpaced rates, on a broker sized for its backlog)
        publisher = publish_subprocess(f"mqtt://{host}:{port}", prefix, 100_000, devices=50, qos=1, rate=2500)
        stats = StreamWorker("sensors", spec, store, source=source).run(max_rows=100_000, idle_exit=30)
        _out, err = publisher.communicate(timeout=120)
        assert publisher.returncode == 0, err.decode()
    finally:
        source.close()
        forget_session(port, prefix)
    assert_exact(store.read("readings"), 100_000)
    assert stats.rows_committed == 100_000 and stats.rows_quarantined == 0


def test_malformed_payloads_are_quarantined_and_the_worker_goes_on(tmp_path, mqtt_broker):
    host, port = mqtt_broker
    prefix = tag()
    rules = {"temperature": {"type": "float", "required": True, "max": 40}}
    spec = source_spec(port, prefix, columns=rules)
    source = MqttStream("sensors", spec, client_id=prefix)
    store = Store(tmp_path / "lake")
    try:
        source.start()
        sent: dict[str, object] = {}
        pub = threading.Thread(
            target=lambda: sent.update(
                r=simulate_sensors(
                    f"mqtt://{host}:{port}", prefix, devices=5, count=3000, malformed=0.05, seed=11
                )
            )
        )
        pub.start()
        stats = StreamWorker("sensors", spec, store, source=source).run(max_rows=3000, idle_exit=20)
        pub.join()
    finally:
        source.close()
        forget_session(port, prefix)
    result = sent["r"]
    data, quarantine = store.read("readings"), store.read("readings__quarantine")
    assert data.height + quarantine.height == 3000
    unparseable = quarantine.filter(pl.col("raw").is_not_null())
    assert unparseable.height == result.malformed > 0  # type: ignore[attr-defined]
    assert set(unparseable.get_column("_topic").str.split("/").list.get(0)) == {prefix}
    spikes = quarantine.filter(pl.col("raw").is_null())
    assert spikes.height > 0 and all("max 40" in r for r in spikes.get_column("reason"))
    assert data.get_column("temperature").max() <= 40
    assert stats.rows_quarantined == quarantine.height


def test_qos2_and_mqtt311(tmp_path, mqtt_broker):
    host, port = mqtt_broker
    for protocol, qos, inflight in (("5", 2, None), ("3.1.1", 1, 20)):
        prefix = tag()
        spec = source_spec(port, prefix, qos=qos, protocol=protocol, max_inflight=inflight)
        source = MqttStream("sensors", spec, client_id=prefix)
        store = Store(tmp_path / f"lake-{qos}")
        try:
            source.start()
            pub = threading.Thread(
                target=simulate_sensors,
                args=(f"mqtt://{host}:{port}", prefix),
                kwargs={"count": 1000, "qos": qos, "protocol": protocol},
            )
            pub.start()
            StreamWorker("sensors", spec, store, source=source).run(max_rows=1000, idle_exit=20)
            pub.join()
        finally:
            source.close()
            forget_session(port, prefix)
        assert_exact(store.read("readings"), 1000)


def write_project(folder: Path, port: int, prefix: str) -> Path:
    doc = {
        "project": "streamtest",
        "store": str(folder / "lake"),
        "metadata": f"sqlite:///{folder / 'meta.db'}",
        "sources": {
            "sensors": {
                "kind": "mqtt",
                "broker": f"mqtt://127.0.0.1:{port}",
                "topics": [f"{prefix}/+/telemetry"],
                "qos": 1,
                "dataset": "readings",
                "topic_pattern": prefix + "/{device}/telemetry",
                "batch_rows": 2000,
                "compact_every_seconds": 2,
            }
        },
    }
    path = folder / "headrace.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def rows(folder: Path) -> int:
    store = Store(folder / "lake")
    return store.info("readings").rows if store.exists("readings") else 0


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_worker_killed_mid_stream_then_restarted_loses_and_doubles_nothing(tmp_path):
    """SIGKILL in the middle of a stream; the broker keeps the session's messages; the restarted
    worker gets them (and the unacknowledged ones again), and the dataset holds each reading once.
    The second worker is stopped with SIGTERM, which commits and acknowledges before exit."""
    total = 20_000
    prefix = tag()
    with mosquitto(tmp_path / "broker") as port:
        project = write_project(tmp_path, port, prefix)
        cmd = [*HEADRACE, "-p", str(project), "stream", "sensors"]
        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        second = None
        try:
            wait_for(lambda: _running_workers(tmp_path) == 1, 30, "the first worker to subscribe")
            publisher = publish_subprocess(f"mqtt://127.0.0.1:{port}", prefix, total, devices=20, rate=4000)
            wait_for(lambda: rows(tmp_path) >= 3000, 60, "the first commits")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            killed_at = rows(tmp_path)
            assert killed_at < total
            time.sleep(1.0)  # messages keep coming while the worker is down
            second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _, err = publisher.communicate(timeout=120)
            assert publisher.returncode == 0, err.decode()
            wait_for(lambda: rows(tmp_path) >= total, 90, "every reading committed")
            second.send_signal(signal.SIGTERM)
            _, err2 = second.communicate(timeout=30)
            assert second.returncode == 0, err2.decode()
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
    assert_exact(Store(tmp_path / "lake").read("readings"), total)


def _running_workers(folder: Path) -> int:
    from sqlalchemy import func, select

    from headrace.metadata import SCHEMA, Metadata

    if not (folder / "meta.db").exists():
        return 0
    meta = Metadata(f"sqlite:///{folder / 'meta.db'}", migrate=False)
    try:
        runs = SCHEMA.tables["ingestion_runs"]
        with meta.begin() as conn:
            return int(conn.execute(select(func.count()).where(runs.c.status == "running")).scalar_one())
    except Exception:  # not created yet
        return 0
    finally:
        meta.dispose()


def test_broker_restart_mid_stream_reconnects_and_loses_nothing(tmp_path):
    prefix = tag()
    folder = tmp_path / "broker"
    port = free_port()
    spec = source_spec(port, prefix, topic_pattern=prefix + "/+/{device}/telemetry")
    store = Store(tmp_path / "lake")
    with mosquitto(folder, port=port, persistence=True):
        source = MqttStream("sensors", spec, client_id=prefix)
        source.start()
        worker = StreamWorker("sensors", spec, store, source=source)
        thread, out = run_in_thread(worker, max_rows=6000)
        simulate_sensors(f"mqtt://127.0.0.1:{port}", f"{prefix}/a", devices=5, count=3000)
    # the broker is down now (its session and unacknowledged messages saved to disk)
    time.sleep(1.5)
    try:
        with mosquitto(folder, port=port, persistence=True):
            simulate_sensors(f"mqtt://127.0.0.1:{port}", f"{prefix}/b", devices=5, count=3000)
            thread.join(60)
    finally:
        worker.stop()
        thread.join(10)
    assert "error" not in out, out.get("error")
    assert source.reconnects >= 1
    data = store.read("readings")
    assert_exact(data, 6000)


def test_the_simulator_rides_out_a_broker_restart_and_loses_nothing(tmp_path):
    """The broker stops while the simulator publishes and comes back on the same port: the simulator
    reconnects and resumes (it used to crash); a worker with a persistent session gets every reading."""
    prefix = tag()
    folder = tmp_path / "broker"
    port = free_port()
    spec = source_spec(port, prefix)
    store = Store(tmp_path / "lake")
    published: dict[str, object] = {}
    count = 3000

    def publish() -> None:
        try:
            published["result"] = simulate_sensors(
                f"mqtt://127.0.0.1:{port}", prefix, devices=5, count=count, rate=1000
            )
        except BaseException as exc:
            published["error"] = exc

    sender = threading.Thread(target=publish, daemon=True)
    with mosquitto(folder, port=port, persistence=True):
        source = MqttStream("sensors", spec, client_id=prefix)
        source.start()
        worker = StreamWorker("sensors", spec, store, source=source)
        thread, out = run_in_thread(worker, max_rows=count)
        sender.start()
        deadline = time.monotonic() + 30
        while (
            not store.exists("readings") or store.read("readings").height < 300
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.exists("readings"), "nothing arrived before the restart"
    # the broker is down, the simulator is mid-stream
    time.sleep(1.0)
    assert sender.is_alive() and "error" not in published, published.get("error")
    try:
        with mosquitto(folder, port=port, persistence=True):
            sender.join(90)
            thread.join(60)
    finally:
        worker.stop()
        thread.join(10)
    assert "error" not in published, published.get("error")
    result = published["result"]
    assert result.sent == count and result.reconnects >= 1  # type: ignore[attr-defined]
    assert "error" not in out, out.get("error")
    data = store.read("readings")
    # at least once from the simulator's side: every reading is there (a resent one may be twice)
    assert data.select("_topic", "seq").n_unique() == count


def test_shared_subscription_over_two_workers_exact_count(tmp_path, mqtt_broker):
    host, port = mqtt_broker
    prefix = tag()
    project = write_project(tmp_path, port, prefix)
    cmd = [*HEADRACE, "-p", str(project), "stream", "sensors", "--workers", "2", "--idle-exit", "4", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _running_workers(tmp_path) == 2, 60, "two workers to subscribe")
        simulate_sensors(f"mqtt://{host}:{port}", prefix, devices=20, count=10_000)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for i in range(2):
            forget_session(port, f"headrace-streamtest-sensors-{i}")
    import json

    results = json.loads(out)
    assert len(results) == 2 and all(r["received"] > 0 for r in results)
    assert sum(r["rows_committed"] for r in results) == 10_000
    assert_exact(Store(tmp_path / "lake").read("readings"), 10_000)


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture
def certs(tmp_path):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("headrace-worker")
    folder = tmp_path / "certs"
    folder.mkdir()
    paths = {
        "ca": folder / "ca.pem",
        "server_cert": folder / "server.pem",
        "server_key": folder / "server.key",
        "client_cert": folder / "client.pem",
        "client_key": folder / "client.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["server_cert"]))
    server.private_key_pem.write_to_path(str(paths["server_key"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client_cert"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    return {k: str(v) for k, v in paths.items()}


# paho leaves the socket of a failed TLS handshake to the garbage collector (the refused case below)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("mutual", [False, True])
def test_tls_and_mutual_tls(tmp_path, certs, mutual):
    tls_conf = {
        "cafile": certs["ca"],
        "certfile": certs["server_cert"],
        "keyfile": certs["server_key"],
        "require_certificate": "true" if mutual else "false",
    }
    prefix = tag()
    client_tls = {"ca_file": certs["ca"]}
    if mutual:
        client_tls |= {"cert_file": certs["client_cert"], "key_file": certs["client_key"]}
    with mosquitto(tmp_path / "broker", tls=tls_conf) as port:
        url = f"mqtts://127.0.0.1:{port}"
        spec = source_spec(port, prefix, broker=url, tls=client_tls)
        store = Store(tmp_path / "lake")
        source = MqttStream("sensors", spec, client_id=prefix)
        source.start()
        pub = threading.Thread(
            target=simulate_sensors,
            args=(url, prefix),
            kwargs={
                "count": 500,
                "ca_file": certs["ca"],
                "cert_file": certs["client_cert"] if mutual else None,
                "key_file": certs["client_key"] if mutual else None,
            },
        )
        pub.start()
        StreamWorker("sensors", spec, store, source=source).run(max_rows=500, idle_exit=15)
        pub.join()
        assert_exact(store.read("readings"), 500)
        # without the CA (or, for mutual TLS, without a client certificate) the worker cannot connect
        refused = {"ca_file": certs["ca"]} if mutual else None
        bad = source_spec(port, prefix, broker=url, tls=refused, connect_timeout=3)
        with pytest.raises((ServiceUnavailable, SourceError)):
            MqttStream("sensors", bad, client_id=prefix + "x").start()
