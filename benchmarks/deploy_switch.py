"""Deployments under load: the local front's switch, and how fast a rollback decision is served.

    .venv/bin/python benchmarks/deploy_switch.py [--seconds 4] [--threads 4]

A churn project (generated data, SQLite metadata) trains v1 and registers v2, then:

1. **Front overhead.** One-row predictions for ``--seconds`` straight to the live slot's own port,
   then through the front (the stable address): requests/s and p50/p99 of each, same client, same run.
2. **Switch under load.** ``--threads`` clients send one-row predictions through the front without
   pause while ``headrace deploy churn@2 --target local`` starts v2 and switches, and while a deploy
   rollback switches back: requests sent, failed (any non-200 or connection error), and whether any
   answer came from the old version after the first from the new one (the switch is atomic).
3. **Rollback decision to the old version answering.** The registry's champion is rolled back, then
   (a) the local deployment is brought to it (``deploy.follow``: a switch to the standby slot), and
   (b) a bundle reporting home with ``HEADRACE_RELOAD_SECONDS=0.5`` follows the alias by itself;
   each: seconds from the decision until a request answers from the old version (median of 5).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from headrace.config import ModelSpec  # noqa: E402
from headrace.datagen import churn  # noqa: E402
from headrace.deploy import Bundle, DeployOptions, build_bundle, deploy, rollback, stop_local  # noqa: E402
from headrace.deploy.follow import follow  # noqa: E402
from headrace.deploy.local import (  # noqa: E402
    ensure_env,
    free_port,
    link_env,
    start_bundle,
    stop_process,
    wait_ready,
)
from headrace.registry import Registry  # noqa: E402
from headrace.scaffold import init_project  # noqa: E402
from headrace.store import BatchMeta  # noqa: E402
from headrace.train.run import train_model  # noqa: E402
from headrace.workspace import Workspace  # noqa: E402

SPEC = {
    "task": "classification",
    "dataset": "customers",
    "target": "Churn",
    "features": {"drop": ["customerID"]},
    "candidates": [{"estimator": "logistic_regression"}],
    "validation": {"strategy": "holdout"},
}


def timed_requests(url: str, record: dict[str, Any], seconds: float) -> tuple[float, float, float]:
    lat: list[float] = []
    with httpx.Client(timeout=10) as client:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            r = client.post(f"{url}/models/churn/predict", json={"records": [record]})
            lat.append(time.perf_counter() - t)
            assert r.status_code == 200, r.text
    lat.sort()
    return len(lat) / seconds, lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000


class Load:
    def __init__(self, url: str, record: dict[str, Any], threads: int) -> None:
        self.url, self.record = url, record
        self.versions: list[list[int]] = [[] for _ in range(threads)]
        self.failed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, i: int) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(f"{self.url}/models/churn/predict", json={"records": [self.record]})
                except httpx.HTTPError:
                    self.failed += 1
                    continue
                if r.status_code != 200:
                    self.failed += 1
                else:
                    self.versions[i].append(int(r.json()["version"]))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: Any) -> None:
        time.sleep(0.5)
        self._stop.set()
        for t in self._threads:
            t.join()

    def summary(self, old: int, new: int) -> str:
        sent = sum(len(v) for v in self.versions) + self.failed
        back = sum(
            1
            for per in self.versions
            if new in per and old in per[per.index(new) :]  # an old answer after a new one, per client
        )
        return f"{sent:,} requests, {self.failed} failed, clients that saw v{old} again after v{new}: {back}"


def until(url: str, record: dict[str, Any], version: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < end:
            r = client.post(f"{url}/models/churn/predict", json={"records": [record]})
            if r.status_code == 200 and r.json()["version"] == version:
                return
            time.sleep(0.01)
    raise SystemExit(f"v{version} never answered at {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="headrace-switch-"))
    ws = Workspace.open(init_project(folder, name="switch", rows=100))
    slot = None
    try:
        ws.store.append("customers", churn(2000, seed=3), BatchMeta("bench"))
        registry = Registry(ws.meta, ws.artifacts, actor="bench")
        v1 = train_model(
            "churn", ModelSpec.model_validate(SPEC), store=ws.store, registry=registry, promote=True
        ).version
        assert v1 is not None
        artifact = ws.artifacts.get_bytes(v1.artifact_sha256 or "")
        v2 = registry.register(
            "churn", task=v1.task, flavor="tabular", artifact=artifact,
            signature=v1.signature, threshold=v1.threshold, dataset=v1.dataset, data_version=v1.data_version,
            reason="bench: a second version",
        )  # fmt: skip
        first = deploy(ws, "churn@1", "local", options=DeployOptions(env="inherit", port=free_port()))
        front = str(first.endpoint)
        record = Bundle.open(str(first.bundle)).example()[0]
        direct = str(first.details["slot_url"])

        timed_requests(direct, record, 1.0)  # warm both paths
        timed_requests(front, record, 1.0)
        d_rps, d_p50, d_p99 = timed_requests(direct, record, args.seconds)
        f_rps, f_p50, f_p99 = timed_requests(front, record, args.seconds)
        print("1. one client, one-row predictions, sequential:")
        print(f"   direct to the slot:  {d_rps:7.0f} req/s, p50 {d_p50:.2f} ms, p99 {d_p99:.2f} ms")
        print(f"   through the front:   {f_rps:7.0f} req/s, p50 {f_p50:.2f} ms, p99 {f_p99:.2f} ms")
        print(f"   front / direct throughput: {f_rps / d_rps:.2f}x")

        print(f"2. {args.threads} clients without pause through {front}:")
        with Load(front, record, args.threads) as load:
            deploy(ws, f"churn@{v2.version}", "local", options=DeployOptions(env="inherit"))
        print(f"   deploy v1 -> v{v2.version}: {load.summary(1, v2.version)}")
        with Load(front, record, args.threads) as load:
            rollback(ws, "churn", "local")
        print(f"   deploy rollback v{v2.version} -> v1: {load.summary(v2.version, 1)}")

        # 3a: local follows a registry rollback (standby switch)
        local_times = []
        for _ in range(5):
            registry.promote("churn", v2.version, reason="bench")
            follow(ws, "churn", registry=registry)  # a blue/green deploy of v2 (v1 stands by)
            until(front, record, v2.version)
            decided = time.perf_counter()
            registry.rollback("churn", reason="bench: rollback decision")
            follow(ws, "churn", registry=registry)
            until(front, record, 1)
            local_times.append(time.perf_counter() - decided)
        stop_local(ws, "churn")

        # 3b: a bundle reporting home follows the alias
        bundle = build_bundle(ws, "churn@1")
        python, _ = ensure_env(bundle, ws.root / ".headrace" / "deploy" / "envs", "inherit")
        project = ws.project
        home = link_env(str(project.metadata), str(project.store), str(project.artifacts), alias="champion")
        home["HEADRACE_RELOAD_SECONDS"] = "0.5"
        slot = start_bundle(bundle, python, folder / "logs", home=home)
        wait_ready(slot)
        bundle_times = []
        for _ in range(5):
            registry.promote("churn", v2.version, reason="bench")
            until(slot.url, record, v2.version)
            decided = time.perf_counter()
            registry.rollback("churn", reason="bench: rollback decision")
            until(slot.url, record, 1)
            bundle_times.append(time.perf_counter() - decided)
        print("3. rollback decision -> the old version answering (median of 5):")
        print(
            f"   local front (follow: switch to the standby slot): {statistics.median(local_times):.3f} s "
            f"(max {max(local_times):.3f})"
        )
        print(
            f"   bundle reporting home, reload every 0.5 s: {statistics.median(bundle_times):.3f} s "
            f"(max {max(bundle_times):.3f}; bound: reload period + load)"
        )
    finally:
        if slot is not None:
            stop_process(slot)
        stop_local(ws, "churn")
        ws.close()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
