"""Request records checked against a model's signature, before anything touches the model.

The signature (``{"inputs": [{"name", "type", "kind"}, ...]}``, as the tabular flavor records it)
says which fields a record carries and their kind: number, bool, string, date or datetime. A field
that is missing, unknown or of the wrong JSON type is a 422 naming the field; ``null`` is accepted
(the model imputes it). A non-finite number (``Infinity``, ``NaN``: JSON extensions some parsers
accept, ``inf`` in CSV) is a 422 too, on every route: ``null`` is how a record says "missing".
Numbers come out as floats, as the model's own preparation reads them.

The cost of a refused request does not grow with its number of problems: the first ``max_errors``
are named, the rest only counted (``RequestInvalid.total``). :func:`parse` bounds the document itself
(nesting depth, string length) from its bytes, before it is parsed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import polars as pl

from .errors import RequestInvalid

__all__ = ["InputSchema", "check_body", "loads", "parse"]


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


_STEP = np.zeros(256, dtype=np.int32)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


def check_body(body: bytes, max_depth: int, max_string: int) -> None:
    """A 422 when the JSON text ``body`` nests deeper than ``max_depth`` or holds a string longer
    than ``max_string`` bytes (as sent), read from the bytes before any parser builds a thing.

    Vectorised (numpy, which leaves the GIL to the event loop): about 10 ms for 1 MB, against half a
    second for a walk over the parsed document; and no parser or later step (``repr``,
    ``orjson.dumps``, a recursive flatten) ever meets a document a thousand levels deep. Escaped
    backslashes and quotes are dropped first, so every quote left opens or closes a string and the
    brackets between such a pair are text."""
    if len(body) <= max_string and body.count(b"[") + body.count(b"{") <= max_depth:
        return  # it cannot hold either
    plain = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    codes = np.frombuffer(plain, dtype=np.uint8)
    if not len(codes):
        return
    quote = codes == ord('"')
    quotes = np.flatnonzero(quote)
    step = _STEP[codes]
    if len(quotes):
        step *= (np.cumsum(quote, dtype=np.int32) & 1) == 0  # brackets inside strings are text
    if int(np.cumsum(step).max()) > max_depth:
        raise RequestInvalid(
            [
                {
                    "loc": ["body"],
                    "msg": f"the JSON body nests deeper than {max_depth} levels",
                    "type": "too_deep",
                }
            ]
        )
    pairs = len(quotes) // 2
    if pairs and int((quotes[1 : 2 * pairs : 2] - quotes[0 : 2 * pairs : 2]).max()) - 1 > max_string:
        raise _too_long(["body"], max_string)


def parse(body: bytes, max_depth: int, max_string: int) -> Any:
    """:func:`check_body`, then :func:`loads`: a document no later step has to fear."""
    check_body(body, max_depth, max_string)
    return loads(body)


def _too_long(loc: list[Any], limit: int) -> RequestInvalid:
    return RequestInvalid(
        [{"loc": loc, "msg": f"a string in the body is longer than {limit} bytes", "type": "too_long"}]
    )


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

    def check(
        self, records: Any, where: tuple[Any, ...] = ("body", "records"), max_errors: int = 20
    ) -> list[dict[str, Any]]:
        """The records, validated and normalised; RequestInvalid naming the first ``max_errors``
        bad fields otherwise (the rest counted, not described: a body of ten thousand bad records
        costs one pass over them, whatever its number of problems)."""
        if not isinstance(records, list):
            raise RequestInvalid(
                [{"loc": list(where), "msg": "expected a list of records", "type": "list_type"}]
            )
        problems: list[dict[str, Any]] = []
        extra = 0  # problems past max_errors: counted only

        def problem(doc: dict[str, Any]) -> None:
            nonlocal extra
            if len(problems) < max_errors:
                problems.append(doc)
            else:
                extra += 1

        out: list[dict[str, Any]] = []
        fields = self.fields
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                problem({"loc": [*where, i], "msg": "expected an object", "type": "dict_type"})
                continue
            if problems and len(problems) >= max_errors:  # past the listed ones: count, cheaply
                extra += _count_problems(record, fields)
                continue
            clean: dict[str, Any] = {}
            for name, kind in fields.items():
                if name not in record:
                    problem(
                        {"loc": [*where, i, name], "msg": f"field {name!r} is required", "type": "missing"}
                    )
                    continue
                value = record[name]
                if value is None:
                    clean[name] = None
                elif kind == "number":
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        problem(_mistyped(where, i, name, "a number", value))
                    elif isinstance(value, float) and not math.isfinite(value):
                        # Infinity/NaN (JSON extensions, CSV "inf"): refused on every route alike,
                        # so the fast path and the pipeline never meet them (null is the missing value)
                        problem(_mistyped(where, i, name, "a finite number (or null)", value))
                    else:
                        try:
                            clean[name] = float(value)
                        except OverflowError:  # an integer past a float's range
                            problem(_mistyped(where, i, name, "a number within ±1.8e308", value))
                elif kind == "bool":
                    if not isinstance(value, bool):
                        problem(_mistyped(where, i, name, "true or false", value))
                    else:
                        clean[name] = value
                elif not isinstance(value, str):
                    problem(_mistyped(where, i, name, "a string", value))
                else:
                    clean[name] = value
            if len(record) > len(fields) or len(clean) < len(record):
                for name in record:
                    if name not in fields:
                        problem(
                            {
                                "loc": [*where, i, name],
                                "msg": f"field {name!r} is unknown to this model; it reads: "
                                + ", ".join(fields),
                                "type": "extra_forbidden",
                            }
                        )
            out.append(clean)
        if problems:
            raise RequestInvalid(problems, total=len(problems) + extra)
        return out


def _count_problems(record: dict[str, Any], fields: dict[str, str]) -> int:
    """How many problems ``record`` has, without describing them (past the listed ones)."""
    count = 0
    for name, kind in fields.items():
        if name not in record:
            count += 1
            continue
        value = record[name]
        if value is None:
            continue
        if kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                ok = False
            elif isinstance(value, float):
                ok = math.isfinite(value)
            else:
                try:
                    ok = math.isfinite(float(value))
                except OverflowError:
                    ok = False
        elif kind == "bool":
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        count += not ok
    return count + sum(1 for name in record if name not in fields)


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
    if isinstance(value, dict | list):  # no repr of a whole structure: named by its type only
        shown = "an object" if isinstance(value, dict) else f"a list of {len(value)}"
    else:
        shown = repr(value) if not isinstance(value, str) or len(value) <= 40 else repr(value[:37]) + "..."
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return {
        "loc": [*where, i, name],
        "msg": f"field {name!r} must be {expected}; got {shown}",
        "type": "type_error",
    }
