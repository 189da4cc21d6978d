"""The demo's project: one headrace.yaml that declares every source, model and the monitoring policy
the demo uses, and the data beside it. After the demo it is a project like any other."""

from __future__ import annotations

import importlib.util
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..config import PROJECT_FILE, load_project
from ..scaffold import init_project
from ..stream.broker import broker_reachable
from . import data

__all__ = ["DemoProject", "vision_installed", "write_project"]

PROJECT_YAML = """\
# The headrace demo's project: every source, model and policy the demo ran is declared here.
# Rerun any stage from this folder: headrace ingest, headrace train price, headrace serve, ...
# (the orders API is the demo's own: start it with 'headrace -p {root} demo --services').
project: headrace-demo
store: .headrace/lake
metadata: sqlite:///.headrace/headrace.db
artifacts: .headrace/artifacts

sources:
  customers:                                   # CSV files with a few planted defects
    kind: file
    path: data/customers/*.csv
    dataset: customers
    columns:
      customerID: {{type: string, required: true, unique: true}}
      SeniorCitizen: {{type: int, allowed: [0, 1]}}
      tenure: {{type: int, required: true, min: 0, max: 120}}
      MonthlyCharges: {{type: float, required: true, min: 0}}
      TotalCharges: {{type: float, min: 0, impute: median}}
      Contract: {{type: string, allowed: [Month-to-month, One year, Two year]}}
      Churn: {{type: string, required: true, allowed: ["Yes", "No"]}}
    cleanse: [trim_strings, null_tokens]
  houses:                                      # generated California-like block groups
    kind: file
    path: data/houses/*.csv
    dataset: houses
  interactions:                                # generated user-item interactions
    kind: file
    path: data/interactions/*.csv
    dataset: interactions
  orders_api:                                  # the demo's local REST API (nested JSON, cursor pages)
    kind: http
    url: http://127.0.0.1:{api_port}/orders/cursor
    pagination: {{type: cursor, cursor_path: next_cursor}}
    records_path: records
    dataset: orders
    incremental: {{param: updated_since, field: updated_at}}
    batch_rows: 100
  payments_db:                                 # a SQLite file, loaded incrementally on updated_at
    kind: sql
    url: sqlite:///{root}/data/payments.db
    table: payments
    dataset: payments
    cursor: updated_at
    cursor_key: [id]
    chunk_size: 200
  sensors:                                     # simulated sensors over MQTT ('headrace stream sensors')
    kind: mqtt
    broker: {broker}
    protocol: "{protocol}"
    topics: ["{prefix}/+/telemetry"]
    topic_pattern: "{prefix}/{{device}}/telemetry"
    client_id: {prefix}
    qos: 1
    session_expiry_seconds: 0{inflight}
    dataset: sensor_readings
    payload: {{event_time: ts}}
    columns:
      temperature: {{type: float, required: true, min: -40, max: 45}}
      humidity: {{type: float, min: 0, max: 100}}
      battery: {{type: float, min: 0, max: 100}}
    batch_seconds: 0.5
    compact_every_seconds: 0

models:
  churn:
    task: classification
    dataset: customers
    target: Churn
    features: {{drop: [customerID], scale: standard}}
    candidates:
      - {{estimator: logistic_regression, params: {{C: [0.1, 1.0]}}}}
    validation: {{strategy: stratified_kfold, folds: 5, metric: roc_auc, threshold: max_f1}}
    imbalance: class_weight
    promote_if: {{metric: roc_auc, at_least: 0.70, beat_champion_by: 0.0}}
  price:
    task: regression
    dataset: houses
    target: median_house_value
    features:
      scale: standard
      derive:
        rooms_per_household: total_rooms / households
        bedrooms_per_room: total_bedrooms / total_rooms
        population_per_household: population / households
    candidates:
      - {{estimator: ridge, params: {{alpha: [1.0]}}}}
      - {{estimator: hist_gradient_boosting, params: {{max_iter: [150], learning_rate: [0.1]}}}}
    validation: {{strategy: kfold, folds: 5, metric: rmse, inner_folds: 2}}
    promote_if: {{metric: rmse, at_most: 80000}}
  recommendations:
    task: recommendation
    dataset: interactions
{image_model}
serving:
  models: [churn, recommendations]
  interactions_dataset: interactions
  # the demo's loop runs in a minute, not a day: a quick reload, a prediction log flushed often
  reload_seconds: 0.5
  prediction_log: {{flush_seconds: 0.2}}

monitoring:
  window: 1h
  min_rows: 100
  drift_share: 0.1
  cooldown: 1s
  canary: {{share: 0.3, window: 2s, min_requests: 20}}
"""

IMAGE_MODEL = """\
  shapes:                                      # the vision extra is installed: declared, not trained
    task: image_classification                 # by the demo ('headrace train shapes' trains it)
    dataset: shapes
    image: {{path: data/shapes, backbone: {backbone}, image_size: 64, eval_size: 64, head_epochs: 10,
            finetune_epochs: 1, unfreeze_blocks: 1, batch_size: 8, augment: {{views: 1}}}}
"""


@dataclass
class DemoProject:
    path: Path  # headrace.yaml
    api_url: str  # the orders API the demo starts
    broker: str  # where the sensors publish
    local_broker: bool  # no Mosquitto on 1883: the demo starts an in-process broker at ``broker``
    prefix: str  # the MQTT topic prefix of this run

    @property
    def root(self) -> Path:
        return self.path.parent


def vision_installed() -> bool:
    return (
        importlib.util.find_spec("torch") is not None and importlib.util.find_spec("torchvision") is not None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_project(folder: Path, *, customers: int = 4000) -> DemoProject:
    """Write the demo's headrace.yaml and data into ``folder`` (replacing a previous demo's)."""
    folder = folder.resolve()
    init_project(folder, name="headrace-demo", rows=customers, force=True)  # customers CSVs with defects
    (folder / "data" / "houses").mkdir(parents=True, exist_ok=True)
    data.housing(3000, seed=7).write_csv(folder / "data" / "houses" / "houses-1.csv")
    (folder / "data" / "interactions").mkdir(parents=True, exist_ok=True)
    data.interactions().write_csv(folder / "data" / "interactions" / "interactions-1.csv")
    data.payments(folder / "data" / "payments.db")
    (folder / "data" / "orders.json").unlink(missing_ok=True)  # the API starts from 240 orders
    image_model = ""
    if vision_installed():
        data.images(folder / "data" / "shapes")
        image_model = IMAGE_MODEL.format(backbone="resnet18")
    local = not broker_reachable("127.0.0.1", 1883)
    broker = f"mqtt://127.0.0.1:{_free_port()}" if local else "mqtt://127.0.0.1:1883"
    prefix = f"headrace-demo-{uuid.uuid4().hex[:8]}"
    api_port = _free_port()
    text = PROJECT_YAML.format(
        root=folder,
        api_port=api_port,
        broker=broker,
        protocol="3.1.1" if local else "5",
        prefix=prefix,
        image_model=image_model,
        inflight="\n    max_inflight: 5000" if local else "",
    )
    path = folder / PROJECT_FILE
    path.write_text(text, encoding="utf-8")
    load_project(path)  # the demo's project must always be valid
    return DemoProject(path, f"http://127.0.0.1:{api_port}/orders/cursor", broker, local, prefix)
