"""``POST /feedback``: ground truth for earlier prediction ids (one, or a list under ``feedback``),
appended to the feedback dataset through the prediction-log writer, off the request path.

Ground truth drives retraining and rollbacks, so it is a write: it needs the write token
(``Authorization: Bearer <token>``, from ``HEADRACE_WRITE_TOKEN`` or ``serving.write_token``) and a
JSON body (415 otherwise), and holds at most ``serving.limits.max_feedback_items`` items (413)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..edge import JSON, json_response
from ..errors import RequestInvalid
from ..shared import Serving

__all__ = ["build"]

_VALUE = {"type": ["string", "number", "boolean", "null"]}
_WRITE: dict[str, Any] = {"security": [{"bearer": []}]}


def _feedback_body(most: int) -> dict[str, Any]:
    item = {
        "type": "object",
        "required": ["prediction_id", "actual"],
        "properties": {
            "prediction_id": {"type": "string", "minLength": 1, "description": "an id from a predict answer"},
            "actual": _VALUE,
            "model": {"type": "string"},
        },
        "additionalProperties": False,
    }
    return {
        "required": True,
        "description": "a list of items under 'feedback'; one item alone (the object itself) is read too",
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["feedback"],
                    "properties": {
                        "feedback": {"type": "array", "minItems": 1, "maxItems": most, "items": item}
                    },
                    "additionalProperties": False,
                }
            }
        },
    }


def build(s: Serving) -> APIRouter:
    router = APIRouter(tags=["monitor"])
    dataset = s.spec.prediction_log.feedback_dataset
    most = s.spec.limits.max_feedback_items
    count = ("feedback", most, f"send at most {most} items per request (serving.limits.max_feedback_items)")

    @router.post("/feedback", status_code=202, openapi_extra={**_WRITE, "requestBody": _feedback_body(most)})
    async def feedback(request: Request) -> Response:
        s.authorize_write(request)
        items = _feedback_items(await s.read_json(request, count=count))
        if s.writer is not None:
            now = datetime.now(UTC)
            for item in items:
                s.writer.put(
                    dataset,
                    {
                        "prediction_id": item["prediction_id"],
                        "model": item.get("model"),
                        "actual": orjson.dumps(item["actual"]).decode(),
                        "ts": now,
                    },
                )
        stored = s.writer is not None
        return json_response(
            {"accepted": len(items), "stored": stored, "dataset": dataset if stored else None}, 202
        )

    return router


def _feedback_items(doc: Any) -> list[dict[str, Any]]:
    if isinstance(doc, dict) and "feedback" in doc:
        raw = doc["feedback"]
        where: list[Any] = ["body", "feedback"]
        _no_other_keys(doc, {"feedback"}, ["body"])
    else:
        raw = [doc]
        where = ["body"]
    if not isinstance(raw, list) or not raw:
        raise RequestInvalid(
            [{"loc": where, "msg": "expected a non-empty list of feedback items", "type": "list_type"}]
        )
    out = []
    for i, item in enumerate(raw):
        loc = [*where, i] if where[-1] == "feedback" else where
        if not isinstance(item, dict):
            raise RequestInvalid([{"loc": loc, "msg": "expected an object", "type": "dict_type"}])
        _no_other_keys(item, {"prediction_id", "actual", "model"}, loc)
        pid = item.get("prediction_id")
        if not isinstance(pid, str) or not pid:
            raise RequestInvalid(
                [
                    {
                        "loc": [*loc, "prediction_id"],
                        "type": "missing",
                        "msg": "field 'prediction_id' (a string from a predict answer) is required",
                    }
                ]
            )
        if "actual" not in item:
            raise RequestInvalid(
                [
                    {
                        "loc": [*loc, "actual"],
                        "msg": "field 'actual' (the true label or value) is required",
                        "type": "missing",
                    }
                ]
            )
        actual = item["actual"]
        if isinstance(actual, dict | list):
            raise RequestInvalid(
                [
                    {
                        "loc": [*loc, "actual"],
                        "msg": "field 'actual' must be a string, number or boolean",
                        "type": "type_error",
                    }
                ]
            )
        model = item.get("model")
        if "model" in item and not isinstance(model, str):
            raise RequestInvalid(
                [{"loc": [*loc, "model"], "msg": "field 'model' must be a string", "type": "string_type"}]
            )
        out.append(
            {"prediction_id": pid, "actual": actual, "model": model if isinstance(model, str) else None}
        )
    return out


def _no_other_keys(doc: dict[str, Any], known: set[str], loc: list[Any]) -> None:
    for key in doc:
        if key not in known:
            raise RequestInvalid(
                [
                    {
                        "loc": [*loc, str(key)[:40]],
                        "msg": f"field {str(key)[:40]!r} is unknown here; known: {', '.join(sorted(known))}",
                        "type": "extra_forbidden",
                    }
                ]
            )
