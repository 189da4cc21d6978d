"""Training on a Dask cluster of worker processes (a LocalCluster): the workers read the dataset
version from the Delta table themselves, the search and the folds are spread over them, and the result
is the one-process run's, to the bit."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pytest

from headrace.config.models import ModelSpec
from headrace.datagen import churn
from headrace.errors import DataError, ServiceUnavailable, UsageError
from headrace.store import BatchMeta, Store
from headrace.train.run import TrainResult, fit_and_validate, train_model
from headrace.train.validation import DataRef, worker_loads

pytestmark = pytest.mark.integration

distributed = pytest.importorskip("distributed")

CHURN = {
    "task": "classification",
    "dataset": "customers",
    "target": "Churn",
    "features": {"drop": ["customerID"]},
    "candidates": [
        {"estimator": "logistic_regression", "params": {"C": [0.01, 0.1, 1.0]}},
        {"estimator": "knn", "params": {"n_neighbors": [5, 25]}},
    ],
    "validation": {"folds": 4, "inner_folds": 3, "importance": True, "threshold": "max_f1"},
}
# a regression with a transformed target, a random search and groups
PRICE = {
    "task": "regression",
    "dataset": "customers",
    "target": "MonthlyCharges",
    "target_transform": "log",
    "features": {"drop": ["customerID", "TotalCharges"]},
    "candidates": [
        {"estimator": "ridge", "params": {"alpha": [0.1, 1.0, 10.0, 100.0]}},
        {"estimator": "random_forest", "params": {"n_estimators": 10, "max_depth": [2, 4, 8]}},
    ],
    "validation": {
        "strategy": "group_kfold",
        "group": "Contract",
        "folds": 3,
        "inner_folds": 2,
        "search": "random",
        "n_iter": 4,
        "importance": False,
    },
}


class Payload:
    """What the driver puts into the cluster, as the (in-process) scheduler receives it: the bytes of
    every submitted task graph (the tasks' pickled functions and arguments), and the bytes of data
    scattered to the workers. Wraps the scheduler's own handlers, so nothing is left out."""

    def __init__(self, scheduler: Any) -> None:
        self.graph_bytes = 0
        self.tasks = 0
        self.scattered_bytes = 0
        graph = scheduler.stream_handlers["update-graph"]
        stream_data = scheduler.stream_handlers["update-data"]
        data = scheduler.handlers["update_data"]

        async def on_graph(**kw: Any) -> Any:
            self.graph_bytes += sum(memoryview(f).nbytes for f in kw["expr_ser"].frames)
            self.tasks += 1
            return await graph(**kw) if _is_coro(graph) else graph(**kw)

        def on_data(handler: Any) -> Any:
            def count(*args: Any, **kw: Any) -> Any:
                self.scattered_bytes += sum(kw.get("nbytes", {}).values())
                return handler(*args, **kw)

            return count

        scheduler.stream_handlers["update-graph"] = on_graph
        scheduler.stream_handlers["update-data"] = on_data(stream_data)
        scheduler.handlers["update_data"] = on_data(data)

    def reset(self) -> None:
        self.graph_bytes = self.tasks = self.scattered_bytes = 0


def _is_coro(fn: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Any, Payload]]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as local:
        yield local, Payload(local.scheduler)


def _store(tmp_path: Any, rows: int, seed: int) -> tuple[Store, int]:
    store = Store(tmp_path / "store")
    version = store.append("customers", churn(rows, seed=seed), BatchMeta("test"))
    return store, version


def _same(local: TrainResult, on_dask: TrainResult, frame: pl.DataFrame) -> None:
    assert on_dask.scorecard["chosen"] == local.scorecard["chosen"]
    assert [f["chosen"] for f in on_dask.scorecard["folds"]] == [
        f["chosen"] for f in local.scorecard["folds"]
    ]
    assert on_dask.scorecard["candidates"] == local.scorecard["candidates"]
    assert set(on_dask.metrics) == set(local.metrics)
    for name, value in local.metrics.items():
        assert on_dask.metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), name
    assert on_dask.scorecard["nested_summary"] == local.scorecard["nested_summary"]
    assert on_dask.scorecard["importance"] == local.scorecard["importance"]
    assert on_dask.oof.columns == local.oof.columns
    assert on_dask.oof.equals(local.oof)  # the same rows, folds and predictions, bit for bit
    assert on_dask.model.threshold == local.model.threshold
    records = frame.head(300)
    mine = on_dask.model.pipeline.predict(on_dask.model.prepare(records))
    theirs = local.model.pipeline.predict(local.model.prepare(records))
    np.testing.assert_array_equal(mine, theirs)  # the final fit (on a worker) is the driver's


