"""``kind: http``: records from a REST API, page by page, flattened into columns (httpx).

- Auth: bearer token, basic, API key (header or query), OAuth2 client credentials (the token is
  fetched, cached until it expires and fetched again after a 401).
- Pagination: page number, offset/limit, a cursor in the body, the ``Link`` header, a next URL in
  the body; the records are found at ``records_path``.
- Retries: 429, 5xx, timeouts and dropped connections are retried with exponential backoff and
  full jitter, ``Retry-After`` honoured (up to ``max_retry_after``); other 4xx fail at once with a
  message naming the fix. ``rate_limit`` spaces requests; ``max_response_bytes`` caps a response.
- A page whose body is not the JSON expected is reported (``Batch.failures``, so it lands in the
  quarantine with the URL and the start of the body) and the run goes on with the next page when the
  pagination allows it (page number, offset); where the next page's address was in that body
  (cursor, next URL) the run stops there, reported, with everything before it kept.
- Incremental: the largest value of ``incremental.field`` becomes the mark, sent as
  ``incremental.param`` on the next run. Records re-sent at exactly the mark (an inclusive
  ``since``) are recognised by their key (or, without one, a digest of the record) and skipped.
  After a bad page the mark stops moving for the rest of the run, so what the bad page held is
  asked for again next time rather than lost.
- Secrets never reach a log line or a message: they are ``SecretStr`` in the spec, and an API key
  sent in the query is masked in every URL shown (including httpx's own request log).
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, urljoin

import httpx
import polars as pl

from ..config.sources_db import (
    ApiKeyAuth,
    BasicAuth,
    BearerAuth,
    BodyCursorPagination,
    HttpSource,
    LinkHeaderPagination,
    NextUrlPagination,
    NoPagination,
    OAuth2ClientCredentials,
    OffsetPagination,
    PageNumberPagination,
)
from ..errors import ConfigError, ServiceUnavailable, SourceError
from ..log import redact
from .base import Batch

__all__ = ["HttpReader", "flatten_record", "frame_from_records", "open_http_source"]

log = logging.getLogger("headrace.ingest.http")

_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


# ------------------------------------------------------------------------------------ flattening
def _path(doc: Any, path: str | None) -> Any:
    """``a.b.0.c`` into nested dicts and lists; None when any step is missing."""
    if not path:
        return doc
    current = doc
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            current = current[index] if -len(current) <= index < len(current) else None
        else:
            return None
        if current is None:
            return None
    return current


def flatten_record(record: Any, *, sep: str = "__", explode: str | None = None) -> list[dict[str, Any]]:
    """One record as flat rows: nested objects become ``parent__child`` columns, lists JSON text.

    With ``explode`` (a dotted path to a list), the record becomes one row per element of that list,
    the element's fields flattened under the list's column name; an empty list gives one row.
    """
    if not isinstance(record, dict):
        return [{"value": record}]
    flat: dict[str, Any] = {}
    exploded: tuple[str, list[Any]] | None = None

    def walk(obj: dict[str, Any], prefix: str, dotted: str) -> None:
        nonlocal exploded
        for key, value in obj.items():
            name = f"{prefix}{sep}{key}" if prefix else str(key)
            where = f"{dotted}.{key}" if dotted else str(key)
            if isinstance(value, dict) and value:
                walk(value, name, where)
            elif isinstance(value, list) and explode is not None and where == explode:
                exploded = (name, value)
            elif isinstance(value, dict | list):
                flat[name] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            else:
                flat[name] = value

    walk(record, "", "")
    if exploded is None:
        return [flat]
    name, items = exploded
    if not items:
        return [{**flat, name: None}]
    rows = []
    for item in items:
        if isinstance(item, dict):
            inner = flatten_record(item, sep=sep)[0]
            rows.append({**flat, **{f"{name}{sep}{k}": v for k, v in inner.items()}})
        else:
            rows.append({**flat, name: item})
    return rows


def _column(name: str, values: list[Any], prior: pl.DataType | None) -> pl.Series:
    try:
        series = pl.Series(name, values, strict=True)
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
        if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
            series = pl.Series(name, values, dtype=pl.Float64, strict=False)
        else:
            series = pl.Series(name, [_as_text(v) for v in values], dtype=pl.String)
    if prior is None or series.dtype == prior or series.dtype == pl.Null:
        return series if series.dtype != pl.Null or prior is None else series.cast(prior)
    # Keep a column's type from one batch to the next (an int column that later shows a float).
    if prior.is_numeric() and series.dtype.is_numeric():
        target: pl.DataType = pl.Float64() if prior.is_float() or series.dtype.is_float() else prior
        return series.cast(target)
    if prior == pl.String:
        return pl.Series(name, [_as_text(v) for v in values], dtype=pl.String)
    return series


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def frame_from_records(
    rows: list[dict[str, Any]], prior: dict[str, pl.DataType] | None = None
) -> pl.DataFrame:
    """Flat rows as a frame: columns in order of first appearance, a type per column."""
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            names.setdefault(key, None)
    prior = prior or {}
    return pl.DataFrame([_column(n, [r.get(n) for r in rows], prior.get(n)) for n in names])


# ------------------------------------------------------------------------------------------ auth
def _basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class _Auth(httpx.Auth):
    """Every auth kind as one httpx flow; OAuth2 fetches (and refreshes) its token in the flow."""

    requires_response_body = True

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        spec = self.spec
        if isinstance(spec, BearerAuth):
            request.headers["Authorization"] = f"Bearer {spec.token.get_secret_value()}"
        elif isinstance(spec, BasicAuth):
            request.headers["Authorization"] = _basic_header(spec.username, spec.password.get_secret_value())
        elif isinstance(spec, ApiKeyAuth):
            if spec.location == "header":
                request.headers[spec.name] = spec.value.get_secret_value()
            else:
                request.url = request.url.copy_set_param(spec.name, spec.value.get_secret_value())
        elif isinstance(spec, OAuth2ClientCredentials):
            if self._token is None or time.monotonic() >= self._expires:
                yield from self._fetch_token()
            request.headers["Authorization"] = f"Bearer {self._token}"
            response = yield request
            if response.status_code == 401:  # expired or revoked early: one fresh token, one retry
                yield from self._fetch_token()
                request.headers["Authorization"] = f"Bearer {self._token}"
                yield request
            return
        yield request

    def _fetch_token(self) -> Generator[httpx.Request, httpx.Response, None]:
        spec = self.spec
        assert isinstance(spec, OAuth2ClientCredentials)
        form = {"grant_type": "client_credentials"}
        if spec.scope:
            form["scope"] = spec.scope
        if spec.audience:
            form["audience"] = spec.audience
        basic = _basic_header(spec.client_id, spec.client_secret.get_secret_value())
        token_request = httpx.Request("POST", spec.token_url, data=form, headers={"Authorization": basic})
        response = yield token_request
        try:
            doc = response.json()
            token = str(doc["access_token"])
        except (ValueError, KeyError, TypeError):
            raise SourceError(
                f"OAuth2 token endpoint {spec.token_url} answered {response.status_code} without an "
                "access_token",
                hint="check token_url, client_id and client_secret",
            ) from None
        lifetime = float(doc.get("expires_in") or 3600)
        with self._lock:
            self._token = token
            self._expires = time.monotonic() + max(0.0, lifetime - 30)


class _MaskSecrets(logging.Filter):
    """Masks given secret strings in log records (httpx logs full request URLs at INFO)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = message
        for secret in self.secrets:
            for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
                masked = masked.replace(form, "***")
        if masked != message:
            record.msg, record.args = masked, ()
        return True


