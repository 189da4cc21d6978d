"""Write modes against real sources: a full load (SQL or HTTP without a cursor) replaces the dataset, so
reruns never double; an incremental load with a key merges, so an updated row replaces its old copy."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from headrace.config.sources import FileSource
from headrace.config.sources_db import HttpSource, SqlSource
from headrace.demo.api import DemoApi, serve
from headrace.ingest.http import HttpReader
from headrace.ingest.runner import ingest, open_source
from headrace.metadata import Metadata
from headrace.store import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def home(tmp_path):
    store = Store(tmp_path / "lake")
    meta = Metadata(f"sqlite:///{tmp_path / 'meta.db'}")
    yield store, meta
    meta.dispose()


@pytest.fixture
def table(postgres_url):
    name = f"hr_write_{uuid.uuid4().hex[:10]}"
    conn = psycopg.connect(postgres_url, autocommit=True)
    conn.execute(
        f"CREATE TABLE {name} (id int PRIMARY KEY, status text, amount float8, gone boolean DEFAULT false, "
        "updated_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute(
        f"INSERT INTO {name} (id, status, amount, updated_at) SELECT g, 'new', g * 1.5, "
        "TIMESTAMPTZ '2024-01-01' + g * INTERVAL '1 minute' FROM generate_series(1, 500) g"
    )
    yield conn, name
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.close()


def run(home, spec, name="src"):
    store, meta = home
    return ingest(open_source(name, spec), spec, store=store, meta=meta, source_name=name)


def test_a_full_sql_load_replaces_so_reruns_never_double(home, table, postgres_url):
    conn, name = table
    store, _ = home
    spec = SqlSource(kind="sql", url=postgres_url, table=name, dataset="orders", key=["id"], chunk_size=120)
    assert spec.write_mode == "replace"
    first = run(home, spec)
    assert first.ok and first.rows_committed == 500 and len(first.batches) == 1  # 5 pages, one commit
    for _ in range(2):
        assert run(home, spec).ok
    assert store.read("orders").height == 500
    conn.execute(f"UPDATE {name} SET status = 'paid' WHERE id <= 10")
    conn.execute(f"DELETE FROM {name} WHERE id > 490")
    conn.execute(f"INSERT INTO {name} (id, status, amount) VALUES (1000, 'new', -1)")
    assert run(home, spec).ok
    data = store.read("orders")
    assert data.height == 491 and data["id"].n_unique() == 491
    assert set(data.filter(data["id"] <= 10)["status"].to_list()) == {"paid"}
    assert 1000 in data["id"].to_list() and 495 not in data["id"].to_list()
    # time travel keeps what each full load saw
    assert store.read("orders", version=0).height == 500


def test_an_incremental_sql_load_with_a_key_merges_updates_and_deletes(home, table, postgres_url):
    conn, name = table
    store, _ = home
    spec = SqlSource(
        kind="sql",
        url=postgres_url,
        table=name,
        dataset="orders",
        key=["id"],
        cursor="updated_at",
        chunk_size=200,
        deleted="gone",
    )
    assert spec.write_mode == "merge"
    assert run(home, spec).rows_committed == 500
    conn.execute(f"UPDATE {name} SET status = 'paid', updated_at = now() WHERE id IN (3, 4)")
    conn.execute(f"UPDATE {name} SET gone = true, updated_at = now() WHERE id = 7")
    second = run(home, spec)
    assert second.ok and second.rows_read == 3, second.error
    data = store.read("orders")
    assert data.height == 499 and data["id"].n_unique() == 499  # one row per key; 7 deleted
    assert data.filter(data["id"].is_in([3, 4]))["status"].to_list() == ["paid", "paid"]
    assert 7 not in data["id"].to_list()


def test_a_full_http_load_reruns_without_doubling(home):
    store, _ = home
    api = DemoApi(count=120, per_page=25)
    with serve(api.app()) as base:
        spec = HttpSource(
            kind="http",
            url=base + "/orders/offset",
            pagination={"type": "offset", "limit": 25},
            records_path="items",
            dataset="orders",
            key=["id"],
        )
        assert spec.write_mode == "replace"
        for _ in range(3):
            result = ingest(HttpReader("o", spec), spec, store=store, meta=home[1], source_name="o")
            assert result.ok, result.error
    data = store.read("orders")
    assert data.height == 120 and data["id"].n_unique() == 120


def test_a_replace_source_must_have_its_dataset_to_itself(tmp_path):
    from headrace.config import parse_project
    from headrace.errors import ConfigError

    doc = {
        "project": "p",
        "sources": {
            "a": {"kind": "sql", "url": "sqlite:///x.db", "table": "t", "dataset": "d"},
            "b": {"kind": "file", "path": str(tmp_path), "dataset": "d"},
        },
    }
    with pytest.raises(ConfigError, match="'a' replaces dataset 'd' on each run, which b also feed"):
        parse_project(doc)
    assert FileSource(kind="file", path=str(tmp_path), dataset="d").write_mode == "append"
