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
``DemoApi.touch`` add and update records between runs, for incremental loads.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import random
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import ServiceUnavailable

__all__ = ["DemoApi", "serve"]

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
def serve(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve an ASGI app on a free loopback port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
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


# ----------------------------------------------------------------------------------- demo stages
def demo_http_stage(ctx: Any) -> list[str]:
    """The demo's ``http`` stage: serve the orders API on loopback and ingest it, twice (incremental)."""
    from ..config.sources_db import HttpSource
    from ..ingest.http import HttpReader
    from ..ingest.runner import ingest

    api = DemoApi(count=240, per_page=40)
    lines: list[str] = []
    with serve(api.app()) as base:
        spec = HttpSource(
            kind="http",
            url=f"{base}/orders/cursor",
            pagination={"type": "cursor", "cursor_path": "next_cursor"},  # type: ignore[arg-type]
            records_path="records",
            dataset="orders",
            incremental={"param": "updated_since", "field": "updated_at"},  # type: ignore[arg-type]
            batch_rows=100,
        )
        ws = ctx.ws
        first = ingest(
            HttpReader("orders_api", spec), spec, store=ws.store, meta=ws.meta, source_name="orders_api"
        )
        lines.append(
            f"local REST API at {base}: {first.rows_committed} orders in {len(first.batches)} batches "
            f"({api.records and len(api.records) // api.per_page} pages, cursor pagination)"
        )
        api.insert(12)
        api.touch([3, 7, 11])
        second = ingest(
            HttpReader("orders_api", spec, cursor=first.cursor_after),
            spec,
            store=ws.store,
            meta=ws.meta,
            source_name="orders_api",
        )
        lines.append(
            f"after 12 new and 3 updated orders, the incremental run read {second.rows_committed} "
            f"(since {json_value(second.cursor_before)})"
        )
    columns = ws.store.info("orders").columns
    lines.append(f"nested JSON flattened to columns: {', '.join(columns)}")
    ctx.facts["http"] = {"first": first.to_dict(), "second": second.to_dict()}
    return lines


def demo_sql_stage(ctx: Any) -> list[str]:
    """The demo's ``sql`` stage: a SQLite database of payments, loaded in full then incrementally."""
    import sqlite3

    from ..config.sources_db import SqlSource
    from ..ingest.runner import ingest, open_source

    path = ctx.folder / "data" / "payments.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    rng = random.Random(11)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE payments (id INTEGER PRIMARY KEY, customer TEXT, amount REAL, method TEXT, "
            "updated_at TEXT NOT NULL)"
        )
        stamp = _EPOCH
        rows = []
        for i in range(1, 501):
            stamp += dt.timedelta(minutes=rng.choice([0, 1, 2]))  # some share a timestamp
            rows.append(
                (
                    i,
                    f"C{rng.randint(1, 80):04d}",
                    round(rng.uniform(5, 200), 2),
                    rng.choice(["card", "debit", "transfer"]),
                    stamp.strftime("%Y-%m-%d %H:%M:%S"),
                )
            )
        db.executemany("INSERT INTO payments VALUES (?, ?, ?, ?, ?)", rows)
    spec = SqlSource(
        kind="sql",
        url=f"sqlite:///{path}",
        table="payments",
        dataset="payments",
        cursor="updated_at",
        cursor_key=["id"],
        chunk_size=200,
    )
    ws = ctx.ws
    first = ingest(
        open_source("payments_db", spec), spec, store=ws.store, meta=ws.meta, source_name="payments_db"
    )
    later = (stamp + dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO payments VALUES (?, ?, ?, ?, ?)",
            [(i, f"C{i % 80:04d}", 42.0, "card", later) for i in range(501, 521)],
        )
        db.execute("UPDATE payments SET amount = 0, updated_at = ? WHERE id IN (1, 2)", (later,))
    second = ingest(
        open_source("payments_db", spec), spec, store=ws.store, meta=ws.meta, source_name="payments_db"
    )
    ctx.facts["sql"] = {"first": first.to_dict(), "second": second.to_dict()}
    return [
        f"SQLite database {path.name}: full load {first.rows_committed} rows in {len(first.batches)} batches",
        f"after 20 inserts and 2 updates, the incremental run read {second.rows_committed} rows "
        f"(cursor {json_value(first.cursor_after)} -> {json_value(second.cursor_after)})",
    ]


def json_value(cursor: str | None) -> Any:
    """The value inside a stored cursor, for display."""
    import json

    if cursor is None:
        return None
    try:
        return json.loads(cursor).get("value")
    except (ValueError, AttributeError):
        return cursor
