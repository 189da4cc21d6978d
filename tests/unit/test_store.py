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
