"""One error hierarchy for the whole of headrace.

Every error carries a one-line message that names the thing and the fix. ``transient`` says whether
retrying the same operation may succeed (a dropped connection) or not (a bad config). The CLI maps
``exit_code`` to the process exit status: 2 for usage and configuration, 1 for a failed run.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "ConfigError",
    "DataError",
    "GateRefused",
    "HeadraceError",
    "NotFound",
    "RegistryError",
    "ServiceUnavailable",
    "SourceError",
    "StoreError",
    "UsageError",
]


class HeadraceError(Exception):
    """Base of every error headrace raises on purpose.

    ``hint`` is the fix, appended to the message after a semicolon so the whole stays one line.
    """

    transient: bool = False
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message and the hint on one line, secrets masked (``headrace.log.redact``)."""
        from .log import redact

        text = self.message if not self.hint else f"{self.message}; {self.hint}"
        return redact(" ".join(text.split()))


class ConfigError(HeadraceError):
    """headrace.yaml (or a spec built in Python) is invalid."""

    exit_code = 2


class UsageError(HeadraceError):
    """A command was called wrongly (an unknown name, a bad option value)."""

    exit_code = 2


class NotFound(UsageError):
    """A named thing (dataset, model, version, file) does not exist."""


class DataError(HeadraceError):
    """Input data cannot be used: unreadable file, a required column missing, too many bad rows."""


class SourceError(HeadraceError):
    """A source failed to deliver (HTTP error, SQL error, broker refused)."""


class SourceBusy(SourceError):
    """Another run holds the source's lease (one writer per source)."""

    transient = True


class ServiceUnavailable(SourceError):
    """A service is unreachable right now; retrying later may work."""

    transient = True


class StoreError(HeadraceError):
    """The dataset store refused an operation."""


class ArtifactError(HeadraceError):
    """An artifact is missing or its content does not match its recorded sha256."""


class RegistryError(HeadraceError):
    """A registry operation is not possible (no champion to roll back to, a retired version)."""


class GateRefused(RegistryError):
    """A promotion gate refused a candidate model version."""
