"""Canary and shadow routing, as the serving app applies it; driven by the registry's aliases.

While a model has a ``challenger`` alias, ``monitoring.canary`` in headrace.yaml says what it gets:

- ``canary``: ``share`` of the requests are answered by the challenger. The choice is sticky: a
  request key (a record field such as ``customerID``, else the request id) is hashed into [0, 1),
  and keys below ``share`` go to the challenger, so one customer always meets the same version.
- ``shadow``: the champion answers every request; the same share is also scored by the challenger,
  whose answers are logged (for comparison and live metrics) but never returned.

A challenger that fails on a canary request is answered for by the champion (the client never sees
the failure) and the failure is logged against the challenger's version, which the monitor turns
into its error rate and rolls it back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "CANARY_ERROR",
    "SHADOW",
    "SHADOW_ERROR",
    "CanaryRouter",
    "Route",
    "bucket",
    "choose_version",
    "request_key",
    "route",
]

log = logging.getLogger("headrace.monitor.routing")

# prediction-log ``route`` values written by the router (the app writes predict, batch, v2_infer,
# invocations)
CANARY_ERROR = "canary_error"
SHADOW = "shadow"
SHADOW_ERROR = "shadow_error"
CHALLENGER = "challenger"
CHAMPION = "champion"
_INLINE_ROWS = 64  # headrace.serve.host.FAST_PATH_MAX_ROWS (not imported: serve imports this module)


def bucket(key: str) -> float:
    """A stable position in [0, 1) for a key (the same in every process and on every run)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def choose_version(key: str, champion: int, canary: int | None, share: float) -> int:
    """The version that answers a request with this key: the canary for ``share`` of the keys."""
    if canary is None or canary == champion or share <= 0:
        return champion
    return canary if bucket(key) < share else champion


@dataclass(frozen=True)
class Route:
    """Who answers a request (``version``) and who also scores it in the background (``shadow``)."""

    version: int
    shadow: int | None = None
    canary: bool = False


def route(
    key: str,
    champion: int,
    challenger: int | None,
    *,
    share: float,
    mode: Literal["canary", "shadow"] = "canary",
) -> Route:
    if challenger is None or challenger == champion:
        return Route(champion)
    if mode == "shadow":
        return Route(champion, shadow=challenger if bucket(key) < share else None)
    chosen = choose_version(key, champion, challenger, share)
    return Route(chosen, canary=chosen == challenger)


