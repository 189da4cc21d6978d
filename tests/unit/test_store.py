import multiprocessing
import os
import signal
import time
from pathlib import Path

import polars as pl
import pytest

from headrace.errors import NotFound, StoreError
from headrace.store import BatchMeta, Store


def test_append_read_and_versions(tmp_path: Path):
    store = Store(tmp_path)
    v0 = store.append("d", pl.DataFrame({"a": [1, 2]}), BatchMeta(source="s1", batch_id="b1"))
    v1 = store.append("d", pl.DataFrame({"a": [3]}), BatchMeta(source="s2", batch_id="b2", extra={"k": 1}))
    assert (v0, v1) == (0, 1)
    assert sorted(store.read("d")["a"].to_list()) == [1, 2, 3]
    assert store.read("d", version=0)["a"].to_list() == [1, 2]
    history = store.versions("d")
    assert [(h.version, h.batch_id, h.source, h.rows) for h in history] == [
        (0, "b1", "s1", 2),
        (1, "b2", "s2", 1),
    ]
    assert history[1].extra == {"k": 1}
    info = store.info("d")
    assert (info.rows, info.version, info.last_batch.batch_id if info.last_batch else None) == (3, 1, "b2")
    assert store.datasets() == ["d"]
    assert store.scan("d").select(pl.col("a").sum()).collect().item() == 6


def test_new_columns_are_merged(tmp_path: Path):
    store = Store(tmp_path)
    store.append("d", pl.DataFrame({"a": [1]}), BatchMeta(source="s"))
    store.append("d", pl.DataFrame({"a": [2], "b": ["x"]}), BatchMeta(source="s"))
    frame = store.read("d").sort("a")
    assert frame.columns == ["a", "b"]
    assert frame["b"].to_list() == [None, "x"]


def test_missing_dataset_and_version(tmp_path: Path):
    store = Store(tmp_path)
    with pytest.raises(NotFound, match="does not exist"):
        store.read("nope")
    store.append("d", pl.DataFrame({"a": [1]}), BatchMeta(source="s"))
    with pytest.raises(NotFound, match="no version 5"):
        store.read("d", version=5)


def test_bad_name_refused(tmp_path: Path):
    with pytest.raises(StoreError, match="not valid"):
        Store(tmp_path).append("../x", pl.DataFrame({"a": [1]}), BatchMeta(source="s"))


def test_incompatible_batch_leaves_table_unchanged(tmp_path: Path):
    store = Store(tmp_path)
    store.append("d", pl.DataFrame({"a": [1, 2]}), BatchMeta(source="s"))
    with pytest.raises(StoreError, match="unchanged"):
        store.append("d", pl.DataFrame({"a": ["not a number"]}), BatchMeta(source="s"))
    assert store.version("d") == 0
    assert store.read("d")["a"].to_list() == [1, 2]


def test_quarantine_is_a_dataset(tmp_path: Path):
    store = Store(tmp_path)
    name = store.quarantine_name("d")
    store.append(name, pl.DataFrame({"a": ["x"], "reason": ["bad"]}), BatchMeta(source="s"))
    assert store.read(name)["reason"].to_list() == ["bad"]


def _append_big(root: str) -> None:
    store = Store(root)
    big = pl.DataFrame({"a": range(30_000_000), "b": ["x" * 20] * 30_000_000})
    store.append("d", big, BatchMeta(source="crash"))


def test_killed_append_leaves_table_as_it_was(tmp_path: Path):
    store = Store(tmp_path)
    store.append("d", pl.DataFrame({"a": [1, 2, 3], "b": ["p", "q", "r"]}), BatchMeta(source="s"))
    before = set(os.listdir(tmp_path / "d"))
    ctx = multiprocessing.get_context("spawn")  # deltalake panics in a forked child
    child = ctx.Process(target=_append_big, args=(str(tmp_path),))
    child.start()
    deadline = time.monotonic() + 120
    # kill it once it has started writing data files but before it could commit
    while time.monotonic() < deadline and set(os.listdir(tmp_path / "d")) == before and child.is_alive():
        time.sleep(0.005)
    assert child.is_alive(), "the writer finished before it could be killed; make the batch bigger"
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert set(os.listdir(tmp_path / "d")) != before, "the writer had started writing"
    reopened = Store(tmp_path)
    assert reopened.version("d") == 0
    assert reopened.read("d")["a"].to_list() == [1, 2, 3]
    # and the table still takes appends
    assert reopened.append("d", pl.DataFrame({"a": [4], "b": ["s"]}), BatchMeta(source="s")) == 1


def _files(store: Store, dataset: str) -> list[dict]:
    import pyarrow as pa
    from deltalake import DeltaTable

    return pa.table(DeltaTable(store.uri(dataset)).get_add_actions(flatten=True)).to_pylist()


def _paths(store: Store, dataset: str) -> list[str]:
    import pyarrow as pa
    from deltalake import DeltaTable

    return pa.table(DeltaTable(store.uri(dataset)).get_add_actions()).column("path").to_pylist()


