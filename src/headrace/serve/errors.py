"""Errors at the HTTP edge: one table from exception class to status code, one JSON shape.

Handlers raise headrace errors (or the few HTTP-only ones here); the app's exception handlers look
the class up in ``STATUS`` (most specific class first) and answer
``{"detail": "<one line>", "error": "<class>"}``; validation problems answer 422 with a list under
``detail`` naming each field, in FastAPI's shape (``loc``, ``msg``, ``type``).
"""

from __future__ import annotations

from typing import Any

from ..errors import (
    ArtifactError,
    ConfigError,
    DataError,
    GateRefused,
    HeadraceError,
    NotFound,
    RegistryError,
    ServiceUnavailable,
    StoreError,
    UsageError,
)

__all__ = [
    "STATUS",
    "Forbidden",
    "HeadersTooLarge",
    "PayloadTooLarge",
    "RequestInvalid",
    "Unauthorized",
    "UnsupportedMediaType",
    "status_for",
]


class RequestInvalid(HeadraceError):
    """The request body does not match what the route or the model's signature expects."""

    def __init__(self, problems: list[dict[str, Any]], total: int | None = None) -> None:
        self.problems = problems
        self.total = max(len(problems), total or 0)  # problems found; only the first few are listed
        first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", []))
        more = f" (and {self.total - 1} more)" if self.total > 1 else ""
        super().__init__(f"{where}: {first.get('msg')}{more}")


class PayloadTooLarge(HeadraceError):
    """The request carries more than ``serving.limits`` allow (body bytes, records, items)."""


class HeadersTooLarge(HeadraceError):
    """The request's headers together are larger than ``serving.limits.max_header_bytes``."""


class UnsupportedMediaType(HeadraceError):
    """The request body is not of a type the route reads (JSON, or a documented binary type)."""


class Unauthorized(HeadraceError):
    """An admin or write route was called without a valid bearer token."""


class Forbidden(HeadraceError):
    """A guarded route was called while its token is not configured, or a browser's request came
    without the dashboard's CSRF token."""


# Most specific first: the first class the exception is an instance of decides.
STATUS: list[tuple[type[BaseException], int]] = [
    (RequestInvalid, 422),
    (PayloadTooLarge, 413),
    (HeadersTooLarge, 431),
    (UnsupportedMediaType, 415),
    (Unauthorized, 401),
    (Forbidden, 403),
    (GateRefused, 409),
    (NotFound, 404),
    (DataError, 422),
    (UsageError, 400),
    (RegistryError, 409),
    (ServiceUnavailable, 503),
    (ArtifactError, 500),
    (StoreError, 500),
    (ConfigError, 500),
    (HeadraceError, 500),
]


def status_for(exc: BaseException) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500
