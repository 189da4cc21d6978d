"""Object storage end to end: datasets (Delta) and artifacts on ``s3://`` through a local S3-compatible
server (moto's, started and stopped here on a free loopback port), metadata in PostgreSQL.

Two working folders that share nothing but the URLs: one ingests, the other trains, and a third
process (the CLI) lists, shows and reports status; nothing is written to a local ``s3:`` folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from headrace.datagen import churn
from headrace.errors import ConfigError
from headrace.workspace import Workspace

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

pytestmark = pytest.mark.integration

BUCKET = "headrace-lake"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    port = _free_port()
    log = tmp_path_factory.mktemp("moto-s3") / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto's server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.05)
        options = {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
            "AWS_S3_ALLOW_UNSAFE_RENAME": "true",  # one writer at a time in this test
        }
        client = boto3.client(
            "s3",
            endpoint_url=options["AWS_ENDPOINT_URL"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=BUCKET)
        yield options
    finally:
        server.terminate()
        server.wait(timeout=10)


def _project(folder: Path, prefix: str, metadata: str, s3: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    doc: dict[str, Any] = {
        "project": "objstore",
        "store": f"s3://{BUCKET}/{prefix}/lake",
        "artifacts": f"s3://{BUCKET}/{prefix}/artifacts",
        "metadata": metadata,
        "storage_options": {k: "${HR_" + k + "}" for k in s3},  # from the environment
        "sources": {"customers": {"kind": "file", "path": "data/*.csv", "dataset": "customers"}},
        "models": {
            "churn": {
                "task": "classification",
                "dataset": "customers",
                "target": "Churn",
                "features": {"drop": ["customerID"]},
                "candidates": [{"estimator": "logistic_regression"}],
                "validation": {"strategy": "stratified_kfold", "folds": 3, "importance": False},
            }
        },
    }
    (folder / "headrace.yaml").write_text(yaml.safe_dump(doc))
    return folder


def _cli(
    folder: Path, s3: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **{f"HR_{k}": v for k, v in s3.items()}}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(key, None)  # only what headrace.yaml says
    result = subprocess.run(
        [sys.executable, "-m", "headrace", "--project", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd or folder,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_two_folders_share_a_project_through_s3_and_postgres(
    tmp_path: Path, s3: dict[str, str], pg_db: str
) -> None:
    prefix = uuid.uuid4().hex[:8]
    ingester = _project(tmp_path / "machine-a", prefix, pg_db, s3)
    trainer = _project(tmp_path / "machine-b", prefix, pg_db, s3)
    churn(600, seed=4).write_csv(ingester / "data" / "part-1.csv")

    _cli(ingester, s3, "ingest")
    _cli(trainer, s3, "train", "churn", "--promote")
    listed = _cli(trainer, s3, "datasets", "list")
    assert "customers" in listed.stdout, listed.stdout
    shown = _cli(trainer, s3, "datasets", "show", "customers")
    assert "600" in shown.stdout, shown.stdout
    # a third process, run from a folder of its own with the first machine's file
    status = _cli(ingester, s3, "status", cwd=tmp_path)
    assert "customers" in status.stdout and "churn" in status.stdout, status.stdout

    # everything is in the bucket, nothing in a local folder named after the URL
    for folder in (ingester, trainer, tmp_path):
        assert not (folder / "s3:").exists()
    client = boto3.client(
        "s3",
        endpoint_url=s3["AWS_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    assert any(k.startswith(f"{prefix}/lake/customers/_delta_log/") for k in keys)
    assert any(k.startswith(f"{prefix}/artifacts/") for k in keys)

    # the trained model loads on the other side, from the bucket
    os.environ.update({f"HR_{k}": v for k, v in s3.items()})
    try:
        ws = Workspace.open(ingester)
        from headrace.registry import Registry

        mv, model = Registry(ws.meta, ws.artifacts).load("churn")
        assert mv.version == 1 and model is not None
        assert ws.store.datasets() == ["customers"]
        ws.close()
    finally:
        for k in s3:
            os.environ.pop(f"HR_{k}", None)


def test_unknown_schemes_and_one_slash_urls_are_refused(tmp_path: Path) -> None:
    from headrace.config import load_project

    for location, words in (
        ("ftp://host/lake", "scheme 'ftp'"),
        ("s3:/bucket/lake", "one slash"),
        ("s3:///lake", "names no bucket"),
    ):
        (tmp_path / "headrace.yaml").write_text(yaml.safe_dump({"project": "p", "artifacts": location}))
        with pytest.raises(ConfigError, match=words):
            load_project(tmp_path)
        assert not (tmp_path / "s3:").exists()
