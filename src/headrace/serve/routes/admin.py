"""Admin routes (``Authorization: Bearer <token>``): ``POST /admin/models/{name}/reload``,
``/promote`` and ``/rollback``. The dashboard's buttons call these too (with its CSRF token, which
every request from a browser needs). A body, where there is one, is JSON (415 otherwise).

A promotion here goes through the model's ``promote_if`` gate exactly as ``headrace models promote``
does (``Registry.promote(gate=...)``): a refusal answers 409 with the gate's reason and is in the
ledger as ``promote_refused``. ``"force": true`` (or ``?force=true``) promotes past the gate; it needs
the admin token like every route here, and the ledger entry is marked forced."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..edge import JSON, json_response
from ..errors import RequestInvalid
from ..shared import Serving

__all__ = ["build"]

_ADMIN: dict[str, Any] = {"security": [{"bearer": []}]}
_PROMOTE_BODY = {
    "required": True,
    "content": {
        JSON: {
            "schema": {
                "type": "object",
                "required": ["version"],
                "properties": {
                    "version": {"type": "integer", "minimum": 1, "maximum": 2**53},
                    "reason": {"type": "string"},
                    "force": {"type": "boolean", "description": "promote past the promote_if gate"},
                },
            }
        }
    },
}


def build(s: Serving) -> APIRouter:
    router = APIRouter(tags=["admin"])
    host, registry = s.host, s.registry

    @router.post("/admin/models/{name}/reload", openapi_extra=_ADMIN)
    async def admin_reload(name: str, request: Request) -> Response:
        s.admin(request)
        await s.require_body_type(request)
        if name not in host.names:
            host.get(name)  # NotFound naming the served models
        swapped = await run_in_threadpool(host.check, name, force=True)
        served = host.get(name)
        return json_response({"model": name, "version": served.version, "reloaded": swapped})

    @router.post("/admin/models/{name}/promote", openapi_extra={**_ADMIN, "requestBody": _PROMOTE_BODY})
    async def admin_promote(name: str, request: Request) -> Response:
        actor = s.admin(request)
        doc = await s.read_json(request)
        version = doc.get("version") if isinstance(doc, dict) else None
        if isinstance(version, float) and version.is_integer() and abs(version) < 2**53:
            version = int(version)  # 3.0 is an integer to JSON Schema, as it is to the OpenAPI document
        if isinstance(version, bool) or not isinstance(version, int):
            raise RequestInvalid(
                [
                    {
                        "loc": ["body", "version"],
                        "msg": "field 'version' must be an integer",
                        "type": "int_type",
                    }
                ]
            )
        if not isinstance(doc.get("reason", ""), str):
            raise RequestInvalid(
                [{"loc": ["body", "reason"], "msg": "field 'reason' must be a string", "type": "string_type"}]
            )
        force = _force(doc, request)
        reason = str(doc.get("reason") or "promoted through the API")
        gate = (s.gates or {}).get(name)
        mv = await run_in_threadpool(
            lambda: registry.promote(
                name, version, reason=reason, gate=gate, actor=actor, **({"forced": True} if force else {})
            )
        )
        if name in host.names:
            await run_in_threadpool(host.check, name)
        return json_response({"model": name, "champion": mv.version, "forced": force})

    @router.post("/admin/models/{name}/rollback", openapi_extra=_ADMIN)
    async def admin_rollback(name: str, request: Request) -> Response:
        actor = s.admin(request)
        body = await s.require_body_type(request)
        reason = "rolled back through the API"
        if body:
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(body)
                if isinstance(doc, dict) and isinstance(doc.get("reason"), str):
                    reason = doc["reason"]
        mv = await run_in_threadpool(lambda: registry.rollback(name, reason=reason, actor=actor))
        if name in host.names:
            await run_in_threadpool(host.check, name)
        return json_response({"model": name, "champion": mv.version})

    return router


def _force(doc: dict[str, Any], request: Request) -> bool:
    """``"force": true`` in the body or ``?force=true``; anything but a boolean is refused."""
    value: Any = doc.get("force", False)
    query = request.query_params.get("force")
    if query is not None:
        if query.lower() not in ("true", "false", "1", "0"):
            raise RequestInvalid(
                [{"loc": ["query", "force"], "msg": "force must be true or false", "type": "bool_type"}]
            )
        value = value is True or query.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise RequestInvalid(
            [{"loc": ["body", "force"], "msg": "field 'force' must be true or false", "type": "bool_type"}]
        )
    return value
