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
