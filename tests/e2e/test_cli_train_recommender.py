"""`headrace train` hands a recommendation model to headrace.recommend and registers it."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from headrace.store import BatchMeta, Store

pytestmark = pytest.mark.e2e


def test_train_recommendation_model(tmp_path: Path):
    (tmp_path / "headrace.yaml").write_text(
        "project: recs\nmodels:\n  recs:\n    task: recommendation\n    dataset: ratings\n"
    )
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(60), 25)
    # two taste groups: even users like items 0-39, odd users items 40-79
    items = (users % 2) * 40 + rng.integers(0, 40, size=users.size)
    frame = pl.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "rating": np.ones(users.size),
            "timestamp": np.arange(users.size),
        }
    ).unique(["user_id", "item_id"])
    Store(tmp_path / ".headrace" / "lake").append("ratings", frame, BatchMeta(source="test"))
    result = subprocess.run(
        [sys.executable, "-m", "headrace", "train", "recs", "--promote", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["model"] == "recs"
    assert doc["chosen"] in {"popularity", "item_knn", "ease"}
    assert set(doc["table"]) >= {"popularity", "ease"}
    status = subprocess.run(
        [sys.executable, "-m", "headrace", "models", "list", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert "recs" in status.stdout


def _plays(tmp_path: Path, columns: dict[str, str]) -> None:
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(40), 20)
    items = (users % 2) * 30 + rng.integers(0, 30, size=users.size)
    frame = pl.DataFrame(
        {
            columns["user"]: users,
            columns["item"]: items,
            columns["weight"]: rng.integers(1, 50, size=users.size),
            columns["time"]: np.arange(users.size),
        }
    ).unique([columns["user"], columns["item"]])
    Store(tmp_path / ".headrace" / "lake").append("plays", frame, BatchMeta(source="test"))


def _train(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace", "train", "recs", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_column_keys_in_headrace_yaml_name_the_columns(tmp_path: Path):
    (tmp_path / "headrace.yaml").write_text(
        "project: recs\nmodels:\n  recs:\n    task: recommendation\n    dataset: plays\n"
        "    user: who\n    item: what\n    weight: how_often\n    time: when\n"
    )
    _plays(tmp_path, {"user": "who", "item": "what", "weight": "how_often", "time": "when"})
    result = _train(tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["protocol"].endswith("by time")  # `time: when` gave the leave-last split


def test_undetected_columns_ask_for_the_yaml_key(tmp_path: Path):
    (tmp_path / "headrace.yaml").write_text(
        "project: recs\nmodels:\n  recs:\n    task: recommendation\n    dataset: plays\n"
    )
    _plays(tmp_path, {"user": "who", "item": "what", "weight": "how_often", "time": "when"})
    result = _train(tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "`user:` on the model in headrace.yaml" in output
    assert "user_col" not in output
