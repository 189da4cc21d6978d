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