def request_key(
    records: Sequence[Mapping[str, Any]] | None,
    sticky_by: str | None,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """The key a request is routed by: the ``sticky_by`` header, else the first record's
    ``sticky_by`` field, else the request id, else a fresh random id (routed at random)."""
    if sticky_by:
        if headers is not None:
            value = headers.get(sticky_by.lower())
            if value:
                return f"{sticky_by.lower()}={value}"
        if records and isinstance(records[0], Mapping):
            field_value = records[0].get(sticky_by)
            if field_value is not None:
                return f"{sticky_by}={field_value}"
    if request_id is None and headers is not None:
        request_id = headers.get("x-request-id")
    return request_id or uuid.uuid4().hex


class CanaryRouter:
    """The serving app's side of the canary: holds each model's challenger and routes requests.

    ``spec`` is ``monitoring.canary`` (no routing when None). ``load(name, version)`` loads a version
    as the app serves it (``ModelHost.load``); ``log(row)`` appends a row to the prediction log. The
    registry is polled for the ``challenger`` alias at most every ``reload_seconds``, off the event
    loop, so a request never waits for a model to load.
    """

    def __init__(
        self,
        registry: Any,
        names: Sequence[str],
        spec: Any = None,
        *,
        load: Callable[[str, int], Any],
        log_row: Callable[[dict[str, Any]], None] | None = None,
        reload_seconds: float = 2.0,
    ) -> None:
        self.registry = registry
        self.names = list(names)
        self.spec = spec
        self._load = load
        self._log = log_row
        self.reload_seconds = reload_seconds
        self._challengers: dict[str, Any] = {}
        self._broken: dict[str, tuple[int, str]] = {}
        self._checked = 0.0
        self._refreshing = threading.Lock()

    @property
    def active(self) -> bool:
        return self.spec is not None

    def challenger(self, name: str) -> Any:
        return self._challengers.get(name)

    def refresh(self) -> None:
        """Load new challengers and drop those whose alias is gone (blocking; call off the loop)."""
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            self._checked = time.monotonic()
            for name in self.names:
                try:
                    aliases = self.registry.aliases(name)
                except Exception:
                    log.exception("could not read the aliases of %s", name)
                    continue
                version = aliases.get(CHALLENGER)
                if version is None or version == aliases.get(CHAMPION):
                    self._challengers.pop(name, None)
                    self._broken.pop(name, None)
                    continue
                current = self._challengers.get(name)
                if (current is not None and current.version == version) or self._broken.get(name, (0,))[
                    0
                ] == version:
                    continue
                try:
                    self._challengers[name] = self._load(name, int(version))
                    self._broken.pop(name, None)
                    log.info("%s: challenger v%s loaded (%s)", name, version, self.spec.mode)
                except Exception as exc:  # a challenger that cannot load is a failed canary
                    self._challengers.pop(name, None)
                    self._broken[name] = (int(version), f"{type(exc).__name__}: {exc}")
                    log.error("%s: challenger v%s cannot be loaded: %s", name, version, exc)
        finally:
            self._refreshing.release()

    def _maybe_refresh(self) -> None:
        if time.monotonic() - self._checked >= self.reload_seconds and not self._refreshing.locked():
            self._checked = time.monotonic()
            threading.Thread(target=self.refresh, name="headrace-canary-refresh", daemon=True).start()

    def key(self, headers: Mapping[str, str], records: Any) -> str:
        sticky = self.spec.sticky_by if self.spec is not None else None
        return request_key(records if isinstance(records, list) else None, sticky, headers=headers)

    async def predict(
        self, served: Any, records: list[dict[str, Any]], key: str, *, batch: bool = False
    ) -> tuple[Any, Any]:
        """Who answers and the answer: the champion (``served``) or, for the canary share, the
        challenger; a failing challenger is answered for by the champion and logged as an error.

        Every tabular route of the app (plain, batch, unversioned v2, SageMaker ``/invocations``)
        comes through here; ``batch`` answers by the vectorised pipeline in a worker thread."""
        if self.spec is None:
            return served, await _answer(served, records, batch)
        self._maybe_refresh()
        challenger = self._challengers.get(served.name)
        broken = self._broken.get(served.name)
        version = challenger.version if challenger is not None else (broken[0] if broken else None)
        chosen = route(key, served.version, version, share=self.spec.share, mode=self.spec.mode)
        if chosen.canary:
            started = time.perf_counter()
            try:
                if challenger is None:
                    raise RuntimeError(broken[1] if broken else "challenger not loaded")
                return challenger, await _answer(challenger, records, batch)
            except Exception as exc:
                self._error(served.name, version, records, exc, time.perf_counter() - started, CANARY_ERROR)
        answer = await _answer(served, records, batch)
        if chosen.shadow is not None:
            asyncio.get_running_loop().run_in_executor(
                None, self._shadow, served.name, challenger, broken, records, batch
            )
        return served, answer

    def _shadow(
        self, name: str, challenger: Any, broken: Any, records: list[dict[str, Any]], batch: bool = False
    ) -> None:
        started = time.perf_counter()
        try:
            if challenger is None:
                raise RuntimeError(broken[1] if broken else "challenger not loaded")
            answer = challenger.predict_records(records, allow_fast=not batch)
        except Exception as exc:
            version = challenger.version if challenger is not None else broken[0]
            self._error(name, version, records, exc, time.perf_counter() - started, SHADOW_ERROR)
            return
        if self._log is None:
            return
        seconds = time.perf_counter() - started
        now = datetime.now(UTC)
        for i, record in enumerate(records):
            output: dict[str, Any] = {"prediction": answer.predictions[i]}
            if answer.probabilities is not None:
                output["probabilities"] = answer.probabilities[i]
            self._log(
                _row(
                    name,
                    challenger.version,
                    SHADOW,
                    record,
                    output,
                    now,
                    seconds,
                    None if answer.scores is None else float(answer.scores[i]),
                )
            )

    def _error(
        self,
        name: str,
        version: int | None,
        records: list[dict[str, Any]],
        exc: BaseException,
        seconds: float,
        kind: str,
    ) -> None:
        log.warning("%s: challenger v%s failed (%s); the champion answered", name, version, exc)
        if self._log is None or version is None:
            return
        now = datetime.now(UTC)
        error = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        for record in records:
            self._log(_row(name, version, kind, record, error, now, seconds, None))


def _row(
    name: str,
    version: int,
    kind: str,
    record: dict[str, Any],
    output: dict[str, Any],
    now: datetime,
    seconds: float,
    score: float | None,
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "ts": now,
        "model": name,
        "version": int(version),
        "route": kind,
        "inputs": json.dumps(record, default=str),
        "output": json.dumps(output, default=str),
        "score": score,
        "latency_ms": seconds * 1000.0,
    }


async def _answer(served: Any, records: list[dict[str, Any]], batch: bool = False) -> Any:
    """As the app predicts: inline on the compiled fast path (microseconds a row, a few rows),
    in a worker thread otherwise, so the pipeline never blocks the event loop."""
    if not batch and getattr(served, "compiled", None) is not None and len(records) <= _INLINE_ROWS:
        return served.predict_records(records)
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(served.predict_records, records, allow_fast=not batch)
