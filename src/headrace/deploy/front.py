"""The stable address of a local deployment: a small reverse proxy in front of the live slot.

``headrace deploy MODEL --target local`` starts each version on a port of its own (the standby keeps
answering there, for smoke tests and an instant rollback) and this front on one port that survives
versions. The front reads the switch file (``.headrace/deploy/local/<model>.json``, replaced
atomically by the deploy) and sends every request to the slot it names as live; a switch is that one
file rename, so each request goes wholly to the old or wholly to the new version. A request whose
connection to the upstream fails before it was sent (the old slot stopping just after a switch) is
sent again to the slot the file names now; nothing else is retried.

``python -m headrace.deploy.front --state FILE --port PORT`` runs it (raw ASGI under uvicorn, httpx
with a pool of keep-alive connections to the slots). Each answer carries ``x-headrace-slot`` (the
version that answered).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Front", "main"]

log = logging.getLogger("headrace.deploy.front")

# hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business, never forwarded
_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"content-length",
}
_MAX_BODY = 16 * 1024 * 1024


class Front:
    """The ASGI app of the front: every request to the live slot of the switch file."""

    def __init__(self, state: str | Path, *, timeout: float = 60.0) -> None:
        self.state = Path(state)
        self.timeout = timeout
        self._key: tuple[int, int] | None = None
        self._live: tuple[str, int] | None = None  # (base url, version)
        self._client: httpx.AsyncClient | None = None

    def live(self) -> tuple[str, int] | None:
        """The live slot, re-read when the switch file was replaced (one stat per request)."""
        try:
            stat = self.state.stat()
        except FileNotFoundError:
            self._key, self._live = None, None
            return None
        key = (stat.st_ino, stat.st_mtime_ns)
        if key != self._key:
            try:
                doc = json.loads(self.state.read_text())
            except (OSError, ValueError):  # being replaced: keep the last answer
                return self._live
            live = doc.get("live")
            self._live = (f"http://127.0.0.1:{int(live['port'])}", int(live["version"])) if live else None
            self._key = key
        return self._live

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            if len(body) > _MAX_BODY:
                await self._plain(send, 413, "the request body is over 16 MiB")
                return
            if not message.get("more_body"):
                break
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        target = path.decode("latin-1") + (("?" + query.decode("latin-1")) if query else "")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        assert self._client is not None
        for attempt in (1, 2):
            live = self.live()
            if live is None:
                await self._plain(send, 503, "no version is live here; deploy one with 'headrace deploy'")
                return
            base, version = live
            try:
                response = await self._client.request(
                    scope["method"], base + target, content=bytes(body), headers=headers
                )
            except httpx.ConnectError:
                if attempt == 1:  # nothing was sent: the slot just stopped; ask the file again
                    self._key = None
                    continue
                await self._plain(send, 502, f"the live version (v{version}) does not answer")
                return
            except httpx.HTTPError as exc:
                await self._plain(send, 502, f"the live version (v{version}) failed: {type(exc).__name__}")
                return
            out = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in response.headers.multi_items()
                if k.encode("latin-1").lower() not in _HOP
            ]
            out.append((b"content-length", str(len(response.content)).encode()))
            out.append((b"x-headrace-slot", str(version).encode()))
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            await send({"type": "http.response.body", "body": response.content})
            return

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = httpx.AsyncClient(
                    timeout=self.timeout,
                    limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _plain(send: Any, status: int, text: str) -> None:
        body = json.dumps({"detail": text, "error": "FrontError"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="headrace-front", description="The stable address of a local deploy."
    )
    parser.add_argument("--state", required=True, help="the switch file naming the live slot")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    log.info("front of %s on %s:%s (pid %s)", args.state, args.host, args.port, os.getpid())
    uvicorn.run(Front(args.state), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
