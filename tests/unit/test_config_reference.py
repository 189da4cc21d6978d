"""The reference of headrace.yaml: docs/config.md and the JSON Schema, generated from the spec classes."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import headrace.config
from headrace.config import Project, parse_project
from headrace.config.base import Spec
from headrace.config.reference import json_schema, markdown
from headrace.errors import ConfigError
from headrace.scaffold import EXAMPLE_YAML

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"
STALE = "docs/config.md is stale: run `.venv/bin/headrace schema --markdown > docs/config.md`"

TRAIN = """\
project: train-e2e
models:
  churn:
    task: classification
    dataset: customers
    target: Churn
    features: {drop: [customerID], min_frequency: 0.01, derive: {per_month: TotalCharges / tenure}}
    candidates:
      - {estimator: logistic_regression, params: {C: [0.1, 1.0]}}
    validation: {strategy: stratified_kfold, folds: 3, inner_folds: 2, metric: roc_auc, threshold: max_f1}
    promote_if: {metric: roc_auc, at_least: 0.6}
  pics:
    task: image_classification
    dataset: pics
    image: {path: data/images, image_size: 64, eval_size: 64, head_epochs: 10,
            finetune_epochs: 1, unfreeze_blocks: 1, batch_size: 8, augment: {views: 1, crop_scale: [0.5, 1]}}
"""

SQL_HTTP = """\
project: batch-sources
sources:
  payments:
    kind: sql
    url: ${PG_URL}
    table: payments
    dataset: payments
    cursor: updated_at
    cursor_key: [id]
    chunk_size: 70
    columns:
      amount: {min: 0}
  orders:
    kind: http
    url: http://127.0.0.1:8080/orders/cursor
    auth: {type: bearer, token: "${ORDERS_TOKEN}"}
    pagination: {type: cursor, cursor_path: next_cursor}
    records_path: records
    dataset: orders
    incremental: {param: updated_since, field: updated_at}
    batch_rows: 25
