"""The input schema every route runs before predicting: one rule for non-finite numbers (a 422 naming
the field; null is the missing value), and request bodies read so that rule can name the field."""

from __future__ import annotations

import json

import pytest

from headrace.serve.errors import RequestInvalid
from headrace.serve.schema import InputSchema, loads

SCHEMA = InputSchema({"tenure": "number", "Contract": "string", "Partner": "bool"})


def _problem(records: list[dict]) -> dict:
    with pytest.raises(RequestInvalid) as info:
        SCHEMA.check(records)
    (problem,) = info.value.problems
    return problem


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), 10**400, -(10**400)])
def test_non_finite_and_unrepresentable_numbers_are_a_422_naming_the_field(bad):
    problem = _problem([{"tenure": bad, "Contract": "One year", "Partner": True}])
    assert problem["loc"] == ["body", "records", 0, "tenure"] and problem["type"] == "type_error"
    assert "tenure" in problem["msg"] and ("finite number" in problem["msg"] or "±1.8e308" in problem["msg"])


def test_null_is_the_missing_value_and_extreme_finite_numbers_pass_as_floats():
    ok = SCHEMA.check(
        [
            {"tenure": None, "Contract": "", "Partner": None},
            {"tenure": 1e308, "Contract": "x", "Partner": False},
            {"tenure": 2**63, "Contract": " ", "Partner": True},
        ]
    )
    assert ok[0] == {"tenure": None, "Contract": "", "Partner": None}
    assert ok[1]["tenure"] == 1e308 and ok[2]["tenure"] == float(2**63) and isinstance(ok[2]["tenure"], float)
    assert _problem([{"tenure": True, "Contract": "x", "Partner": True}])["msg"].startswith(
        "field 'tenure' must be a number"
    )


def test_loads_reads_what_python_json_reads_so_the_schema_can_name_the_field():
    """orjson refuses Infinity/NaN/1e400 as "not JSON" (the whole body); Python's json, which
    /invocations uses, reads them; loads reads them too, and the schema names the field either way."""
    for text in ("Infinity", "-Infinity", "NaN", "1e400", "1" + "0" * 400):
        body = b'{"records": [{"tenure": ' + text.encode() + b', "Contract": "One year", "Partner": true}]}'
        doc = loads(body)
        assert doc == json.loads(body) or text == "NaN"  # NaN != NaN
        problem = _problem(doc["records"])
        assert problem["loc"][-1] == "tenure", text
    assert loads(b'{"records": [{"tenure": 1.5}]}') == {"records": [{"tenure": 1.5}]}
    for broken in (b'{"records": }', b"[" * 100_000, b"", b"\xff"):
        with pytest.raises(RequestInvalid, match="not valid JSON") as info:
            loads(broken)
        assert info.value.problems[0]["loc"] == ["body"]
