"""``headrace serve --workers 2``: two real worker processes behind one port, and ``/metrics`` counts
every request once whichever worker answers the scrape (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _requests_counted(text: str) -> float:
    pattern = r'^headrace_requests_total\{[^}]*route="/models/\{name\}/predict"[^}]*\} ([0-9.e+]+)$'
    return sum(float(v) for v in re.findall(pattern, text, flags=re.M))


def test_two_workers_report_one_sum_of_requests(tmp_path: Path):
    from headrace.registry import Registry
    from headrace.scaffold import init_project
    from headrace.serve.examples import churn_records, register_churn
    from headrace.workspace import Workspace

    init_project(tmp_path, name="workers", rows=100)
    ws = Workspace.open(tmp_path / "headrace.yaml")
    register_churn(Registry(ws.meta, ws.artifacts, actor="test"), "churn", n=600, seed=3)
    ws.close()
    port = _free_port()
    shared = tmp_path / "metrics"  # named here (the command makes its own otherwise) to look inside
    shared.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    command = [sys.executable, "-m", "headrace", "--project", str(tmp_path), "serve", "--workers", "2"]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([*command, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=base, timeout=10) as client:
            while time.monotonic() < deadline:
                try:
                    if client.get("/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                time.sleep(0.3)
            records = churn_records(60, seed=5)
            for record in records:
                # A new connection each time, so the kernel spreads them over both workers.
                with httpx.Client(base_url=base, timeout=10) as one:
                    answer = one.post("/models/churn/predict", json={"records": [record]})
                    assert answer.status_code == 200, answer.text
            scrapes = []
            for _ in range(6):
                with httpx.Client(base_url=base, timeout=10) as one:
                    scrapes.append(_requests_counted(one.get("/metrics").text))
        # Both workers answered predictions (each wrote its own counter file) ...
        served_by = {p.stem.rsplit("_", 1)[-1] for p in shared.glob("counter_*.db")}
        assert len(served_by) == 2, sorted(p.name for p in shared.iterdir())
        # ... and every scrape, whichever worker took it, counts each request once.
        assert scrapes == [len(records)] * len(scrapes)

        # A worker killed outright is replaced, and the new one drops the dead one's live gauges.
        victim = int(next(iter(served_by)))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while any(shared.glob(f"gauge_live*_{victim}.db")) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not any(shared.glob(f"gauge_live*_{victim}.db")), sorted(p.name for p in shared.iterdir())
        with httpx.Client(base_url=base, timeout=10) as one:
            assert _requests_counted(one.get("/metrics").text) == len(records)  # counters are kept
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
