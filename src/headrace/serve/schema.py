"""Request records checked against a model's signature, before anything touches the model.

The signature (``{"inputs": [{"name", "type", "kind"}, ...]}``, as the tabular flavor records it)
says which fields a record carries and their kind: number, bool, string, date or datetime. A field
that is missing, unknown or of the wrong JSON type is a 422 naming the field; ``null`` is accepted
(the model imputes it). A non-finite number (``Infinity``, ``NaN``: JSON extensions some parsers
accept, ``inf`` in CSV) is a 422 too, on every route: ``null`` is how a record says "missing".
Numbers come out as floats, as the model's own preparation reads them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl

from .errors import RequestInvalid

__all__ = ["InputSchema", "loads"]


def loads(body: bytes) -> Any:
    """A request body as JSON, for routes whose records then go through :meth:`InputSchema.check`.

    Strict JSON first (orjson). A body that strict JSON refuses but Python's parser reads (``NaN``,
    ``Infinity``, ``-Infinity``, a number past a float's range such as ``1e400``) is read too, so that
    the schema refuses the one field by name, as ``/invocations`` (which parses with Python's json)
    does, instead of the whole body; anything else is a 422 saying why it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        strict = exc.msg
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise RequestInvalid(
            [{"loc": ["body"], "msg": f"not valid JSON ({strict})", "type": "json_invalid"}]
        ) from None


_POLARS: dict[str, pl.DataType] = {
    "number": pl.Float64(),
    "bool": pl.Boolean(),
    "string": pl.String(),
    "date": pl.String(),
    "datetime": pl.String(),
}
_JSON_TYPE = {
    "number": "number",
    "bool": "boolean",
    "string": "string",
    "date": "string",
    "datetime": "string",
}


@dataclass(frozen=True)
class InputSchema:
    fields: dict[str, str]  # name -> kind

    @classmethod
    def from_signature(cls, signature: Mapping[str, Any] | None) -> InputSchema | None:
        if not signature:
            return None
        inputs = signature.get("inputs")
        if isinstance(inputs, Mapping):
            return cls({str(k): _kind(v) for k, v in inputs.items()})
        if isinstance(inputs, Sequence):
            return cls({str(i["name"]): _kind(i.get("kind") or i.get("type")) for i in inputs})
        return None

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return {name: _POLARS[kind] for name, kind in self.fields.items()}

    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {n: {"type": [_JSON_TYPE[k], "null"]} for n, k in self.fields.items()},
            "required": list(self.fields),
            "additionalProperties": False,
        }

    def check(self, records: Any, where: tuple[Any, ...] = ("body", "records")) -> list[dict[str, Any]]:
        """The records, validated and normalised; RequestInvalid naming every bad field otherwise."""
        if not isinstance(records, list):
            raise RequestInvalid(
                [{"loc": list(where), "msg": "expected a list of records", "type": "list_type"}]
            )
        problems: list[dict[str, Any]] = []
        out: list[dict[str, Any]] = []
        fields = self.fields
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                problems.append({"loc": [*where, i], "msg": "expected an object", "type": "dict_type"})
                continue
            clean: dict[str, Any] = {}
            for name, kind in fields.items():
                if name not in record:
                    problems.append(
                        {"loc": [*where, i, name], "msg": f"field {name!r} is required", "type": "missing"}
                    )
                    continue
                value = record[name]
                if value is None:
                    clean[name] = None
                elif kind == "number":
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        problems.append(_mistyped(where, i, name, "a number", value))
                    elif isinstance(value, float) and not math.isfinite(value):
                        # Infinity/NaN (JSON extensions, CSV "inf"): refused on every route alike,
                        # so the fast path and the pipeline never meet them (null is the missing value)
                        problems.append(_mistyped(where, i, name, "a finite number (or null)", value))
                    else:
                        try:
                            clean[name] = float(value)
                        except OverflowError:  # an integer past a float's range
                            problems.append(_mistyped(where, i, name, "a number within ±1.8e308", value))
                elif kind == "bool":
                    if not isinstance(value, bool):
                        problems.append(_mistyped(where, i, name, "true or false", value))
                    else:
                        clean[name] = value
                elif not isinstance(value, str):
                    problems.append(_mistyped(where, i, name, "a string", value))
                else:
                    clean[name] = value
            if len(record) > len(clean) + sum(1 for p in problems if p["loc"][len(where)] == i):
                for name in record:
                    if name not in fields:
                        problems.append(
                            {
                                "loc": [*where, i, name],
                                "msg": f"field {name!r} is unknown to this model; it reads: "
                                + ", ".join(fields),
                                "type": "extra_forbidden",
                            }
                        )
            out.append(clean)
        if problems:
            raise RequestInvalid(problems[:50])
        return out


def _kind(value: Any) -> str:
    text = str(value or "string").lower()
    if text in ("number", "float", "int", "integer", "double", "float64", "int64"):
        return "number"
    if text in ("bool", "boolean"):
        return "bool"
    if text in ("date", "datetime"):
        return text
    return "string"


def _mistyped(where: tuple[Any, ...], i: int, name: str, expected: str, value: Any) -> dict[str, Any]:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return {
        "loc": [*where, i, name],
        "msg": f"field {name!r} must be {expected}; got {shown}",
        "type": "type_error",
    }
