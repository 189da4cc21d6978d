"""The HTTP source against a real server on loopback (the demo API, uvicorn in a thread) that pages
each way, answers 429 with Retry-After, fails with 503 now and then and sends one page of malformed
JSON: every good record arrives once, the bad page is reported, nothing crashes."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from typing import Any

import polars as pl
import pytest

from headrace.config.sources_db import HttpSource
from headrace.demo.api import DemoApi, serve
from headrace.errors import ServiceUnavailable, SourceError
from headrace.ingest.http import HttpReader
from headrace.ingest.runner import ingest
from headrace.metadata import Metadata
from headrace.store import Store

pytestmark = pytest.mark.integration

RECORDS = 230


class Faults:
    """ASGI middleware: 429 + Retry-After on the first call to a path, 503 on every 4th call, and a
    truncated JSON body for the calls that ``malformed`` picks."""

    def __init__(self, app: Any, malformed: Any = None) -> None:
        self.app = app
        self.malformed = malformed
        self.calls: Counter[str] = Counter()
        self.total = 0
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, query = scope["path"], scope.get("query_string", b"").decode()
        with self.lock:
            self.calls[path] += 1
            self.total += 1
            first, nth = self.calls[path] == 1, self.total
        if first:
            await _respond(send, 429, b'{"error": "slow down"}', [(b"retry-after", b"1")])
            return
        if nth % 4 == 0:
            await _respond(send, 503, b"busy")
            return
        if self.malformed is not None and self.malformed(path, query):
            await _respond(send, 200, b'{"data": [{"id": 1, "status": "ne')
            return
        await self.app(scope, receive, send)


async def _respond(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class Clock:
    """Records the waits asked for; waits a little for real so that the server sees time pass."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        threading.Event().wait(min(seconds, 0.02))


STYLES = {
    "page_number": ("/orders", {"type": "page_number", "size_param": "per_page", "size": 40}, "data"),
    "offset": ("/orders/offset", {"type": "offset", "limit": 60, "total_path": "total"}, "items"),
    "cursor": ("/orders/cursor", {"type": "cursor", "cursor_path": "next_cursor"}, "records"),
    "link_header": ("/orders/link", {"type": "link_header"}, None),
    "next_url": ("/orders/next", {"type": "next_url", "path": "next"}, "results"),
}


@pytest.fixture
def home(tmp_path):
    store = Store(tmp_path / "lake")
    meta = Metadata(f"sqlite:///{tmp_path / 'meta.db'}")
    yield store, meta
    meta.dispose()


@pytest.mark.parametrize("style", list(STYLES))
def test_every_pagination_survives_429_and_503(style, home):
    store, meta = home
    api = DemoApi(count=RECORDS, per_page=50)
    faults = Faults(api.app())
    path, pagination, records = STYLES[style]
    with serve(faults) as base:
        spec = HttpSource(
            kind="http",
            url=base + path,
            pagination=pagination,
            records_path=records,
            dataset="orders",
            key=["id"],
            batch_rows=100,
            backoff=0.01,
        )
        clock = Clock()
        reader = HttpReader("orders", spec, sleep=clock)
        result = ingest(reader, spec, store=store, meta=meta, source_name="orders")
    assert result.status == "succeeded", result.error
    data = store.read("orders")
    assert data.height == RECORDS
    assert sorted(data["id"].to_list()) == list(range(1, RECORDS + 1))
    assert 1.0 in clock.waits  # Retry-After honoured
    assert reader.retried >= 2  # the 429 and at least one 503
    truth = {r["id"]: r for r in api.records}
    for row in data.iter_rows(named=True):
        expected = truth[row["id"]]
        assert row["amount"] == expected["amount"]
        assert row["customer__city"] == expected["customer"]["city"]
        assert json.loads(row["items"]) == expected["items"]


