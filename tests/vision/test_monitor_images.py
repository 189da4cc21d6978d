"""An image model watched by its prediction mix and confidence: a tiny model trained and served by
the project's own server (a real HTTP server on loopback), its prediction log read by the monitor."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'headrace[vision]')")

from vision_helpers import make_folder, photo_bytes, tiny_spec  # noqa: E402

from headrace.monitor.images import confidences, reference_mix  # noqa: E402
from headrace.monitor.loop import check  # noqa: E402
from headrace.registry import Registry  # noqa: E402
from headrace.workspace import Workspace  # noqa: E402

pytestmark = pytest.mark.vision


def _workspace(root: Path) -> Workspace:
    folder = make_folder(root / "images", {"train": 8, "val": 4})
    spec = tiny_spec(folder).model_dump(mode="json", exclude_defaults=True)
    doc = {
        "project": "image-monitor",
        "models": {"tiny": spec},
        "serving": {"models": ["tiny"], "prediction_log": {"flush_seconds": 0.2}},
        "monitoring": {"min_rows": 20, "window": "1h", "performance_windows": ["1h"]},
    }
    (root / "headrace.yaml").write_text(yaml.safe_dump(doc))
    return Workspace.open(root)


def _wait_logged(ws: Workspace, rows: int, timeout: float = 30) -> pl.DataFrame:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ws.store.exists("predictions"):
            log = ws.store.read("predictions")
            if log.height >= rows:
                return log
        time.sleep(0.1)
    raise AssertionError(f"the prediction log did not reach {rows} rows")


def test_a_shifted_prediction_mix_is_detected_and_confidence_read_from_probabilities(tmp_path: Path):
    import httpx

    from headrace.serve.project import app_from_workspace
    from headrace.serve.runner import serve_in_thread
    from headrace.vision.train import train_image_model

    ws = _workspace(tmp_path)
    trained = train_image_model(
        ws.project.model("tiny"),
        store=ws.store,
        meta=ws.meta,
        artifacts=ws.artifacts,
        name="tiny",
        promote=True,
    )
    registry = Registry(ws.meta, ws.artifacts, actor="test")
    champion = registry.get("tiny", "champion")
    mix = reference_mix(champion)
    assert mix is not None and set(mix) == {"red", "blue"} and min(mix.values()) >= 2  # both predicted

    blue = [base64.b64encode(photo_bytes("blue", 5000 + i)).decode() for i in range(30)]
    with serve_in_thread(app_from_workspace(ws)) as url, httpx.Client(base_url=url, timeout=120) as client:
        for start in range(0, len(blue), 10):  # only blue photos arrive now
            answer = client.post("/models/tiny/predict", json={"images": blue[start : start + 10]})
            assert answer.status_code == 200, answer.text
        log = _wait_logged(ws, len(blue))

    result = check(ws, "tiny", registry=registry)
    assert result.signals.metric == "confidence"
    report = result.drift
    assert report is not None and report.prediction is not None, result.drift_error
    mixed = report.prediction
    assert mixed.kind == "categorical" and mixed.test == "chi2" and mixed.live_rows == 30
    assert dict(zip(mixed.bins, mixed.live_share, strict=True))["blue"] > 0.9
    assert mixed.drifted and mixed.psi >= ws.project.monitoring.psi_alert and mixed.p_value < 0.01
    assert result.signals.prediction_drift and result.decision.triggers == ["drift"]
    assert "drift in the predictions" in result.decision.reason

    # confidence: the mean top-1 probability where the log holds the probabilities
    logged_probabilities = confidences(log)
    assert result.performance is not None
    if logged_probabilities:  # the server logs each answer's probabilities
        assert result.performance.value == pytest.approx(
            sum(logged_probabilities) / len(logged_probabilities)
        )
    else:  # today the image route logs the label only: said, not guessed
        assert result.performance.value is None
        assert any("no class probabilities" in n for n in result.champion_watch["notes"])
    model = trained.model
    prediction = model.predict_images([base64.b64decode(b) for b in blue[:5]])
    rows = pl.DataFrame(
        {
            "output": [
                _doc(label, p)
                for label, p in zip(prediction.predictions, prediction.probabilities, strict=True)
            ]
        }
    )
    assert confidences(rows) == pytest.approx([max(p.values()) for p in prediction.probabilities])
    ws.close()


def _doc(label: Any, probabilities: dict[str, float]) -> str:
    import json

    return json.dumps({"prediction": label, "probabilities": probabilities})
