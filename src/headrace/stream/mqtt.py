"""The MQTT source: a persistent paho-mqtt session whose messages are acknowledged after the commit.

How nothing is lost: the session is persistent (fixed client id, no clean start, a session expiry for
MQTT 5), messages are acknowledged by hand (``manual_ack``) and only once the batch holding them is
committed, so a worker that dies before the commit gets them again from the broker. How nothing is
doubled: the worker drops rows whose key it has committed already (see ``headrace.stream.worker``).

Acknowledgements carry the connection they came on: after a reconnect, message ids may be reused by
the broker for other messages, so ids from an older connection are never acknowledged (the broker
sends those messages again on the new connection, and the key removes the copy).

QoS 2: paho sends PUBREC as soon as a QoS 2 message arrives and hands the message over only at PUBREL.
A worker killed between the two would lose it (the broker has forgotten the message after PUBREC). So
this client holds PUBREC back until the commit, hands the message over on arrival, and completes the
exchange (PUBCOMP) when PUBREL comes: QoS 2 is then at least once into the dataset, as QoS 1 is.

Backpressure: at most ``max_pending`` messages wait in memory. With QoS 1 and 2 the broker never sends
more than ``max_inflight`` unacknowledged ones, so a slow store simply stops acknowledgements and the
broker keeps the rest; with QoS 0 the network thread waits, and TCP pushes back on the broker.

Speed: the network thread (paho's loop) does as little per message as it can, since it shares the GIL
with the worker: it reads up to 64 KiB per recv and handles every packet that has arrived, takes a
QoS 0/1 PUBLISH apart itself (topic, payload, id, DUP; paho would build an MQTTMessage and parse the
MQTT 5 properties, which the stream does not use) and queues it. ``read()`` decodes a whole batch at
once (``parse_columns``) and ``ack()`` sends the batch's acknowledgements as one write, in arrival
order, after the commit.
"""

from __future__ import annotations

import collections
import logging
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt import _packet
from paho.mqtt.enums import LogLevel, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..config.sources_stream import MqttSource
from ..errors import ConfigError, ServiceUnavailable, SourceError
from ..ingest.base import Batch
from .payload import PayloadFormat, TopicPattern, parse_columns

__all__ = ["MqttStream", "StreamToken", "payload_format"]

log = logging.getLogger("headrace.stream.mqtt")


@dataclass
class StreamToken:
    """What a stream batch carries for the worker: what to acknowledge and what may be a redelivery."""

    acks: list[Any]
    messages: int
    suspect_keys: set[str] = field(default_factory=set)
    first_received: float | None = None


def payload_format(spec: Any) -> PayloadFormat:
    p = spec.payload
    return PayloadFormat(
        format=p.format,
        csv_columns=tuple(p.csv_columns),
        csv_delimiter=p.csv_delimiter,
        event_time=p.event_time,
        event_time_unit=p.event_time_unit,
        key=tuple(spec.key),
    )


_READ_SIZE = 65536
_Pending = tuple[bytes, bytes, int, int, bool, float, int]
_ACK = struct.Struct("!BBH")  # PUBACK / PUBREC: fixed header, remaining length 2, message id
PUBLISH, PUBACK, PUBREC = 0x30, 0x40, 0x50


def _topic_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


_TERMINAL = {
    "Not authorized",
    "Bad user name or password",
    "Client identifier not valid",
    "Unsupported protocol version",
    "Banned",
    "Bad authentication method",
}