@pytest.mark.parametrize("style", ["page_number", "offset"])
def test_a_malformed_page_is_reported_and_every_other_record_arrives_once(style, home):
    store, meta = home
    api = DemoApi(count=RECORDS, per_page=50)
    path, pagination, records = STYLES[style]
    bad = "page=3" if style == "page_number" else "offset=120"
    faults = Faults(api.app(), malformed=lambda p, q: p == path and bad in q.split("&"))
    with serve(faults) as base:
        spec = HttpSource(
            kind="http",
            url=base + path,
            pagination=pagination,
            records_path=records,
            dataset="orders",
            key=["id"],
            batch_rows=100,
            backoff=0.01,
        )
        result = ingest(
            HttpReader("orders", spec, sleep=Clock()), spec, store=store, meta=meta, source_name="o"
        )
    assert result.status == "succeeded", result.error
    data = store.read("orders")
    lost = set(range(81, 121)) if style == "page_number" else set(range(121, 181))
    assert sorted(data["id"].to_list()) == sorted(set(range(1, RECORDS + 1)) - lost)
    quarantine = store.read("orders__quarantine")
    assert quarantine.height == 1
    row = quarantine.row(0, named=True)
    assert "malformed JSON" in row["reason"] and bad in row["origin"]
    assert row["raw"].startswith('{"data": [{"id": 1')


@pytest.mark.parametrize("style", ["cursor", "next_url"])
def test_a_malformed_page_stops_cursor_paging_there_reported(style, home):
    store, meta = home
    api = DemoApi(count=RECORDS, per_page=50)
    path, pagination, records = STYLES[style]
    calls = Counter()

    def third_page(p: str, q: str) -> bool:
        calls[p] += 1
        return p == path and calls[p] == 4  # the 1st call was answered 429: the 4th is page 3

    faults = Faults(api.app(), malformed=third_page)
    faults.total = 1  # keep the 503s off this test's pages
    with serve(faults) as base:
        spec = HttpSource(
            kind="http",
            url=base + path,
            pagination=pagination,
            records_path=records,
            dataset="orders",
            batch_rows=1000,
            backoff=0.01,
            retries=8,
        )
        result = ingest(
            HttpReader("orders", spec, sleep=Clock()), spec, store=store, meta=meta, source_name="o"
        )
    assert result.status == "succeeded", result.error
    ids = store.read("orders")["id"].to_list()
    assert len(ids) == len(set(ids)) and set(ids) <= set(range(1, RECORDS + 1)) and len(ids) >= 50
    assert store.read("orders__quarantine").height == 1


def test_incremental_with_inclusive_since_skips_records_at_the_mark(home):
    store, meta = home
    api = DemoApi(count=120, per_page=50)
    with serve(api.app()) as base:
        spec = HttpSource(
            kind="http",
            url=base + "/orders",
            pagination={"type": "page_number"},
            records_path="data",
            dataset="orders",
            key=["id"],
            incremental={"param": "updated_since", "field": "updated_at"},
        )
        first = ingest(HttpReader("o", spec), spec, store=store, meta=meta, source_name="o")
        assert first.rows_committed == 120 and first.cursor_after is not None
        new = api.insert(7)
        second = ingest(
            HttpReader("o", spec, cursor=first.cursor_after), spec, store=store, meta=meta, source_name="o"
        )
        third = ingest(
            HttpReader("o", spec, cursor=second.cursor_after), spec, store=store, meta=meta, source_name="o"
        )
    assert second.status == "succeeded", second.error
    assert second.rows_committed == 7 and second.rows_quarantined == 0
    assert third.rows_read == 0 and third.cursor_after == second.cursor_after
    assert sorted(store.read("orders")["id"].to_list()) == [*range(1, 121), *new]


