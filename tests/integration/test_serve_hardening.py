"""The serving app's edges over a real uvicorn server: bounded work per request (413/422/431 before
any per-record work, large bodies checked off the event loop so health checks keep answering),
authenticated JSON-only writes (401/403/415), the dashboard's CSRF token, security headers on HTML,
and a bounded schemathesis run (stateful phase on, every check) against the app's OpenAPI document."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from headrace.artifacts import ArtifactStore
from headrace.config.serving import LimitsSpec, PredictionLogSpec, ServingSpec
from headrace.demo.data import interactions as demo_interactions
from headrace.metadata import Metadata
from headrace.recommend import train_recommender
from headrace.registry import Registry
from headrace.serve import create_app
from headrace.serve.examples import churn_records, register_churn
from headrace.serve.runner import serve_in_thread
from headrace.store import BatchMeta, Store

pytestmark = pytest.mark.integration

ADMIN = "hardening-admin-token"
WRITE = "hardening-write-token"
WRITER = {"Authorization": f"Bearer {WRITE}"}
ADMINS = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    meta = Metadata(f"sqlite:///{root}/meta.db")
    registry = Registry(meta, ArtifactStore(root / "artifacts"), actor="test")
    store = Store(root / "lake")
    register_churn(registry, n=600, seed=1)
    frame = demo_interactions(users=60, items=40)
    version = store.append("interactions", frame, BatchMeta(source="test"))
    train_recommender(None, frame, registry=registry, name="recs", data_version=version, holdout=2, k=5)
    yield registry, store
    meta.dispose()


def _spec(**kw) -> ServingSpec:
    base = {
        "models": ["churn", "recs"],
        "admin_token": ADMIN,
        "write_token": WRITE,
        "interactions_dataset": "interactions",
        "reload_seconds": 0.5,
        "prediction_log": PredictionLogSpec(flush_seconds=0.2),
        "gc_freeze": False,
    }
    return ServingSpec(**{**base, **kw})


def _empty_records(n: int) -> bytes:
    return b'{"records":[' + b",".join([b"{}"] * n) + b"]}"


def test_health_keeps_answering_while_bad_bodies_are_refused(project):
    """10,000 empty records (40 KB) and a 1 MB body of empty records, to every records route, while
    /health/live and /metrics are polled: each bad request is a 4xx, and health answers arrive
    while bad requests are in flight (before, one such request held every route for 66 s)."""
    registry, store = project
    small = _empty_records(10_000)
    big = _empty_records((1_048_576 - 20) // 3)
    assert len(small) < 41_000 and 1_000_000 < len(big) <= 1_048_576
    json_type = {"Content-Type": "application/json"}
    bad_requests: list[tuple[str, int, float, float]] = []  # route, status, sent, answered
    health: list[tuple[float, float, int]] = []  # sent, answered, status
    done = threading.Event()

    def poll(url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            i = 0
            while not done.is_set():
                sent = time.perf_counter()
                status = client.get("/metrics" if i % 5 == 4 else "/health/live").status_code
                health.append((sent, time.perf_counter(), status))
                i += 1

    with serve_in_thread(create_app(registry, _spec(), store=store)) as url:
        poller = threading.Thread(target=poll, args=(url,))
        poller.start()
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                for _ in range(3):
                    for route in (
                        "/models/churn/predict",
                        "/models/churn/predict/batch",
                        "/v2/models/churn/infer",
                    ):
                        for body in (small, big):
                            sent = time.perf_counter()
                            r = client.post(route, content=body, headers=json_type)
                            bad_requests.append((route, r.status_code, sent, time.perf_counter()))
                            assert 400 <= r.status_code < 500, (route, len(body), r.text[:200])
                # the 10,000 records within the batch limit: one 422 with the first 20 problems listed
                r = client.post("/models/churn/predict/batch", content=small, headers=json_type)
                doc = r.json()
                assert r.status_code == 422 and len(doc["detail"]) == 20
                assert doc["problems"] == 10_000 * len(churn_records(1)[0])  # every field of every record
                assert (
                    client.post("/models/churn/predict", content=small, headers=json_type).status_code == 413
                )
        finally:
            done.set()
            poller.join()
    assert health and {s for _, _, s in health} == {200}
    inside = [
        h for h in health if any(sent < h[0] and h[1] < answered for _, _, sent, answered in bad_requests)
    ]
    latencies = sorted((answered - sent) * 1000 for sent, answered, _ in health)
    bad_ms = {
        (route, status): round(
            max((a - s) * 1000 for r_, st, s, a in bad_requests if (r_, st) == (route, status)), 1
        )
        for route, status, _, _ in bad_requests
    }
    print(
        f"\n{len(health)} health/metrics answers, {len(inside)} sent and answered during a bad request; "
        f"latency p50 {latencies[len(latencies) // 2]:.1f} ms, max {latencies[-1]:.1f} ms; "
        f"slowest bad request per route and status (ms): {bad_ms}"
    )
    assert inside, "no health answer came while a bad request was in flight"


def test_limits_are_answered_before_any_record_is_read(project):
    registry, _ = project
    limits = LimitsSpec(
        max_body_bytes=200_000, max_header_bytes=4096, max_records=8, max_batch_records=100, max_depth=6
    )
    record = churn_records(1, seed=3)[0]
    with (
        serve_in_thread(create_app(registry, _spec(limits=limits))) as url,
        httpx.Client(base_url=url) as client,
    ):
        assert client.post("/models/churn/predict", json={"records": [record] * 8}).status_code == 200
        many = client.post("/models/churn/predict", json={"records": [record] * 9})
        assert many.status_code == 413 and "at most 8" in many.json()["detail"]
        assert client.post("/models/churn/predict/batch", json={"records": [{}] * 101}).status_code == 413
        body = client.post(
            "/models/churn/predict/batch", json={"records": [{**record, "Contract": "x" * 3000}] * 90}
        )
        assert body.status_code == 413 and "larger than 200000 bytes" in body.json()["detail"]
        header = client.get("/health/live", headers={"X-Padding": "x" * 5000})
        assert header.status_code == 431
        deep: object = 1
        for _ in range(200):
            deep = [deep]
        nested = client.post("/models/churn/predict", json={"records": [{**record, "tenure": deep}]})
        assert nested.status_code == 422 and "deeper than 6" in nested.json()["detail"][0]["msg"]
        # deeper than orjson reads (1,024): Python's parser, then the same 422, not a 500
        text = b'{"records": [' + b"[" * 3000 + b"]" * 3000 + b"]}"
        very = client.post(
            "/models/churn/predict", content=text, headers={"Content-Type": "application/json"}
        )
        assert very.status_code == 422
        long = client.post("/models/churn/predict", json={"records": [{**record, "Contract": "x" * 70_000}]})
        assert long.status_code == 422 and "longer than 65536 bytes" in long.json()["detail"][0]["msg"]
        errors = client.post("/models/churn/predict/batch", json={"records": [{"a": 1}] * 100})
        doc = errors.json()
        assert errors.status_code == 422 and len(doc["detail"]) == 20
        assert doc["problems"] == 100 * (len(record) + 1)  # each field missing, and 'a' unknown
        feedback = client.post(
            "/feedback", json={"feedback": [{"prediction_id": "x", "actual": 1}] * 1001}, headers=WRITER
        )
        assert feedback.status_code == 413


def test_writes_need_the_write_token_and_json(project):
    registry, store = project
    with (
        serve_in_thread(create_app(registry, _spec(), store=store)) as url,
        httpx.Client(base_url=url) as client,
    ):
        answer = client.post("/models/churn/predict", json={"records": churn_records(1, seed=4)}).json()
        item = {"prediction_id": answer["ids"][0], "actual": "Yes"}
        interaction = {"user_id": 7, "item_id": 3}
        for path, body in (("/feedback", item), ("/interactions", interaction)):
            assert client.post(path, json=body).status_code == 401
            assert client.post(path, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert client.post(path, json=body, headers=ADMINS).status_code == 401  # not the admin token
            plain = {**WRITER, "Content-Type": "text/plain"}
            assert client.post(path, content=orjson.dumps(body), headers=plain).status_code == 415
            form = {**WRITER, "Content-Type": "application/x-www-form-urlencoded"}
            assert client.post(path, content=b"user_id=1", headers=form).status_code == 415
            bare = client.post(path, content=orjson.dumps(body), headers=WRITER)  # no content type
            assert bare.status_code == 415
            ok = client.post(path, json=body, headers=WRITER)
            assert ok.status_code == 202, ok.text
        # the admin routes read JSON too
        promote = client.post(
            "/admin/models/churn/promote",
            content=b"version=1",
            headers={**ADMINS, "Content-Type": "text/plain"},
        )
        assert promote.status_code == 415
    feedback = store.read("predictions__feedback")
    assert feedback["prediction_id"].to_list() == [item["prediction_id"]]  # only the authenticated one
    # no write token configured: writes are refused, naming the variable to set
    spec = _spec(write_token=None, write_token_env="HEADRACE_TEST_UNSET_WRITE_TOKEN")
    with serve_in_thread(create_app(registry, spec)) as url:
        r = httpx.post(f"{url}/feedback", json=item, headers=WRITER)
        assert r.status_code == 403 and "HEADRACE_TEST_UNSET_WRITE_TOKEN" in r.json()["detail"]
    with pytest.raises(ValueError, match="write_token must differ"):
        ServingSpec(admin_token="same-token", write_token="same-token")


def test_the_dashboard_sends_a_csrf_token_and_security_headers(project):
    registry, _ = project
    with (
        serve_in_thread(create_app(registry, _spec())) as url,
        httpx.Client(base_url=url) as browser,
    ):
        page = browser.get("/ui/models/churn")
        assert page.status_code == 200
        cookie = browser.cookies.get("headrace_csrf")
        assert cookie and re.search(r"headrace_csrf=[^;]+;.*HttpOnly", page.headers["set-cookie"], re.I)
        assert "samesite=strict" in page.headers["set-cookie"].lower()
        forms = re.findall(r'<input type="hidden" name="csrf" value="([^"]+)">', page.text)
        assert forms and set(forms) == {cookie}  # every form carries the cookie's value
        again = browser.get("/ui/models/churn")
        assert "set-cookie" not in again.headers  # the cookie stays for the session
        for path in ("/ui/", "/ui/models/churn", "/ui/nowhere", "/docs", "/redoc"):
            r = browser.get(path)
            csp = r.headers["content-security-policy"]
            script = re.search(r"script-src ([^;]*)", csp)
            assert script and "'unsafe-inline'" not in script.group(1), (path, csp)
            assert "frame-ancestors 'none'" in csp
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer" and r.headers["x-frame-options"] == "DENY"
        assert "<script>" not in page.text  # no inline script in the dashboard
        assert browser.get("/health/live").headers["x-content-type-options"] == "nosniff"

        # a browser's admin request (it sends Origin and the cookie): refused without the CSRF header,
        # even with the right bearer token; accepted with the page's token
        browser_like = {**ADMINS, "Origin": url, "Content-Type": "application/json"}
        reload_path = "/admin/models/churn/reload"
        refused = browser.post(reload_path, headers=browser_like)
        assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
        forged = browser.post(reload_path, headers={**browser_like, "X-CSRF-Token": "guessed" * 6})
        assert forged.status_code == 403
        accepted = browser.post(reload_path, headers={**browser_like, "X-CSRF-Token": cookie})
        assert accepted.status_code == 200, accepted.text
        # another site's page: no cookie (SameSite=Strict), so no token to match
        elsewhere = httpx.post(
            f"{url}/feedback",
            json={"prediction_id": "x", "actual": 1},
            headers={**WRITER, "Origin": "http://evil.example", "X-CSRF-Token": cookie},
        )
        assert elsewhere.status_code == 403
        # a script (no Origin, no cookies) needs only the token
        assert httpx.post(f"{url}{reload_path}", headers=ADMINS).status_code == 200


SCHEMATHESIS_CONFIG = """
max-time = {max_time}
seed = 19
workers = 1
request-timeout = 20
suppress-health-check = ["all"]

