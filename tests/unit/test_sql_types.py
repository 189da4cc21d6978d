"""The PostgreSQL type table and the helpers of the ADBC fast path, without a server."""

from __future__ import annotations

import uuid

import polars as pl
import pyarrow as pa

from headrace.ingest.sql import _PG_ARROW, _libpq_conninfo, _polars_of, _uuid_text


def test_polars_types_match_what_arrow_conversion_gives():
    for oid, arrow in _PG_ARROW.items():
        assert _polars_of(arrow) == pl.from_arrow(pa.array([], type=arrow)).dtype, oid


def test_uuid_bytes_become_the_canonical_text():
    values = [uuid.uuid4() for _ in range(50)]
    frame = pl.DataFrame({"u": [v.bytes for v in values] + [None]}, schema={"u": pl.Binary()})
    assert frame.select(_uuid_text("u"))["u"].to_list() == [str(v) for v in values] + [None]


def test_conninfo_keeps_the_url_and_adds_session_options():
    info = _libpq_conninfo(
        "postgresql+psycopg://bob:s%40cret@db.local:6543/sales?sslmode=require", "headrace x", 7.9
    )
    for part in (
        "user=bob",
        "password=s@cret",
        "host=db.local",
        "port=6543",
        "dbname=sales",
        "sslmode=require",
    ):
        assert part in info
    assert "application_name='headrace x'" in info
    assert "connect_timeout=7" in info
    assert "options='-c TimeZone=UTC'" in info
