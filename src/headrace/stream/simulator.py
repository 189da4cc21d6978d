"""Realistic IoT sensor readings, published to an MQTT broker (``headrace simulate sensors``).

Each device publishes JSON to ``<prefix>/<device_id>/telemetry``:
``{"device_id", "seq", "ts", "temperature", "humidity", "vibration", "battery"}``. Temperatures follow
a daily cycle around each device's own base, humidity moves against them, vibration is log-normal,
batteries drain slowly; there is noise everywhere, rare spikes (a temperature jump, a vibration burst),
one stuck sensor (device 1 repeats one temperature after the first tenth of its readings), and a share
of malformed payloads (truncated JSON, binary garbage, plain text, a JSON string, a JSON array of
numbers) that a worker must quarantine. ``ts`` is simulated time: readings ``interval`` seconds apart
per device, ending now, so a short run still spans daily cycles. ``(device_id, seq)`` is unique, which
lets tests and benchmarks count lost and doubled readings exactly.
"""

from __future__ import annotations

import collections
import logging
import math
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import orjson
import paho.mqtt.client as mqtt

from ..errors import ServiceUnavailable, UsageError

__all__ = ["SensorSimulator", "SimulationResult", "simulate_sensors"]

log = logging.getLogger("headrace.stream.simulator")