class _QuietShutdown(logging.Filter):
    """paho logs an error when its network thread polls once more after a clean disconnect: not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_PAHO_LOG = logging.getLogger("headrace.stream.paho")
_PAHO_LOG.addFilter(_QuietShutdown())


class _Client(mqtt.Client):
    """paho's client with QoS 2 PUBREC deferred until the application acknowledges (see module doc),
    and a lean PUBLISH path for QoS 0 and 1 (see ``_handle_publish``)."""

    _hr_deferred: int | None = None
    # receives (topic bytes, payload, mid, qos, dup) of each QoS 0/1 PUBLISH, on the network thread
    _hr_sink: Callable[[bytes, bytes, int, int, bool], None] | None = None

    def _send_pubrec(self, mid: int) -> MQTTErrorCode:
        if self._manual_ack:
            self._hr_deferred = mid  # sent by ack() once the batch is committed
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._send_pubrec(mid)

    def _handle_publish(self) -> MQTTErrorCode:
        if self._hr_publish(self._in_packet["command"], self._in_packet["packet"]):
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        self._hr_deferred = None
        rc = super()._handle_publish()
        deferred = self._hr_deferred
        if deferred is not None:
            self._hr_deferred = None
            with self._in_message_mutex:
                message = self._in_messages.pop(deferred, None)
            if message is not None:
                self._handle_on_message(message)
        return rc

    def _hr_publish(self, header: int, packet: bytes | bytearray) -> bool:
        """The lean path of a PUBLISH packet (its body after the fixed header); False: paho's path.

        Most of paho's own time per message goes to objects the stream never reads (an MQTTMessage,
        the MQTT 5 properties parsed into a Properties object, a debug line, the per-topic callback
        lookup). For QoS 0 and 1 this reads what the stream needs straight from the packet and hands
        it to the sink: topic, payload, message id, QoS, DUP. (The properties are skipped: the stream
        uses none, and no topic alias can come, as the client allows none in CONNECT.) QoS 2, a
        malformed packet or a debug log go through paho's own path."""
        sink = self._hr_sink
        qos = (header & 0x06) >> 1
        if sink is None or qos == 2 or _PAHO_LOG.isEnabledFor(logging.DEBUG):
            return False
        size = len(packet)
        if size < 2:
            return False
        pos = 2 + ((packet[0] << 8) | packet[1])
        topic = bytes(packet[2:pos])
        mid = 0
        if qos:
            if pos + 2 > size:
                return False
            mid = (packet[pos] << 8) | packet[pos + 1]
            pos += 2
        if self._protocol == mqtt.MQTTv5:
            length, shift = 0, 0
            while pos < size and shift <= 21:  # a variable byte integer, at most 4 bytes
                byte = packet[pos]
                pos += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            else:
                return False  # truncated: paho's path reports it
            pos += length
        elif not topic:
            return False
        if pos > size:
            return False
        sink(topic, bytes(packet[pos:]), mid, qos, bool(header & 0x08))
        return True

    # -- reading: paho reads each packet in three or more recv calls (its type, each byte of its
    # length, its body) after a select() each; here one recv of up to 64 KiB serves many packets, and
    # a wake-up reads all that has arrived.
    _hr_rbuf: bytes = b""
    _hr_rpos: int = 0
    _hr_rsock: Any = None

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._hr_rbuf, self._hr_rpos
        if pos >= len(buf) or self._hr_rsock is not self._sock:  # empty, or left from an older socket
            self._hr_rbuf, self._hr_rpos, self._hr_rsock = b"", 0, self._sock
            buf = super()._sock_recv(max(bufsize, _READ_SIZE))  # BlockingIOError when none has come
            if not buf:
                return buf  # the connection closed
            with self._msgtime_mutex:  # keepalive: packets handled from the buffer do not set it
                self._last_bytes_received = mqtt.time_func()
            pos = 0
        end = pos + bufsize
        self._hr_rbuf, self._hr_rpos = buf, end
        return buf[pos:end]

    def _packet_read(self) -> MQTTErrorCode:
        # A QoS 0/1 PUBLISH that lies whole in the buffer is handled here, without paho's per-packet
        # state (a dict per packet, a recv call per length byte); anything else goes through paho.
        buf, pos = self._hr_rbuf, self._hr_rpos
        size = len(buf)
        if self._in_packet["command"] == 0 and pos + 2 <= size and self._hr_rsock is self._sock:
            header = buf[pos]
            if header & 0xF0 == PUBLISH:
                i, length, shift = pos + 1, 0, 0
                while i < size and shift <= 21:
                    byte = buf[i]
                    i += 1
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        end = i + length
                        if end <= size and self._hr_publish(header, buf[i:end]):
                            self._hr_rpos = end
                            return MQTTErrorCode.MQTT_ERR_SUCCESS
                        break
        return super()._packet_read()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Read packets until the socket has no more (paho reads one per select() wake-up), writing
        and keeping the connection alive every 1000 packets as paho's loop would between them."""
        count = 0
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN and self._hr_rpos >= len(self._hr_rbuf):
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            count += 1
            if count % 1000 == 0:
                rc = self.loop_write()
                if rc or self._sock is None:
                    return rc
                rc = self.loop_misc()
                if rc or self._sock is None:
                    return rc

    def _handle_pubrel(self) -> MQTTErrorCode:
        result = _packet.decode_pubrel(self._in_packet["command"], self._in_packet["packet"], self._protocol)
        rc = super()._handle_pubrel()
        if self._manual_ack and rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return self._send_pubcomp(result.mid)  # the message was committed before PUBREC went out
        return rc

    def ack(self, mid: int, qos: int) -> MQTTErrorCode:
        if self._manual_ack and qos == 2:
            return mqtt.Client._send_pubrec(self, mid)
        return super().ack(mid, qos)

    def ack_all(self, acks: list[tuple[int, int]]) -> None:
        """Acknowledge many messages, in this order, as one write: what ``ack`` does for each (PUBACK
        for QoS 1, the deferred PUBREC for QoS 2), queued as one outgoing buffer with one wake-up of
        the network thread instead of one of each per message."""
        if not self._manual_ack or not acks:
            return
        pack = _ACK.pack
        packet = b"".join(pack(PUBACK if qos == 1 else PUBREC, 2, mid) for mid, qos in acks if qos in (1, 2))
        if packet:
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Sending %d acknowledgements", len(packet) // 4)
            self._packet_queue(PUBACK, packet, 0, 0)

    def _easy_log(self, level: LogLevel, fmt: str, *args: Any) -> None:
        # paho logs every packet at DEBUG: skip the call (two per message) unless someone listens
        if (
            level == mqtt.MQTT_LOG_DEBUG
            and self._on_log is None
            and not _PAHO_LOG.isEnabledFor(logging.DEBUG)
        ):
            return
        super()._easy_log(level, fmt, *args)


