"""The Open Inference Protocol v2: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
``GET /v2/models/{name}[/versions/{v}]``, ``.../ready``, ``POST .../infer`` (one tensor per input
column, numeric or BYTES; an image model takes one BYTES tensor of base64 images).

The unversioned ``infer`` is routed like every prediction (canary, shadow); a versioned route asks
for that version and is answered by it (loaded on first use) or 404."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ... import __version__
from ...errors import UsageError
from ..edge import JSON, json_response
from ..errors import PayloadTooLarge, RequestInvalid
from ..host import Served
from ..shared import Serving
from .predictions import b64

__all__ = ["build"]

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 64}, "maxItems": 3},
        "datatype": {
            "type": "string",
            "enum": ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "FP16", "FP32", "FP64", "BYTES"],
        },
        "data": {"type": "array", "maxItems": 64},
        "parameters": {"type": "object"},
    },
}
_INFER_BODY = {
    "required": True,
    "content": {
        JSON: {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "inputs": {"type": "array", "items": _TENSOR, "maxItems": 40},
                    "outputs": {"type": "array", "items": {"type": "object"}},
                    "parameters": {"type": "object"},
                },
            }
        }
    },
}
_V2_TYPE = {"number": "FP64", "bool": "BOOL", "string": "BYTES", "date": "BYTES", "datetime": "BYTES"}
_NUMERIC_TYPES = {
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
}


def build(s: Serving) -> APIRouter:
    router = APIRouter(tags=["v2"])

    @router.get("/v2")
    async def v2_server() -> Response:
        return json_response({"name": "headrace", "version": __version__, "extensions": []})

    @router.get("/v2/health/live")
    async def v2_live() -> Response:
        return json_response({"live": True})

    @router.get("/v2/health/ready")
    async def v2_ready() -> Response:
        ready = s.host.ready()
        return json_response({"ready": ready}, 200 if ready else 503)

    async def served(name: str, version: str | None, request: Request) -> Served:
        if version is None:
            return s.served(name, request)
        return await s.served_version(name, version, request)

    @router.get("/v2/models/{name}")
    async def v2_model(name: str, request: Request) -> Response:
        return json_response(_metadata(await served(name, None, request)))

    @router.get("/v2/models/{name}/versions/{version}")
    async def v2_model_version(name: str, version: str, request: Request) -> Response:
        return json_response(_metadata(await served(name, version, request)))

    @router.get("/v2/models/{name}/ready")
    async def v2_model_ready(name: str, request: Request) -> Response:
        found = await served(name, None, request)
        return json_response({"name": name, "ready": True, "version": found.version_label})

    @router.get("/v2/models/{name}/versions/{version}/ready")
    async def v2_model_version_ready(name: str, version: str, request: Request) -> Response:
        found = await served(name, version, request)
        return json_response({"name": name, "ready": True, "version": found.version_label})

    async def infer(name: str, version: str | None, request: Request) -> Response:
        model = await served(name, version, request)
        doc = await s.read_json(request, count=("inputs", 1000, "send one tensor per input column"))
        if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
            raise RequestInvalid(
                [
                    {
                        "loc": ["body", "inputs"],
                        "msg": "field 'inputs' (a list of tensors) is required",
                        "type": "missing",
                    }
                ]
            )
        tensors = {}
        most = s.spec.limits.max_batch_records
        for i, tensor in enumerate(doc["inputs"]):
            tensor_name = _tensor_name(tensor, i)  # checked before the values are read
            tensors[tensor_name] = _tensor_values(tensor, i, most)
        request_id = doc.get("id") if isinstance(doc.get("id"), str) else None
        wanted = _requested_outputs(doc.get("outputs"))
        if model.kind == "image":
            values = tensors.get("image") or (next(iter(tensors.values())) if len(tensors) == 1 else None)
            if values is None:
                raise RequestInvalid(
                    [{"loc": ["body", "inputs"], "msg": "send one BYTES tensor 'image'", "type": "missing"}]
                )
            images = [v if isinstance(v, bytes) else b64(v, ("body", "inputs", "image")) for v in values]
            prediction = await run_in_threadpool(model.model.predict_images, images)
            outputs = [_tensor("label", "BYTES", [len(images)], [str(p) for p in prediction.predictions])]
            return json_response(_response(model, request_id, outputs, wanted))
        if model.kind == "recommender":
            raise UsageError(
                f"model {name!r} is a recommender", hint="use GET /users/{user_id}/recommendations"
            )
        if model.schema is None:
            raise UsageError(
                f"model {name!r} has no input signature", hint="retrain it with 'headrace train'"
            )
        records = _records_from_tensors(tensors, model.schema.fields)
        done = await s.predict(
            request, model, records, route="v2_infer", pinned=version is not None, where=("body", "inputs")
        )
        model, answer, ids, n = done.served, done.answer, done.ids, len(done.records)
        if model.task == "classification":
            labels = answer.predictions
            label_tensor = (
                _tensor("label", "BYTES", [n], [str(v) for v in labels])
                if any(isinstance(v, str) for v in labels)
                else _tensor("label", "INT64", [n], [int(v) for v in labels])
            )
            names = [str(c) for c in model.classes or []]
            flat = [float(p[c]) for p in answer.probabilities or [] for c in names]
            outputs = [label_tensor, _tensor("probabilities", "FP64", [n, len(names)], flat)]
        else:
            outputs = [_tensor("label", "FP64", [n], [float(v) for v in answer.predictions])]
        outputs.append(_tensor("prediction_id", "BYTES", [n], ids))
        return json_response(_response(model, request_id, outputs, wanted))

    @router.post("/v2/models/{name}/infer", openapi_extra={"requestBody": _INFER_BODY})
    async def v2_infer(name: str, request: Request) -> Response:
        return await infer(name, None, request)

    @router.post("/v2/models/{name}/versions/{version}/infer", openapi_extra={"requestBody": _INFER_BODY})
    async def v2_infer_version(name: str, version: str, request: Request) -> Response:
        return await infer(name, version, request)

    return router


def _metadata(served: Served) -> dict[str, Any]:
    if served.kind == "image":
        inputs = [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
        outputs = [{"name": "label", "datatype": "BYTES", "shape": [-1]}]
    elif served.kind == "recommender":
        inputs = [{"name": "user_id", "datatype": "BYTES", "shape": [-1]}]
        outputs = [{"name": "items", "datatype": "BYTES", "shape": [-1, -1]}]
    else:
        fields = served.schema.fields if served.schema is not None else {}
        inputs = [{"name": n, "datatype": _V2_TYPE.get(k, "BYTES"), "shape": [-1]} for n, k in fields.items()]
        label_type = "BYTES" if served.task == "classification" else "FP64"
        outputs = [{"name": "label", "datatype": label_type, "shape": [-1]}]
        if served.task == "classification":
            outputs.append(
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(served.classes or [])]}
            )
    return {
        "name": served.name,
        "versions": [served.version_label],
        "platform": f"headrace_{served.flavor}",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {
            "task": served.task,
            "classes": [str(c) for c in served.classes or []],
            "threshold": served.threshold,
        },
    }


def _tensor_name(tensor: Any, i: int) -> str:
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise RequestInvalid(
            [{"loc": ["body", "inputs", i, "name"], "msg": "each tensor needs a 'name'", "type": "missing"}]
        )
    return str(tensor["name"])


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        out: list[Any] = []
        for item in data:
            out.extend(_flatten(item)) if isinstance(item, list) else out.append(item)
        return out
    return [data]


def _tensor_values(tensor: dict[str, Any], i: int, most: int) -> list[Any]:
    name = tensor["name"]
    datatype = tensor.get("datatype")
    where = ["body", "inputs", i]
    if not isinstance(datatype, str) or (
        datatype not in _NUMERIC_TYPES and datatype not in ("BOOL", "BYTES")
    ):
        raise RequestInvalid(
            [
                {
                    "loc": [*where, "datatype"],
                    "type": "enum",
                    "msg": f"tensor {name!r}: datatype must be BOOL, BYTES, INT*, UINT* or FP*",
                }
            ]
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise RequestInvalid(
            [
                {
                    "loc": [*where, "shape"],
                    "msg": f"tensor {name!r}: shape must be a list of sizes",
                    "type": "list_type",
                }
            ]
        )
    expected = 1
    for d in shape:
        expected *= d
    data = tensor.get("data")
    if expected > most or (isinstance(data, list) and len(data) > most):  # before any value is read
        raise PayloadTooLarge(
            f"tensor {name!r} holds more than {most} values",
            hint="split the request (serving.limits.max_batch_records)",
        )
    if "data" not in tensor:
        raise RequestInvalid(
            [{"loc": [*where, "data"], "msg": f"tensor {name!r} has no 'data'", "type": "missing"}]
        )
    values = _flatten(tensor["data"])
    if len(values) != expected:
        raise RequestInvalid(
            [
                {
                    "loc": [*where, "data"],
                    "type": "shape",
                    "msg": f"tensor {name!r}: shape {shape} needs {expected} values, got {len(values)}",
                }
            ]
        )
    for value in values:
        ok = (
            (datatype == "BYTES" and isinstance(value, str))
            or (datatype == "BOOL" and isinstance(value, bool))
            or (datatype in _NUMERIC_TYPES and isinstance(value, int | float) and not isinstance(value, bool))
            or value is None
        )
        if not ok:
            raise RequestInvalid(
                [
                    {
                        "loc": [*where, "data"],
                        "type": "type_error",
                        "msg": f"tensor {name!r}: {value!r} is not a {datatype} value",
                    }
                ]
            )
    return values


def _records_from_tensors(tensors: dict[str, list[Any]], fields: dict[str, str]) -> list[dict[str, Any]]:
    unknown = [n for n in tensors if n not in fields]
    if unknown:
        raise RequestInvalid(
            [
                {
                    "loc": ["body", "inputs", n],
                    "type": "extra_forbidden",
                    "msg": f"input {n!r} is unknown to this model; it reads: {', '.join(fields)}",
                }
                for n in unknown
            ]
        )
    missing = [n for n in fields if n not in tensors]
    if missing:
        raise RequestInvalid(
            [
                {"loc": ["body", "inputs", n], "msg": f"input tensor {n!r} is required", "type": "missing"}
                for n in missing
            ]
        )
    sizes = {len(v) for v in tensors.values()}
    if len(sizes) > 1:
        raise RequestInvalid(
            [
                {
                    "loc": ["body", "inputs"],
                    "type": "shape",
                    "msg": "every input tensor must hold the same number of rows",
                }
            ]
        )
    n = sizes.pop() if sizes else 0
    return [{name: tensors[name][i] for name in fields} for i in range(n)]


def _tensor(name: str, datatype: str, shape: list[int], data: list[Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _requested_outputs(outputs: Any) -> set[str] | None:
    if not isinstance(outputs, list) or not outputs:
        return None
    return {o["name"] for o in outputs if isinstance(o, dict) and isinstance(o.get("name"), str)}


def _response(
    served: Served, request_id: str | None, outputs: list[dict[str, Any]], wanted: set[str] | None
) -> dict[str, Any]:
    if wanted is not None:
        outputs = [o for o in outputs if o["name"] in wanted]
    doc: dict[str, Any] = {
        "model_name": served.name,
        "model_version": served.version_label,
        "outputs": outputs,
    }
    if request_id is not None:
        doc["id"] = request_id
    return doc
