"""Spec classes for the real-time sources: ``kind: mqtt`` and ``kind: nats`` (JetStream).

Both share :class:`IngestSpec` (dataset, rules per column, cleansing, key, quarantine) with the batch
sources, and add how to reach the broker, how to decode payloads and how to cut micro-batches.
Passwords and tokens are ``SecretStr``: they print as ``**********`` in a repr, a log line or an error.
Plaintext to a broker that is not on this machine is refused unless ``allow_insecure: true``.
"""

from __future__ import annotations

import ipaddress
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from .base import ProjectPath, Spec
from .sources import IngestSpec

__all__ = ["MqttSource", "NatsSource", "PayloadOptions", "StreamSpec", "TlsOptions"]


class TlsOptions(Spec):
    """TLS to the broker: ``ca_file`` (PEM) to trust instead of the system's CAs; ``cert_file`` and
    ``key_file`` for mutual TLS (a client certificate). ``check_hostname: false`` only for brokers
    whose certificate names another host (not recommended)."""

    ca_file: ProjectPath | None = None
    cert_file: ProjectPath | None = None
    key_file: ProjectPath | None = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _pair(self) -> TlsOptions:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate)")
        return self


class PayloadOptions(Spec):
    """How payloads are decoded. ``format``: ``auto`` (JSON when the payload starts with ``{`` or ``[``,
    otherwise a CSV line), ``json`` or ``csv``. A JSON object is one row, a JSON array of objects many.
    ``csv_columns`` names the fields of a CSV line in order. ``event_time``: the payload field holding
    the reading's time (epoch seconds, milliseconds or microseconds, or ISO 8601; ``event_time_unit``
    pins which); the receive time when absent."""

    format: Literal["auto", "json", "csv"] = "auto"
    csv_columns: list[str] = Field(default_factory=list)
    csv_delimiter: str = Field(default=",", min_length=1, max_length=1)
    event_time: str | None = None
    event_time_unit: Literal["auto", "s", "ms", "us", "iso"] = "auto"

    @model_validator(mode="after")
    def _csv(self) -> PayloadOptions:
        if self.format == "csv" and not self.csv_columns:
            raise ValueError("format csv needs csv_columns (the field names in order)")
        return self