"""

STREAMS = """\
project: plant
sources:
  sensors:
    kind: mqtt
    broker: mqtts://broker.example.com
    topics: [plant/+/sensors/#]
    protocol: 5
    tls: {ca_file: certs/ca.pem}
    topic_pattern: plant/{site}/sensors/{device}
    payload: {format: json, event_time: ts}
    dataset: readings
    key: [device, ts]
    batch_seconds: 0.5
    username: ingest
    password: ${MQTT_PASSWORD}
  jets:
    kind: nats
    servers: [nats://127.0.0.1:4222]
    stream: READINGS
    subjects: [plant.>]
    dataset: jets
serving:
  port: ${PORT:-8000}
  admin_token: ${HEADRACE_ADMIN_TOKEN:-}
monitoring:
  window: 30m
  performance_windows: [1h, 1d]
  alerts: {for: 10m, stream_delay_s: 2m}
"""

ENV = {"PG_URL": "postgresql://u@127.0.0.1/db", "ORDERS_TOKEN": "t", "MQTT_PASSWORD": "p"}


def monitoring_example() -> str:
    """The example at the top of headrace.config.monitoring's docstring."""
    doc = importlib.import_module("headrace.config.monitoring").__doc__ or ""
    match = re.search(r"```yaml\n(.*?)```", doc, re.DOTALL)
    assert match, "the monitoring module's docstring lost its YAML example"
    return "project: p\n" + match.group(1)


EXAMPLES = {
    "init": EXAMPLE_YAML.format(name="x"),
    "train": TRAIN,
    "sql_http": SQL_HTTP,
    "streams": STREAMS,
    "monitoring": monitoring_example(),
}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_docs_config_md_is_the_generated_reference():
    written = DOCS.read_text(encoding="utf-8") if DOCS.is_file() else ""
    if written != markdown():
        pytest.fail(STALE, pytrace=False)


def test_schema_is_draft_2020_12_and_names_itself():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].startswith("https://") and schema["title"] == "headrace.yaml"
    assert "root" not in schema["properties"] and schema["required"] == ["project"]
    json.dumps(schema)  # plain JSON, nothing left from Python


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_real_project_files_validate(name: str, validator: Any, monkeypatch: pytest.MonkeyPatch):
    document = yaml.safe_load(EXAMPLES[name])
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    parse_project(document, "/tmp")  # and the loader agrees


BAD = {
    "unknown top-level key": {"project": "x", "modles": {}},
    "unknown source key": {
        "project": "x",
        "sources": {"c": {"kind": "file", "path": "d/*.csv", "dataset": "c", "colums": {}}},
    },
    "unknown column rule key": {
        "project": "x",
        "sources": {"c": {"kind": "file", "path": "d/*.csv", "dataset": "c", "columns": {"a": {"mni": 0}}}},
    },
    "unknown image key": {
        "project": "x",
        "models": {
            "m": {"task": "image_classification", "dataset": "d", "image": {"path": "i", "epochs": 3}}
        },
    },
    "unknown kind": {"project": "x", "sources": {"c": {"kind": "ftp", "dataset": "c"}}},
    "missing project": {"store": "s"},
    "not a number": {
        "project": "x",
        "models": {"m": {"task": "regression", "dataset": "d", "validation": {"folds": "five"}}},
    },
    "not a duration": {"project": "x", "monitoring": {"window": "an hour"}},
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_invalid_files_fail_the_schema_and_the_loader(name: str, validator: Any):
    assert not validator.is_valid(BAD[name])
    with pytest.raises(ConfigError):
        parse_project(BAD[name], "/tmp")


def test_interpolated_values_validate_where_text_would_not(validator: Any):
    assert validator.is_valid({"project": "x", "serving": {"port": "${PORT}", "fast_path": "${FAST:-true}"}})
    assert not validator.is_valid({"project": "x", "serving": {"port": "eighty"}})


def spec_classes() -> list[type[Spec]]:
    """Every spec class of headrace.config, found by importing its modules (not by the generator's walk)."""
    found: list[type[Spec]] = [Project]
    for module_info in pkgutil.iter_modules(headrace.config.__path__):
        module = importlib.import_module(f"headrace.config.{module_info.name}")
        for value in vars(module).values():
            is_spec = inspect.isclass(value) and issubclass(value, Spec) and value is not Spec
            if is_spec and value.__module__ == module.__name__ and value not in found:
                found.append(value)
    return found


def section(text: str, cls: type[Spec]) -> str:
    heading = "## Project\n" if cls is Project else f"### {cls.__name__}\n"
    assert heading in text, f"{cls.__name__} has no section in the reference"
    body = text.split(heading, 1)[1]
    return re.split(r"\n#{2,3} ", body, maxsplit=1)[0]


def test_every_key_of_every_spec_class_is_documented():
    text = markdown()
    classes = spec_classes()
    assert len(classes) > 30
    missing: list[str] = []
    for cls in classes:
        # a key is in the class's own table or in that of a spec class it extends ("Also takes ...")
        owners = [c for c in cls.__mro__ if isinstance(c, type) and issubclass(c, Spec) and c in classes]
        tables = "".join(section(text, owner) for owner in owners)
        for name, info in cls.model_fields.items():
            key = info.alias or name
            if not info.exclude and f"\n| `{key}` |" not in tables:
                missing.append(f"{cls.__name__}.{key}")
    assert missing == []


def test_meanings_come_from_descriptions_comments_and_docstrings():
    text = markdown()
    sql, threshold, nats = (section(text, _cls(n)) for n in ("SqlSource", "ThresholdSpec", "NatsSource"))
    assert "| rows per batch (and per commit) |" in sql  # Field(description=...)
    assert "| f_beta: > 1 favours recall |" in threshold  # the comment on the line
    # the clause of the class docstring that starts with ``ack_wait_seconds``: ...
    assert "| how long a fetched message may stay unacknowledged before redelivery. |" in nats


def _cls(name: str) -> type[Spec]:
    return next(c for c in spec_classes() if c.__name__ == name)


def test_headrace_schema_prints_both(capsys: pytest.CaptureFixture[str]):
    from headrace.cli import main
    from headrace.cli.schema import schema_command

    assert len((schema_command.__doc__ or "").strip().splitlines()) == 1
    with pytest.raises(SystemExit) as done:
        main(["schema"])
    assert done.value.code in (0, None)
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(json_schema()))
    with pytest.raises(SystemExit) as done:
        main(["schema", "--markdown"])
    assert done.value.code in (0, None)
    assert capsys.readouterr().out == markdown()
