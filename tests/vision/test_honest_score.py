"""An honest score: the epoch is chosen on a selection split carved from the training images, and the
reported accuracy comes from validation images that took part in no choice."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from headrace.vision.folder import carve_selection, split_record

TINY = {
    "image_size": 64,
    "eval_size": 64,
    "head_epochs": 10,
    "finetune_epochs": 2,
    "unfreeze_blocks": 1,
    "patience": 5,
    "batch_size": 8,
    "augment": {"views": 1},
}


def _rows(per_class: dict[str, int]) -> list[dict[str, Any]]:
    return [
        {"path": f"train/{label}/{i}.jpg", "label": label, "sha256": f"{label}-{i}"}
        for label, n in per_class.items()
        for i in range(n)
    ]


# -- the split, without torch --------------------------------------------------------------------------
def test_selection_is_stratified_seeded_and_leaves_every_class_something_to_fit():
    rows = _rows({"a": 40, "b": 7, "c": 2, "d": 1})
    chosen = carve_selection(rows, 0.15, seed=3)
    by_class = {c: sum(p.split("/")[1] == c for p in chosen) for c in "abcd"}
    assert by_class == {"a": 6, "b": 1, "c": 1, "d": 0}  # 15%, at least one, never all, none of one
    assert carve_selection(list(reversed(rows)), 0.15, seed=3) == chosen  # order does not matter
    assert carve_selection(rows, 0.15, seed=4) != chosen  # the seed does
    # Adding files moves no image from one side to the other unless its class's count changes.
    more = carve_selection(rows + _rows({"e": 5}), 0.15, seed=3)
    assert {p for p in more if not p.startswith("train/e/")} == chosen


def test_split_record_names_both_splits_with_sizes():
    rows = _rows({"ants": 20, "bees": 20})
    chosen = carve_selection(rows, 0.15, seed=1)
    parts = {
        "fit": [r for r in rows if r["path"] not in chosen],
        "selection": [r for r in rows if r["path"] in chosen],
        "val": [{"path": f"val/ants/{i}.jpg", "label": "ants"} for i in range(5)],
    }
    record = split_record("train/val", parts, selection_split=0.15, val_split=0.2, seed=1)
    assert record["chosen_on"].startswith("selection split, 6 of the 40 training images (15% of each class")
    assert record["scored_on"] == "validation folder, 5 images (ants 5), used for no choice"
    assert record["selection"]["per_class"] == {"ants": 3, "bees": 3}
    assert sum(map(len, record["selection"]["files"].values())) == 6
    assert record["val"]["used_for_choices"] is False
    held = split_record("split", parts, selection_split=0.15, val_split=0.2, seed=1)
    assert held["val"]["source"] == "held-out split"
    assert "held-out split, 5 images" in held["scored_on"] and "no val/" in held["scored_on"]


# -- training ------------------------------------------------------------------------------------------
torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'headrace[vision]')")

from vision_helpers import make_folder, tiny_spec  # noqa: E402

from headrace.vision.fit import default_threads  # noqa: E402

torch.set_num_threads(default_threads())


def _train(folder: Path, store_root: Path, **extra: Any) -> Any:
    from headrace.store import Store
    from headrace.vision.train import train_image_model

    return train_image_model(tiny_spec(folder, **{**TINY, **extra}), store=Store(store_root), name="tiny")


def test_validation_images_never_reach_the_fit_or_the_choice(tmp_path: Path, monkeypatch: Any):
    """fit_images, where every choice is made, is called with fit and selection images only; the
    validation images are looked at once, after it returns."""
    import headrace.vision.train as train_module
    from headrace.vision.model import ImageClassifier

    folder = make_folder(tmp_path / "images", {"train": 6, "val": 3})
    events: list[tuple[str, list[str]]] = []
    scans: list[Any] = []
    real_scan, real_fit = train_module.scan_folder, train_module.fit_images
    real_predict = ImageClassifier.predict_proba_tensors

    def scan(*args: Any, **kwargs: Any) -> Any:
        scans.append(real_scan(*args, **kwargs))
        return scans[-1]

    def path_of(images: Any) -> list[str]:
        where = {id(t): p for p, t in scans[0].pixels.items()}
        return [where[id(t)] for t in images]

    def fit(spec: Any, train: Any, y_train: Any, selection: Any, y_sel: Any, *a: Any, **k: Any) -> Any:
        events.append(("fit", path_of(train)))
        events.append(("selection", path_of(selection)))
        done = real_fit(spec, train, y_train, selection, y_sel, *a, **k)
        events.append(("fit returned", []))
        return done

    def predict(self: Any, images: Any) -> Any:
        events.append(("predict", path_of(images)))
        return real_predict(self, images)

    monkeypatch.setattr(train_module, "scan_folder", scan)
    monkeypatch.setattr(train_module, "fit_images", fit)
    monkeypatch.setattr(ImageClassifier, "predict_proba_tensors", predict)
    result = _train(folder, tmp_path / "lake")

    kinds = [kind for kind, _ in events]
    assert kinds == ["fit", "selection", "fit returned", "predict"]
    fitted, selection, val = set(events[0][1]), set(events[1][1]), set(events[3][1])
    assert val == {p.relative_to(folder).as_posix() for p in (folder / "val").glob("*/*.jpg")}
    assert len(fitted) == 10 and len(selection) == 2 and len(val) == 6
    assert not fitted & selection and not fitted & val and not selection & val
    assert all(p.startswith("train/") for p in fitted | selection)
    files = result.splits["selection"]["files"]
    assert {p for paths in files.values() for p in paths} == selection
    assert result.splits["fit"]["images"] == 10 and result.splits["val"]["images"] == 6
    assert result.evaluation["n"] == 6


def test_a_mislabeled_validation_folder_changes_the_score_but_not_the_choice(tmp_path: Path):
    good = make_folder(tmp_path / "good", {"train": 6, "val": 3})
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    (bad / "val" / "red").rename(bad / "val" / "tmp")
    (bad / "val" / "blue").rename(bad / "val" / "red")
    (bad / "val" / "tmp").rename(bad / "val" / "blue")

    honest = _train(good, tmp_path / "lake-good")
    swapped = _train(bad, tmp_path / "lake-bad")
    assert swapped.fit.best_epoch == honest.fit.best_epoch
    assert swapped.fit.history == honest.fit.history
    assert swapped.fit.selection_accuracy == honest.fit.selection_accuracy
    for name, value in honest.model.network.state_dict().items():
        assert torch.equal(value, swapped.model.network.state_dict()[name]), name
    # Same predictions, opposite labels: the reported accuracy flips, the choice does not move.
    assert swapped.metrics["accuracy"] == pytest.approx(1 - honest.metrics["accuracy"])


def test_without_a_val_folder_the_report_says_the_score_is_from_a_held_out_split(tmp_path: Path):
    from headrace.config.vision import ImageSpec
    from headrace.vision.manifest import scan_folder
    from headrace.vision.train import _splits

    folder = make_folder(tmp_path / "images", {"train": 10})
    for kind in ("red", "blue"):
        shutil.move(str(folder / "train" / kind), str(folder / kind))
    (folder / "train").rmdir()
    spec = ImageSpec.model_validate({"path": str(folder)})
    rows, record = _splits(scan_folder(folder, val_split=0.2, seed=5), spec, seed=5)
    assert {k: v.height for k, v in rows.items()} == {"fit": 14, "selection": 2, "val": 4}
    assert record["val"]["source"] == "held-out split"
    assert record["scored_on"].startswith("held-out split, 4 images (blue 2, red 2; 20% of each class")
    assert set(rows["val"]["path"]).isdisjoint(set(rows["selection"]["path"]) | set(rows["fit"]["path"]))


def test_refit_trains_on_selection_images_too_and_reports_it(tmp_path: Path):
    folder = make_folder(tmp_path / "images", {"train": 6, "val": 2})
    result = _train(folder, tmp_path / "lake", refit=True)
    assert result.fit.refit is not None and result.fit.refit["images"] == 12
    assert result.fit.refit["epochs"] == result.fit.best_epoch
    assert len(result.fit.refit_history) == result.fit.best_epoch
    assert "refit on training + selection images" in result.report_html
    assert "yes: 12 images" in result.report_html


# -- progress --------------------------------------------------------------------------------------------
def test_epochs_are_logged_and_stepped_and_stage_lines_stay_one_per_stage(tmp_path: Path, caplog: Any):
    from headrace.store import Store
    from headrace.vision.train import train_image_model

    folder = make_folder(tmp_path / "images", {"train": 6, "val": 2})
    lines: list[str] = []
    steps: list[tuple[str, int, int]] = []
    with caplog.at_level(logging.INFO, logger="headrace.vision.fit"):
        result = train_image_model(
            tiny_spec(folder, **TINY),
            store=Store(tmp_path / "lake"),
            name="tiny",
            progress=lines.append,
            on_step=lambda stage, done, total, line: steps.append((stage, done, total)),
        )
    epochs = len(result.fit.history)
    losses = [result.fit.frozen_selection_loss] + [h["selection_loss"] for h in result.fit.history]
    assert result.fit.best_epoch == losses.index(min(losses))  # select_on: loss (epoch 0 a candidate)
    assert [s for s in steps if s[0] == "fine-tuning"] == [
        ("fine-tuning", e, 2) for e in range(1, epochs + 1)
    ]
    logged = [r.getMessage() for r in caplog.records if r.name == "headrace.vision.fit"]
    assert any(m.startswith("fine-tune epoch 1/2: train loss") and "selection accuracy" in m for m in logged)
    assert not any("fine-tune epoch" in line for line in lines)  # no line per epoch
    assert any(line.startswith("epoch chosen on: selection split") for line in lines)
    assert any("on the validation folder, 4 images" in line for line in lines)


def test_the_cli_progress_is_a_live_bar_on_a_terminal_and_silent_otherwise():
    from rich.console import Console

    from headrace.vision.run import step_progress

    piped = io.StringIO()
    with step_progress("pics", Console(file=piped, force_terminal=False)) as on_step:
        assert on_step is not None
        on_step("fine-tuning", 1, 3, "fine-tune epoch 1/3: train loss 0.5, selection accuracy 0.9")
    assert piped.getvalue() == ""
    screen = io.StringIO()
    with step_progress("pics", Console(file=screen, force_terminal=True, width=120)) as on_step:
        assert on_step is not None
        on_step("fine-tuning", 1, 3, "fine-tune epoch 1/3: train loss 0.5, selection accuracy 0.9")
    assert "pics: fine-tuning" in screen.getvalue() and "selection accuracy 0.9" in screen.getvalue()
