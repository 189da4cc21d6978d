"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

One project is populated for the module: two ingestion runs of generated CSV files with defects (and
one unreadable file), two trained versions (champion and challenger), a real uvicorn server with the
prediction log, predictions with feedback, and two monitor checks (drift and live performance). Each
page is opened in the browser and its numbers are checked against what ``headrace status --json``,
the registry, the metadata and the serving API say; promote and rollback are clicked without and
with the admin token. A screenshot of each page is kept in ``test-artifacts/ui/``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from pydantic import SecretStr

from headrace.config.models import Candidate
from headrace.datagen import churn, churn_with_defects
from headrace.ingest.report import latest_reports
from headrace.ingest.runner import ingest, open_source
from headrace.monitor.loop import check
from headrace.registry import Registry
from headrace.scaffold import init_project
from headrace.serve.project import app_from_workspace
from headrace.serve.runner import free_port, serve_in_thread
from headrace.status import project_status
from headrace.train.run import train_model
from headrace.ui.screenshots import CHROMIUM_ARGS
from headrace.workspace import Workspace

pytestmark = pytest.mark.e2e

REQUIRE = os.environ.get("HEADRACE_REQUIRE_SERVICES") == "1"
CHROMIUM = Path(os.environ.get("HEADRACE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
TOKEN = "ui-test-admin-token"
WRITE = "ui-test-write-token"
MODEL = "churn"


def _unavailable(message: str) -> None:
    if REQUIRE:
        pytest.fail(f"{message} and HEADRACE_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


def _install_chromium() -> None:
    """Debian's chromium package, when we may install it (root, apt-get)."""
    if CHROMIUM.exists() or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    done = subprocess.run(command, env=env, capture_output=True, timeout=900, check=False)
    if done.returncode != 0:  # no package lists yet
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300, check=False)
        subprocess.run(command, env=env, capture_output=True, timeout=900, check=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    _install_chromium()
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is absent and could not be installed (apt-get install chromium)")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    try:
        yield tab
    finally:
        context.close()


def _shot(tab: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000
    return path


class Project:
    """The populated project, its registry and the running server."""

    def __init__(self, ws: Workspace, registry: Registry, url: str, client: httpx.Client) -> None:
        self.ws = ws
        self.registry = registry
        self.url = url
        self.client = client


def _light(ws: Workspace) -> Any:
    spec = ws.project.model(MODEL)
    return spec.model_copy(
        update={
            "candidates": [Candidate(estimator="logistic_regression", params={"C": 1.0})],
            "validation": spec.validation.model_copy(update={"folds": 3, "importance": False}),
            "promote_if": spec.promote_if.model_copy(update={"beat_champion_by": -1.0}),
        }
    )


def _ingest(ws: Workspace) -> Any:
    spec = ws.project.sources["customers"]
    return ingest(open_source("customers", spec), spec, store=ws.store, meta=ws.meta, source_name="customers")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    folder = tmp_path_factory.mktemp("ui-project")
    ws = Workspace.open(init_project(folder, name="ui-test", rows=1200))
    spec = _light(ws)
    serving = ws.project.serving
    ws.project = ws.project.model_copy(
        update={
            "models": {**ws.project.models, MODEL: spec},
            "serving": serving.model_copy(
                update={
                    "admin_token": SecretStr(TOKEN),
                    "write_token": SecretStr(WRITE),  # feedback is a write
                    "reload_seconds": 0.2,
                    "prediction_log": serving.prediction_log.model_copy(update={"flush_seconds": 0.1}),
                }
            ),
            "monitoring": ws.project.monitoring.model_copy(update={"min_rows": 50}),
        }
    )
    first = _ingest(ws)
    assert first.status == "succeeded" and first.rows_quarantined > 0
    registry = Registry(ws.meta, ws.artifacts, actor="ui-test")
    train_model(MODEL, spec, store=ws.store, registry=registry, promote=True, reason="first model")
    # a third file with defects, and one that cannot be read at all: a partial run
    data = ws.root / "data" / "customers"
    extra, _ = churn_with_defects(300, seed=21, rate=0.05, id_offset=50_000)
    extra.write_csv(data / "customers-3.csv")
    (data / "customers-4.csv").write_bytes(b'customerID,tenure\n"C1,\xff\n')
    second = _ingest(ws)
    assert second.status == "partial"
    challenger = train_model(MODEL, spec, store=ws.store, registry=registry, reason="new data arrived")
    assert challenger.version is not None
    registry.set_alias(MODEL, "challenger", challenger.version.version, reason="canary for the new data")
    app = app_from_workspace(ws, models=[MODEL])
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        schema = ws.store.scan("customers").collect_schema()  # untyped CSV columns are strings
        shifted = churn(160, seed=5, shift=1.0, id_offset=900_000)
        shifted = shifted.select([pl.col(c).cast(t) for c, t in schema.items() if c in shifted.columns])
        truth = shifted["Churn"].to_list()
        for i, record in enumerate(shifted.drop("customerID", "Churn").to_dicts()):
            answer = client.post(
                f"/models/{MODEL}/predict", json={"records": [record]}, headers={"X-User-ID": f"u{i}"}
            )
            assert answer.status_code == 200, answer.text
            fed = client.post(
                "/feedback",
                json={"prediction_id": answer.json()["ids"][0], "actual": truth[i]},
                headers={"Authorization": f"Bearer {WRITE}"},
            )
            assert fed.status_code < 300, fed.text
        _wait_for_rows(ws, ws.project.serving.prediction_log.dataset, 160)
        _wait_for_rows(ws, ws.project.serving.prediction_log.feedback_dataset, 160)
        for _ in range(2):  # two drift reports: "over time"
            result = check(ws, MODEL, registry=registry)
            assert result.drift is not None, result.drift_error
        yield Project(ws, registry, url, client)
    ws.close()


def _wait_for_rows(ws: Workspace, dataset: str, rows: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if ws.store.exists(dataset) and ws.store.scan(dataset).select(pl.len()).collect().item() >= rows:
            return
        time.sleep(0.05)
    raise AssertionError(f"{dataset} did not reach {rows} rows")


def _text(tab: Any, selector: str) -> str:
    return str(tab.locator(selector).inner_text()).strip()


def _metric(mv: Any, name: str) -> str:
    return f"{mv.metrics[name]:.4f}"


# -- the pages ------------------------------------------------------------------------------------


def test_overview_matches_status_and_registry(project: Project, page: Any) -> None:
    page.goto(f"{project.url}/ui/")
    status = project_status(project.ws, limit=15)
    assert _text(page, "header .brand span") == "ui-test"
    datasets = {d["name"]: d for d in status["datasets"]}
    assert {"customers", "predictions", "predictions__feedback"} <= set(datasets)
    for name, d in datasets.items():
        row = f'#datasets tr[data-dataset="{name}"]'
        assert _text(page, f'{row} [data-k="rows"]') == f"{d['rows']:,}"
        assert _text(page, f'{row} [data-k="versions"]') == f"{d['versions']:,}"
        assert _text(page, f'{row} [data-k="quarantined_rows"]') == f"{d['quarantined_rows']:,}"
    runs = [r for r in status["ingestion_runs"] if r["dataset"] == "customers"]
    ratio = sum(r["rows_quarantined"] for r in runs) / sum(r["rows_read"] for r in runs)
    assert _text(page, '#datasets tr[data-dataset="customers"] [data-k="quarantine_ratio"]') == f"{ratio:.1%}"
    shown = page.locator("#runs tbody tr")
    assert shown.count() == len(status["ingestion_runs"]) == 2
    assert (
        [_text(page, f'#runs tr[data-run="{r["id"]}"] [data-k="status"]') for r in status["ingestion_runs"]]
        == [r["status"] for r in status["ingestion_runs"]]
        == ["partial", "succeeded"]
    )
    for r in status["ingestion_runs"]:
        assert _text(page, f'#runs tr[data-run="{r["id"]}"] [data-k="rows_read"]') == f"{r['rows_read']:,}"
    model = next(m for m in status["models"] if m["name"] == MODEL)
    champion = project.registry.get(MODEL, "champion")
    challenger = project.registry.get(MODEL, "challenger")
    row = f'#models tr[data-model="{MODEL}"]'
    assert _text(page, f'{row} [data-k="versions"]') == str(model["versions"]) == "2"
    assert (
        _text(page, f'{row} [data-k="champion"]')
        == f"v{champion.version} roc_auc {_metric(champion, 'roc_auc')}"
    )
    assert _text(page, f'{row} [data-k="challenger"]') == (
        f"v{challenger.version} roc_auc {_metric(challenger, 'roc_auc')}"
    )
    served = project.client.get("/models").json()["models"]
    assert _text(page, f'{row} [data-k="served"]') == f"v{served[0]['version']}"
    assert page.locator("#streams").count() == 0  # no stream worker ran in this project
    _shot(page, "overview")


def test_dataset_page_quality_quarantine_versions(project: Project, page: Any) -> None:
    page.goto(f"{project.url}/ui/datasets/customers")
    store = project.ws.store
    info = store.info("customers")
    quarantine = store.read("customers__quarantine")
    assert _text(page, "#stat-rows") == f"{info.rows:,}"
    assert _text(page, "#stat-versions") == f"{info.version + 1:,}"
    assert _text(page, "#stat-quarantined") == f"{quarantine.height:,}"
    reports = latest_reports(project.ws.meta, "customers", limit=100)
    assert page.locator("#quality tbody tr").count() == len(reports) == 3  # one per committed file
    assert page.locator("svg g.stack").count() == len(reports)
    clean = sorted(int(r["rows_clean"]) for r in reports)
    assert sorted(int(x) for x in page.locator('#quality [data-k="rows_clean"]').all_inner_texts()) == clean
    assert page.locator("svg .threshold").count() >= 1  # max_quarantine_ratio on the rejected-share chart
    assert _text(page, "#quarantine-rows") == f"{quarantine.height:,}"
    sample = page.locator("#quarantine tbody tr")
    assert sample.count() == min(20, quarantine.height)
    reasons = set(quarantine["reason"].to_list())
    assert all(text in reasons for text in page.locator("#quarantine td.reason").all_inner_texts())
    top = quarantine.group_by("reason").len().sort("len", descending=True).row(0)
    assert _text(page, "#reasons tbody tr:first-child td.n") == f"{top[1]:,}"
    assert page.locator("#schema tbody tr").count() == len(info.columns)
    assert "max: 120" in _text(page, "#schema") and "allowed" in _text(page, "#schema")
    assert page.locator("#versions tbody tr").count() == info.version + 1
    _shot(page, "dataset")


def test_model_page_versions_folds_curves_ledger(project: Project, page: Any) -> None:
    page.goto(f"{project.url}/ui/models/{MODEL}")
    registry = project.registry
    champion = registry.get(MODEL, "champion")
    assert _text(page, "#champion") == f"v{champion.version}"
    versions = registry.list(MODEL)
    assert page.locator("#versions tbody tr").count() == len(versions)
    for mv in versions:
        row = f'#versions tr[data-version="{mv.version}"]'
        assert _text(page, f'{row} [data-k="metric"]') == _metric(mv, "roc_auc")
        assert _text(page, f'{row} [data-k="threshold"]') == f"{mv.threshold:.4f}"
        assert _text(page, f'{row} [data-k="data"]') == f"{mv.dataset}@{mv.data_version}"
    assert page.locator("#selected").get_attribute("data-version") == str(champion.version)
    folds = champion.details["scorecard"]["folds"]
    assert page.locator("#folds tbody tr").count() == len(folds) == 3
    for fold in folds:
        cell = f'#folds tr[data-fold="{fold["fold"]}"] td[data-metric="roc_auc"]'
        assert _text(page, cell) == f"{fold['scores']['roc_auc']:.4f}"
    assert page.locator('svg[aria-label^="ROC curve"] path').count() >= 2
    assert page.locator('svg[aria-label^="Precision-recall"] .marker').count() == 1  # the threshold
    assert _text(page, "#sel-threshold").startswith(f"{champion.threshold:.4f}")
    history = registry.history(MODEL)
    assert page.locator("#ledger li").count() == len(history)
    assert page.locator('svg.timeline g.segment[data-lane="champion"]').first.get_attribute("data-label") == (
        f"v{champion.version}"
    )
    assert page.locator('svg.timeline g.segment[data-lane="challenger"]').count() == 1
    assert "canary for the new data" in _text(page, "#ledger")
    # another version's detail
    page.goto(f"{project.url}/ui/models/{MODEL}?version=2")
    assert page.locator("#selected").get_attribute("data-version") == "2"
    _shot(page, "model")


def test_monitoring_page_drift_live_accuracy_latency(project: Project, page: Any) -> None:
    page.goto(f"{project.url}/ui/monitoring/{MODEL}")
    ws = project.ws
    drift = [r for r in _reports(ws, "drift")]
    assert len(drift) == 2
    latest = drift[-1]
    assert _text(page, "#drift-status") == latest["status"]
    assert _text(page, "#drift-share") == f"{latest['report']['share_drifted']:.1%}"
    features = latest["report"]["features"]
    assert page.locator("#drift tbody tr[data-feature]").count() == len(features) + 1  # + prediction
    for f in features:
        assert _text(page, f'#drift tr[data-feature="{f["feature"]}"] [data-k="psi"]') == f"{f['psi']:.4f}"
    # thresholds drawn on the drift charts (PSI warn and alert), points for both reports
    assert page.locator('svg .threshold[data-value="0.25"]').count() == 2
    assert page.locator('svg .threshold[data-value="0.1"]').count() == 2
    top = max(features, key=lambda f: f["psi"])["feature"]
    assert page.locator(f'svg g.series[data-name="{top}"]').get_attribute("data-points") == "2"
    # live accuracy, recomputed here from the prediction log and the feedback
    plog = ws.project.serving.prediction_log
    logged = ws.store.read(plog.dataset).filter(pl.col("route") == "predict")
    feedback = ws.store.read(plog.feedback_dataset)
    joined = logged.join(feedback.select(pl.col("prediction_id").alias("id"), "actual"), on="id")
    predicted = [re.search(r'"prediction":"([^"]+)"', o).group(1) for o in joined["output"]]  # type: ignore[union-attr]
    actual = [a.strip('"') for a in joined["actual"]]
    accuracy = sum(p == a for p, a in zip(predicted, actual, strict=True)) / len(actual)
    assert _text(page, "#live-accuracy") == f"{accuracy:.3f}"
    assert page.locator('svg[aria-label^="Live accuracy"] .threshold').count() == 2  # validation, rollback
    latency = logged["latency_ms"]
    assert _text(page, "#latency") == f"{latency.quantile(0.5):.2f} / {latency.quantile(0.99):.2f} ms"
    assert _text(page, "#error-rate") == "0.00%"
    assert page.locator('svg[aria-label^="Latency"] .threshold').count() == 1
    assert page.locator('svg[aria-label^="Error rate"] .threshold').count() == 1
    # this server's own counters: the predictions sent (plus none from the dashboard itself)
    metrics = project.client.get("/metrics").text
    sent = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("headrace_requests_total{") and 'route="/models/{name}/predict"' in line
    )
    assert (
        _text(page, '#server tr[data-route="/models/{name}/predict"] [data-k="requests"]') == f"{int(sent):,}"
    )
    _shot(page, "monitoring")


def _reports(ws: Workspace, kind: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from headrace.metadata import SCHEMA

    table = SCHEMA.tables["monitor_reports"]
    with ws.meta.begin() as conn:
        rows = conn.execute(
            select(table).where((table.c.model == MODEL) & (table.c.kind == kind)).order_by(table.c.id)
        )
        return [dict(r) for r in rows.mappings()]


def test_promote_and_rollback_need_the_admin_token(project: Project, page: Any) -> None:
    registry = project.registry
    page.goto(f"{project.url}/ui/models/{MODEL}")
    assert registry.aliases(MODEL)["champion"] == 1
    page.locator('button.promote[data-version="2"]').click()
    page.wait_for_selector("#admin-result.refused")
    refusal = _text(page, "#admin-result")
    assert refusal.startswith("promote refused (401)") and "Bearer" in refusal
    assert registry.aliases(MODEL)["champion"] == 1
    page.fill("#admin-token", "not-the-token")
    page.locator('button.promote[data-version="2"]').click()
    # a locator, not wait_for_function: the page's CSP refuses the eval that a string predicate needs
    page.locator("#admin-result").filter(has_text="refused (401)").wait_for()
    assert registry.aliases(MODEL)["champion"] == 1
    _shot(page, "model-refused")

    page.fill("#admin-token", TOKEN)
    with page.expect_navigation():
        page.locator('button.promote[data-version="2"]').click()
    assert _text(page, "#champion") == "v2"
    assert _text(page, "#admin-result") == f"promote done: champion of {MODEL} is now v2"
    assert registry.aliases(MODEL)["champion"] == 2
    entry = next(e for e in reversed(registry.history(MODEL)) if e.action == "promote")
    assert (entry.action, entry.version, entry.actor) == ("promote", 2, "dashboard")
    assert entry.reason == "promoted from the dashboard"
    deadline = time.monotonic() + 10  # the server swaps to the new champion
    while project.client.get("/models").json()["models"][0]["version"] != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert project.client.get("/models").json()["models"][0]["version"] == 2

    with page.expect_navigation():  # the token stays in the tab's session
        page.locator("#rollback").click()
    assert _text(page, "#champion") == "v1"
    assert registry.aliases(MODEL)["champion"] == 1
    assert registry.history(MODEL)[-1].action == "rollback"
    assert page.locator('svg.timeline g.segment[data-lane="champion"]').count() == 3  # v1, v2, v1


def test_promote_from_the_dashboard_goes_through_the_gate(project: Project, page: Any) -> None:
    """A version below the project's promote_if floor (roc_auc 0.70) is refused with the gate's reason,
    as 'headrace models promote' refuses it; forced past the gate, the ledger says so."""
    registry = project.registry
    source = registry.get(MODEL, 2)
    weak = registry.register(
        MODEL,
        task=source.task,
        flavor=source.flavor,
        artifact=registry.artifacts.get_bytes(source.artifact_sha256),
        metrics={**source.metrics, "roc_auc": 0.51},
        dataset=source.dataset,
        data_version=source.data_version,
        signature=source.signature,
        threshold=source.threshold,
        reason="test: a weak candidate",
    )
    champion = registry.aliases(MODEL)["champion"]
    page.goto(f"{project.url}/ui/models/{MODEL}")
    page.fill("#admin-token", TOKEN)
    page.locator(f'button.promote[data-version="{weak.version}"]').click()
    page.wait_for_selector("#admin-result.refused")
    refusal = _text(page, "#admin-result")
    assert refusal.startswith(
        f"promote refused (409): {MODEL}@{weak.version} was not promoted: roc_auc 0.51 is below the floor 0.7"
    ), refusal
    assert registry.aliases(MODEL)["champion"] == champion
    entry = registry.history(MODEL)[-1]
    assert (entry.action, entry.version, entry.actor) == ("promote_refused", weak.version, "dashboard")
    _shot(page, "model-gate-refused")

    page.check("#admin-force")
    with page.expect_navigation():
        page.locator(f'button.promote[data-version="{weak.version}"]').click()
    assert _text(page, "#admin-result") == (
        f"promote done (forced past the gate): champion of {MODEL} is now v{weak.version}"
    )
    assert registry.aliases(MODEL)["champion"] == weak.version
    entry = next(e for e in reversed(registry.history(MODEL)) if e.action == "promote")
    assert (entry.version, entry.actor, entry.details["forced"]) == (weak.version, "dashboard", True)
    assert entry.reason.startswith("forced past the gate (roc_auc 0.51 is below the floor 0.7")
    registry.rollback(MODEL, reason="test: back to the champion before the forced one")
    assert registry.aliases(MODEL)["champion"] == champion


def test_pages_read_without_javascript_and_fit_a_phone(project: Project, browser: Any) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 390, "height": 844})
    try:
        tab = context.new_page()
        for path in ("/ui/", "/ui/datasets/customers", f"/ui/models/{MODEL}", f"/ui/monitoring/{MODEL}"):
            tab.goto(f"{project.url}{path}")
            assert tab.locator("main h1").count() == 1
            assert tab.locator("svg.chart").count() >= (0 if path == "/ui/" else 2)
            overflow = tab.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{path} is {overflow}px wider than a phone"
        tab.goto(f"{project.url}/ui/")
        _shot(tab, "overview-phone")
    finally:
        context.close()


def test_unknown_pages_and_the_monitoring_index(project: Project) -> None:
    missing = project.client.get("/ui/datasets/nope")
    assert missing.status_code == 404 and "dataset &#39;nope&#39; does not exist" in missing.text
    assert project.client.get(f"/ui/models/{MODEL}?version=9").status_code == 404
    assert project.client.get("/ui/nothing-here").status_code == 404
    index = project.client.get("/ui/monitoring", follow_redirects=False)
    assert index.status_code == 307 and index.headers["location"].endswith(f"/ui/monitoring/{MODEL}")
    css = project.client.get("/ui/static/ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "/ui" not in project.client.get("/openapi.json").text  # the API's schema is unchanged
    metrics = project.client.get("/metrics").text  # dashboard pages are not traffic of a model
    assert 'route="/ui"' in metrics and 'route="/models/{name}"' not in metrics


def test_headrace_ui_serves_the_dashboard_alone(project: Project) -> None:
    port = free_port()
    command = [sys.executable, "-m", "headrace", "--project", str(project.ws.root), "ui", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{url}/", follow_redirects=True, timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                time.sleep(0.2)
        assert answer is not None and answer.status_code == 200
        assert str(answer.url) == f"{url}/ui/" and "ui-test" in answer.text
        page = httpx.get(f"{url}/ui/models/{MODEL}", timeout=10)
        assert page.status_code == 200 and 'id="versions"' in page.text
        refused = httpx.post(f"{url}/admin/models/{MODEL}/rollback", timeout=10)
        assert refused.status_code in (401, 403)  # the admin API is there, and guarded
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
    assert f"at http://127.0.0.1:{port}/ui/" in out
