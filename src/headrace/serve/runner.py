"""A real uvicorn server on a free local port, in a background thread: for the demo, tests and
benchmarks that need HTTP over a socket without a second process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..errors import ServiceUnavailable

__all__ = ["UVICORN_OPTIONS", "free_port", "serve_in_thread"]

# How every headrace server runs under uvicorn: uvloop, httptools, no access log (metrics count).
UVICORN_OPTIONS: dict[str, Any] = {"loop": "uvloop", "http": "httptools", "access_log": False}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int | None = None, timeout: float = 60.0
) -> Iterator[str]:
    """Run ``app`` under uvicorn (uvloop, httptools) until the block ends; yields its base URL."""
    import uvicorn

    port = port or free_port(host)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        **UVICORN_OPTIONS,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ServiceUnavailable(
                f"the server on {host}:{port} did not start", hint="see the log above; is the port free?"
            )
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