class StreamSpec(IngestSpec):
    """What the MQTT and NATS sources share: decoding, micro-batching, de-duplication, upkeep.

    ``topic_pattern`` maps topic levels to columns (``plant/{site}/sensors/{device}``; ``+`` skips a
    level, a final ``#`` the rest); a message whose topic does not fit is quarantined. A batch is
    committed when it holds ``batch_rows`` rows or is ``batch_seconds`` old, whichever comes first;
    ``max_pending`` bounds the messages held in memory (backpressure: the worker stops taking more, and
    the broker keeps them). ``key`` (from the common rules) names the payload fields that identify a
    reading; without it, a hash of topic and payload does. ``dedup_memory`` keys of committed rows are
    kept to drop redeliveries; redelivered messages older than that are checked against the dataset
    itself over the last ``dedup_lookback_hours``. Small files are compacted every
    ``compact_every_seconds`` (0: never). ``metrics_port`` serves Prometheus metrics (worker ``i`` of
    ``--workers N`` on ``metrics_port + i``).
    """

    topic_pattern: str | None = None
    payload: PayloadOptions = Field(default_factory=PayloadOptions)
    batch_rows: int = Field(default=10_000, ge=1)
    batch_seconds: float = Field(default=1.0, gt=0)
    max_pending: int = Field(default=100_000, ge=1)
    dedup_memory: int = Field(default=1_000_000, ge=0)
    dedup_lookback_hours: float = Field(default=168.0, gt=0)
    compact_every_seconds: float = Field(default=600.0, ge=0)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    allow_insecure: bool = False
    tls: TlsOptions | None = None
    username: str | None = None
    password: SecretStr | None = None

    @model_validator(mode="after")
    def _pattern(self) -> StreamSpec:
        if self.topic_pattern is not None:
            from ..stream.payload import TopicPattern

            separator = "." if getattr(self, "kind", "") == "nats" else "/"
            TopicPattern(self.topic_pattern, separator)  # raises ValueError with the reason
        return self


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MqttSource(StreamSpec):
    """An MQTT broker (3.1.1 or 5): ``headrace stream`` subscribes and commits what arrives.

    ``broker``: ``mqtt://HOST[:1883]`` or ``mqtts://HOST[:8883]`` (TLS; ``tls`` for a CA file or a client
    certificate). ``topics``: subscription filters. ``qos`` 0 (at most once), 1 or 2 (at least once into
    the dataset, duplicates removed by key). The session is persistent (``client_id``, no clean start,
    ``session_expiry_seconds``), so messages sent while the worker is down arrive when it comes back, up
    to the broker's queue limit (Mosquitto: ``max_queued_messages``). Messages are acknowledged only
    after the batch holding them is committed. ``max_inflight``: unacknowledged messages the broker may
    send at once: with MQTT 5 it is sent as Receive Maximum (default 65535, the most there is);
    with 3.1.1 the broker decides (Mosquitto's ``max_inflight_messages``, 20 by default) and a
    batch is committed whenever this many are pending, so set it to the broker's value.
    ``shared_group``: subscribe as ``$share/GROUP/TOPIC`` (always so with ``--workers N`` > 1).
    """

    kind: Literal["mqtt"]
    broker: str
    topics: list[str] = Field(min_length=1)
    qos: Literal[0, 1, 2] = 1
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None
    shared_group: str | None = None
    keepalive: int = Field(default=30, ge=5)
    session_expiry_seconds: int = Field(default=7 * 24 * 3600, ge=0)
    max_inflight: int | None = Field(default=None, ge=1, le=65535)
    connect_timeout: float = Field(default=10.0, gt=0)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: object) -> object:
        aliases: dict[object, str] = {5: "5", 3.1: "3.1.1", 311: "3.1.1", "v5": "5", "3.1": "3.1.1"}
        return aliases.get(value, value)

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        parts = urlsplit(value if "://" in value else "mqtt://" + value)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError("a broker URL mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        if not parts.hostname:
            raise ValueError("a broker URL with a host: mqtt://HOST[:PORT]")
        if parts.username or parts.password:
            raise ValueError("a broker URL without credentials (use username: and password: ${ENV})")
        try:
            parts.port  # noqa: B018  (raises for a bad port)
        except ValueError:
            raise ValueError("a broker URL with a numeric port") from None
        return value if "://" in value else "mqtt://" + value

    @property
    def host(self) -> str:
        return urlsplit(self.broker).hostname or "127.0.0.1"

    @property
    def uses_tls(self) -> bool:
        return urlsplit(self.broker).scheme in ("mqtts", "ssl")

    @property
    def port(self) -> int:
        return urlsplit(self.broker).port or (8883 if self.uses_tls else 1883)

    @model_validator(mode="after")
    def _secure(self) -> MqttSource:
        if self.tls is not None and not self.uses_tls:
            raise ValueError("tls options need an mqtts:// broker URL")
        if not self.uses_tls and not _is_loopback(self.host) and not self.allow_insecure:
            raise ValueError(
                f"plaintext MQTT to {self.host} (not this machine) sends readings and credentials in "
                "the clear: use mqtts://, or set allow_insecure: true"
            )
        for topic in self.topics:
            if not topic or topic.startswith("$share/"):
                raise ValueError("topic filters without $share/ (use shared_group: NAME)")
        return self


class NatsSource(StreamSpec):
    """NATS JetStream: the same worker on a durable pull consumer, acknowledging after commit.

    ``servers``: ``nats://HOST:4222`` (or ``tls://``). ``stream``: the JetStream stream; with
    ``create_stream: true`` it is created (file storage) for ``subjects`` when absent. ``subjects``: the
    consumer's filter (one subject or wildcard). ``durable``: the consumer name (default
    ``headrace-<source>``); several workers on one durable share its messages. ``topic_pattern`` uses
    ``.`` between levels (``plant.{site}.{device}``). ``token`` or ``username``/``password`` authenticate.
    ``ack_wait_seconds``: how long a fetched message may stay unacknowledged before redelivery.
    """

    kind: Literal["nats"]
    servers: list[str] = Field(default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1)
    stream: str
    subjects: list[str] = Field(min_length=1)
    durable: str | None = None
    create_stream: bool = False
    token: SecretStr | None = None
    ack_wait_seconds: float = Field(default=60.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _secure(self) -> NatsSource:
        for server in self.servers:
            parts = urlsplit(server if "://" in server else "nats://" + server)
            if parts.scheme not in ("nats", "tls"):
                raise ValueError("servers as nats://HOST:PORT or tls://HOST:PORT")
            if parts.username or parts.password:
                raise ValueError("server URLs without credentials (use username/password or token)")
            secure = parts.scheme == "tls" or self.tls is not None
            if not secure and not _is_loopback(parts.hostname or "") and not self.allow_insecure:
                raise ValueError(
                    f"plaintext NATS to {parts.hostname} (not this machine): use tls:// or tls options, "
                    "or set allow_insecure: true"
                )
        return self
