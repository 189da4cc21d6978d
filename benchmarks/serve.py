"""Serving throughput and latency: headrace's one-row churn prediction and recommendations beside a
bare FastAPI endpoint that returns fixed JSON, measured in the same run with the same load generator.

    .venv/bin/python benchmarks/serve.py [--seconds 10] [--connections 32] [--pairs 3]

Each server runs in its own process: uvicorn, one worker, uvloop and httptools; the two are up
together and measured in turn. The load generator is wrk (``apt-get install -y wrk``), two
threads, 32 connections:

1. bare FastAPI ``POST /`` returning fixed JSON, and headrace ``POST /models/churn/predict`` with one
   record (the fast lane, validation, metrics, canary routing and the prediction log on): max
   throughput, ``--pairs`` alternating runs, the median of the ratios;
2. headrace's prediction paced to half of its median max throughput (wrk's per-request ``delay``
   paces each connection; the achieved rate is printed beside the target): p50/p99, ``--pairs`` runs;
3. headrace ``GET /users/{id}/recommendations?k=10`` for random MovieLens users (EASE), one request
   in ten a ``POST /interactions`` (live updates): max throughput, then p50/p99 at half of it
   (``--pairs`` runs); once with the live state in process, once in Redis (``--redis``, a server of
   its own).

Goals (issue 22; floors of issue 8 in brackets): (1) >= 1.0x bare FastAPI [0.5x]; (2) p99 <= 3 ms
[10 ms]; (3) p99 <= 2 ms in process, <= 3 ms with Redis [10 ms]. Latency is taken at half of the
throughput: at saturation every latency is queueing (with 32 connections and N req/s the mean is
32/N s whatever the server does).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = (
    Path(os.environ.get("HEADRACE_DATA_DIR", ROOT.parent / "shared" / "data")) / "movielens-100k" / "u.data"
)

OUR_APP = """
import os
from headrace.registry import Registry
from headrace.serve import create_app
from headrace.workspace import Workspace
def make():
    ws = Workspace.open(os.environ["HEADRACE_PROJECT"])
    return create_app(Registry(ws.meta, ws.artifacts, actor="bench"), ws.project.serving, store=ws.store)
"""

BARE_APP = """
from fastapi import FastAPI
app = FastAPI()
@app.post("/")
async def root():
    return {"model": "bare", "version": 1, "predictions": ["No"], "probabilities": [{"No": 0.9, "Yes": 0.1}]}
"""


WRITE_TOKEN = "bench-write-token"  # interactions are writes


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], env: dict[str, str], port: int, cwd: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code in (200, 404, 405):
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server on port {port} did not start")


def _uvicorn(target: str, port: int, factory: bool = False) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    return cmd + (["--factory"] if factory else [])


def _wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(m.group(1)), m.group(2)  # type: ignore[union-attr]
        lat[pct] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": lat["50"],
        "p99_ms": lat["99"],
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def _post_script(path: Path, body: str, delay_ms: float | None = None) -> Path:
    text = f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
    text += 'wrk.headers["Content-Type"] = "application/json"\n'
    if delay_ms is not None:
        text += f"function delay()\n  return {delay_ms:.3f}\nend\n"
    path.write_text(text)
    return path


def _recommend_script(path: Path, users: int, items: int, delay_ms: float | None = None) -> Path:
    pace = f"function delay()\n  return {delay_ms:.3f}\nend\n" if delay_ms is not None else ""
    path.write_text(
        pace
        + f"""
math.randomseed(7)
local n = 0
request = function()
  n = n + 1
  local user = math.random(1, {users})
  if n % 10 == 0 then
    local body = '{{"user_id": "' .. user .. '", "item_id": ' .. math.random(1, {items}) .. '}}'
    return wrk.format("POST", "/interactions",
      {{["Content-Type"] = "application/json", ["Authorization"] = "Bearer {WRITE_TOKEN}"}}, body)
  end
  return wrk.format("GET", "/users/" .. user .. "/recommendations?k=10")
