"""OpenLineage events from ingest and train, received by a local HTTP server the test starts."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from headrace.cli import main
from headrace.config import load_project
from headrace.lineage import PRODUCER, SCHEMA_URL, LineageEmitter
from headrace.scaffold import init_project

pytestmark = pytest.mark.integration


class Receiver:
    """An OpenLineage HTTP endpoint: every POSTed event kept as it arrived."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.auth: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.paths.append(self.path)
                outer.auth.append(self.headers.get("Authorization"))
                outer.events.append(json.loads(body))
                self.send_response(201)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _project(folder: Path, lineage: str) -> Path:
    init_project(folder, rows=400)
    yaml_path = folder / "headrace.yaml"
    yaml_path.write_text(yaml_path.read_text() + lineage)
    return folder


def _cli(folder: Path, *args: str) -> int:
    with pytest.raises(SystemExit) as done:
        main(["--project", str(folder), *args])
    return int(done.value.code or 0)


def _check_shape(event: dict[str, Any]) -> None:
    """The OpenLineage RunEvent's required fields (spec 2-0-2) and the facets' own required keys."""
    assert event["eventType"] in ("START", "COMPLETE", "FAIL")
    assert datetime.fromisoformat(event["eventTime"]).tzinfo is not None
    assert uuid.UUID(event["run"]["runId"]).version == 4
    assert set(event["job"]) >= {"namespace", "name"}
    assert event["producer"] == PRODUCER and event["schemaURL"] == SCHEMA_URL
    for ds in event["inputs"] + event["outputs"]:
        assert set(ds) >= {"namespace", "name"}
        for facet in ds.get("facets", {}).values():
            assert facet["_producer"] == PRODUCER and facet["_schemaURL"].startswith(
                "https://openlineage.io/"
            )


def test_ingest_and_train_send_start_and_complete(tmp_path: Path, receiver: Receiver) -> None:
    folder = _project(
        tmp_path / "p", f"\nlineage:\n  url: {receiver.url}\n  namespace: team-churn\n  api_key: k-123\n"
    )
    assert _cli(folder, "ingest") == 0
    assert _cli(folder, "train", "churn") == 0

    assert set(receiver.paths) == {"/api/v1/lineage"}
    assert set(receiver.auth) == {"Bearer k-123"}
    for event in receiver.events:
        _check_shape(event)
    kinds = [(e["job"]["name"], e["eventType"]) for e in receiver.events]
    assert kinds == [
        ("ingest.customers", "START"),
        ("ingest.customers", "COMPLETE"),
        ("train.churn", "START"),
        ("train.churn", "COMPLETE"),
    ]
    ingest_start, ingest_done, train_start, train_done = receiver.events
    assert ingest_start["run"]["runId"] == ingest_done["run"]["runId"] != train_start["run"]["runId"]
    assert train_start["run"]["runId"] == train_done["run"]["runId"]
    assert {e["job"]["namespace"] for e in receiver.events} == {"team-churn"}
    # ingest: source -> dataset at the version it committed
    assert ingest_done["inputs"] == [{"namespace": "team-churn", "name": "sources/customers"}]
    [dataset] = ingest_done["outputs"]
    assert dataset["name"] == "customers"
    from headrace.store import Store

    version = Store(folder / ".headrace" / "lake").version("customers")
    assert dataset["facets"]["version"]["datasetVersion"] == str(version)
    # train: that dataset version -> the model version it registered
    [read] = train_start["inputs"]
    assert read["name"] == "customers" and read["facets"]["version"]["datasetVersion"] == str(version)
    [model] = train_done["outputs"]
    assert model["name"] == "models/churn" and model["facets"]["version"]["datasetVersion"] == "1"


def test_a_failed_training_run_sends_fail(tmp_path: Path, receiver: Receiver) -> None:
    folder = _project(tmp_path / "p", f"\nlineage:\n  url: {receiver.url}\n")
    assert _cli(folder, "ingest") == 0
    yaml_path = folder / "headrace.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("target: Churn", "target: Churned"))
    assert _cli(folder, "train", "churn") != 0
    train = [e for e in receiver.events if e["job"]["name"] == "train.churn"]
    assert [e["eventType"] for e in train] == ["START", "FAIL"]
    _check_shape(train[1])
    assert "Churned" in train[1]["run"]["facets"]["errorMessage"]["message"]
    assert train[1]["job"]["namespace"] == "p"  # default namespace: the project's name


def test_a_receiver_that_is_down_never_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = _project(tmp_path / "p", f"\nlineage:\n  url: http://127.0.0.1:{port}\n  timeout_s: 1\n")
    capsys.readouterr()
    assert _cli(folder, "ingest") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "headrace.lineage" in line]
    assert len(warnings) == 2  # START and COMPLETE, one line each
    assert all("did not reach" in w and "the run goes on" in w for w in warnings)


def test_without_a_lineage_block_nothing_is_sent(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    init_project(folder, rows=50)
    assert LineageEmitter.for_project(load_project(folder)) is None
    bad = folder / "headrace.yaml"
    bad.write_text(bad.read_text() + "\nlineage:\n  url: marquez:5000\n")
    with pytest.raises(Exception, match=r"lineage\.url"):
        load_project(folder)
