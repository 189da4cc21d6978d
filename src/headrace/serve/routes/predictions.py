"""Plain JSON predictions: ``GET /models``, ``POST /models/{name}/predict`` (a few records, the fast
path; an image model takes a multipart upload or base64 images) and ``POST /models/{name}/predict/batch``
(up to ``serving.limits.max_batch_records`` records, vectorised, off the loop). Tabular requests go
through the shared path (``Serving.predict``): canary routing, the prediction log and the metrics.
A request with more records than its route allows is a 413 before any record is read."""

from __future__ import annotations

import base64
import binascii
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..edge import JSON, json_response
from ..errors import RequestInvalid
from ..host import Served
from ..shared import Serving, answer_doc, new_id, tabular

__all__ = ["b64", "build", "records_body"]

_VALUE = {"type": ["string", "number", "boolean", "null"]}
_MULTIPART = "multipart/form-data"


def records_body(most: int, images: bool = False) -> dict[str, Any]:
    """The OpenAPI request body of a records route (at most ``most`` records)."""
    content: dict[str, Any] = {
        JSON: {
            "schema": {
                "type": "object",
                "required": ["records"],
                "properties": {
                    "records": {
                        "type": "array",
                        "maxItems": most,
                        "items": {"type": "object", "additionalProperties": _VALUE, "maxProperties": 40},
                    },
                },
                "additionalProperties": False,
            }
        }
    }
    if images:  # an image model takes base64 images under 'images', or files
        schema = content[JSON]["schema"]
        schema["properties"]["images"] = {
            "type": "array",
            "description": "an image model's images, base64 (instead of 'records')",
            "items": {"type": "string"},
        }
        schema["required"] = []
        schema["minProperties"] = 1
        schema["maxProperties"] = 1
        content[_MULTIPART] = {
            "schema": {
                "type": "object",
                "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
            }
        }
    return {"required": True, "content": content}


def build(s: Serving) -> APIRouter:
    router = APIRouter(tags=["predict"])

    @router.get("/models")
    async def list_models() -> Response:
        served = s.host.served().values()
        return json_response(
            {
                "models": [
                    {
                        "name": m.name,
                        "version": m.version,
                        "task": m.task,
                        "flavor": m.flavor,
                        "fast_path": m.compiled is not None,
                        "fast_path_note": m.not_compiled,
                    }
                    for m in served
                ],
                "errors": s.host.errors(),
            }
        )

    limits = s.spec.limits
    one = (
        "records",
        limits.max_records,
        f"send at most {limits.max_records} records here, or use /models/{{name}}/predict/batch",
    )
    many = ("records", limits.max_batch_records, "split the batch (serving.limits.max_batch_records)")

    @router.post(
        "/models/{name}/predict", openapi_extra={"requestBody": records_body(limits.max_records, True)}
    )
    async def predict(name: str, request: Request) -> Response:
        started = time.perf_counter()
        served = s.served(name, request)
        if served.kind == "image":
            return await _predict_images(s, served, request, started)
        tabular(served)
        raw = _records(await s.read_json(request, count=one))
        done = await s.predict(request, served, raw, route="predict")
        return json_response(answer_doc(done.served, done.answer, done.ids))

    @router.post(
        "/models/{name}/predict/batch", openapi_extra={"requestBody": records_body(limits.max_batch_records)}
    )
    async def predict_batch(name: str, request: Request) -> Response:
        served = tabular(s.served(name, request))
        raw = _records(await s.read_json(request, count=many))
        done = await s.predict(request, served, raw, route="batch", batch=True)
        return json_response(answer_doc(done.served, done.answer, done.ids))

    return router


def _records(doc: Any) -> Any:
    if not isinstance(doc, dict) or "records" not in doc:
        raise RequestInvalid(
            [{"loc": ["body", "records"], "msg": "field 'records' is required", "type": "missing"}]
        )
    if len(doc) > 1:  # 'images' (an image model's) or anything else: not read here, so refused
        other = next(str(k) for k in doc if k != "records")[:40]
        raise RequestInvalid(
            [
                {
                    "loc": ["body", other],
                    "msg": f"field {other!r} is unknown here; a tabular model reads 'records'",
                    "type": "extra_forbidden",
                }
            ]
        )
    return doc["records"]


async def _predict_images(s: Serving, served: Served, request: Request, started: float) -> Response:
    content_type = request.headers.get("content-type", "")
    images: list[bytes] = []
    s.require_json(request, binary=(_MULTIPART,))
    if content_type.startswith(_MULTIPART):
        most = s.spec.limits.max_records
        async with request.form(
            max_files=most, max_fields=most
        ) as form:  # closes the uploads' spooled temporary files
            for _, value in form.multi_items():
                if hasattr(value, "read"):
                    images.append(await value.read())
    else:
        most = s.spec.limits.max_records
        doc = await s.read_json(request, count=("images", most, f"send at most {most} images per request"))
        raw = doc.get("images") if isinstance(doc, dict) else None
        if not isinstance(raw, list) or not raw:
            raise RequestInvalid(
                [
                    {
                        "loc": ["body", "images"],
                        "type": "missing",
                        "msg": "send 'images': a list of base64 strings, or a multipart upload",
                    }
                ]
            )
        images = [b64(v, ("body", "images", i)) for i, v in enumerate(raw)]
    if not images:
        raise RequestInvalid(
            [{"loc": ["body", "files"], "msg": "no image files uploaded", "type": "missing"}]
        )
    prediction = await run_in_threadpool(served.model.predict_images, images)
    ids = [new_id() for _ in images]
    doc = {
        "model": served.name,
        "version": served.version,
        "ids": ids,
        "predictions": list(prediction.predictions),
        "probabilities": prediction.probabilities,
    }
    if s.writer is not None:
        now = datetime.now(UTC)
        probabilities = prediction.probabilities or [None] * len(images)
        # the class probabilities go to the log: the monitor reads confidence and the class mix there
        output = [
            {"prediction": label, **({"probabilities": p} if p else {})}
            for label, p in zip(prediction.predictions, probabilities, strict=True)
        ]
        top = [max(p.values()) if isinstance(p, dict) and p else None for p in probabilities]
        for i in range(len(prediction.predictions)):
            s.writer.put(
                s.spec.prediction_log.dataset,
                {
                    "id": ids[i],
                    "ts": now,
                    "model": served.name,
                    "version": served.version,
                    "route": "predict",
                    "inputs": orjson.dumps({"bytes": len(images[i])}).decode(),
                    "output": orjson.dumps(output[i], default=str).decode(),
                    "score": top[i],
                    "latency_ms": (time.perf_counter() - started) * 1000.0,
                },
            )
    for label in prediction.predictions:
        s.metrics.child(s.metrics.predictions, served.name, served.version_label, str(label)).inc()
    return json_response(doc)


def b64(value: Any, loc: tuple[Any, ...]) -> bytes:
    if not isinstance(value, str):
        raise RequestInvalid([{"loc": list(loc), "msg": "expected a base64 string", "type": "string_type"}])
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestInvalid([{"loc": list(loc), "msg": "not valid base64", "type": "value_error"}]) from None