def test_fast_and_writer_paths_give_the_same_table(tmp_path: Path):
    import datetime as dt

    import pyarrow as pa

    store = Store(tmp_path)
    frame = pl.DataFrame(
        {
            "i": [1, None, -7],
            "f": [0.5, float("nan"), None],
            "s": ["a", None, "ü" * 50],
            "b": [True, False, None],
            "d": [dt.date(2024, 2, 29), None, dt.date(1999, 1, 1)],
            "t": [dt.datetime(2024, 1, 1, 12, 30, 1, 5, tzinfo=dt.UTC), None, None],
            "u": pl.Series([1, 2, 3], dtype=pl.UInt8),
        }
    )
    store.append("fast", frame, BatchMeta(source="s"))
    # A decimal column is not written by the fast path: the same rows then go through delta-rs.
    arrow = frame.to_arrow().append_column("x", pa.array([1, 2, 3], pa.decimal128(5, 1)))
    store.append("writer", arrow, BatchMeta(source="s"))
    assert store.read("fast").equals(store.read("writer").drop("x"))
    assert store.read("fast").schema["u"] == pl.Int64
    (fast,) = _files(store, "fast")
    (writer,) = _files(store, "writer")
    assert fast["num_records"] == 3
    # The bounds are delta-rs's own (text cut and raised, NaN ignored), timestamps to the millisecond
    # with the maximum rounded up rather than down, so no reader skips a file that holds a match.
    for column in ("i", "f", "s", "b", "d", "u"):
        for key in ("null_count", "min", "max"):
            assert fast[f"{key}.{column}"] == writer[f"{key}.{column}"], (key, column)
    assert (fast["min.i"], fast["max.i"], fast["min.f"], fast["max.f"]) == (-7, 1, 0.5, 0.5)
    assert fast["max.s"] == "ü" * 31 + "ý"
    assert fast["min.t"] == writer["min.t"] == dt.datetime(2024, 1, 1, 12, 30, 1, tzinfo=dt.UTC)
    assert fast["max.t"] == dt.datetime(2024, 1, 1, 12, 30, 1, 1000, tzinfo=dt.UTC)


def test_every_filter_through_deltalakes_own_reader_finds_its_rows(tmp_path: Path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    store = Store(tmp_path)
    when = dt.datetime(2024, 1, 1, 0, 0, 0, 456789, tzinfo=dt.UTC)
    frame = pl.DataFrame(
        {"s": ["a", "x" * 40], "b": [True, None], "t": [when, None], "n": [None, None]},
        schema={"s": pl.String, "b": pl.Boolean, "t": pl.Datetime("us", "UTC"), "n": pl.Int64},
    )
    store.append("d", frame, BatchMeta(source="s"))
    dataset = DeltaTable(store.uri("d")).to_pyarrow_dataset()
    stamp = pa.scalar(dt.datetime(2024, 1, 1, 0, 0, 0, 456500), pa.timestamp("us", "UTC"))
    for condition, rows in (
        (ds.field("s") == "a", 1),
        (ds.field("s") == "x" * 40, 1),
        (ds.field("b") == True, 1),  # noqa: E712 (an Arrow expression, not a Python comparison)
        (ds.field("t") > stamp, 1),
        (ds.field("n").is_null(), 2),
    ):
        assert dataset.to_table(filter=condition).num_rows == rows, condition


def test_early_years_and_the_last_plane_keep_their_rows_under_filters(tmp_path: Path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    store = Store(tmp_path)
    early = dt.datetime(999, 1, 1, 0, 0, 0, 5, tzinfo=dt.UTC)
    frame = pl.DataFrame(
        {"t": [early, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)], "s": ["x\U0010ffff", "a"]},
        schema={"t": pl.Datetime("us", "UTC"), "s": pl.String},
    )
    store.append("d", frame, BatchMeta(source="s"))
    dataset = DeltaTable(store.uri("d")).to_pyarrow_dataset()
    assert dataset.to_table(filter=ds.field("t") == pa.scalar(early, pa.timestamp("us", "UTC"))).num_rows == 1
    assert dataset.to_table(filter=ds.field("s") == "x\U0010ffff").num_rows == 1
    assert store.scan("d").filter(pl.col("s") == "x\U0010ffff").collect().height == 1
    last = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)  # no millisecond above it
    store.append("late", pl.DataFrame({"t": [last]}), BatchMeta(source="s"))
    assert store.read("late")["t"].to_list() == [last]


def test_values_without_a_safe_bound_go_through_the_writer(tmp_path: Path):
    import datetime as dt

    store = Store(tmp_path)
    store.append("inf", pl.DataFrame({"f": [1.0, float("inf")]}), BatchMeta(source="s"))
    before_year_one = pl.DataFrame({"d": [dt.date(1, 1, 1)]}).select(pl.col("d") - pl.duration(days=1))
    store.append("old", before_year_one, BatchMeta(source="s"))
    assert store.read("inf")["f"].to_list() == [1.0, float("inf")]
    for name in ("inf", "old"):  # every file in the table's folder is one the log knows
        files = {p.name for p in (tmp_path / name).glob("*.parquet")}
        assert files == set(_paths(store, name))


def test_filters_on_many_fast_files_find_every_row(tmp_path: Path):
    store = Store(tmp_path)
    for start in range(0, 500, 100):
        part = pl.DataFrame({"k": range(start, start + 100), "v": [start / 7] * 100})
        store.append("d", part, BatchMeta(source="s"))
    assert len(_files(store, "d")) == 5 and store.info("d").rows == 500
    picked = store.scan("d").filter((pl.col("k") >= 250) & (pl.col("k") < 260)).collect()
    assert sorted(picked["k"].to_list()) == list(range(250, 260))
    store.compact("d")
    assert sorted(store.read("d")["k"].to_list()) == list(range(500))


def test_a_new_column_after_fast_appends_is_merged_then_fast_again(tmp_path: Path):
    store = Store(tmp_path)
    store.append("d", pl.DataFrame({"a": [1]}), BatchMeta(source="s"))
    store.append("d", pl.DataFrame({"a": [2], "b": ["x"]}), BatchMeta(source="s"))
    store.append("d", pl.DataFrame({"a": [3], "b": ["y"]}), BatchMeta(source="s"))
    frame = store.read("d").sort("a")
    assert frame.to_dict(as_series=False) == {"a": [1, 2, 3], "b": [None, "x", "y"]}
    assert [v.rows for v in store.versions("d")] == [1, 1, 1]
