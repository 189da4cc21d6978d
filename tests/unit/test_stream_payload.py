"""Payload decoding, topic patterns, event time and message keys (no broker)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import polars as pl
import pytest

from headrace.stream.payload import (
    KEY_COLUMN,
    Message,
    PayloadFormat,
    TopicPattern,
    parse_messages,
)

NOW = 1_700_000_000.0


def msg(topic: str, payload: bytes, dup: bool = False) -> Message:
    return Message(topic, payload, NOW, dup, None)


def test_json_object_array_and_csv_become_rows():
    fmt = PayloadFormat(csv_columns=("device", "temperature", "ok"))
    parsed = parse_messages(
        [
            msg("a/1", b'{"device": "d1", "temperature": 21.5}'),
            msg("a/2", b'[{"device": "d2", "temperature": 20}, {"device": "d3", "temperature": 19.5}]'),
            msg("a/3", b"d4,18.25,yes"),
        ],
        fmt,
    )
    assert parsed.failures == []
    frame = parsed.frame
    assert frame.get_column("device").to_list() == ["d1", "d2", "d3", "d4"]
    assert frame.get_column("temperature").to_list() == [21.5, 20.0, 19.5, 18.25]
    assert frame.get_column("_topic").to_list() == ["a/1", "a/2", "a/2", "a/3"]
    assert frame.get_column(KEY_COLUMN).n_unique() == 4  # array rows get distinct keys
    assert frame.schema["_received_at"] == pl.Datetime("us", "UTC")


def test_unparseable_payloads_become_failures_with_raw_bytes():
    bad = [b"{not json", b"\x00\xff\xfe", b"", b"[1, 2]", b"plain text"]
    parsed = parse_messages([msg("s/d/telemetry", p) for p in bad], PayloadFormat())
    assert parsed.frame.height == 0
    assert len(parsed.failures) == len(bad)
    for payload, failure in zip(bad, parsed.failures, strict=True):
        assert base64.b64decode(failure["raw"]) == payload
        assert failure["origin"] == "s/d/telemetry"
        assert failure["reason"]


def test_csv_line_with_wrong_field_count_fails():
    parsed = parse_messages([msg("t", b"1,2")], PayloadFormat(csv_columns=("a", "b", "c")))
    assert "2 fields" in parsed.failures[0]["reason"]


def test_topic_pattern_maps_levels_and_rejects_others():
    pattern = TopicPattern("plant/{site}/sensors/{device}")
    assert pattern.match("plant/north/sensors/d7") == {"site": "north", "device": "d7"}
    assert pattern.match("plant/north/other/d7") is None
    assert pattern.match("plant/north/sensors") is None
    assert TopicPattern("p/+/{device}/#").match("p/x/d1/a/b") == {"device": "d1"}
    assert TopicPattern("plant.{site}.{device}", ".").match("plant.s.d") == {"site": "s", "device": "d"}
    with pytest.raises(ValueError):
        TopicPattern("a/#/b")
    parsed = parse_messages(
        [msg("plant/n/sensors/d1", b'{"t": 1}'), msg("elsewhere", b'{"t": 2}')], PayloadFormat(), pattern
    )
    assert parsed.frame.select("site", "device").row(0) == ("n", "d1")
    assert "topic_pattern" in parsed.failures[0]["reason"]


@pytest.mark.parametrize(
    ("value", "unit"),
    [
        (1_700_000_123, "auto"),
        (1_700_000_123_000, "auto"),
        (1_700_000_123_000_000, "auto"),
        ("2023-11-14T22:15:23Z", "auto"),
        (1_700_000_123_000, "ms"),
    ],
)
def test_event_time_from_payload(value, unit):
    fmt = PayloadFormat(event_time="ts", event_time_unit=unit)
    parsed = parse_messages([msg("t", orjson.dumps({"ts": value}))], fmt)
    assert parsed.frame.get_column("event_time")[0] == datetime(2023, 11, 14, 22, 15, 23, tzinfo=UTC)


def test_event_time_defaults_to_receive_time_and_bad_values_fail():
    fmt = PayloadFormat(event_time="ts")
    parsed = parse_messages([msg("t", b'{"x": 1}'), msg("t", b'{"ts": "yesterday"}')], fmt)
    assert parsed.frame.get_column("event_time")[0] == datetime.fromtimestamp(NOW, UTC)
    assert "event time" in parsed.failures[0]["reason"]


def test_keys_from_fields_or_content_and_redeliveries_are_suspect():
    by_content = parse_messages([msg("t", b'{"a": 1}'), msg("t", b'{"a": 1}', dup=True)], PayloadFormat())
    keys = by_content.frame.get_column(KEY_COLUMN).to_list()
    assert keys[0] == keys[1]
    assert by_content.suspect_keys == {keys[0]}
    by_field = parse_messages(
        [msg("t1", b'{"id": 5, "v": 1}'), msg("t2", b'{"id": 5, "v": 2}')], PayloadFormat(key=("id",))
    )
    assert by_field.frame.get_column(KEY_COLUMN).n_unique() == 1


# -- the columnar path gives what the row-by-row path gives ------------------------------------------


def _both(messages: list[Message], fmt: PayloadFormat, pattern: TopicPattern | None = None):  # type: ignore[no-untyped-def]
    from headrace.stream.payload import _parse_columnar, _parse_rows

    fast = _parse_columnar(
        [m.topic for m in messages],
        [m.payload for m in messages],
        [m.received_at for m in messages],
        [m.dup for m in messages],
        fmt,
        pattern,
    )
    slow = _parse_rows(messages, fmt, pattern)
    return fast, slow


def _assert_same(fast, slow) -> None:  # type: ignore[no-untyped-def]
    assert fast is not None, "the columnar path declined a batch it covers"
    assert fast.frame.schema == slow.frame.schema
    assert fast.frame.equals(slow.frame), (fast.frame, slow.frame)
    assert fast.failures == slow.failures
    assert fast.suspect_keys == slow.suspect_keys


@pytest.mark.parametrize("unit", ["auto", "s", "ms", "us"])
def test_columnar_path_matches_row_path_on_random_readings(unit):
    import random

    rng = random.Random(hash(unit) & 0xFFFF)
    scale = {"auto": 1.0, "s": 1.0, "ms": 1e3, "us": 1e6}[unit]
    messages = []
    for n in range(3000):
        doc: dict[str, object] = {"device_id": f"dev-{n % 7}", "seq": n, "temperature": rng.uniform(-40, 60)}
        choice = rng.random()
        if choice < 0.3:
            doc["ts"] = round(rng.uniform(-1e9, 4e9), rng.randint(0, 7)) * scale
        elif choice < 0.5:
            doc["ts"] = rng.randint(-(10**9), 4 * 10**9) * int(scale)
        elif choice < 0.6:
            doc["ts"] = None
        elif choice < 0.7 and unit == "auto":
            doc["ts"] = rng.choice([rng.uniform(1e11, 4e12), rng.uniform(1e14, 4e15), 1e14, 1e11])
        elif choice < 0.8:
            doc["extra"] = rng.choice([1, 2.5, None])  # a column that only some rows have
        received = NOW + rng.uniform(-1e6, 1e6)
        payload = orjson.dumps(doc) if rng.random() > 0.02 else b"{broken"
        messages.append(
            Message(f"plant/s{n % 3}/dev-{n % 7}/telemetry", payload, received, rng.random() < 0.1)
        )
    fmt = PayloadFormat(event_time="ts", event_time_unit=unit)
    _assert_same(*_both(messages, fmt))
    pattern = TopicPattern("plant/{site}/{device}/telemetry")
    messages.append(Message("other/topic", b'{"a": 1}', NOW, True))
    _assert_same(*_both(messages, fmt, pattern))
    _assert_same(
        *_both(messages, PayloadFormat(event_time="ts", event_time_unit=unit, key=("device", "seq")), pattern)
    )


@pytest.mark.parametrize(
    "payloads",
    [
        [b'{"a": 1, "b": "x"}', b'{"b": "y", "c": [1, 2]}', b'{"d": {"e": 1}}'],  # columns in arrival order
        [b'{"a": 1}', b'{"a": 2.5}', b'{"a": null}'],
        [b"{}", b'{"a": 1}'],
        [b'{"a": 1, "a": 2}'],  # a repeated field: the last one, as orjson reads it
        [b'[{"a": 1}]', b' {"a": 2}', b'{"a": 3}\n'],  # one row, however written
        [b"[1]", b"", b"\xff", b'"text"', b'{"a": 1}'],  # failures between rows
        [b'{"b": 18446744073709551615}', b'{"a": 1}'],
    ],
)
def test_columnar_path_matches_row_path_on_odd_payloads(payloads):
    messages = [Message(f"t/{i}", p, NOW + i, i % 2 == 0) for i, p in enumerate(payloads)]
    _assert_same(*_both(messages, PayloadFormat()))
    _assert_same(*_both(messages, PayloadFormat(event_time="a")))


@pytest.mark.parametrize(
    ("payloads", "fmt", "pattern"),
    [
        ([b'[{"a": 1}, {"a": 2}]'], PayloadFormat(), None),  # several rows from one message
        ([b'{"ts": "2024-01-01T00:00:00Z"}'], PayloadFormat(event_time="ts"), None),
        ([b'{"ts": true}'], PayloadFormat(event_time="ts"), None),
        ([b'{"ts": 18446744073709551615}'], PayloadFormat(event_time="ts"), None),
        ([b'{"ts": 1e300}'], PayloadFormat(event_time="ts", event_time_unit="s"), None),
        ([b'{"ts": 253402300800}'], PayloadFormat(event_time="ts", event_time_unit="s"), None),
        ([b'{"ts": 12}'], PayloadFormat(event_time="ts", event_time_unit="iso"), None),
        ([b'{"_key": "mine"}'], PayloadFormat(), None),
        ([b'{"device": "x"}'], PayloadFormat(), TopicPattern("t/{device}")),
    ],
)
def test_what_the_columnar_path_leaves_to_the_row_path(payloads, fmt, pattern):
    from headrace.stream.payload import _parse_columnar

    messages = [Message("t/d1", p, NOW, False) for p in payloads]
    assert (
        _parse_columnar(["t/d1"] * len(payloads), payloads, [NOW] * len(payloads), [False], fmt, pattern)
        is None
    )
    parse_messages(messages, fmt, pattern)  # and the row path answers
