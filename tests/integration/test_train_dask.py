"""Outer folds on a Dask cluster (a LocalCluster here) give the same scores as joblib."""

from __future__ import annotations

import pytest

from headrace.config.models import ModelSpec
from headrace.datagen import churn
from headrace.errors import ServiceUnavailable
from headrace.train.run import fit_and_validate

pytestmark = pytest.mark.integration

SPEC = ModelSpec.model_validate(
    {
        "task": "classification",
        "dataset": "customers",
        "target": "Churn",
        "features": {"drop": ["customerID"]},
        "candidates": [{"estimator": "logistic_regression", "params": {"C": [0.1, 1.0]}}],
        "validation": {"folds": 4, "inner_folds": 2, "importance": False},
    }
)


def test_folds_on_a_local_dask_cluster_match_joblib():
    distributed = pytest.importorskip("distributed")
    frame = churn(500, seed=8)
    local = fit_and_validate("churn", SPEC, frame, n_jobs=1)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        on_dask = fit_and_validate("churn", SPEC, frame, scheduler=cluster.scheduler_address)
    assert on_dask.metrics == local.metrics
    assert on_dask.model.threshold == local.model.threshold


def test_an_unreachable_scheduler_is_one_clear_error():
    pytest.importorskip("distributed")
    with pytest.raises(ServiceUnavailable, match=r"Dask scheduler tcp://127\.0\.0\.1:1 is unreachable"):
        fit_and_validate("churn", SPEC, churn(100, seed=1), scheduler="tcp://127.0.0.1:1")
