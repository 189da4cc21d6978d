"""The NATS JetStream source: a durable pull consumer, acknowledged after the commit.

The same worker as MQTT runs over it: ``read()`` fetches up to ``batch_rows`` messages (or what came in
``batch_seconds``), and ``ack(batch)`` acknowledges each of them once the batch is committed. A message
not acknowledged within ``ack_wait_seconds`` (a worker killed mid-batch) is redelivered by JetStream
with a delivery count above one, which marks its key for the worker's look-up of committed keys.
Several workers on one durable consumer share its messages. The client is asyncio (nats-py); this
source owns a private event loop and drives it from the worker's thread.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..config.sources_stream import NatsSource
from ..errors import ConfigError, ServiceUnavailable, SourceError
from ..ingest.base import Batch
from .mqtt import StreamToken, payload_format
from .payload import Message, TopicPattern, parse_messages

__all__ = ["NatsStream"]

log = logging.getLogger("headrace.stream.nats")


class NatsStream:
    """A ``StreamingSource`` over a JetStream durable pull consumer."""

    def __init__(self, name: str, spec: NatsSource, *, durable: str | None = None) -> None:
        self.name = name
        self.spec = spec
        self.durable = durable or spec.durable or f"headrace-{name}"
        self.format = payload_format(spec)
        self.pattern = TopicPattern(spec.topic_pattern, separator=".") if spec.topic_pattern else None
        self.flush_at = spec.batch_rows
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: Any = None
        self._sub: Any = None
        self._stop = threading.Event()
        self.received = 0
        self.reconnects = 0

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None
        return self._loop.run_until_complete(coro)

    def start(self) -> None:
        """Connect and bind the durable consumer (once)."""
        if self._loop is not None:
            return
        self._loop = asyncio.new_event_loop()
        try:
            self._run(self._connect())
        except (ConfigError, SourceError):
            self.close()
            raise
        log.info(
            "source %s: consuming %s from stream %s as durable %s",
            self.name,
            ", ".join(self.spec.subjects),
            self.spec.stream,
            self.durable,
        )

    async def _connect(self) -> None:
        import nats
        from nats.js import api
        from nats.js.errors import NotFoundError

        spec = self.spec
        options: dict[str, Any] = {
            "servers": spec.servers,
            "connect_timeout": spec.connect_timeout,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 1,
            "allow_reconnect": True,
            "name": f"headrace-{self.name}",
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnect,
            "reconnected_cb": self._on_reconnect,
        }
        if spec.username is not None:
            options["user"] = spec.username
            options["password"] = spec.password.get_secret_value() if spec.password else None
        if spec.token is not None:
            options["token"] = spec.token.get_secret_value()
        if spec.tls is not None or any(s.startswith("tls://") for s in spec.servers):
            tls = spec.tls
            try:
                context = ssl.create_default_context(cafile=tls.ca_file if tls else None)
                if tls is not None and tls.cert_file:
                    context.load_cert_chain(tls.cert_file, tls.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"source {self.name!r}: TLS files cannot be loaded ({exc})") from None
            if tls is not None and not tls.check_hostname:
                context.check_hostname = False
            options["tls"] = context
        try:
            # the first connection must succeed: no endless retries before we ever talked to NATS
            probe = {k: v for k, v in options.items() if not k.endswith("_cb")}
            self._nc = await nats.connect(**{**probe, "max_reconnect_attempts": 0, "allow_reconnect": False})
        except Exception as exc:
            raise ServiceUnavailable(
                f"source {self.name!r}: NATS {', '.join(spec.servers)} is unreachable ({type(exc).__name__})",
                hint="check that nats-server runs (with -js) and the servers list is right",
            ) from None
        await self._nc.close()
        self._nc = await nats.connect(**options)
        js = self._nc.jetstream()
        try:
            await js.stream_info(spec.stream)
        except NotFoundError:
            if not spec.create_stream:
                raise SourceError(
                    f"source {self.name!r}: JetStream stream {spec.stream!r} does not exist",
                    hint="create it (nats stream add) or set create_stream: true",
                ) from None
            await js.add_stream(api.StreamConfig(name=spec.stream, subjects=list(spec.subjects)))
        config = api.ConsumerConfig(
            durable_name=self.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait_seconds,
            max_ack_pending=max(2 * spec.batch_rows, 1000),
            deliver_policy=api.DeliverPolicy.ALL,
        )
        if len(spec.subjects) > 1:
            config.filter_subjects = list(spec.subjects)
        self._sub = await js.pull_subscribe(
            spec.subjects[0],
            durable=self.durable,
            stream=spec.stream,
            config=config,
            pending_msgs_limit=max(2 * spec.batch_rows, 65536),
        )

    async def _on_error(self, exc: Exception) -> None:
        log.warning("source %s: NATS error: %s", self.name, type(exc).__name__)

    async def _on_disconnect(self) -> None:
        if not self._stop.is_set():
            log.warning("source %s: disconnected from NATS; reconnecting", self.name)

    async def _on_reconnect(self) -> None:
        self.reconnects += 1
        log.warning("source %s: reconnected to NATS", self.name)

    async def _fetch(self, n: int, timeout: float) -> list[Any]:
        import nats.errors

        try:
            return list(await self._sub.fetch(n, timeout=timeout))
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        except nats.errors.ConnectionClosedError as exc:
            raise ServiceUnavailable(f"source {self.name!r}: the NATS connection closed") from exc

    def read(self) -> Iterator[Batch]:
        if self._loop is None:
            self.start()
        spec = self.spec
        pending: list[Message] = []
        while True:
            stopping = self._stop.is_set()
            if not stopping:
                age = time.time() - pending[0].received_at if pending else 0.0
                wait = max(0.05, min(spec.batch_seconds - age, 0.5))
                try:
                    msgs = self._run(self._fetch(self.flush_at - len(pending), wait))
                except OSError as exc:  # a dropped connection: the client reconnects by itself
                    log.warning("source %s: fetch failed (%s); retrying", self.name, exc)
                    msgs = []
                    time.sleep(0.5)
                now = time.time()
                for m in msgs:
                    redelivered = False
                    try:
                        redelivered = m.metadata.num_delivered > 1
                    except Exception:  # not a JetStream message: treat as a possible redelivery
                        redelivered = True
                    pending.append(Message(m.subject, m.data, now, redelivered, m))
                self.received += len(msgs)
            if not pending:
                if stopping:
                    return
                continue
            full = len(pending) >= self.flush_at
            old = time.time() - pending[0].received_at >= spec.batch_seconds
            if full or old or stopping:
                messages, pending = pending, []
                yield self._batch(messages)

    def _batch(self, messages: list[Message]) -> Batch:
        parsed = parse_messages(messages, self.format, self.pattern)
        token = StreamToken(
            acks=[m.token for m in messages],
            messages=len(messages),
            suspect_keys=parsed.suspect_keys,
            first_received=messages[0].received_at,
        )
        return Batch(frame=parsed.frame, origin=f"nats:{self.name}", failures=parsed.failures, token=token)

    def ack(self, batch: Batch) -> None:
        token: StreamToken = batch.token
        if not token.acks or self._nc is None:
            return

        async def ack_all() -> None:
            for msg in token.acks:
                await msg.ack()
            await self._nc.flush(timeout=10)

        try:
            self._run(ack_all())
        except Exception as exc:  # unacknowledged: JetStream redelivers, the key drops the copy
            log.warning(
                "source %s: acknowledgement failed (%s); messages will be redelivered", self.name, exc
            )

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            if self._nc is not None and not self._nc.is_closed:
                # close, not drain: what was committed is acknowledged, the rest is redelivered
                loop.run_until_complete(self._nc.close())
        except Exception as exc:
            log.debug("source %s: close: %s", self.name, exc)
        finally:
            self._nc = self._sub = None
            loop.close()
