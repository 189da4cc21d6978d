"""Real-time recommendations: ``GET /users/{user_id}/recommendations?k=10`` (blending the user's live
history) and ``POST /interactions`` (added to the live state, Redis or in process, and appended to
the interactions dataset through the prediction-log writer). An interaction is a write: it needs the
write token (``Authorization: Bearer <token>``) and a JSON body (415 otherwise)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ...errors import UsageError
from ..edge import JSON, json_response
from ..errors import RequestInvalid
from ..host import Served
from ..shared import Serving, new_id, unavailable

__all__ = ["build"]

_MAX_ID = 2**53 - 1  # an integer id every JSON client reads exactly; larger ones: send a string
_ID = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "integer", "minimum": -_MAX_ID, "maximum": _MAX_ID},
    ]
}
_INTERACTION_BODY = {
    "required": True,
    "content": {
        JSON: {
            "schema": {
                "type": "object",
                "required": ["user_id", "item_id"],
                "properties": {
                    "user_id": _ID,
                    "item_id": _ID,
                    "weight": {"type": "number", "minimum": -1e12, "maximum": 1e12},
                    "ts": {
                        "anyOf": [
                            {"type": "string", "format": "date-time"},
                            {"type": "number", "minimum": 0, "exclusiveMaximum": 1e11},
                            {"type": "null"},
                        ]
                    },
                    "model": {
                        "type": ["string", "null"],
                        "description": "the recommender (when several are served)",
                    },
                },
            }
        }
    },
}


def build(s: Serving) -> APIRouter:
    router = APIRouter(tags=["recommend"])
    host, metrics = s.host, s.metrics

    def recommender(model: str | None, request: Request) -> Served:
        if model:
            served = host.get(model)
        else:
            found = {m.name for m in host.of_kind("recommender")}
            recommenders = [n for n in host.names if n in found]
            if len(recommenders) != 1:
                if not recommenders and any(n not in host.served() for n in host.names):
                    raise unavailable("the recommender")
                raise UsageError(
                    "no recommender is served" if not recommenders else "several recommenders are served",
                    hint="add one to serving.models" if not recommenders else "pass ?model=NAME",
                )
            served = host.get(recommenders[0])
        request.scope["headrace.version"] = served.version_label
        request.scope["headrace.model"] = served.name
        if served.kind != "recommender":
            raise UsageError(f"model {served.name!r} is not a recommender", hint="pass ?model= a recommender")
        return served

    @router.get("/users/{user_id}/recommendations")
    async def recommendations(
        request: Request,
        user_id: str,
        k: Annotated[int, Query(ge=1, le=1000)] = 10,
        model: str | None = None,
    ) -> Response:
        if not 1 <= k <= 1000:
            raise RequestInvalid(
                [{"loc": ["query", "k"], "msg": "k must be between 1 and 1000", "type": "range"}]
            )
        served = recommender(model, request)
        history = await s.live.history(served.name, user_id)
        items = served.model.recommend(user_id, k, live=history)
        doc: dict[str, Any] = {
            "user_id": user_id,
            "model": served.name,
            "version": served.version,
            "items": [{"item_id": item, "score": score} for item, score in items],
        }
        users = getattr(served.model, "user_index", None)
        if users is not None and str(user_id) not in users:
            resolve = served.model.resolve_item
            if not any(resolve(i) is not None for i in (history or {})):
                doc["notes"] = ["unknown user with no history: the most popular items"]
                metrics.child(metrics.notes, served.name, served.version_label, "popular_fallback").inc()
        if s.writer is not None:  # the served list: the monitor's live hit rate and NDCG follow it
            s.writer.put(
                s.spec.prediction_log.dataset,
                {
                    "id": new_id(),
                    "ts": datetime.now(UTC),
                    "model": served.name,
                    "version": served.version,
                    "route": "recommend",
                    "inputs": orjson.dumps({"user_id": user_id, "k": k}).decode(),
                    "output": orjson.dumps({"items": doc["items"]}, default=str).decode(),
                    "score": None,
                    "latency_ms": None,
                },
            )
        return json_response(doc)

    @router.post(
        "/interactions",
        status_code=202,
        openapi_extra={"security": [{"bearer": []}], "requestBody": _INTERACTION_BODY},
    )
    async def interactions(request: Request) -> Response:
        s.authorize_write(request)
        event = _interaction(await s.read_json(request))
        served = recommender(event.get("model"), request)
        user_id = str(event["user_id"])
        item = served.model.resolve_item(event["item_id"])
        item_id = item if item is not None else event["item_id"]
        await s.live.add(served.name, user_id, item_id, event["weight"])
        metrics.child(metrics.interactions, served.name).inc()
        if s.writer is not None:
            dataset = s.spec.interactions_dataset or (served.mv.dataset if served.mv is not None else None)
            columns = (served.mv.signature or {}) if served.mv is not None else {}
            if dataset:
                s.writer.put(
                    dataset,
                    {
                        columns.get("user") or "user_id": event["user_id"],
                        columns.get("item") or "item_id": item_id,
                        **({columns["weight"]: event["weight"]} if columns.get("weight") else {}),
                        **({columns["ts"]: event["ts"]} if columns.get("ts") else {"ts": event["ts"]}),
                    },
                )
        doc = {"accepted": True, "user_id": user_id, "item_id": item_id, "model": served.name}
        return json_response(doc, 202)

    return router


def _interaction(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise RequestInvalid([{"loc": ["body"], "msg": "expected an object", "type": "dict_type"}])
    problems = []
    ids: dict[str, Any] = {}
    for key in ("user_id", "item_id"):
        value = doc.get(key)
        if isinstance(value, float) and value.is_integer() and abs(value) <= _MAX_ID:
            value = int(value)  # 7.0 is an integer to JSON (and to the OpenAPI document)
        ids[key] = value
        if key not in doc:
            problems.append({"loc": ["body", key], "msg": f"field {key!r} is required", "type": "missing"})
        elif (
            isinstance(value, bool)
            or not isinstance(value, str | int)
            or value == ""
            or (isinstance(value, int) and abs(value) > _MAX_ID)
        ):
            problems.append(
                {
                    "loc": ["body", key],
                    "msg": f"field {key!r} must be a string or an integer within ±(2**53 - 1)",
                    "type": "type_error",
                }
            )
    weight = doc.get("weight", 1.0)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or weight != weight
        or abs(weight) > 1e12
    ):
        problems.append(
            {"loc": ["body", "weight"], "msg": "field 'weight' must be a finite number", "type": "type_error"}
        )
    ts = doc.get("ts")
    when: datetime = datetime.now(UTC)
    bad_ts = {"loc": ["body", "ts"], "msg": "field 'ts' must be an ISO time or unix seconds"}
    if ts is None:
        pass
    elif isinstance(ts, int | float) and not isinstance(ts, bool) and 0 <= ts < 1e11:
        when = datetime.fromtimestamp(ts, UTC)
    elif isinstance(ts, str):
        try:
            when = datetime.fromisoformat(ts)
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
        except ValueError:
            problems.append({**bad_ts, "type": "value_error"})
    else:
        problems.append({**bad_ts, "type": "type_error"})
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        problems.append(
            {"loc": ["body", "model"], "msg": "field 'model' must be a string", "type": "type_error"}
        )
    if problems:
        raise RequestInvalid(problems)
    return {
        "user_id": ids["user_id"],
        "item_id": ids["item_id"],
        "weight": float(weight),
        "ts": when,
        "model": model,
    }
