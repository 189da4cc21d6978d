"""The prediction-log writer: rows of a fixed schema are built column by column in slices (the GIL is
given back between slices) and come out exactly as a frame built from the row dicts at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import polars as pl

from headrace.serve.shared import FEEDBACK_SCHEMA, PREDICTIONS_SCHEMA
from headrace.serve.writer import _SLICE, BatchWriter
from headrace.store import Store


def _rows(n: int) -> list[dict[str, object]]:
    start = datetime(2026, 12, 6, 5, 0, tzinfo=UTC)
    rows: list[dict[str, object]] = []
    for i in range(n):
        ts: datetime | None = start + timedelta(microseconds=1_234_567 * i)
        if i % 7 == 3:
            ts = ts.astimezone(timezone(timedelta(hours=-5)))  # another zone: the same instant
        elif i % 11 == 5:
            ts = None
        rows.append(
            {
                "id": f"{i:032x}",
                "ts": ts,
                "model": "churn",
                "version": 1 + i % 2,
                "route": "predict",
                "inputs": f'{{"tenure": {i}}}',
                "output": '{"prediction": "No"}',
                "score": None if i % 5 == 0 else i / n,
                "latency_ms": 0.25,
            }
        )
    return rows


def test_column_wise_slices_equal_the_frame_from_dicts(tmp_path):
    writer = BatchWriter(Store(tmp_path), schemas={"predictions": PREDICTIONS_SCHEMA})
    rows = _rows(2 * _SLICE + 17)  # three slices
    built = writer._frame("predictions", rows)
    expected = pl.DataFrame(rows, schema=PREDICTIONS_SCHEMA)
    assert built.schema == expected.schema
    assert built.equals(expected)
    assert built["ts"].null_count() == sum(r["ts"] is None for r in rows) > 0


def test_naive_times_are_read_as_utc(tmp_path):
    writer = BatchWriter(Store(tmp_path), schemas={"predictions__feedback": FEEDBACK_SCHEMA})
    naive = datetime(2026, 1, 2, 3, 4, 5, 678901)
    frame = writer._frame(
        "predictions__feedback", [{"prediction_id": "a", "model": "m", "actual": "Yes", "ts": naive}]
    )
    assert frame["ts"][0] == naive.replace(tzinfo=UTC)


def test_flush_commits_every_row_and_a_row_with_an_unknown_field_keeps_it(tmp_path):
    store = Store(tmp_path)
    writer = BatchWriter(store, schemas={"predictions": PREDICTIONS_SCHEMA})
    rows = _rows(300)
    for row in rows:
        writer.put("predictions", row)
    assert writer.flush() == 300
    stored = store.read("predictions").sort("id")
    assert stored.select(list(PREDICTIONS_SCHEMA)).equals(pl.DataFrame(rows, schema=PREDICTIONS_SCHEMA))
    writer.put("predictions", {**rows[0], "id": "extra", "note": "kept"})
    assert writer.flush() == 1
    assert store.read("predictions").filter(pl.col("id") == "extra")["note"].to_list() == ["kept"]