def test_incremental_updates_arrive_as_new_versions(home):
    store, meta = home
    api = DemoApi(count=60, per_page=25)
    with serve(api.app()) as base:
        spec = HttpSource(
            kind="http",
            url=base + "/orders/offset",
            pagination={"type": "offset", "limit": 25},
            records_path="items",
            dataset="orders",
            incremental={"param": "updated_since", "field": "updated_at", "ordered": True},
        )
        first = ingest(HttpReader("o", spec), spec, store=store, meta=meta, source_name="o")
        api.touch([5, 6])
        second = ingest(
            HttpReader("o", spec, cursor=first.cursor_after), spec, store=store, meta=meta, source_name="o"
        )
    assert second.rows_committed == 2
    data = store.read("orders")
    latest = data.sort("updated_at").unique("id", keep="last")
    assert latest.height == 60 and data.height == 62
    assert latest.filter(pl.col("id").is_in([5, 6]))["status"].to_list() == ["refunded", "refunded"]


@pytest.mark.parametrize(
    "auth",
    [
        {"type": "bearer", "token": "s3cret-token"},
        {
            "type": "oauth2_client_credentials",
            "token_url": "/oauth/token",
            "client_id": "cid",
            "client_secret": "csecret",
        },
    ],
)
def test_auth_and_secrets_never_logged(auth, caplog):
    oauth = auth["type"] != "bearer"
    api = DemoApi(
        count=30,
        token=None if oauth else "s3cret-token",
        client_id="cid",
        client_secret="csecret" if oauth else None,
    )
    caplog.set_level(logging.DEBUG)
    with serve(api.app()) as base:
        if oauth:
            auth = {**auth, "token_url": base + auth["token_url"]}
        spec = HttpSource(kind="http", url=base + "/orders", records_path="data", dataset="o", auth=auth)
        frame = pl.concat([b.frame for b in HttpReader("o", spec).read()])
        assert frame.height == 30
        wrong = spec.model_copy(update={"auth": None})
        with pytest.raises(SourceError, match="401"):
            list(HttpReader("o", wrong).read())
    text = caplog.text + repr(spec)
    assert "s3cret-token" not in text and "csecret" not in text and (api.token or "") not in text


def test_api_key_in_query_is_masked_in_logs_and_messages(caplog):
    api = DemoApi(count=10)
    caplog.set_level(logging.DEBUG)
    with serve(Faults(api.app())) as base:
        spec = HttpSource(
            kind="http",
            url=base + "/orders",
            records_path="data",
            dataset="o",
            retries=0,
            auth={"type": "api_key", "name": "key", "value": "k/e+y=1", "location": "query"},
        )
        with pytest.raises(ServiceUnavailable) as info:
            list(HttpReader("o", spec).read())
    assert "429" in str(info.value)
    assert "k/e+y=1" not in caplog.text and "k%2Fe%2By%3D1" not in caplog.text
    assert "k%2Fe%2By%3D1" not in str(info.value)


def test_response_size_limit_and_unreachable_server():
    api = DemoApi(count=400, per_page=400)
    with serve(api.app()) as base:
        spec = HttpSource(
            kind="http",
            url=base + "/orders?per_page=400",
            records_path="data",
            dataset="o",
            max_response_bytes=2048,
        )
        with pytest.raises(SourceError, match="max_response_bytes"):
            list(HttpReader("o", spec).read())
    dead = HttpSource(kind="http", url=base + "/orders", dataset="o", retries=1, backoff=0.01, timeout=1)
    with pytest.raises(ServiceUnavailable, match="unreachable"):
        list(HttpReader("o", dead).read())


def test_rate_limit_spaces_requests():
    api = DemoApi(count=60, per_page=10)
    arrivals: list[float] = []
    inner = api.app()

    async def timed(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            arrivals.append(time.monotonic())
        await inner(scope, receive, send)

    with serve(timed) as base:
        spec = HttpSource(
            kind="http",
            url=base + "/orders",
            records_path="data",
            dataset="o",
            rate_limit=20,
            pagination={"type": "page_number", "total_pages_path": "meta.total_pages"},
        )
        reader = HttpReader("o", spec)
        assert sum(b.frame.height for b in reader.read()) == 60
    assert reader.requests == len(arrivals) == 6
    # At most 20 requests a second: 6 requests span at least 5 gaps of 50 ms (a lower bound only;
    # the first request's own connection set-up may shift its arrival a little).
    assert arrivals[-1] - arrivals[0] >= 0.2