# ----------------------------------------------------------------------------------------- pages
@dataclass
class _Page:
    url: str
    number: int
    records: list[Any] | None  # None: the page could not be used
    failure: dict[str, Any] | None = None
    body: Any = None


@dataclass
class _Mark:
    """The incremental state: the largest value seen and the keys of the records holding it."""

    value: Any = None
    seen: set[str] = field(default_factory=set)

    def copy(self) -> _Mark:
        return _Mark(self.value, set(self.seen))

    def encode(self) -> str | None:
        if self.value is None:
            return None
        return json.dumps({"value": self.value, "seen": sorted(self.seen)}, ensure_ascii=False)

    @classmethod
    def decode(cls, text: str | None) -> _Mark:
        if not text:
            return cls()
        try:
            doc = json.loads(text)
        except ValueError:
            return cls(text)  # a bare value written by hand
        if isinstance(doc, dict) and "value" in doc:
            return cls(doc["value"], set(doc.get("seen") or []))
        return cls(doc)


@dataclass
class _Closed:
    """A batch's records, closed: its pages and the marks as they stood when it closed."""

    rows: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    first_page: int
    last_page: int
    best: _Mark
    frozen: _Mark | None


def _order(value: Any) -> tuple[int, Any]:
    """A sort key that compares ISO timestamps as instants and numbers as numbers."""
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            return (2, value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return (1, when.timestamp())
    return (3, str(value))


class HttpReader:
    """A ``Source`` over a paginated REST API (see the module docstring)."""

    def __init__(
        self,
        name: str,
        spec: HttpSource,
        *,
        cursor: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self._sleep = sleep
        self._transport = transport
        self._last_request = 0.0
        self.requests = 0
        self.retried = 0
        self.skipped_at_mark = 0
        self.resume(cursor)

    def resume(self, cursor: str | None) -> None:
        self.cursor_before = cursor
        self._start = _Mark.decode(cursor)
        if self._start.value is None and self.spec.incremental is not None:
            self._start = _Mark(self.spec.incremental.initial)

    # -- reading -------------------------------------------------------------------------------
    def read(self) -> Iterator[Batch]:
        spec = self.spec
        from ..log import known_secrets

        secrets = [*_secrets(spec), *known_secrets()]  # a secret may sit in the URL itself
        mask = _MaskSecrets(secrets)
        httpx_log = logging.getLogger("httpx")
        httpx_log.addFilter(mask)
        auth = _Auth(spec.auth) if spec.auth is not None else None
        client = httpx.Client(
            timeout=spec.timeout,
            verify=spec.verify_tls,
            headers=spec.headers,
            auth=auth,
            follow_redirects=True,
            transport=self._transport,
        )
        inc = spec.incremental
        keys = list(spec.key_columns)
        start = self._start
        best = _Mark(start.value, set(start.seen))  # the largest value read so far in this run
        frozen: _Mark | None = None  # set at the first bad page: the mark may not move past it
        prior: dict[str, pl.DataType] = {}
        rows: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        first_page = last_page = 0
        # One closed batch is held back until the next closes (or the pages end), so that the last
        # batch of the run is known as such: an unordered API's mark may only move with it.
        held: _Closed | None = None
        try:
            for page in self._pages(client, start):
                if page.records is None:
                    assert page.failure is not None
                    failures.append(page.failure)
                    if frozen is None:
                        frozen = _Mark(best.value, set(best.seen)) if inc and inc.ordered else start
                    log.warning("source %s: %s", self.name, page.failure["reason"])
                else:
                    first_page = first_page or page.number
                    for record in page.records:
                        if inc is not None and not self._new(record, start, keys, best):
                            continue
                        rows.extend(flatten_record(record, sep=spec.flatten_separator, explode=spec.explode))
                last_page = page.number
                if len(rows) >= spec.batch_rows:
                    if held is not None:
                        yield self._batch(held, prior, done=False)
                    held = _Closed(rows, failures, first_page or last_page, last_page, best.copy(), frozen)
                    rows, failures, first_page = [], [], 0
            if rows or failures:
                if held is not None:
                    yield self._batch(held, prior, done=False)
                held = _Closed(rows, failures, first_page or last_page, last_page, best.copy(), frozen)
            if held is not None:
                yield self._batch(held, prior, done=True)
        finally:
            client.close()
            httpx_log.removeFilter(mask)

    def _new(self, record: Any, start: _Mark, keys: list[str], best: _Mark) -> bool:
        """Track the mark; False for a record re-sent at exactly the stored mark (already loaded)."""
        inc = self.spec.incremental
        assert inc is not None
        value = _path(record, inc.field)
        if value is None:
            return True
        key = _key_text(record, keys)
        if start.value is not None:
            order, start_order = _order(value), _order(start.value)
            # Already loaded: older than the mark (an API that ignores the parameter), or re-sent
            # at exactly the mark (an inclusive "since") with a key seen there.
            if order < start_order or (order == start_order and key is not None and key in start.seen):
                self.skipped_at_mark += 1
                return False
        if best.value is None or _order(value) > _order(best.value):
            best.value, best.seen = value, set()
        if key is not None and _order(value) == _order(best.value):
            best.seen.add(key)
        return True

    def _batch(self, closed: _Closed, prior: dict[str, pl.DataType], *, done: bool) -> Batch:
        rows, failures, best, frozen = closed.rows, closed.failures, closed.best, closed.frozen
        first_page, last_page = closed.first_page, closed.last_page
        frame = frame_from_records(rows, prior)
        for name, dtype in frame.schema.items():
            if dtype != pl.Null:
                prior[name] = dtype
        inc = self.spec.incremental
        cursor = self.cursor_before
        if inc is not None:
            if frozen is not None:
                cursor = frozen.encode() or self.cursor_before
            elif inc.ordered or done:
                cursor = best.encode() or self.cursor_before
        pages = f"page {first_page}" if first_page == last_page else f"pages {first_page}-{last_page}"
        return Batch(
            frame=frame,
            origin=f"{_shown(self.spec.url, self.spec)} {pages}",
            cursor=cursor,
            failures=failures,
        )

    # -- pagination ----------------------------------------------------------------------------
    def _pages(self, client: httpx.Client, start: _Mark) -> Iterator[_Page]:
        spec = self.spec
        pag = spec.pagination
        params: dict[str, Any] = dict(spec.params)
        if spec.incremental is not None and start.value is not None:
            params[spec.incremental.param] = start.value
        url: str | None = spec.url
        number = 0
        page_no = pag.start if isinstance(pag, PageNumberPagination) else 0
        offset = 0
        next_cursor: Any = None
        while url is not None:
            number += 1
            if spec.max_pages is not None and number > spec.max_pages:
                return
            extra: dict[str, Any] = {}
            if isinstance(pag, PageNumberPagination):
                extra[pag.param] = page_no
                if pag.size_param and pag.size:
                    extra[pag.size_param] = pag.size
            elif isinstance(pag, OffsetPagination):
                extra[pag.offset_param] = offset
                extra[pag.limit_param] = pag.limit
            elif isinstance(pag, BodyCursorPagination) and next_cursor is not None:
                extra[pag.param] = next_cursor
            follows_link = isinstance(pag, LinkHeaderPagination | NextUrlPagination) and number > 1
            response = self._request(client, url, {} if follows_link else {**params, **extra})
            page = self._parse(response, number)
            yield page
            url_now = str(response.url)
            url = None
            if page.records is None:
                # The next address was in the bad body for cursor/next-URL paging: stop here.
                if isinstance(pag, PageNumberPagination):
                    page_no += 1
                    url = spec.url
                elif isinstance(pag, OffsetPagination):
                    offset += pag.limit
                    url = spec.url
                elif isinstance(pag, LinkHeaderPagination):
                    link = response.links.get(pag.rel)
                    url = urljoin(url_now, link["url"]) if link and link.get("url") else None
                continue
            body = page.body
            count = len(page.records)
            if isinstance(pag, NoPagination):
                return
            if isinstance(pag, PageNumberPagination):
                total = _path(body, pag.total_pages_path) if pag.total_pages_path else None
                if count == 0 or (isinstance(total, int) and page_no >= total):
                    return
                page_no += 1
                url = spec.url
            elif isinstance(pag, OffsetPagination):
                total = _path(body, pag.total_path) if pag.total_path else None
                offset += count
                if count == 0 or (total is None and count < pag.limit):
                    return
                if isinstance(total, int) and offset >= total:
                    return
                url = spec.url
            elif isinstance(pag, BodyCursorPagination):
                next_cursor = _path(body, pag.cursor_path)
                if next_cursor in (None, "") or count == 0:
                    return
                url = spec.url
            elif isinstance(pag, LinkHeaderPagination):
                link = response.links.get(pag.rel)
                url = urljoin(url_now, link["url"]) if link and link.get("url") else None
            elif isinstance(pag, NextUrlPagination):
                nxt = _path(body, pag.path)
                url = urljoin(url_now, str(nxt)) if nxt and count else None

    def _parse(self, response: httpx.Response, number: int) -> _Page:
        shown = _shown(str(response.url), self.spec)
        try:
            body = response.json()
        except ValueError as exc:
            return _Page(shown, number, None, _failure(shown, number, response, f"malformed JSON ({exc})"))
        records = _path(body, self.spec.records_path)
        if records is None and self.spec.records_path is None:
            records = body
        if isinstance(records, dict) and self.spec.records_path is None:
            records = [records]
        if not isinstance(records, list):
            where = self.spec.records_path or "the top level"
            reason = f"no list of records at {where} (found {type(records).__name__})"
            return _Page(shown, number, None, _failure(shown, number, response, reason))
        return _Page(shown, number, records, body=body)

    # -- one request, with retries -------------------------------------------------------------
    def _request(self, client: httpx.Client, url: str, params: dict[str, Any]) -> httpx.Response:
        spec = self.spec
        attempt = 0
        while True:
            self._pace()
            try:
                if spec.method == "POST":
                    body = dict(spec.body or {})
                    if spec.params_in == "body":
                        body.update(params)
                        params = {}
                    request = client.build_request("POST", url, params=params or None, json=body)
                else:
                    request = client.build_request("GET", url, params=params or None)
                streamed = client.send(request, stream=True)
                try:
                    response = self._read_capped(streamed)
                finally:
                    streamed.close()
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                attempt += 1
                if attempt > spec.retries:
                    raise ServiceUnavailable(
                        f"source {self.name!r}: {_shown(url, spec)} unreachable after {spec.retries} "
                        f"retries ({type(exc).__name__})",
                        hint="check the URL and that the service is up; rerun later",
                    ) from None
                self._wait(attempt, None, f"{type(exc).__name__}")
                continue
            self.requests += 1
            status = response.status_code
            if status < 400:
                return response
            if status in _RETRY_STATUS:
                attempt += 1
                if attempt > spec.retries:
                    raise ServiceUnavailable(
                        f"source {self.name!r}: {_shown(url, spec)} answered {status} after "
                        f"{spec.retries} retries",
                        hint="the service is overloaded or down; rerun later or lower rate_limit",
                    )
                self._wait(attempt, _retry_after(response), f"HTTP {status}")
                continue
            hint = {
                401: "check the credentials in 'auth' (and that the secret's environment variable is set)",
                403: "the credentials lack permission for this resource",
                404: "check the url",
            }.get(status, "check the url, params and body")
            raise SourceError(
                f"source {self.name!r}: {_shown(url, spec)} answered {status} {response.reason_phrase}",
                hint=hint,
            )

    def _read_capped(self, response: httpx.Response) -> httpx.Response:
        """The whole (decoded) body, or an error once it passes ``max_response_bytes``."""
        limit = self.spec.max_response_bytes
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise self._too_large(response, int(declared))
        chunks = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise self._too_large(response, size)
            chunks.append(chunk)
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-encoding"]
        return httpx.Response(
            response.status_code, headers=headers, content=b"".join(chunks), request=response.request
        )

    def _too_large(self, response: httpx.Response, size: int) -> SourceError:
        return SourceError(
            f"source {self.name!r}: {_shown(str(response.url), self.spec)} sent more than "
            f"max_response_bytes ({size} > {self.spec.max_response_bytes} bytes)",
            hint="raise max_response_bytes or ask for smaller pages",
        )

    def _pace(self) -> None:
        if self.spec.rate_limit is None:
            return
        gap = 1.0 / self.spec.rate_limit
        wait = self._last_request + gap - time.monotonic()
        if wait > 0:
            self._sleep(wait)
        self._last_request = time.monotonic()

    def _wait(self, attempt: int, retry_after: float | None, why: str) -> None:
        spec = self.spec
        self.retried += 1
        if retry_after is not None:
            if retry_after > spec.max_retry_after:
                raise ServiceUnavailable(
                    f"source {self.name!r}: asked to retry after {retry_after:.0f}s, more than "
                    f"max_retry_after ({spec.max_retry_after:.0f}s)",
                    hint="rerun later, or raise max_retry_after",
                )
            wait = retry_after
        else:
            # Exponential backoff with full jitter (spreads retries of many clients apart).
            wait = random.uniform(0, min(spec.max_backoff, spec.backoff * 2 ** (attempt - 1)))
        log.info("source %s: %s; retry %d/%d in %.2fs", self.name, why, attempt, spec.retries, wait)
        self._sleep(wait)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _failure(shown: str, number: int, response: httpx.Response, reason: str) -> dict[str, Any]:
    text = response.text[:2000] if response.content else ""
    return {"origin": shown, "position": number, "raw": text, "reason": f"page {number}: {reason}"}


def _key_text(record: Any, keys: list[str]) -> str | None:
    """What identifies a record at the mark: its key, or (no key) a digest of the whole record, so
    a record re-sent unchanged is recognised and a changed one is not."""
    if not keys or not isinstance(record, dict):
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
        return "#" + hashlib.sha256(text.encode()).hexdigest()[:24]
    values = [_path(record, k) for k in keys]
    if any(v is None for v in values):
        return None
    return json.dumps(values, separators=(",", ":"), default=str)


def _secrets(spec: HttpSource) -> list[str]:
    auth = spec.auth
    if isinstance(auth, BearerAuth):
        return [auth.token.get_secret_value()]
    if isinstance(auth, BasicAuth):
        return [auth.password.get_secret_value()]
    if isinstance(auth, ApiKeyAuth):
        return [auth.value.get_secret_value()]
    if isinstance(auth, OAuth2ClientCredentials):
        return [auth.client_secret.get_secret_value()]
    return []


def _shown(url: str, spec: HttpSource) -> str:
    """A URL fit for a message or a log line: passwords and query-string API keys masked."""
    text = redact(url)
    for secret in _secrets(spec):
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, "***")
    return text


def open_http_source(name: str, spec: HttpSource) -> HttpReader:
    """The runner's factory for ``kind: http``."""
    if spec.pagination.type != "none" and spec.max_pages is not None and spec.max_pages < 1:
        raise ConfigError(f"source {name!r}: max_pages must be at least 1")
    return HttpReader(name, spec)
