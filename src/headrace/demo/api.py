"""A small REST API of orders, served in-process on loopback: what the demo (and tests) ingest from.

Every pagination style the HTTP source knows has an endpoint over the same records, each honouring
``updated_since`` (records updated at or after it, ordered by ``updated_at`` then ``id``):

- ``GET /orders?page=N&per_page=K``: ``{"data": [...], "meta": {"page": N, "total_pages": T}}``
- ``GET /orders/offset?offset=O&limit=L``: ``{"items": [...], "total": T}``
- ``GET /orders/cursor?cursor=C``: ``{"records": [...], "next_cursor": "..." | null}``
- ``GET /orders/link?page=N``: a bare list, and ``Link: <...>; rel="next"``
- ``GET /orders/next?page=N``: ``{"results": [...], "next": "/orders/next?page=N+1" | null}``
- ``POST /orders/search`` with ``{"page": N, "per_page": K}``: like ``/orders``
- ``POST /oauth/token`` (client credentials) when the API is built with ``client_secret``.

Records are nested (a customer object, a list of items) to show flattening. ``DemoApi.insert`` and
``DemoApi.touch`` add and update records between runs, for incremental loads; ``save`` and
``load`` keep them in the demo project's ``data/orders.json``, so that the API the demo starts from
that folder later (``headrace demo --services``) serves the same orders.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import random
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import ServiceUnavailable

__all__ = ["DemoApi", "serve", "serve_orders"]

_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
_PRODUCTS = ["router", "modem", "sim", "phone", "tablet", "cable"]
_CITIES = ["Lisbon", "Porto", "Braga", "Faro", "Coimbra"]


@dataclass
class DemoApi:
    """The records and the app serving them. ``token``: a bearer token every call must carry;
    ``client_id``/``client_secret``: OAuth2 client credentials that ``/oauth/token`` exchanges for it."""

    count: int = 250
    per_page: int = 50
    seed: int = 7
    token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    clock: dt.datetime = _EPOCH
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        if not self.records:
            self.insert(self.count)
        if self.client_secret and not self.token:
            self.token = secrets.token_urlsafe(16)

    # -- data -----------------------------------------------------------------------------------
    def _tick(self) -> str:
        self.clock += dt.timedelta(seconds=1)
        return self.clock.isoformat().replace("+00:00", "Z")

    def insert(self, n: int) -> list[int]:
        """Add ``n`` new orders; returns their ids."""
        with self._lock:
            start = len(self.records) + 1
            for i in range(start, start + n):
                items = [
                    {"sku": self._rng.choice(_PRODUCTS), "qty": self._rng.randint(1, 3)}
                    for _ in range(self._rng.randint(0, 3))
                ]
                self.records.append(
                    {
                        "id": i,
                        "status": self._rng.choice(["new", "paid", "shipped"]),
                        "amount": round(self._rng.uniform(5, 500), 2),
                        "customer": {"id": 1000 + i % 37, "city": self._rng.choice(_CITIES)},
                        "items": items,
                        "updated_at": self._tick(),
                    }
                )
            return list(range(start, start + n))

    def touch(self, ids: list[int], status: str = "refunded") -> None:
        """Update orders: a new status and a newer ``updated_at``."""
        with self._lock:
            for i in ids:
                record = self.records[i - 1]
                record["status"] = status
                record["updated_at"] = self._tick()

    def select(self, since: str | None) -> list[dict[str, Any]]:
        with self._lock:
            rows = [r for r in self.records if since is None or r["updated_at"] >= since]
        return sorted(rows, key=lambda r: (r["updated_at"], r["id"]))

    def save(self, path: Path) -> None:
        with self._lock:
            doc = {"clock": self.clock.isoformat(), "records": self.records}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path, **kwargs: Any) -> DemoApi:
        doc = json.loads(path.read_text(encoding="utf-8"))
        clock = dt.datetime.fromisoformat(doc["clock"])
        return cls(records=doc["records"], clock=clock, count=len(doc["records"]), **kwargs)

    # -- the app --------------------------------------------------------------------------------
    def app(self) -> Starlette:
        async def page_number(request: Request) -> Response:
            denied = self._denied(request)
            if denied is not None:
                return denied
            q = request.query_params
            return JSONResponse(self._page_doc(q.get("updated_since"), q.get("page"), q.get("per_page")))

        async def search(request: Request) -> Response:
            denied = self._denied(request)
            if denied is not None:
                return denied
            body = await request.json()
            return JSONResponse(
                self._page_doc(body.get("updated_since"), body.get("page"), body.get("per_page"))
            )

        async def offset(request: Request) -> Response:
            denied = self._denied(request)
            if denied is not None:
                return denied
            q = request.query_params
            rows = self.select(q.get("updated_since"))
            start, limit = int(q.get("offset", 0)), int(q.get("limit", self.per_page))
            return JSONResponse({"items": rows[start : start + limit], "total": len(rows)})

        async def cursor(request: Request) -> Response:
            denied = self._denied(request)
            if denied is not None:
                return denied
            q = request.query_params
            rows = self.select(q.get("updated_since"))
            start = int(base64.urlsafe_b64decode(q["cursor"]).decode()) if q.get("cursor") else 0
            end = start + self.per_page
            nxt = base64.urlsafe_b64encode(str(end).encode()).decode() if end < len(rows) else None
            return JSONResponse({"records": rows[start:end], "next_cursor": nxt})

        async def link(request: Request) -> Response:
            denied = self._denied(request)
            if denied is not None:
                return denied
            q = request.query_params
            rows = self.select(q.get("updated_since"))
            page = int(q.get("page", 1))
            chunk = rows[(page - 1) * self.per_page : page * self.per_page]
            headers = {}
            if page * self.per_page < len(rows):
                nxt = request.url.include_query_params(page=page + 1)
                headers["Link"] = f'<{nxt}>; rel="next"'
            return JSONResponse(chunk, headers=headers)

        async def next_url(request: Request) -> Response:
            denied = self._denied(request)
            if denied is not None:
                return denied
            q = request.query_params
            rows = self.select(q.get("updated_since"))
            page = int(q.get("page", 1))
            chunk = rows[(page - 1) * self.per_page : page * self.per_page]
            nxt = None
            if page * self.per_page < len(rows):
                nxt = str(request.url.include_query_params(page=page + 1).replace(scheme="", netloc=""))
            return JSONResponse({"results": chunk, "next": nxt})

        async def token(request: Request) -> Response:
            expected = f"{self.client_id}:{self.client_secret}"
            given = request.headers.get("authorization", "")
            form = await request.form()
            ok = given == "Basic " + base64.b64encode(expected.encode()).decode() or (
                form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret
            )
            if not self.client_secret or not ok or form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            return JSONResponse({"access_token": self.token, "token_type": "Bearer", "expires_in": 3600})

        return Starlette(
            routes=[
                Route("/orders", page_number),
                Route("/orders/search", search, methods=["POST"]),
                Route("/orders/offset", offset),
                Route("/orders/cursor", cursor),
                Route("/orders/link", link),
                Route("/orders/next", next_url),
                Route("/oauth/token", token, methods=["POST"]),
            ]
        )

    def _page_doc(self, since: str | None, page: Any, per_page: Any) -> dict[str, Any]:
        rows = self.select(since)
        size = int(per_page or self.per_page)
        number = int(page or 1)
        total_pages = max(1, -(-len(rows) // size))
        chunk = rows[(number - 1) * size : number * size]
        return {"data": chunk, "meta": {"page": number, "total_pages": total_pages}}

    def _denied(self, request: Request) -> Response | None:
        if self.token is None:
            return None
        if request.headers.get("authorization") == f"Bearer {self.token}":
            return None
        return JSONResponse({"error": "unauthorized"}, status_code=401)


@contextmanager
def serve(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve an ASGI app on loopback in a thread (``port`` 0: a free one); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServiceUnavailable(
            f"the demo's orders API cannot listen on {host}:{port}: {exc.strerror}",
            hint="stop what uses that port, or change the port in orders_api.url in headrace.yaml",
        ) from None
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="error", lifespan="off", http="h11", ws="none", access_log=False)
    server = uvicorn.Server(config)

    def run() -> None:
        asyncio.run(server.serve(sockets=[sock]))

    thread = threading.Thread(target=run, name="headrace-demo-api", daemon=True)
    thread.start()
    deadline = 200
    while not server.started and thread.is_alive() and deadline:
        threading.Event().wait(0.025)
        deadline -= 1
    if not server.started:
        sock.close()
        raise ServiceUnavailable("the local demo API did not start", hint="rerun with -v to see why")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


@contextmanager
def serve_orders(url: str, store: Path) -> Iterator[DemoApi]:
    """The demo project's orders API at the address of its ``orders_api`` source (``url``), over the
    orders kept in ``store`` (made on first use); what changed is saved back when it stops."""
    from urllib.parse import urlsplit

    where = urlsplit(url)
    api = DemoApi.load(store, per_page=40) if store.exists() else DemoApi(count=240, per_page=40)
    try:
        with serve(api.app(), where.hostname or "127.0.0.1", where.port or 0):
            yield api
    finally:
        api.save(store)
