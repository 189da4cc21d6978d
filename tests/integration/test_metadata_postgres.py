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
