from pathlib import Path

from sqlalchemy import select

from headrace.metadata import MIGRATIONS, SCHEMA, Metadata, utcnow


def test_migrates_once_and_records_version(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/m/meta.db"
    meta = Metadata(url)
    assert meta.schema_version() == MIGRATIONS[-1][0]
    meta.dispose()
    again = Metadata(url)  # idempotent on an existing database
    assert again.schema_version() == MIGRATIONS[-1][0]
    with again.begin() as conn:
        conn.execute(
            SCHEMA.tables["ledger"].insert().values(ts=utcnow(), model="m", action="promote", version=1)
        )
    with again.begin() as conn:
        rows = conn.execute(select(SCHEMA.tables["ledger"])).mappings().all()
    assert [(r["model"], r["action"], r["version"]) for r in rows] == [("m", "promote", 1)]
    with again.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    again.dispose()