class MqttStream:
    """A ``StreamingSource`` over one MQTT connection. ``read()`` yields micro-batches until ``stop()``."""

    def __init__(
        self,
        name: str,
        spec: MqttSource,
        *,
        client_id: str | None = None,
        shared_group: str | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.client_id = client_id or spec.client_id or f"headrace-{name}"
        group = shared_group or spec.shared_group
        self.filters = [f"$share/{group}/{t}" if group else t for t in spec.topics]
        self.format = payload_format(spec)
        self.pattern = TopicPattern(spec.topic_pattern) if spec.topic_pattern else None
        self.v5 = spec.protocol == "5"
        # MQTT 5: the most the protocol allows, so a burst waits in the worker (bounded by max_pending)
        # rather than in the broker's per-client queue, which drops past max_queued_messages
        default_inflight = 65535 if self.v5 else 20
        self.max_inflight = spec.max_inflight or default_inflight
        # a batch is cut when this many messages wait: the broker sends no more until they are acked
        self.flush_at = min(spec.batch_rows, self.max_inflight) if spec.qos > 0 else spec.batch_rows
        self.max_pending = max(spec.max_pending, self.flush_at)
        self._cond = threading.Condition()
        # (topic, payload, mid, qos, dup, receive time, connection generation), from the network thread
        self._pending: collections.deque[_Pending] = collections.deque()
        self._stop = threading.Event()
        self._generation = 0
        self._connected = False
        self._subscribed = threading.Event()
        self._fatal: str | None = None
        self._client: _Client | None = None
        self.received = 0
        self.reconnects = 0

    # -- connection ----------------------------------------------------------------------------
    def _make_client(self) -> _Client:
        spec = self.spec
        if self.v5:
            client = _Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv5,
                manual_ack=True,
            )
        else:
            client = _Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                clean_session=False,
                protocol=mqtt.MQTTv311,
                manual_ack=True,
            )
        client.enable_logger(_PAHO_LOG)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        if spec.username is not None:
            password = spec.password.get_secret_value() if spec.password is not None else None
            client.username_pw_set(spec.username, password)
        if spec.uses_tls:
            client.tls_set_context(self._tls_context())
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client._hr_sink = self._on_publish
        client.on_subscribe = self._on_subscribe
        return client

    def _tls_context(self) -> ssl.SSLContext:
        tls = self.spec.tls
        try:
            context = ssl.create_default_context(cafile=tls.ca_file if tls else None)
            if tls is not None and tls.cert_file is not None:
                context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"source {self.name!r}: TLS files cannot be loaded ({exc})",
                hint="check tls.ca_file, tls.cert_file and tls.key_file (PEM files)",
            ) from None
        if tls is not None and not tls.check_hostname:
            context.check_hostname = False
        return context

    def start(self) -> None:
        """Connect and subscribe (once); raise ``ServiceUnavailable`` when the broker cannot be reached."""
        if self._client is not None:
            return
        spec = self.spec
        self._client = client = self._make_client()
        properties = None
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = spec.session_expiry_seconds
            properties.ReceiveMaximum = self.max_inflight
            client.connect_async(
                spec.host, spec.port, keepalive=spec.keepalive, clean_start=False, properties=properties
            )
        else:
            client.connect_async(spec.host, spec.port, keepalive=spec.keepalive)
        client.loop_start()
        where = f"{spec.host}:{spec.port}"
        if not self._subscribed.wait(spec.connect_timeout) or self._fatal:
            fatal = self._fatal
            self.close(flush=False)
            if fatal:
                raise SourceError(f"source {self.name!r}: MQTT broker {where} refused: {fatal}")
            raise ServiceUnavailable(
                f"source {self.name!r}: MQTT broker {where} is unreachable "
                f"(no subscription within {spec.connect_timeout:g} s)",
                hint="check that the broker runs and the URL, port and TLS settings are right",
            )
        log.info(
            "source %s: connected to %s as %s, subscribed to %s (qos %d)",
            self.name,
            where,
            self.client_id,
            ", ".join(self.filters),
            spec.qos,
        )

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("source %s: broker refused the connection: %s", self.name, reason)
            if str(reason) in _TERMINAL:
                self._fatal = f"connection refused ({reason})"
                self._subscribed.set()  # wake start(): retrying cannot help
            return
        with self._cond:
            self._generation += 1
            self._connected = True
        if self._generation > 1:
            self.reconnects += 1
            log.warning("source %s: reconnected (session present: %s)", self.name, flags.session_present)
        client.subscribe([(f, self.spec.qos) for f in self.filters])
        if flags.session_present:
            # the session holds the subscription already (and its backlog may arrive before SUBACK)
            self._subscribed.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self._fatal = f"subscription refused ({', '.join(failed)})"
            log.error("source %s: %s", self.name, self._fatal)
        self._subscribed.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._cond:
            self._connected = False
        if not self._stop.is_set():
            log.warning("source %s: disconnected (%s); reconnecting with backoff", self.name, reason)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # paho's own path (QoS 2, or a debug log): into the same queue as the lean path
        self._on_publish(msg._topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.dup))

    def _on_publish(self, topic: bytes, payload: bytes, mid: int, qos: int, dup: bool) -> None:
        # The network thread only queues the message (decoding happens in read(), a batch at once): the
        # deque needs no lock; the reader is woken when a batch is full, and the network thread waits
        # only when max_pending messages are held.
        pending = self._pending
        pending.append((topic, payload, mid, qos, dup, time.time(), self._generation))
        self.received += 1
        n = len(pending)
        if n == self.flush_at or n >= self.max_pending:
            with self._cond:
                self._cond.notify_all()
                while len(pending) >= self.max_pending and not self._stop.is_set():
                    self._cond.wait(0.5)  # backpressure: the reader takes a batch, then we go on

    # -- the StreamingSource protocol ------------------------------------------------------------
    def read(self) -> Iterator[Batch]:
        if self._client is None:
            self.start()
        spec = self.spec
        while True:
            with self._cond:
                while True:
                    if self._fatal:
                        raise SourceError(f"source {self.name!r}: {self._fatal}")
                    n = len(self._pending)
                    if n >= self.flush_at or self._stop.is_set():
                        break
                    if n:
                        wait = self._pending[0][5] + spec.batch_seconds - time.time()
                        if wait <= 0:
                            break
                    else:
                        wait = spec.batch_seconds
                    self._cond.wait(min(wait, 0.25))
                take = min(len(self._pending), self.flush_at)
                messages = [self._pending.popleft() for _ in range(take)]
                self._cond.notify_all()
                stopping = self._stop.is_set()
            if messages:
                yield self._batch(messages)
            if stopping and not messages:
                return

    def _batch(self, pending: list[_Pending]) -> Batch:
        raw_topics, payloads, mids, qoses, dups, received, generations = zip(*pending, strict=True)
        names = {t: _topic_text(t) for t in set(raw_topics)}
        parsed = parse_columns(
            [names[t] for t in raw_topics], payloads, received, dups, self.format, self.pattern
        )
        acks = [(g, m, q) for g, m, q in zip(generations, mids, qoses, strict=True) if q > 0]
        token = StreamToken(
            acks=acks,
            messages=len(pending),
            suspect_keys=parsed.suspect_keys,
            first_received=received[0],
        )
        return Batch(frame=parsed.frame, origin=f"mqtt:{self.name}", failures=parsed.failures, token=token)

    def ack(self, batch: Batch) -> None:
        """Acknowledge the batch's messages (call only after it is committed), in arrival order."""
        client = self._client
        token: StreamToken = batch.token
        if client is None or not token.acks:
            return
        with self._cond:
            generation = self._generation if self._connected else -1
        current = [(mid, qos) for gen, mid, qos in token.acks if gen == generation]
        client.ack_all(current)
        stale = len(token.acks) - len(current)
        if stale:  # from an older connection: the broker redelivers them, the key drops the copies
            log.info(
                "source %s: %d messages from an earlier connection left unacknowledged", self.name, stale
            )

    def stop(self) -> None:
        """Ask ``read()`` to hand over what it holds as a last batch and end."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def close(self, flush: bool = True) -> None:
        """Disconnect (the acknowledgements already queued go out first) and stop the network thread."""
        self._stop.set()
        client = self._client
        if client is None:
            return
        self._client = None
        try:
            if flush and self._connected:
                # let queued acknowledgements reach the socket before DISCONNECT closes it
                deadline = time.time() + 5
                while client.want_write() and time.time() < deadline:
                    time.sleep(0.01)
            client.disconnect()
        finally:
            client.loop_stop()