[cache]
enabled = false

[generation]
max-examples = {examples}
database = "none"

[phases]
examples.enabled = true
coverage.enabled = true
fuzzing.enabled = true
stateful.enabled = true

[checks]
enabled = true
negative_data_rejection.expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 431]

[parameters]
"path.name" = "churn"

[headers]
Authorization = "Bearer {write}"

[[operations]]
include-path-regex = "^/admin/"
headers = {{ Authorization = "Bearer {admin}" }}

# A record's fields are the served model's signature, which the path names: the document can only
# say "an object of scalars", so a generated record is refused (422, naming each field) by design.
[[operations]]
include-path-regex = "^/(models/[^/]+/predict|v2/models/.+/infer)"
checks.positive_data_acceptance.enabled = false
"""


def test_schemathesis_finds_nothing_in_the_openapi_document(project, tmp_path: Path):
    """Schemathesis (every check, the stateful phase on) against the real server: no 500, every
    status and content type documented, answers match their schemas, auth enforced. Bounded by
    examples and time so it runs in about a minute."""
    registry, store = project
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        SCHEMATHESIS_CONFIG.format(max_time=45, examples=12, write=WRITE, admin=ADMIN), encoding="utf-8"
    )
    st = Path(sys.executable).with_name("st")
    with serve_in_thread(create_app(registry, _spec(), store=store)) as url:
        run = subprocess.run(
            [str(st), "--config-file", str(config), "run", f"{url}/openapi.json", "--no-color"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
            cwd=tmp_path,
            check=False,
        )
    summary = run.stdout[run.stdout.find("SUMMARY") :]
    print(summary)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert "Stateful" in summary and "Tested: " in summary
