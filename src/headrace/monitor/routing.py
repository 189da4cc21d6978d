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

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Route", "bucket", "choose_version", "request_key", "route"]


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
    records: Sequence[Mapping[str, Any]] | None, sticky_by: str | None, request_id: str | None = None
) -> str:
    """The key a request is routed by: the first record's ``sticky_by`` field, else the request id,
    else a fresh random id (then the request is routed at random, at the configured share)."""
    if sticky_by and records:
        value = records[0].get(sticky_by)
        if value is not None:
            return f"{sticky_by}={value}"
    return request_id or uuid.uuid4().hex
