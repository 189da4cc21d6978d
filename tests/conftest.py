"""Shared fixtures: real services on loopback, required in CI (HEADRACE_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_SERVICES = os.environ.get("HEADRACE_REQUIRE_SERVICES") == "1"
DATA_DIR = Path(os.environ.get("HEADRACE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (on a laptop) or fail (in CI) when a service the test needs is not listening."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} and HEADRACE_REQUIRE_SERVICES=1: start it", pytrace=False)
    pytest.skip(f"{message}; start it to run this test")


def require_data(*parts: str) -> Path:
    """A path under ../shared/data (or HEADRACE_DATA_DIR), or a skip naming what is missing."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: set HEADRACE_DATA_DIR to the shared data folder")
    return path


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return os.environ.get("HEADRACE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_db(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL database of the test's own (dropped afterwards, connections and all)."""
    from sqlalchemy import create_engine, text

    name = "hr_test_" + uuid.uuid4().hex[:12]
    admin = create_engine(
        postgres_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield postgres_url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def mariadb_url() -> str:
    require_service("MariaDB", "127.0.0.1", 3306)
    return os.environ.get("HEADRACE_TEST_MARIADB", "mysql://root@127.0.0.1:3306/test")


@pytest.fixture
def mqtt_broker() -> tuple[str, int]:
    require_service("Mosquitto", "127.0.0.1", 1883)
    return ("127.0.0.1", 1883)


@pytest.fixture
def nats_url() -> str:
    require_service("NATS", "127.0.0.1", 4222)
    return "nats://127.0.0.1:4222"


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return "redis://127.0.0.1:6379/0"