end
"""
    )
    return path


def _recommendations(
    results: dict[str, dict[str, float]],
    state: str,
    base: str,
    work: Path,
    users: int,
    items: int,
    args: argparse.Namespace,
) -> None:
    """Top-10 recommendations with one request in ten an interaction: max, then paced to half."""
    script = _recommend_script(work / "recommend.lua", users, items)
    _wrk(base, script, 2, args.connections)  # warm-up
    full = results[f"recommendations top-10 +10% interactions, {state}, max"] = _wrk(
        base, script, args.seconds, args.connections
    )
    half = full["rps"] / 2
    paced = _recommend_script(work / "recommend-paced.lua", users, items, 1000 * args.connections / half)
    for i in range(args.pairs):
        results[f"recommendations, {state}, paced to {half:.0f}/s ({i + 1})"] = _wrk(
            base, paced, args.seconds, args.connections
        )


def _project(folder: Path) -> tuple[str, int, int]:
    """A project with the churn champion and a recommender; returns (project file, users, items)."""
    sys.path.insert(0, str(ROOT / "src"))
    from headrace.demo.data import interactions as demo_interactions
    from headrace.recommend import read_movielens, train_recommender
    from headrace.registry import Registry
    from headrace.scaffold import init_project
    from headrace.serve.examples import register_churn
    from headrace.store import BatchMeta
    from headrace.workspace import Workspace

    path = init_project(folder, name="bench", rows=100, force=True)
    text = path.read_text().replace(
        "serving:\n  models: [churn]",
        "serving:\n  models: [churn, recommendations]\n"
        f"  interactions_dataset: interactions\n  reload_seconds: 5\n  write_token: {WRITE_TOKEN}",
    )
    path.write_text(text)
    ws = Workspace.open(path)
    registry = Registry(ws.meta, ws.artifacts, actor="bench")
    register_churn(registry, "churn", n=3000, seed=1)
    frame = read_movielens(str(MOVIELENS)) if MOVIELENS.exists() else demo_interactions(943, 1682)
    version = ws.store.append("interactions", frame, BatchMeta(source="bench"))
    spec = ws.project.models["churn"].model_copy(update={"candidates": []})
    from headrace.config.models import Candidate, PromoteRule

    spec = spec.model_copy(
        update={
            "task": "recommendation",
            "dataset": "interactions",
            "promote_if": PromoteRule(),
            "candidates": [Candidate(estimator="ease", params={"l2": 300.0})],
        }
    )
    train_recommender(spec, frame, registry=registry, name="recommendations", data_version=version)
    users, items = frame["user_id"].n_unique(), frame["item_id"].n_unique()
    ws.close()
    return str(path), users, items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=3, help="alternating bare/headrace runs (median)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--redis", default=os.environ.get("HEADRACE_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="headrace-bench-serve-"))
    print("preparing: churn model and recommender ...", flush=True)
    project, users, items = _project(work / "project")
    (work / "bare_app.py").write_text(BARE_APP)
    (work / "our_app.py").write_text(OUR_APP)
    record = json.dumps(
        {
            "records": [
                {
                    "gender": "Female",
                    "SeniorCitizen": 0,
                    "Partner": "Yes",
                    "Dependents": "No",
                    "tenure": 12,
                    "PhoneService": "Yes",
                    "InternetService": "Fiber optic",
                    "OnlineSecurity": "No",
                    "TechSupport": "No",
                    "Contract": "Month-to-month",
                    "PaperlessBilling": "Yes",
                    "PaymentMethod": "Electronic check",
                    "MonthlyCharges": 85.5,
                    "TotalCharges": 1020.0,
                }
            ]
        }
    )
    results: dict[str, dict[str, float]] = {}
    env = {"HEADRACE_PROJECT": project, "PYTHONPATH": str(ROOT / "src")}
    bare_port, our_port = _free_port(), _free_port()
    bare = _start(_uvicorn("bare_app:app", bare_port), {}, bare_port, work)
    ours = _start(_uvicorn("our_app:make", our_port, factory=True), env, our_port, work)
    try:
        bare_url = f"http://127.0.0.1:{bare_port}/"
        url = f"http://127.0.0.1:{our_port}/models/churn/predict"
        bare_script = _post_script(work / "post.lua", "{}")
        script = _post_script(work / "predict.lua", record)
        _wrk(bare_url, bare_script, 2, args.connections)  # warm-up
        _wrk(url, script, 2, args.connections)
        ratios = []
        for i in range(args.pairs):  # alternating: the machine's load drifts alike for both
            b = results[f"bare FastAPI, fixed JSON, max (pair {i + 1})"] = _wrk(
                bare_url, bare_script, args.seconds, args.connections
            )
            o = results[f"headrace one-row churn predict, max (pair {i + 1})"] = _wrk(
                url, script, args.seconds, args.connections
            )
            ratios.append(o["rps"] / b["rps"])
        ours_max = statistics.median(
            r["rps"] for k, r in results.items() if k.startswith("headrace one-row churn predict, max")
        )
        half = ours_max / 2
        paced = _post_script(work / "paced.lua", record, delay_ms=1000 * args.connections / half)
        for i in range(args.pairs):
            results[f"headrace one-row churn predict, paced to {half:.0f}/s ({i + 1})"] = _wrk(
                url, paced, args.seconds, args.connections
            )
        base = f"http://127.0.0.1:{our_port}"
        _recommendations(results, "in-process live state", base, work, users, items, args)
        fast = httpx.get(f"{base}/models").json()
    finally:
        for proc in (bare, ours):
            proc.terminate()
            proc.wait()

    # The same recommender with its live state in Redis (what replicas share).
    redis_project = Path(project).with_name("headrace-redis.yaml")
    prefix = f"headrace:bench:{os.getpid()}"
    redis_project.write_text(
        Path(project)
        .read_text()
        .replace("serving:\n", f"serving:\n  redis_url: {args.redis}\n  redis_prefix: {prefix}\n", 1)
    )
    port = _free_port()
    ours = _start(
        _uvicorn("our_app:make", port, factory=True),
        {**env, "HEADRACE_PROJECT": str(redis_project)},
        port,
        work,
    )
    try:
        _recommendations(results, "Redis live state", f"http://127.0.0.1:{port}", work, users, items, args)
    finally:
        ours.terminate()
        ours.wait()
        import redis

        client = redis.Redis.from_url(args.redis)
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()

    print(f"\nwrk, {args.connections} connections, {args.seconds} s each, one uvicorn worker per server")
    print(f"{'endpoint':72} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, r in results.items():
        print(f"{name:72} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['non_2xx']:8.0f}")

    def p99(part: str) -> tuple[float, float]:
        runs = [r for k, r in results.items() if part in k and "paced" in k]
        return statistics.median(r["p99_ms"] for r in runs), statistics.median(r["rps"] for r in runs)

    print(
        f"\nthroughput, headrace predict / bare FastAPI (goal >= 1.0, floor 0.5): median "
        f"{statistics.median(ratios):.2f} of {len(ratios)} alternating pairs "
        f"({', '.join(f'{r:.2f}' for r in ratios)})"
    )
    latency, rate = p99("churn predict")
    print(
        f"predict p99 at half throughput (goal <= 3 ms): median {latency:.2f} ms (achieved {rate:.0f} req/s)"
    )
    for state, goal in (("in-process live state", 2), ("Redis live state", 3)):
        latency, rate = p99(state)
        print(
            f"recommendations, {state}: p99 at half throughput (goal <= {goal} ms): median "
            f"{latency:.2f} ms (achieved {rate:.0f} req/s)"
        )
    print(
        "served:",
        ", ".join(f"{m['name']} v{m['version']} fast_path={m['fast_path']}" for m in fast["models"]),
    )


if __name__ == "__main__":
    main()
