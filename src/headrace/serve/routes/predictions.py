"""Plain JSON predictions: ``GET /models``, ``POST /models/{name}/predict`` (a few records, the fast
path; an image model takes a multipart upload or base64 images) and ``POST /models/{name}/predict/batch``
(up to ``max_batch_rows`` records, vectorised, off the loop). Tabular requests go through the shared
path (``Serving.predict``): canary routing, the prediction log and the metrics."""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..edge import JSON, json_response
from ..errors import RequestInvalid
from ..host import Served
from ..shared import Serving, answer_doc, tabular

__all__ = ["RECORDS_BODY", "b64", "build"]

_VALUE = {"type": ["string", "number", "boolean", "null"]}
RECORDS_BODY = {
    "required": True,
    "content": {
        JSON: {
            "schema": {
                "type": "object",
                "required": ["records"],
                "properties": {
                    "records": {
                        "type": "array",
                        "maxItems": 64,
                        "items": {"type": "object", "additionalProperties": _VALUE, "maxProperties": 40},
                    }
                },
            }
        }
    },
}
_INLINE_MAX = 64


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

    @router.post("/models/{name}/predict", openapi_extra={"requestBody": RECORDS_BODY})
    async def predict(name: str, request: Request) -> Response:
        started = time.perf_counter()
        served = s.served(name, request)
        if served.kind == "image":
            return await _predict_images(s, served, request, started)
        tabular(served)
        raw = _records(await s.read_json(request))
        if isinstance(raw, list) and len(raw) > _INLINE_MAX:
            raise RequestInvalid(
                [
                    {
                        "loc": ["body", "records"],
                        "msg": f"at most {_INLINE_MAX} records here; use /predict/batch",
                        "type": "too_long",
                    }
                ]
            )
        done = await s.predict(request, served, raw, route="predict")
        return json_response(answer_doc(done.served, done.answer, done.ids))

    @router.post("/models/{name}/predict/batch", openapi_extra={"requestBody": RECORDS_BODY})
    async def predict_batch(name: str, request: Request) -> Response:
        served = tabular(s.served(name, request))
        raw = _records(await s.read_json(request))
        if isinstance(raw, list) and len(raw) > s.spec.max_batch_rows:
            raise RequestInvalid(
                [
                    {
                        "loc": ["body", "records"],
                        "type": "too_long",
                        "msg": f"at most {s.spec.max_batch_rows} records per batch",
                    }
                ]
            )
        done = await s.predict(request, served, raw, route="batch", batch=True)
        return json_response(answer_doc(done.served, done.answer, done.ids))

    return router


def _records(doc: Any) -> Any:
    if not isinstance(doc, dict) or "records" not in doc:
        raise RequestInvalid(
            [{"loc": ["body", "records"], "msg": "field 'records' is required", "type": "missing"}]
        )
    return doc["records"]


async def _predict_images(s: Serving, served: Served, request: Request, started: float) -> Response:
    content_type = request.headers.get("content-type", "")
    images: list[bytes] = []
    if content_type.startswith("multipart/form-data"):
        async with request.form() as form:  # closes the uploads' spooled temporary files
            for _, value in form.multi_items():
                if hasattr(value, "read"):
                    images.append(await value.read())
    else:
        doc = await s.read_json(request)
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
    ids = [uuid.uuid4().hex for _ in images]
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
