"""Logging set-up: human-readable by default, JSON lines with ``--log-format json``.

Secrets never reach a log line: ``redact`` masks passwords in URLs and the values of keys that look
like credentials, and the JSON formatter applies it to every message.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "add_secrets", "known_secrets", "redact", "setup_logging"]

# values that came from ${ENV} references or secret files: masked wherever ``redact`` runs
_SECRETS: set[str] = set()
_FORMS: list[str] = []  # each secret as written and URL-encoded, longest first (built once, not per line)


def add_secrets(values: Any) -> None:
    """Remember secret values (of 3 characters or more) so that ``redact`` masks them."""
    from urllib.parse import quote, quote_plus

    _SECRETS.update(str(v) for v in values if v is not None and len(str(v)) >= 3)
    forms = {f for s in _SECRETS for f in (s, quote(s, safe=""), quote_plus(s))}
    _FORMS[:] = sorted(forms, key=len, reverse=True)


def known_secrets() -> list[str]:
    return sorted(_SECRETS, key=len, reverse=True)


_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@")
_KEY_VALUE = re.compile(
    r"(?P<key>(password|passwd|secret|token|api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<value>[^\s\"',;}]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` without credentials: known secret values (also URL-encoded), URL passwords, and the
    values of keys that look like credentials."""
    for form in _FORMS:
        text = text.replace(form, "***")
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key.startswith("hr_"):
                entry[key[3:]] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(fmt: str = "text", verbosity: int = 0) -> None:
    """Configure the ``headrace`` logger (stderr); ``verbosity`` 0 warnings, 1 info, 2+ debug."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
        level = min(level, logging.INFO)
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("headrace")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
