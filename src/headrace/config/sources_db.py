"""Spec classes for the database and web-API sources: ``kind: sql`` and ``kind: http``.

Secrets (passwords, tokens, client secrets) are ``SecretStr``: they print as ``**********`` in a
repr, a log line or an error message, and are only revealed where a request or a connection needs
them. A password inside a SQLAlchemy URL is redacted whenever the URL is shown.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, model_validator

from .base import Spec
from .sources import IngestSpec

__all__ = [
    "ApiKeyAuth",
    "BasicAuth",
    "BearerAuth",
    "BodyCursorPagination",
    "HttpAuth",
    "HttpIncremental",
    "HttpSource",
    "LinkHeaderPagination",
    "NextUrlPagination",
    "NoPagination",
    "OAuth2ClientCredentials",
    "OffsetPagination",
    "PageNumberPagination",
    "Pagination",
    "SqlSource",
]


# --------------------------------------------------------------------------------------------- SQL
class SqlSource(IngestSpec):
    """Rows from a table or a query of a SQL database (PostgreSQL, MariaDB/MySQL, SQLite).

    ``cursor`` makes the load incremental: each run reads only rows whose cursor column is past the
    high-water mark stored after the previous run's last committed batch. With ``cursor_key`` (by
    default the source's ``key``) the rows are ordered by (cursor, cursor_key) and the mark is that
    pair, so rows sharing a cursor value are never lost at a batch boundary; without one, batches
    only end where the cursor value changes.

    An updated row (its cursor moved forward) arrives again on the next run: the dataset is then a
    log of row versions. Leave ``key`` unset for such tables (a key repeated in the dataset is
    quarantined as a duplicate) and give ``cursor_key`` instead.
    """

    kind: Literal["sql"]
    url: str = Field(description="SQLAlchemy URL: postgresql://, mysql:// or mariadb://, sqlite:///")
    table: str | None = Field(default=None, description="a table, optionally schema.table")
    query: str | None = Field(default=None, description="a SELECT; its rows are the source")
    select: list[str] | None = Field(default=None, description="columns to read (default: all)")
    cursor: str | None = Field(default=None, description="column whose growth marks new/updated rows")
    cursor_key: list[str] = Field(
        default_factory=list, description="unique columns ordering rows of one cursor value (default: key)"
    )
    initial_cursor: str | int | float | None = Field(
        default=None, description="read only rows past this value on the first run"
    )
    chunk_size: int = Field(default=100_000, ge=1, description="rows per batch (and per commit)")
    fast_path: Literal["auto", "copy", "off"] = Field(
        default="auto", description="PostgreSQL COPY (auto: when every column type allows it)"
    )
    retries: int = Field(default=4, ge=0, description="reconnects on a transient error")
    backoff: float = Field(default=0.5, gt=0, description="first wait between retries, seconds")
    connect_timeout: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        return self


# -------------------------------------------------------------------------------------------- HTTP
class BearerAuth(Spec):
    type: Literal["bearer"]
    token: SecretStr


class BasicAuth(Spec):
    type: Literal["basic"]
    username: str
    password: SecretStr


class ApiKeyAuth(Spec):
    type: Literal["api_key"]
    name: str = "X-API-Key"
    value: SecretStr
    location: Literal["header", "query"] = "header"


class OAuth2ClientCredentials(Spec):
    type: Literal["oauth2_client_credentials"]
    token_url: str
    client_id: str
    client_secret: SecretStr
    scope: str | None = None
    audience: str | None = None


HttpAuth = Annotated[
    BearerAuth | BasicAuth | ApiKeyAuth | OAuth2ClientCredentials, Field(discriminator="type")
]


class NoPagination(Spec):
    type: Literal["none"] = "none"


class PageNumberPagination(Spec):
    """``?page=1``, ``?page=2``, ... until an empty page (or ``total_pages_path`` is reached)."""

    type: Literal["page_number"]
    param: str = "page"
    start: int = 1
    size_param: str | None = None
    size: int | None = Field(default=None, ge=1)
    total_pages_path: str | None = None


class OffsetPagination(Spec):
    """``?offset=0&limit=100``, then offset 100, ... until a short page (or ``total_path``)."""

    type: Literal["offset"]
    offset_param: str = "offset"
    limit_param: str = "limit"
    limit: int = Field(default=100, ge=1)
    total_path: str | None = None


class BodyCursorPagination(Spec):
    """The response body holds the cursor of the next page (``cursor_path``); none or null ends."""

    type: Literal["cursor"]
    cursor_path: str = "next_cursor"
    param: str = "cursor"


class LinkHeaderPagination(Spec):
    """RFC 8288 ``Link: <url>; rel="next"`` headers (GitHub style)."""

    type: Literal["link_header"]
    rel: str = "next"


class NextUrlPagination(Spec):
    """The response body holds the URL of the next page (``path``)."""

    type: Literal["next_url"]
    path: str = "next"


Pagination = Annotated[
    NoPagination
    | PageNumberPagination
    | OffsetPagination
    | BodyCursorPagination
    | LinkHeaderPagination
    | NextUrlPagination,
    Field(discriminator="type"),
]


class HttpIncremental(Spec):
    """Ask only for records past the last run's high-water mark (``updated_since``, ``since_id``).

    ``field`` is the record field (dotted path) whose largest value becomes the mark; ``param`` is
    the request parameter that carries it. Records re-sent at exactly the mark (APIs whose ``since``
    is inclusive) are recognised by the source's ``key`` (or a digest of the record) and skipped.
    ``ordered`` says the API returns records in ascending ``field`` order, so the mark can move
    after every batch; otherwise it moves only when the whole run has been read.
    """

    param: str
    field: str
    initial: str | int | float | None = None
    ordered: bool = False


class HttpSource(IngestSpec):
    """Records from a REST API, page by page, flattened into columns."""

    kind: Literal["http"]
    url: str
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] | None = Field(default=None, description="JSON body of a POST")
    params_in: Literal["query", "body"] = Field(
        default="query", description="where paging/incremental parameters go (body: POST only)"
    )
    auth: HttpAuth | None = None
    pagination: Pagination = Field(default_factory=NoPagination)
    records_path: str | None = Field(default=None, description="dotted path to the list of records")
    flatten_separator: str = "__"
    lists: Literal["json", "explode"] = Field(
        default="json", description="list fields: kept as JSON text, or 'explode' to one row each"
    )
    explode: str | None = Field(default=None, description="with lists: explode, the list field to explode")
    incremental: HttpIncremental | None = None
    timeout: float = Field(default=30.0, gt=0)
    retries: int = Field(default=5, ge=0)
    backoff: float = Field(default=0.5, gt=0, description="first retry wait in seconds; doubles")
    max_backoff: float = Field(default=30.0, gt=0)
    max_retry_after: float = Field(default=120.0, ge=0, description="longest Retry-After honoured")
    rate_limit: float | None = Field(default=None, gt=0, description="most requests per second")
    max_response_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    max_pages: int | None = Field(default=None, ge=1)
    batch_rows: int = Field(default=10_000, ge=1, description="records per batch (and per commit)")
    verify_tls: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> HttpSource:
        if self.params_in == "body" and self.method != "POST":
            raise ValueError("params_in: body needs method: POST")
        if self.lists == "explode" and not self.explode:
            raise ValueError("lists: explode needs 'explode': the list field to explode")
        return self
