import uuid

import pytest
from sqlalchemy import create_engine, select, text

from headrace.metadata import MIGRATIONS, SCHEMA, Metadata, utcnow

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_pg_db(postgres_url: str):
    """A new database on the real PostgreSQL server, dropped afterwards."""
    name = "hr_meta_" + uuid.uuid4().hex[:10]
    admin = create_engine(
        postgres_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_migrations_and_writes_on_postgres(fresh_pg_db: str):
    meta = Metadata(fresh_pg_db)
    assert meta.engine.dialect.name == "postgresql"
    assert meta.schema_version() == MIGRATIONS[-1][0]
    with meta.begin() as conn:
        conn.execute(
            SCHEMA.tables["model_versions"]
            .insert()
            .values(
                model="churn",
                version=1,
                task="classification",
                created_at=utcnow(),
                status="registered",
                metrics={"roc_auc": 0.85},
            )
        )
    with meta.begin() as conn:
        row = conn.execute(select(SCHEMA.tables["model_versions"])).mappings().one()
    assert row["metrics"] == {"roc_auc": 0.85}
    meta.dispose()
    again = Metadata(fresh_pg_db)
    assert again.schema_version() == MIGRATIONS[-1][0]
    again.dispose()


def test_a_database_migrated_from_version_1_equals_the_declared_tables_on_postgres(
    fresh_pg_db: str, postgres_url: str
):
    from tests.unit.test_metadata_migrations import migrated_equals_declared

    from headrace.metadata import schema_version

    old = Metadata(fresh_pg_db, migrate=False)
    with old.begin() as conn:  # left at version 1, as an earlier release made it
        schema_version.create(conn)
        MIGRATIONS[0][2](conn)
        conn.execute(schema_version.insert().values(version=1, applied_at=utcnow()))
    old.dispose()
    name = "hr_decl_" + uuid.uuid4().hex[:10]
    admin = create_engine(
        postgres_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        migrated_equals_declared(fresh_pg_db, postgres_url.rsplit("/", 1)[0] + "/" + name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
