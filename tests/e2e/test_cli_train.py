"""``headrace train``, ``evaluate`` and ``models`` on a small project."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from headrace.datagen import churn
from headrace.store import BatchMeta, Store

pytestmark = pytest.mark.e2e

PROJECT = """\
project: train-e2e
models:
  churn:
    task: classification
    dataset: customers
    target: Churn
    features: {drop: [customerID]}
    candidates:
      - {estimator: logistic_regression, params: {C: [0.1, 1.0]}}
    validation: {strategy: stratified_kfold, folds: 3, inner_folds: 2, metric: roc_auc, threshold: max_f1}
    promote_if: {metric: roc_auc, at_least: 0.6}
  bad:
    task: classification
    dataset: customers
    target: Churn
    candidates: [{estimator: logistic_regression}]
    validation: {folds: 1}
"""


def headrace(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_train_evaluate_promote_reproduce(tmp_path: Path):
    (tmp_path / "headrace.yaml").write_text(PROJECT)
    Store(tmp_path / ".headrace" / "lake").append("customers", churn(400, seed=4), BatchMeta(source="e2e"))

    trained = headrace("train", "churn", "--promote", "--json", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    doc = json.loads(trained.stdout)
    assert doc["version"] == 1 and doc["aliases"] == ["champion"]
    assert 0.7 < doc["summary"]["roc_auc"]["mean"] < 1
    assert doc["threshold"]["rule"] == "max_f1"

    listed = json.loads(headrace("models", "list", "--json", cwd=tmp_path).stdout)
    assert [(m["model"], m["version"], m["aliases"]) for m in listed] == [("churn", 1, ["champion"])]

    report = headrace("evaluate", "churn@1", "--out", str(tmp_path / "r"), "--json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    rdoc = json.loads(report.stdout)
    assert Path(rdoc["html"]).read_text().count("data:image/png;base64,") >= 5
    assert rdoc["data_version"] == 0

    again = headrace("train", "churn", "--reproduce", "1", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["same"] is True

    shown = json.loads(headrace("models", "show", "churn@champion", "--json", cwd=tmp_path).stdout)
    assert shown["version"] == 1 and shown["threshold"] > 0

    # no previous champion: one line, exit 1
    rollback = headrace("models", "rollback", "churn", cwd=tmp_path)
    assert rollback.returncode == 1
    assert "no previous champion" in rollback.stderr and "Traceback" not in rollback.stderr

    history = json.loads(headrace("models", "history", "churn", "--json", cwd=tmp_path).stdout)
    assert [e["action"] for e in history["entries"]] == ["register", "promote"]


def test_bad_spec_is_one_line_with_exit_2(tmp_path: Path):
    (tmp_path / "headrace.yaml").write_text(PROJECT)
    result = headrace("train", "bad", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "The 'folds' parameter of cross_validate must be an int >= 2. Got 1 instead." in lines[0]
    missing = headrace("evaluate", "churn@3", cwd=tmp_path)
    assert missing.returncode == 2 and "no version 3" in missing.stderr
