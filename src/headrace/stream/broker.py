"""An in-process MQTT broker (amqtt) on a free loopback port, for the demo only.

Production commands never start a broker: ``headrace stream`` connects to the one in headrace.yaml and
fails with a clear message when it is unreachable. The demo calls :func:`broker_reachable` first and
starts a :class:`LocalBroker` only when no broker answers on the usual port. amqtt speaks MQTT 3.1.1.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import warnings
from typing import Any

from ..errors import ServiceUnavailable

__all__ = ["LocalBroker", "broker_reachable", "free_port"]

log = logging.getLogger("headrace.stream.broker")


def broker_reachable(host: str = "127.0.0.1", port: int = 1883, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalBroker:
    """amqtt running on its own event loop in a daemon thread. Use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> LocalBroker:
        self._thread = threading.Thread(target=self._run, name="headrace-local-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            raise ServiceUnavailable(
                f"the in-process MQTT broker did not start on {self.host}:{self.port} ({self._error})",
                hint="install amqtt, or start a broker (mosquitto) on 127.0.0.1:1883",
            )
        log.info("in-process MQTT broker on %s", self.url)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _start(self) -> None:
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from amqtt.broker import Broker

            config = {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
            self._broker = Broker(config)
            await self._broker.start()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._broker is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop)
            try:
                future.result(timeout=10)
            except Exception as exc:  # shutting down anyway
                log.debug("broker shutdown: %s", exc)
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = self._broker = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
