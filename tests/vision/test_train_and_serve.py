"""A short training end to end (manifest, both phases, report, registry), the flavor, and the REST API."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'headrace[vision]')")

from vision_helpers import photo_bytes, train_tiny  # noqa: E402

from headrace.errors import ConfigError, DataError, RegistryError  # noqa: E402
from headrace.flavors import load_flavor  # noqa: E402
from headrace.vision.fit import default_threads  # noqa: E402
from headrace.vision.model import ImageClassifier  # noqa: E402

pytestmark = pytest.mark.vision
torch.set_num_threads(default_threads())  # threads fighting over busy cores cost more than they give


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Any:
    done = train_tiny(tmp_path_factory.mktemp("vision-project"))
    yield done
    done["meta"].dispose()


def test_training_lowers_the_loss_and_learns(trained: dict[str, Any]):
    result = trained["result"]
    fit = result.fit
    assert fit.head_losses[-1] < 0.8 * fit.head_losses[0]  # phase one's head learns
    assert len(fit.history) >= 1 and all(h["train_loss"] < 1.0 for h in fit.history)
    assert fit.frozen_selection_accuracy >= 0.5 and result.metrics["accuracy"] >= 0.75
    assert set(result.metrics) >= {
        "accuracy",
        "selection_accuracy",
        "frozen_selection_accuracy",
        "finetuned_selection_accuracy",
        "f1_macro",
    }
    per_class = result.evaluation["per_class"]
    assert set(per_class) == {"blue", "red"} and all("precision" in m for m in per_class.values())
    assert sum(map(sum, result.evaluation["confusion_matrix"])) == 8


def test_bad_files_are_quarantined_with_their_reason(trained: dict[str, Any]):
    quarantine = trained["store"].read("tiny__quarantine")
    reasons = dict(quarantine.select("path", "reason").iter_rows())
    assert set(reasons) == {"train/red/broken.jpg", "train/blue/notes.txt"}
    assert all(r.startswith("undecodable") for r in reasons.values())
    manifest = trained["store"].read("tiny")
    assert manifest.height == 24 and "train/red/broken.jpg" not in manifest["path"].to_list()
    assert any("quarantined train/red/broken.jpg" in line for line in trained["lines"])


def test_registered_with_lineage_and_a_report(trained: dict[str, Any]):
    mv = trained["result"].version
    assert mv is not None and mv.flavor == "image" and mv.task == "image_classification"
    assert (mv.dataset, mv.data_version) == ("tiny", 0)
    assert mv.metrics["accuracy"] == trained["result"].metrics["accuracy"]
    assert mv.params["backbone"] == "efficientnet_lite0" and "torch" in mv.packages
    assert trained["registry"].aliases("tiny").get("champion") == mv.version
    html = trained["artifacts"].get_bytes(trained["result"].report_sha256).decode()
    for part in ("Confusion matrix", "Per class", "Misclassified validation images", "Quarantined files"):
        assert part in html
    splits = mv.details["splits"]
    assert splits["chosen_on"].startswith("selection split, 2 of the 16 training images")
    assert splits["scored_on"].startswith("validation folder, 8 images")
    assert splits["chosen_on"] in html and splits["scored_on"] in html
    assert (trained["out"] / "tiny-report.html").read_text() == html


def test_flavor_round_trip_predicts_the_same(trained: dict[str, Any]):
    model = trained["result"].model
    images = [photo_bytes("red", 501), photo_bytes("blue", 502), photo_bytes("red", 503, fmt="PNG")]
    before = model.predict_images(images)
    again = load_flavor("image", model.to_bytes())
    assert isinstance(again, ImageClassifier) and again.classes == ["blue", "red"]
    after = again.predict_images(images)
    assert after.predictions == before.predictions == ["red", "blue", "red"]
    for p, q in zip(before.probabilities or [], after.probabilities or [], strict=True):
        assert set(p) == {"blue", "red"} and abs(sum(p.values()) - 1) < 1e-4
        assert all(abs(p[c] - q[c]) < 1e-5 for c in p)
    _, loaded = trained["registry"].load("tiny", "champion")
    assert loaded.predict_images(images).predictions == before.predictions


def test_the_served_path_matches_the_validation_scores(trained: dict[str, Any]):
    """predict_images (what serving runs) gives the probabilities training reported for val images."""
    result = trained["result"]
    paths = sorted((trained["folder"] / "val").glob("*/*.jpg"))
    proba = result.model.predict_images([p.read_bytes() for p in paths]).probabilities or []
    reported = result.val_proba  # val rows are sorted by path, as here
    for row, expected in zip(proba, reported, strict=True):
        assert abs(row["blue"] - float(expected[0])) < 2e-3


def test_bad_image_bytes_are_a_one_line_data_error(trained: dict[str, Any]):
    model = trained["result"].model
    with pytest.raises(DataError, match=r"image 1 cannot be decoded") as info:
        model.predict_images([photo_bytes("red", 1), b"\x89PNG\r\n\x1a\n-broken"])
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="is a str, not bytes"):
        model.predict_images(["aGVsbG8="])  # type: ignore[list-item]
    with pytest.raises(RegistryError, match="cannot be read"):
        ImageClassifier.from_bytes(b"not a model")


def test_spec_without_an_image_section_is_refused(tmp_path: Path):
    from headrace.config.models import ModelSpec
    from headrace.store import Store
    from headrace.vision.train import train_image_model

    spec = ModelSpec.model_validate({"task": "image_classification", "dataset": "x"})
    with pytest.raises(ConfigError, match="needs an 'image:' section"):
        train_image_model(spec, store=Store(tmp_path), name="x")


def test_rest_api_predicts_from_upload_base64_and_open_inference_protocol(trained: dict[str, Any]):
    import httpx

    from headrace.config.serving import ServingSpec
    from headrace.serve import create_app
    from headrace.serve.runner import serve_in_thread

    app = create_app(trained["registry"], ServingSpec(models=["tiny"]))
    red, blue = photo_bytes("red", 601), photo_bytes("blue", 602)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        upload = client.post(
            "/models/tiny/predict",
            files=[("files", ("a.jpg", red, "image/jpeg")), ("files", ("b.jpg", blue, "image/jpeg"))],
        )
        assert upload.status_code == 200, upload.text
        doc = upload.json()
        assert doc["predictions"] == ["red", "blue"] and doc["model"] == "tiny"
        assert set(doc["probabilities"][0]) == {"blue", "red"}

        as_json = client.post("/models/tiny/predict", json={"images": [base64.b64encode(blue).decode()]})
        assert as_json.status_code == 200 and as_json.json()["predictions"] == ["blue"]

        infer = client.post(
            "/v2/models/tiny/infer",
            json={
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": [base64.b64encode(red).decode()],
                    }
                ]
            },
        )
        assert infer.status_code == 200, infer.text
        assert infer.json()["outputs"][0]["data"] == ["red"]

        bad = client.post(
            "/models/tiny/predict", json={"images": [base64.b64encode(b"not an image").decode()]}
        )
        assert bad.status_code == 422 and "cannot be decoded" in bad.text


def test_headrace_train_runs_an_image_model_from_the_project_file(tmp_path: Path, capsys: Any):
    import json

    from vision_helpers import make_folder

    from headrace.cli import main

    make_folder(tmp_path / "data" / "images", {"train": 4, "val": 2})
    (tmp_path / "headrace.yaml").write_text(
        "project: pics\n"
        "models:\n"
        "  pics:\n"
        "    task: image_classification\n"
        "    dataset: pics\n"
        "    image: {path: data/images, image_size: 64, eval_size: 64, head_epochs: 10,\n"
        "            finetune_epochs: 1, unfreeze_blocks: 1, batch_size: 8, augment: {views: 1}}\n"
    )
    with pytest.raises(SystemExit) as done:
        main(["--project", str(tmp_path), "train", "pics", "--json"])
    assert done.value.code in (0, None)
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "pics" and doc["version"] == 1 and doc["data_version"] == 0
    assert 0.0 <= doc["metrics"]["accuracy"] <= 1.0
    assert (tmp_path / ".headrace" / "reports" / "pics-report.html").is_file()
    # `models show` of an image model: its input and splits, not a crash on its signature
    with pytest.raises(SystemExit) as shown:
        main(["--project", str(tmp_path), "models", "show", "pics@1"])
    assert shown.value.code in (0, None)
    out = capsys.readouterr().out
    assert "input" in out and "splits:" in out
