"""Live recommender state: each user's interactions since the model was trained.

``POST /interactions`` adds to it and the very next ``GET /users/{id}/recommendations`` reads it, so
recommendations change at once. Two backends, one async interface:

- ``MemoryLiveState`` (the default): a dict in the serving process;
- ``RedisLiveState``: one Redis hash per user (field = the item id as JSON, value = summed weight),
  so every replica behind a load balancer sees the same state.

State is keyed by model *name*, not version, so a hot swap to a new version keeps it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Protocol

from ..errors import ServiceUnavailable

__all__ = ["LiveState", "MemoryLiveState", "RedisLiveState", "open_live_state"]


class LiveState(Protocol):
    async def add(self, model: str, user_id: str, item_id: Any, weight: float) -> None: ...

    async def history(self, model: str, user_id: str) -> dict[Any, float]: ...

    async def clear(self, model: str) -> None: ...

    async def close(self) -> None: ...


class MemoryLiveState:
    """In the serving process: fast, but each replica (and each worker) has its own."""

    def __init__(self) -> None:
        self._users: dict[tuple[str, str], dict[Any, float]] = defaultdict(dict)

    async def add(self, model: str, user_id: str, item_id: Any, weight: float) -> None:
        items = self._users[(model, str(user_id))]
        items[item_id] = items.get(item_id, 0.0) + float(weight)

    async def history(self, model: str, user_id: str) -> dict[Any, float]:
        return dict(self._users.get((model, str(user_id)), {}))

    async def clear(self, model: str) -> None:
        for key in [key for key in self._users if key[0] == model]:
            del self._users[key]

    async def close(self) -> None:
        return None


class RedisLiveState:
    """In Redis, shared by every replica; ``prefix`` separates projects on one server."""

    def __init__(self, url: str, prefix: str = "headrace:live") -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.prefix = prefix
        self._redis = aioredis.Redis.from_url(url, decode_responses=True)

    def _key(self, model: str, user_id: str) -> str:
        return f"{self.prefix}:{model}:user:{user_id}"

    async def add(self, model: str, user_id: str, item_id: Any, weight: float) -> None:
        try:
            await self._redis.hincrbyfloat(self._key(model, user_id), json.dumps(item_id), float(weight))
        except Exception as exc:  # redis raises ConnectionError, TimeoutError, ...
            raise _unavailable(self.url, exc) from exc

    async def history(self, model: str, user_id: str) -> dict[Any, float]:
        try:
            raw = await self._redis.hgetall(self._key(model, user_id))
        except Exception as exc:
            raise _unavailable(self.url, exc) from exc
        return {json.loads(field): float(value) for field, value in raw.items()}

    async def clear(self, model: str) -> None:
        try:
            async for key in self._redis.scan_iter(match=f"{self.prefix}:{model}:user:*", count=500):
                await self._redis.delete(key)
        except Exception as exc:
            raise _unavailable(self.url, exc) from exc

    async def close(self) -> None:
        await self._redis.aclose()


def _unavailable(url: str, exc: BaseException) -> ServiceUnavailable:
    from ..log import redact

    return ServiceUnavailable(
        f"the recommender's live state in Redis ({redact(url)}) is unreachable ({type(exc).__name__})",
        hint="check that Redis is running, or leave serving.redis_url unset for in-process state",
    )


def open_live_state(redis_url: str | None, prefix: str = "headrace:live") -> MemoryLiveState | RedisLiveState:
    return RedisLiveState(redis_url, prefix) if redis_url else MemoryLiveState()
