"""``POST /feedback``: ground truth for earlier prediction ids (one, or a list under ``feedback``),
appended to the feedback dataset through the prediction-log writer, off the request path."""

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
_FEEDBACK_BODY = {
    "required": True,
    "content": {
        JSON: {
            "schema": {
                "type": "object",
                "properties": {
                    "prediction_id": {"type": "string"},
                    "actual": _VALUE,
                    "feedback": {
                        "type": "array",
                        "maxItems": 100,
                        "items": {
                            "type": "object",
                            "required": ["prediction_id", "actual"],
                            "properties": {"prediction_id": {"type": "string"}, "actual": _VALUE},
                        },
                    },
                },
            }
        }
    },
}


def build(s: Serving) -> APIRouter:
    router = APIRouter(tags=["monitor"])
    dataset = s.spec.prediction_log.feedback_dataset

    @router.post("/feedback", status_code=202, openapi_extra={"requestBody": _FEEDBACK_BODY})
    async def feedback(request: Request) -> Response:
        items = _feedback_items(await s.read_json(request))
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
        out.append(
            {"prediction_id": pid, "actual": actual, "model": model if isinstance(model, str) else None}
        )
    return out
