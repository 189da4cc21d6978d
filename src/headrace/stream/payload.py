"""From raw messages to rows: payload decoding, topic levels as columns, event time, message keys.

Pure functions over lists of messages, so they can be tested without a broker. A message that cannot be
turned into rows becomes a *failure* (``Batch.failures``): its topic, its raw bytes in base64 and the
reason, bound for the quarantine table; one bad payload never stops the others.

Every row gets four columns besides its payload fields and topic levels:

- ``event_time``: the payload's own timestamp (``payload.event_time`` names the field; numbers are
  epoch seconds, milliseconds or microseconds by magnitude, strings ISO 8601), or the receive time;
- ``_topic``: the MQTT topic or NATS subject the message came on;
- ``_received_at``: when the worker received it (UTC);
- ``_key``: the message key that removes duplicates: a hash of the ``key`` fields when the source
  names them, else a hash of topic and payload (and the position inside a JSON array).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import polars as pl

__all__ = [
    "KEY_COLUMN",
    "RECEIVED_COLUMN",
    "TOPIC_COLUMN",
    "Message",
    "ParsedBatch",
    "PayloadFormat",
    "TopicPattern",
    "parse_columns",
    "parse_messages",
]

TOPIC_COLUMN = "_topic"
RECEIVED_COLUMN = "_received_at"
KEY_COLUMN = "_key"
EVENT_TIME_COLUMN = "event_time"


@dataclass(frozen=True)
class Message:
    """One message as it came off the wire. ``token`` is what the transport needs to acknowledge it."""

    topic: str
    payload: bytes
    received_at: float  # epoch seconds
    dup: bool = False  # the transport says it may have been delivered before (MQTT DUP, NATS redelivery)
    token: Any = None


@dataclass(frozen=True)
class PayloadFormat:
    """How payloads are decoded (built from the source spec's ``payload`` options)."""

    format: str = "auto"  # auto | json | csv
    csv_columns: tuple[str, ...] = ()
    csv_delimiter: str = ","
    event_time: str | None = None
    event_time_unit: str = "auto"  # auto | s | ms | us | iso
    key: tuple[str, ...] = ()


@dataclass
class ParsedBatch:
    frame: pl.DataFrame
    failures: list[dict[str, Any]]
    suspect_keys: set[str]  # keys of rows from messages flagged as possible redeliveries


class TopicPattern:
    """``plant/{site}/sensors/{device}``: topic levels to columns.

    ``{name}`` captures one level into column ``name``, ``+`` matches any one level, a final ``#``
    matches any number of remaining levels; other levels must match literally. The separator is ``/``
    for MQTT and ``.`` for NATS subjects.
    """

    _FIELD = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")

    def __init__(self, pattern: str, separator: str = "/") -> None:
        self.pattern = pattern
        self.separator = separator
        self.levels: list[tuple[str, str]] = []  # (kind, value): field | any | rest | literal
        levels = pattern.split(separator)
        for i, level in enumerate(levels):
            match = self._FIELD.match(level)
            if match:
                self.levels.append(("field", match.group(1)))
            elif level in ("+", "*"):
                self.levels.append(("any", level))
            elif level in ("#", ">"):
                if i != len(levels) - 1:
                    raise ValueError(f"{level!r} may only be the last level of a topic pattern")
                self.levels.append(("rest", level))
            elif "{" in level or "}" in level:
                raise ValueError(f"topic pattern level {level!r} is not a {{name}} field")
            else:
                self.levels.append(("literal", level))
        self.fields = [value for kind, value in self.levels if kind == "field"]
        self._cache: dict[str, dict[str, str] | None] = {}

    def match(self, topic: str) -> dict[str, str] | None:
        """The captured levels, or None when the topic does not fit the pattern."""
        cached = self._cache.get(topic, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        result = self._match(topic)
        if len(self._cache) < 100_000:  # topics repeat (one per device): cache, with a bound
            self._cache[topic] = result
        return result

    def _match(self, topic: str) -> dict[str, str] | None:
        parts = topic.split(self.separator)
        out: dict[str, str] = {}
        for i, (kind, value) in enumerate(self.levels):
            if kind == "rest":
                return out
            if i >= len(parts):
                return None
            if kind == "field":
                out[value] = parts[i]
            elif kind == "literal" and parts[i] != value:
                return None
        return out if len(parts) == len(self.levels) else None


_MISSING = object()


def message_key(topic: str, payload: bytes, index: int | None = None) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(topic.encode("utf-8", "surrogateescape"))
    h.update(b"\x00")
    h.update(payload)
    if index is not None:
        h.update(b"\x00%d" % index)
    return h.hexdigest()


def _fields_key(row: dict[str, Any], fields: Sequence[str]) -> str:
    text = orjson.dumps([row.get(f) for f in fields], option=orjson.OPT_NON_STR_KEYS)
    return hashlib.blake2b(text, digest_size=16).hexdigest()


def _decode(payload: bytes, fmt: PayloadFormat) -> list[dict[str, Any]]:
    """The rows in one payload; raises ValueError with the reason when there are none to be had."""
    head = payload.lstrip()[:1]
    kind = fmt.format
    if kind == "auto":
        kind = "json" if head in (b"{", b"[") else "csv"
    if kind == "json":
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON ({str(exc).splitlines()[0][:120]})") from None
        if isinstance(doc, dict):
            return [doc]
        if isinstance(doc, list) and doc and all(isinstance(d, dict) for d in doc):
            return doc
        raise ValueError("JSON payload is not an object or a non-empty array of objects")
    if not fmt.csv_columns:
        raise ValueError("payload is not JSON and the source names no payload.csv_columns")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("payload is neither JSON nor UTF-8 text") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("empty payload")
    rows = []
    for values in csv.reader(lines, delimiter=fmt.csv_delimiter):
        if len(values) != len(fmt.csv_columns):
            raise ValueError(
                f"CSV line has {len(values)} fields, payload.csv_columns names {len(fmt.csv_columns)}"
            )
        rows.append({name: _scalar(v) for name, v in zip(fmt.csv_columns, values, strict=True)})
    return rows


def _scalar(text: str) -> Any:
    """A CSV field as int, float or string (rules in ``columns`` coerce further)."""
    value = text.strip()
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def _event_time(value: Any, unit: str) -> datetime:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float):
        seconds = float(value)
        if unit == "auto":
            magnitude = abs(seconds)
            seconds = seconds / 1e6 if magnitude > 1e14 else seconds / 1e3 if magnitude > 1e11 else seconds
        elif unit == "ms":
            seconds /= 1e3
        elif unit == "us":
            seconds /= 1e6
        elif unit == "iso":
            raise ValueError("a number where an ISO 8601 string was expected")
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        if unit not in ("auto", "iso"):
            return _event_time(float(value), unit)
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    raise ValueError(f"a {type(value).__name__} is not a time")


def failure(message: Message, reason: str, position: int | None = None) -> dict[str, Any]:
    """A quarantine record for a message (or one record of it) that could not become a row."""
    return {
        "origin": message.topic,
        "position": position,
        "raw": base64.b64encode(message.payload).decode("ascii"),
        "reason": reason,
        RECEIVED_COLUMN: datetime.fromtimestamp(message.received_at, UTC),
        KEY_COLUMN: message_key(message.topic, message.payload, position),
    }


def parse_messages(
    messages: Iterable[Message], fmt: PayloadFormat, pattern: TopicPattern | None = None
) -> ParsedBatch:
    """Rows (one frame) and failures from a list of messages, in arrival order."""
    messages = list(messages)
    return parse_columns(
        [m.topic for m in messages],
        [m.payload for m in messages],
        [m.received_at for m in messages],
        [m.dup for m in messages],
        fmt,
        pattern,
    )


def parse_columns(
    topics: Sequence[str],
    payloads: Sequence[bytes],
    received_at: Sequence[float],
    dups: Sequence[bool],
    fmt: PayloadFormat,
    pattern: TopicPattern | None = None,
) -> ParsedBatch:
    """:func:`parse_messages` over the messages' fields as parallel lists (what a transport holds).

    Batches where every message gives at most one row (the usual case: one JSON object per message)
    take a columnar path: payloads are decoded one by one (orjson, as below), the frame is built from
    the payload fields alone and the topic levels, event time, receive time and key are added as whole
    columns. Anything that path does not cover (arrays of several rows, topic levels or reserved
    columns that are also payload fields, event times that are not numbers or not valid times) goes
    through the row-by-row path; both give the same frame, failures and suspect keys.
    """
    parsed = _parse_columnar(topics, payloads, received_at, dups, fmt, pattern)
    if parsed is not None:
        return parsed
    return _parse_rows(
        [Message(t, p, r, d) for t, p, r, d in zip(topics, payloads, received_at, dups, strict=True)],
        fmt,
        pattern,
    )


_RESERVED = frozenset({EVENT_TIME_COLUMN, TOPIC_COLUMN, RECEIVED_COLUMN, KEY_COLUMN})
# datetime's range in epoch seconds, as datetime.fromtimestamp(..., UTC) accepts it
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_800


def _parse_columnar(
    topics: Sequence[str],
    payloads: Sequence[bytes],
    received_at: Sequence[float],
    dups: Sequence[bool],
    fmt: PayloadFormat,
    pattern: TopicPattern | None,
) -> ParsedBatch | None:
    """The columnar path of :func:`parse_columns`, or None where the row-by-row path must decide."""
    matches = {t: pattern.match(t) for t in set(topics)} if pattern is not None else None
    loads = orjson.loads
    rows: list[dict[str, Any]] = []
    kept: list[int] = []
    failures: list[dict[str, Any]] = []
    suspects: set[str] = set()

    def fail(i: int, reason: str) -> None:
        record = failure(Message(topics[i], payloads[i], received_at[i], dups[i]), reason)
        failures.append(record)
        if dups[i]:
            suspects.add(record[KEY_COLUMN])

    for i, payload in enumerate(payloads):
        doc: Any = None
        if fmt.format != "csv" and payload[:1] == b"{":
            try:
                doc = loads(payload)  # what _decode does for such a payload
            except orjson.JSONDecodeError:
                doc = None
        if type(doc) is not dict:
            try:
                decoded = _decode(payload, fmt)
            except ValueError as exc:
                fail(i, str(exc))
                continue
            if len(decoded) != 1:
                return None  # several rows from one message: their positions go into the keys
            doc = decoded[0]
        if matches is not None and matches[topics[i]] is None:
            assert pattern is not None
            fail(i, f"topic does not match topic_pattern {pattern.pattern!r}")
            continue
        rows.append(doc)
        kept.append(i)
    if not rows:
        return ParsedBatch(frame=pl.DataFrame(), failures=failures, suspect_keys=suspects)

    levels = pattern.fields if pattern is not None else []
    times: pl.Series | None = None
    if fmt.event_time is not None:
        if fmt.event_time in levels:
            return None
        values = [row.get(fmt.event_time) for row in rows]
        if not set(map(type, values)) <= {int, float, type(None)}:
            return None  # strings, booleans and the like: _event_time decides row by row
        numbers = pl.Series(values, dtype=pl.Float64, strict=False)
        if numbers.null_count() != values.count(None):
            return None  # an integer past 64 bits
        times = _epoch_micros(numbers, fmt.event_time_unit)
        if times is None:
            return None

    frame = pl.from_dicts(rows, infer_schema_length=None)
    if frame.height != len(rows) or _RESERVED.intersection(frame.columns):
        return None
    if any(name in frame.columns for name in levels):
        return None  # a payload field of a level's name wins row by row (setdefault)
    kept_topics = [topics[i] for i in kept] if len(kept) != len(topics) else list(topics)

    if fmt.key:
        keys = []
        for i, row in zip(kept, rows, strict=True):
            found = matches[topics[i]] if matches is not None else None
            full = {**found, **row} if found else row
            keys.append(_fields_key(full, fmt.key))
    else:
        keys = [message_key(topics[i], payloads[i]) for i in kept]
    suspects.update(k for i, k in zip(kept, keys, strict=True) if dups[i])

    received = _epoch_micros(pl.Series([received_at[i] for i in kept], dtype=pl.Float64), "s")
    if received is None:
        return None
    topic = pl.Series(TOPIC_COLUMN, kept_topics, dtype=pl.String)
    if times is not None:
        when = pl.Series(EVENT_TIME_COLUMN, times).fill_null(received)
    else:
        when = received.alias(EVENT_TIME_COLUMN)
    columns = [
        when.cast(pl.Datetime("us", "UTC")),
        topic,
        received.cast(pl.Datetime("us", "UTC")).alias(RECEIVED_COLUMN),
        pl.Series(KEY_COLUMN, keys, dtype=pl.String),
    ]
    if levels:
        assert matches is not None
        fitting = {t: m for t, m in matches.items() if m is not None}
        columns = [
            *(
                topic.replace_strict({t: m[name] for t, m in fitting.items()}, return_dtype=pl.String).alias(
                    name
                )
                for name in levels
            ),
            *columns,
        ]
    first = len(rows[0])
    order = [*frame.columns[:first], *levels, *_RESERVED_ORDER, *frame.columns[first:]]
    frame = frame.with_columns(columns).select(order)
    return ParsedBatch(frame=frame, failures=failures, suspect_keys=suspects)


_RESERVED_ORDER = (EVENT_TIME_COLUMN, TOPIC_COLUMN, RECEIVED_COLUMN, KEY_COLUMN)


def _epoch_micros(values: pl.Series, unit: str) -> pl.Series | None:
    """Epoch numbers as microseconds (Int64), as ``datetime.fromtimestamp(_event_time(v), UTC)`` gives
    them: the same float divisions (numpy's are IEEE divisions, as Python's; polars multiplies by the
    reciprocal, which can differ in the last bit), then CPython's rounding (modf, fraction times 1e6
    rounded half to even). None when one is not finite or out of datetime's range: the row-by-row path
    then fails that row."""
    nulls = values.is_null()
    seconds = values.fill_null(0.0).cast(pl.Float64).to_numpy()
    if unit == "auto":
        magnitude = np.abs(seconds)
        seconds = np.where(
            magnitude > 1e14, seconds / 1e6, np.where(magnitude > 1e11, seconds / 1e3, seconds)
        )
    elif unit == "ms":
        seconds = seconds / 1e3
    elif unit == "us":
        seconds = seconds / 1e6
    elif unit == "iso" and nulls.sum() != len(values):
        return None  # numbers where ISO strings were expected: failures, row by row
    if not (np.isfinite(seconds).all() and (np.abs(seconds) < 1e12).all()):
        return None
    fraction, whole = np.modf(seconds)
    micros = whole.astype(np.int64) * 1_000_000 + np.rint(fraction * 1e6).astype(np.int64)
    if not ((micros >= _MIN_SECONDS * 1_000_000) & (micros < _MAX_SECONDS * 1_000_000)).all():
        return None
    out = pl.Series("us", micros, dtype=pl.Int64)
    return out.set(nulls, None) if nulls.any() else out


def _parse_rows(messages: list[Message], fmt: PayloadFormat, pattern: TopicPattern | None) -> ParsedBatch:
    """The row-by-row path of :func:`parse_columns` (every case, one Python dict per row)."""
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    suspects: set[str] = set()

    def fail(msg: Message, reason: str, position: int | None = None) -> None:
        record = failure(msg, reason, position)
        failures.append(record)
        if msg.dup:
            suspects.add(record[KEY_COLUMN])

    for msg in messages:
        try:
            decoded = _decode(msg.payload, fmt)
        except ValueError as exc:
            fail(msg, str(exc))
            continue
        levels: dict[str, str] = {}
        if pattern is not None:
            matched = pattern.match(msg.topic)
            if matched is None:
                fail(msg, f"topic does not match topic_pattern {pattern.pattern!r}")
                continue
            levels = matched
        received = datetime.fromtimestamp(msg.received_at, UTC)
        many = len(decoded) > 1
        for index, row in enumerate(decoded):
            position = index if many else None
            if fmt.event_time is not None and row.get(fmt.event_time) is not None:
                try:
                    when = _event_time(row[fmt.event_time], fmt.event_time_unit)
                except (ValueError, OverflowError, OSError) as exc:
                    fail(msg, f"event time field {fmt.event_time!r}: {exc}", position)
                    continue
            else:
                when = received
            for name, value in levels.items():
                row.setdefault(name, value)
            key = _fields_key(row, fmt.key) if fmt.key else message_key(msg.topic, msg.payload, position)
            row[EVENT_TIME_COLUMN] = when
            row[TOPIC_COLUMN] = msg.topic
            row[RECEIVED_COLUMN] = received
            row[KEY_COLUMN] = key
            if msg.dup:
                suspects.add(key)
            rows.append(row)
    frame = pl.from_dicts(rows, infer_schema_length=None) if rows else pl.DataFrame()
    return ParsedBatch(frame=frame, failures=failures, suspect_keys=suspects)
