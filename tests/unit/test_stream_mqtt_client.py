"""The MQTT client's lean PUBLISH path and batched acknowledgements, against paho's own (no broker)."""

from __future__ import annotations

import struct

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from headrace.stream.mqtt import _Client


def client(protocol: int = mqtt.MQTTv5) -> tuple[_Client, list[tuple[bytes, bytes, int, int, bool]]]:
    c = _Client(mqtt.CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol, manual_ack=True)  # type: ignore[arg-type]
    got: list[tuple[bytes, bytes, int, int, bool]] = []
    c._hr_sink = lambda *fields: got.append(fields)  # type: ignore[assignment]
    return c, got


def publish_packet(
    topic: bytes, payload: bytes, qos: int, mid: int, dup: bool, props: Properties | None
) -> tuple[int, bytearray]:
    header = 0x30 | (qos << 1) | (0x08 if dup else 0)
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    if props is not None:
        body += props.pack()
    return header, bytearray(body + payload)


def _props(kind: str) -> Properties | None:
    if kind == "none":
        return None
    props = Properties(PacketTypes.PUBLISH)
    if kind == "some":
        props.UserProperty = [("k", "v" * 200)]  # a property length over one byte
        props.MessageExpiryInterval = 60
        props.ContentType = "application/json"
    return props


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("dup", [False, True])
@pytest.mark.parametrize("props", ["empty", "some"])
@pytest.mark.parametrize("payload", [b"", b'{"a": 1}', bytes(range(256)) * 300])
def test_lean_publish_path_reads_what_paho_reads_v5(qos, dup, props, payload):
    c, got = client()
    header, body = publish_packet(
        b"plant/s1/dev-0001/telemetry", payload, qos, 4321 if qos else 0, dup, _props(props)
    )
    c._in_packet = {"command": header, "packet": body}  # type: ignore[typeddict-item]
    assert c._handle_publish() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    ref = _packet.decode_publish(header, bytes(body), mqtt.MQTTv5)
    assert got == [(ref.topic, ref.payload, ref.mid, ref.qos, ref.dup)]
    assert type(got[0][0]) is bytes and type(got[0][1]) is bytes


@pytest.mark.parametrize("qos", [0, 1])
def test_lean_publish_path_reads_what_paho_reads_v311(qos):
    c, got = client(mqtt.MQTTv311)
    header, body = publish_packet(b"a/b", b"payload", qos, 7 if qos else 0, False, None)
    c._in_packet = {"command": header, "packet": body}  # type: ignore[typeddict-item]
    c._handle_publish()
    ref = _packet.decode_publish(header, bytes(body), mqtt.MQTTv311)
    assert got == [(ref.topic, ref.payload, ref.mid, ref.qos, ref.dup)]


def test_qos2_and_malformed_packets_take_paho_path():
    c, got = client()
    seen = []
    c.on_message = lambda cl, u, m: seen.append((m.topic, m.payload, m.qos))
    header, body = publish_packet(b"a/b", b"x", 2, 9, False, _props("empty"))
    c._in_packet = {"command": header, "packet": body}  # type: ignore[typeddict-item]
    c._handle_publish()
    assert got == [] and seen == [("a/b", b"x", 2)]  # handed over on arrival, PUBREC deferred
    assert not c._out_packet
    header, body = publish_packet(b"a/b", b"", 1, 9, False, None)  # v5 without its property length
    c._in_packet = {"command": header, "packet": body[:5]}  # type: ignore[typeddict-item]
    with pytest.raises(Exception):  # noqa: B017  (paho's own error for a truncated packet)
        c._handle_publish()
    assert got == []


def test_ack_all_queues_what_ack_queues_one_by_one():
    acks = [(1, 1), (2, 1), (65535, 1), (3, 2), (4, 1)]
    one, _ = client()
    for mid, qos in acks:
        one.ack(mid, qos)
    expected = b"".join(bytes(p["packet"]) for p in one._out_packet)
    many, _ = client()
    many.ack_all(acks)
    assert len(many._out_packet) == 1
    assert bytes(many._out_packet[0]["packet"]) == expected
    assert expected[:4] == b"\x40\x02\x00\x01" and expected[12:16] == b"\x50\x02\x00\x03"


def _frame(header: int, body: bytes) -> bytes:
    length, out = len(body), bytearray([header])
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out) + body


def test_reading_many_packets_from_one_buffer_and_across_reads():
    """Packets from the socket in arbitrary pieces: each PUBLISH reaches the sink once, in order; a
    QoS 2 PUBLISH and other packets go through paho's path in between."""
    import socket

    c, got = client()
    seen = []
    c.on_message = lambda cl, u, m: seen.append(m.payload)
    stream = bytearray()
    expected = []
    for n in range(3000):
        qos = n % 2
        payload = b'{"n": %d}' % n + b"x" * (n % 300)
        header, body = publish_packet(
            b"t/%d" % (n % 7), payload, qos, n % 65535 + 1, n % 5 == 0, _props("empty")
        )
        stream += _frame(header, bytes(body))
        expected.append((b"t/%d" % (n % 7), payload, n % 65535 + 1 if qos else 0, qos, n % 5 == 0))
        if n == 1500:
            header, body = publish_packet(b"q2", b"two", 2, 9, False, _props("empty"))
            stream += _frame(header, bytes(body))
            stream += b"\xd0\x00"  # PINGRESP
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        c._sock = a  # type: ignore[assignment]
        for start in range(0, len(stream), 7001):  # pieces that cut packets anywhere
            b.sendall(stream[start : start + 7001])
            while c.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and c._hr_rpos < len(c._hr_rbuf):
                pass
            c.loop_read()
    finally:
        c._sock = None
        a.close()
        b.close()
    assert got == expected
    assert seen == [b"two"]
