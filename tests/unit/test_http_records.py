"""Unit tests of the HTTP source's pure parts: flattening, frames, marks, Retry-After, masking."""

from __future__ import annotations

import json

import httpx
import polars as pl
import pytest
from pydantic import ValidationError

from headrace.config.sources_db import HttpSource, SqlSource
from headrace.ingest.http import _Mark, _retry_after, _shown, flatten_record, frame_from_records
from headrace.ingest.sql import Mark, decode_mark, encode_mark


def test_flatten_nested_objects_and_lists_as_json_text():
    record = {"id": 1, "customer": {"id": 7, "address": {"city": "Porto"}}, "tags": ["a", "b"], "empty": {}}
    assert flatten_record(record) == [
        {"id": 1, "customer__id": 7, "customer__address__city": "Porto", "tags": '["a","b"]', "empty": "{}"}
    ]


def test_flatten_explodes_one_list():
    record = {"id": 1, "items": [{"sku": "x", "qty": 2}, {"sku": "y", "qty": 1}], "other": [1]}
    rows = flatten_record(record, explode="items")
    assert rows == [
        {"id": 1, "other": "[1]", "items__sku": "x", "items__qty": 2},
        {"id": 1, "other": "[1]", "items__sku": "y", "items__qty": 1},
    ]
    assert flatten_record({"id": 2, "items": []}, explode="items") == [{"id": 2, "items": None}]


def test_frame_keeps_types_and_survives_mixed_values():
    frame = frame_from_records([{"a": 1, "b": "x"}, {"a": 2.5, "b": 3}, {"c": True}])
    assert frame.schema == {"a": pl.Float64, "b": pl.String, "c": pl.Boolean}
    assert frame["b"].to_list() == ["x", "3", None]
    later = frame_from_records([{"a": 4}], prior={"a": pl.Float64()})
    assert later.schema["a"] == pl.Float64


def test_marks_round_trip():
    mark = _Mark("2024-01-01T00:00:00Z", {"[1]", "[2]"})
    again = _Mark.decode(mark.encode())
    assert again.value == mark.value and again.seen == mark.seen
    assert _Mark.decode("17").value == 17
    import datetime as dt
    from decimal import Decimal

    for value in (5, Decimal("1.50"), dt.datetime(2024, 1, 1, tzinfo=dt.UTC), dt.date(2024, 1, 2), "x"):
        assert decode_mark(encode_mark(Mark(value, (3, "k")))) == Mark(value, (3, "k"))
    assert json.loads(encode_mark(Mark(Decimal("2.5"))))["type"] == "decimal"


def test_retry_after_seconds_and_dates():
    request = httpx.Request("GET", "http://x")
    assert _retry_after(httpx.Response(429, headers={"Retry-After": "3"}, request=request)) == 3.0
    assert _retry_after(httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert _retry_after(httpx.Response(503)) is None


def test_secrets_masked_in_urls_and_reprs():
    spec = HttpSource(
        kind="http",
        url="http://h/x",
        dataset="d",
        auth={"type": "api_key", "name": "key", "value": "a/b c", "location": "query"},
    )
    assert _shown("http://h/x?key=a%2Fb+c&page=2", spec) == "http://h/x?key=***&page=2"
    assert "a/b c" not in repr(spec)
    sql = SqlSource(kind="sql", url="postgresql://u:pw@h/db", table="t", dataset="d")
    assert sql.url.endswith("h/db")


def test_spec_validation():
    with pytest.raises(ValidationError, match="exactly one of 'table' or 'query'"):
        SqlSource(kind="sql", url="sqlite:///x.db", dataset="d")
    with pytest.raises(ValidationError, match="params_in: body needs method: POST"):
        HttpSource(kind="http", url="http://h", dataset="d", params_in="body")