@pytest.mark.parametrize("raw", [CHURN, PRICE], ids=["classification-grid", "regression-random-groups"])
def test_workers_read_the_table_and_match_the_one_process_run(tmp_path, cluster, raw):
    local_cluster, payload = cluster
    spec = ModelSpec.model_validate(raw)
    store, version = _store(tmp_path, 1500, seed=8)
    frame = store.read("customers", version)
    local = train_model("churn", spec, store=store, data_version=version, n_jobs=1)

    payload.reset()
    with distributed.Client(local_cluster, set_as_default=False) as client:
        before = client.run(worker_loads)
        on_dask = train_model("churn", spec, store=store, data_version=version, scheduler=client)
        after = client.run(worker_loads)
        _same(local, on_dask, frame)

        # each worker read the table once and made the rows once for the whole run (its tasks reuse
        # them), and both worked: the tasks were spread over the cluster
        ref = str(DataRef.of(store, "customers", version))
        for kind in ("reads", "prepared"):
            counts = {w: after[w][kind].get(ref, 0) - before[w][kind].get(ref, 0) for w in after}
            assert counts == dict.fromkeys(after, 1), (kind, counts)

        # the driver sent task descriptions, not the rows: what the scheduler received in all the
        # task graphs is a small part of the frame the driver holds
        shipped = len(pickle.dumps(on_dask.model.prepare(frame)))
        assert payload.tasks > 0
        assert payload.scattered_bytes == 0
        per_task = payload.graph_bytes / payload.tasks
        assert per_task < shipped / 20, (payload.graph_bytes, payload.tasks, shipped)

        # and the measure sees a frame that is shipped (the check can fail)
        payload.reset()
        assert client.submit(len, on_dask.model.prepare(frame), pure=False).result() == frame.height
        assert payload.graph_bytes >= shipped * 0.9


def test_the_dataset_reference_is_what_the_workers_open(tmp_path, cluster):
    store, version = _store(tmp_path, 200, seed=2)
    ref = DataRef.of(store, "customers", version)
    assert ref.store == str((tmp_path / "store").resolve())
    assert ref.version == version
    local_cluster, _ = cluster
    with distributed.Client(local_cluster, set_as_default=False) as client:
        read = client.submit(lambda r: r.read().height, ref, pure=False).result()
    assert read == 200


def test_a_worker_that_reads_other_rows_is_one_clear_error(tmp_path, cluster):
    spec = ModelSpec.model_validate(CHURN)
    store, version = _store(tmp_path, 400, seed=3)
    frame = store.read("customers", version)
    other, _ = _store(tmp_path / "other", 500, seed=4)  # the workers are pointed at another store
    local_cluster, _ = cluster
    with pytest.raises(DataError, match=r"a Dask worker read .* labelled rows that are not the driver's 400"):
        fit_and_validate(
            "churn",
            spec,
            frame,
            scheduler=local_cluster.scheduler_address,
            source=DataRef.of(other, "customers", version),
        )


def test_a_dask_run_without_the_dataset_reference_is_refused():
    with pytest.raises(UsageError, match="a Dask run needs the dataset's place in the store"):
        fit_and_validate(
            "churn", ModelSpec.model_validate(CHURN), churn(100, seed=1), scheduler="tcp://127.0.0.1:1"
        )


def test_an_unreachable_scheduler_is_one_clear_error(tmp_path):
    store, version = _store(tmp_path, 100, seed=1)
    with pytest.raises(ServiceUnavailable, match=r"Dask scheduler tcp://127\.0\.0\.1:1 is unreachable"):
        train_model(
            "churn",
            ModelSpec.model_validate(CHURN),
            store=store,
            data_version=version,
            scheduler="tcp://127.0.0.1:1",
        )


PROJECT = """\
project: train-dask
models:
  churn:
    task: classification
    dataset: customers
    target: Churn
    features: {drop: [customerID]}
    candidates:
      - {estimator: logistic_regression, params: {C: [0.1, 1.0]}}
    validation: {strategy: stratified_kfold, folds: 3, inner_folds: 2, metric: roc_auc, threshold: max_f1}
"""


def test_headrace_train_with_headrace_dask_trains_on_the_workers_and_reproduces_in_one_process(
    tmp_path, cluster
):
    import json
    import os
    import subprocess
    import sys

    local_cluster, _ = cluster
    (tmp_path / "headrace.yaml").write_text(PROJECT)
    lake = tmp_path / ".headrace" / "lake"
    Store(lake).append("customers", churn(600, seed=5), BatchMeta(source="test"))

    def headrace(*args: str, dask: str | None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "HEADRACE_DASK"}
        if dask is not None:
            env["HEADRACE_DASK"] = dask
        return subprocess.run(
            [sys.executable, "-m", "headrace", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    with distributed.Client(local_cluster, set_as_default=False) as client:
        before = client.run(worker_loads)
        trained = headrace("train", "churn", "--json", dask=local_cluster.scheduler_address)
        after = client.run(worker_loads)
    assert trained.returncode == 0, trained.stderr
    ref = f"{lake.resolve()}/customers@0"
    reads = {w: after[w]["reads"].get(ref, 0) - before[w]["reads"].get(ref, 0) for w in after}
    assert reads == dict.fromkeys(after, 1)

    # retrained in one process (no HEADRACE_DASK) from the recorded data version, spec and seed
    again = headrace("train", "churn", "--reproduce", "1", "--json", dask=None)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["same"] is True, doc
    assert len(doc["metrics"]) > 10