_MALFORMED = (  # each carries the reading's seq, so two malformed payloads are never identical
    lambda r: orjson.dumps(r)[: max(24, len(orjson.dumps(r)) // 2)],  # truncated JSON
    lambda r: b"\x00\xff\xfe" + bytes(range(7, 40)) + str(r["seq"]).encode(),  # binary garbage
    lambda r: f"reading {r['seq']}: temperature is {r['temperature']}".encode(),  # plain text
    lambda r: orjson.dumps(f"{r['device_id']} offline at {r['seq']}"),  # JSON, but a string
    lambda r: orjson.dumps([r["seq"], r["temperature"], r["humidity"]]),  # JSON, but not an object
)


@dataclass(frozen=True)
class SimulationResult:
    sent: int
    malformed: int
    seconds: float
    devices: int
    topic_prefix: str
    reconnects: int = 0
    republished: int = 0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "malformed": self.malformed,
            "valid": self.sent - self.malformed,
            "seconds": round(self.seconds, 3),
            "messages_per_second": round(self.rate, 1),
            "devices": self.devices,
            "topic_prefix": self.topic_prefix,
            "reconnects": self.reconnects,
            "republished": self.republished,
        }


class SensorSimulator:
    """Deterministic (for a ``seed``) stream of ``(device_id, payload, malformed)`` readings."""

    def __init__(
        self,
        devices: int = 10,
        *,
        malformed: float = 0.0,
        seed: int = 0,
        interval: float = 60.0,
        end: float | None = None,
    ) -> None:
        if devices < 1:
            raise UsageError("the simulator needs at least one device", hint="pass --devices 1 or more")
        if not 0.0 <= malformed <= 1.0:
            raise UsageError(f"malformed share {malformed} is not between 0 and 1", hint="pass e.g. 0.01")
        self.devices = devices
        self.malformed = malformed
        self.interval = interval
        self.end = time.time() if end is None else end
        self.rng = np.random.default_rng(seed)
        r = self.rng
        self.ids = [f"dev-{i:04d}" for i in range(devices)]
        self.base_temp = r.uniform(18, 26, devices)
        self.amplitude = r.uniform(2, 6, devices)
        self.phase = r.uniform(0, 2 * math.pi, devices)
        self.base_humidity = r.uniform(35, 65, devices)
        self.vibration = r.uniform(0.05, 0.4, devices)
        self.battery = r.uniform(60, 100, devices)
        self.seq = [0] * devices

    def readings(self, count: int) -> Iterator[tuple[str, bytes, bool]]:
        r = self.rng
        per_device = max(1, math.ceil(count / self.devices))
        start = self.end - per_device * self.interval
        noise = r.normal(0, 1, (count, 3))
        uniform = r.uniform(0, 1, (count, 3))
        for n in range(count):
            i = n % self.devices
            k = self.seq[i]
            self.seq[i] += 1
            ts = start + k * self.interval
            day = 2 * math.pi * ((ts % 86400) / 86400)
            cycle = math.sin(day - math.pi / 2 + self.phase[i] * 0.1)
            temperature = self.base_temp[i] + self.amplitude[i] * cycle + 0.3 * noise[n, 0]
            if i == 1 % self.devices and self.devices > 1 and k > per_device // 10:
                temperature = round(self.base_temp[i], 1)  # the stuck sensor
            elif uniform[n, 0] < 0.002:
                temperature += 25.0  # a spike
            humidity = min(100.0, max(0.0, self.base_humidity[i] - 3.0 * cycle + 1.5 * noise[n, 1]))
            vibration = self.vibration[i] * math.exp(0.25 * noise[n, 2])
            if uniform[n, 1] < 0.005:
                vibration *= 8.0  # a burst
            self.battery[i] = max(0.0, self.battery[i] - 0.002)
            reading = {
                "device_id": self.ids[i],
                "seq": k,
                "ts": round(ts, 3),
                "temperature": round(float(temperature), 2),
                "humidity": round(float(humidity), 2),
                "vibration": round(float(vibration), 4),
                "battery": round(float(self.battery[i]), 2),
            }
            if self.malformed and uniform[n, 2] < self.malformed:
                yield self.ids[i], _MALFORMED[n % len(_MALFORMED)](reading), True
            else:
                yield self.ids[i], orjson.dumps(reading), False


def simulate_sensors(
    broker: str,
    topic_prefix: str = "sensors",
    *,
    devices: int = 10,
    rate: float = 0.0,
    count: int = 1000,
    qos: int = 1,
    malformed: float = 0.0,
    seed: int = 0,
    interval: float = 60.0,
    protocol: str = "5",
    username: str | None = None,
    password: str | None = None,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    timeout: float = 10.0,
    reconnect_timeout: float = 60.0,
) -> SimulationResult:
    """Publish ``count`` readings (``rate`` per second in all; 0: as fast as the broker takes them)
    and wait until the broker has acknowledged every QoS 1/2 message.

    When the broker goes away, the simulator waits up to ``reconnect_timeout`` for the network thread
    to reconnect and resumes; QoS 1/2 messages the broker had not acknowledged are sent again (at
    least once: a message may arrive twice, never not at all)."""
    if qos not in (0, 1, 2):
        raise UsageError(f"QoS {qos} does not exist", hint="pass --qos 0, 1 or 2")
    parts = urlsplit(broker if "://" in broker else "mqtt://" + broker)
    secure = parts.scheme in ("mqtts", "ssl")
    host, port = parts.hostname or "127.0.0.1", parts.port or (8883 if secure else 1883)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=f"headrace-sim-{uuid.uuid4().hex[:10]}",
        protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311,
    )
    # Never more unacknowledged messages than the broker takes (Mosquitto's max_inflight_messages, 20
    # by default, which it announces as Receive Maximum): past it, it drops messages
    client.max_inflight_messages_set(20)
    connected = threading.Event()
    state = {"connections": 0, "republished": 0}

    def on_connect(c: mqtt.Client, u: object, flags: object, reason: object, properties: object) -> None:
        state["connections"] += 1
        if state["connections"] > 1:
            log.warning("reconnected to the MQTT broker %s:%s", host, port)
        connected.set()

    def on_disconnect(c: mqtt.Client, u: object, flags: object, reason: object, properties: object) -> None:
        if connected.is_set():
            log.warning("disconnected from the MQTT broker %s:%s (%s); reconnecting", host, port, reason)
        connected.clear()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.reconnect_delay_set(min_delay=1, max_delay=5)  # the network thread reconnects by itself
    client.max_queued_messages_set(0)
    if username is not None:
        client.username_pw_set(username, password)
    if secure:
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
        client.tls_set_context(context)
    try:
        client.connect(host, port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise ServiceUnavailable(
            f"MQTT broker {host}:{port} is unreachable ({exc})", hint="start the broker or fix --broker"
        ) from None
    client.loop_start()
    if not connected.wait(timeout):
        client.loop_stop()
        raise ServiceUnavailable(f"MQTT broker {host}:{port} did not accept the connection in time")
    sim = SensorSimulator(devices, malformed=malformed, seed=seed, interval=interval)
    topics = [f"{topic_prefix}/{d}/telemetry" for d in sim.ids]
    index = {d: t for d, t in zip(sim.ids, topics, strict=True)}
    started = time.perf_counter()
    bad = 0
    # at most this many unacknowledged messages queued in the client: message ids are 16-bit
    window: collections.deque[tuple[str, bytes, mqtt.MQTTMessageInfo]] = collections.deque()
    deadline = time.time() + max(timeout, count / 500)

    def wait_connected() -> None:
        """While the broker is away, wait for the network thread to reconnect (``reconnect_timeout``)."""
        if not connected.wait(reconnect_timeout):
            raise ServiceUnavailable(
                f"MQTT broker {host}:{port} has been unreachable for {reconnect_timeout:.0f} s",
                hint="start the broker; the simulator resumes when it comes back within the timeout",
            )

    def publish(topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        # bounded by time: the connection may be lost before on_disconnect has run (``connected`` still
        # set, every publish refused), so each failed try pauses instead of spinning
        give_up = time.monotonic() + reconnect_timeout
        while True:
            wait_connected()
            info = client.publish(topic, payload, qos=qos)
            # a refused message is published again (paho may still send the refused copy after it
            # reconnects: at least once), since a refused one's info cannot be waited on
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                return info
            if time.monotonic() >= give_up:
                break
            time.sleep(0.05)
        raise ServiceUnavailable(f"MQTT broker {host}:{port} refused every publish", hint="check the broker")

    def settle(item: tuple[str, bytes, mqtt.MQTTMessageInfo]) -> None:
        nonlocal deadline
        topic, payload, info = item
        for _ in range(100):  # bounded: each round waits for an acknowledgement or a reconnection
            failed = False
            try:
                info.wait_for_publish(max(0.01, deadline - time.time()))
            except (RuntimeError, ValueError):  # lost with the connection
                failed = True
            if qos == 0 or _published(info):
                return
            if not connected.is_set():
                # paho sends its unacknowledged messages again once it has reconnected
                wait_connected()
                deadline = time.time() + max(timeout, len(window) / 500)
                continue
            if time.time() >= deadline and not failed:
                raise ServiceUnavailable(
                    f"MQTT broker {host}:{port} did not acknowledge every message in time",
                    hint="check the broker's logs and limits",
                )
            if failed:  # paho gave it up: send it again (at least once)
                info = publish(topic, payload)
                state["republished"] += 1
        raise ServiceUnavailable(f"MQTT broker {host}:{port} kept dropping the connection", hint="check it")

    try:
        for n, (device, payload, is_bad) in enumerate(sim.readings(count)):
            bad += is_bad
            topic = index[device]
            window.append((topic, payload, publish(topic, payload)))
            while len(window) > 10_000:
                settle(window.popleft())
            if rate > 0:
                ahead = started + (n + 1) / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
        while window:
            settle(window.popleft())
    finally:
        client.disconnect()
        client.loop_stop()
    seconds = time.perf_counter() - started
    log.info("published %d readings (%d malformed) in %.2f s", count, bad, seconds)
    return SimulationResult(
        sent=count,
        malformed=bad,
        seconds=seconds,
        devices=devices,
        topic_prefix=topic_prefix,
        reconnects=state["connections"] - 1,
        republished=state["republished"],
    )


def _published(info: mqtt.MQTTMessageInfo) -> bool:
    """Whether the broker acknowledged the message; False for one paho refused (its ``is_published``
    raises then)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False
