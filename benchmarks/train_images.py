"""Image classification on ants/bees: frozen-backbone head, then fine-tuning, against a baseline.

What it measures, in one run on one device:
- the baseline: features of the frozen EfficientNet-Lite0 (224 px centre crops) and scikit-learn's
  logistic regression, its validation accuracy and time (the issue's "about 0.94 in under 30 s");
- headrace's training: scan and checks (the placeholder GIF is quarantined), the selection split
  carved from the training images (15% of each class by default), phase one (a new head on the
  frozen backbone), phase two (the top blocks fine-tuned), each one's accuracy on the selection
  split (which chooses the epoch), then the kept model's accuracy on the validation folder (which
  chooses nothing), and the time of each step and of the whole.

``--sweep`` with ``[{"refit": false}, {"refit": true}]`` measures refitting on training + selection
images after the choice against not refitting.

It prints one JSON document on stdout (progress goes to stderr) and writes it, with the HTML report,
under --out. It never ends without printing what it measured: an error (a CUDA failure, say) is
recorded in the document, and on CUDA the run is retried once without mixed precision.

    # on this machine (the whole training through headrace: manifest, quarantine, registry)
    .venv/bin/python benchmarks/train_images.py --out /tmp/images-bench
    # on a GPU machine
    .venv/bin/python benchmarks/train_images.py --device cuda --out /tmp/images-bench

On a bare machine that has torch, Pillow, numpy, scikit-learn, matplotlib and pydantic but not the
rest of headrace's dependencies (polars, deltalake, SQLAlchemy), it runs the same fit on the same
code without the store and the registry ("mode": "bare"). Without the weights package, point
HEADRACE_LITE0_WEIGHTS at the .pth file:

    HEADRACE_LITE0_WEIGHTS=.gpu/efficientnet-lite0-57934424.pth \\
        python3 benchmarks/train_images.py --device cuda --data .gpu/images --out $OUT

``--set key=value`` overrides a field of the image spec (``--set finetune_epochs=4``,
``--set augment.views=6``); ``--sweep FILE`` runs a JSON list of such override maps on the same
decoded images and reports each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("HEADRACE_DATA_DIR", ROOT.parent / "shared" / "data")) / "images"


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _bare_imports() -> None:
    """Make ``headrace.vision.fit`` and friends importable without the package's other dependencies."""
    src = ROOT / "src"
    sys.path.insert(0, str(src))
    for name in ("headrace", "headrace.config", "headrace.vision"):
        if name in sys.modules:
            continue
        module = types.ModuleType(name)
        module.__path__ = [str(src / name.replace(".", "/"))]
        sys.modules[name] = module


def _mode() -> str:
    try:
        import headrace.vision.train  # noqa: F401

        return "full"
    except ImportError as exc:
        say(f"headrace's full dependencies are missing ({exc.name}); running the fit alone")
        for name in [n for n in sys.modules if n == "headrace" or n.startswith("headrace.")]:
            del sys.modules[name]
        _bare_imports()
        return "bare"


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: write key=value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = out
        *parents, last = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return out


def _merge(base: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in more.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _environment(device: str) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cuda_available": torch.cuda.is_available(),
    }
    if device != "cpu" and torch.cuda.is_available():
        try:
            env["gpu"] = torch.cuda.get_device_name(0)
        except Exception as exc:
            env["gpu_error"] = repr(exc)
    return env


def _baseline(
    spec: Any, train: list[Any], y_train: list[int], val: list[Any], y_val: list[int]
) -> dict[str, Any]:
    """Frozen-backbone features (224 px centre crops, no flips) and a logistic regression."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    from headrace.vision.backbones import build_backbone
    from headrace.vision.fit import default_threads, resolve_device
    from headrace.vision.images import batch_center, normalize

    device = resolve_device(spec.device)
    torch.set_num_threads(spec.threads or default_threads())
    started = time.perf_counter()
    backbone = build_backbone(spec.backbone)
    backbone.network.to(device).eval()

    def feats(images: list[Any]) -> np.ndarray:
        rows = []
        with torch.no_grad():
            for i in range(0, len(images), 32):
                x = normalize(
                    batch_center(images[i : i + 32], 224, 0.875).to(device), backbone.mean, backbone.std
                )
                rows.append(backbone.features(x.contiguous(memory_format=torch.channels_last)).float().cpu())
        return torch.cat(rows).numpy()

    f_train, f_val = feats(train), feats(val)
    features_s = time.perf_counter() - started
    clf = LogisticRegression(C=1.0, max_iter=3000).fit(f_train, y_train)
    accuracy = float((clf.predict(f_val) == np.asarray(y_val)).mean())
    return {
        "what": "frozen EfficientNet-Lite0 features (224 px centre crops) + logistic regression",
        "accuracy": round(accuracy, 4),
        "seconds": round(time.perf_counter() - started, 2),
        "features_s": round(features_s, 2),
        "device": str(device),
    }


def _decode(data: Path, spec: Any, seed: int) -> tuple[Any, dict[str, Any]]:
    from headrace.vision.folder import scan_rows
    from headrace.vision.images import _rgb, resize_shorter, to_tensor

    base = round(spec.eval_pixels / spec.crop_fraction)
    started = time.perf_counter()
    found = scan_rows(
        data,
        spec.checks,
        val_split=spec.val_split,
        seed=seed,
        draft=base,
        convert=lambda img: to_tensor(resize_shorter(_rgb(img), base)),
    )
    return found, {"scan_s": round(time.perf_counter() - started, 2)}


def _split(
    found: Any, spec: Any, seed: int
) -> tuple[list[str], dict[str, list[Any]], dict[str, list[int]], dict[str, list[str]], dict[str, Any]]:
    """Images, labels and paths of train (all training images), fit, selection and val, and the
    split record (:func:`headrace.vision.folder.split_record`)."""
    from headrace.vision.folder import carve_selection, split_record

    classes = found.classes
    index = {c: i for i, c in enumerate(classes)}
    chosen = carve_selection([r for r in found.good if r["split"] == "train"], spec.selection_split, seed)
    names = ("train", "fit", "selection", "val")
    images: dict[str, list[Any]] = {k: [] for k in names}
    labels: dict[str, list[int]] = {k: [] for k in names}
    paths: dict[str, list[str]] = {k: [] for k in names}
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in names}
    for row in found.good:
        parts = [row["split"]]
        if row["split"] == "train":
            parts.append("selection" if row["path"] in chosen else "fit")
        for part in parts:
            images[part].append(found.pixels[row["path"]])
            labels[part].append(index[row["label"]])
            paths[part].append(row["path"])
            rows[part].append(row)
    record = split_record(
        found.layout,
        rows,
        selection_split=spec.selection_split,
        val_split=spec.val_split,
        seed=seed,
        refit=spec.refit,
    )
    return classes, images, labels, paths, record


def _fit_bare(spec: Any, found: Any, seed: int, out: Path | None) -> dict[str, Any]:
    import torch

    from headrace.vision.fit import fit_images
    from headrace.vision.report import evaluate, render_report

    classes, images, labels, paths, splits = _split(found, spec, seed)
    started = time.perf_counter()
    fit = fit_images(
        spec,
        images["fit"],
        labels["fit"],
        images["selection"],
        labels["selection"],
        classes,
        seed=seed,
        progress=say,
    )
    fit_s = time.perf_counter() - started
    torch.set_num_threads(fit.threads)
    val_proba = fit.model.predict_proba_tensors(images["val"]).numpy()  # the one look at val
    seconds = time.perf_counter() - started
    evaluation = evaluate(val_proba, labels["val"], classes)
    say(f"accuracy {evaluation['accuracy']:.4f} on the {splits['scored_on']}")
    if out is not None:
        quarantined = [{"path": r["path"], "reason": r["reason"]} for r in found.bad]
        html = render_report(
            name="ants-bees",
            evaluation=evaluation,
            fit=fit,
            splits=splits,
            val_paths=paths["val"],
            val_images=images["val"],
            quarantined=quarantined,
            summary={"device": fit.device, "threads": fit.threads, "seconds": round(seconds, 1)},
        )
        (out / "report.html").write_text(html, encoding="utf-8")
    return {
        "device": fit.device,
        "threads": fit.threads,
        "accuracy": round(evaluation["accuracy"], 4),
        "accuracy_on": splits["scored_on"],
        "f1_macro": round(evaluation["f1_macro"], 4),
        "selection_accuracy": round(fit.selection_accuracy, 4),
        "frozen_selection_accuracy": round(fit.frozen_selection_accuracy, 4),
        "finetuned_selection_accuracy": None
        if fit.finetuned_selection_accuracy is None
        else round(fit.finetuned_selection_accuracy, 4),
        "best_epoch": fit.best_epoch,
        "chosen_on": splits["chosen_on"],
        "refit": fit.refit,
        "history": fit.history,
        "fit_s": round(seconds, 2),  # fitting and the validation pass
        "val_s": round(seconds - fit_s, 2),
        "timings": fit.timings,
        "images": {k: splits[k]["images"] for k in ("fit", "selection", "val")},
        "quarantined": [{"path": r["path"], "reason": r["reason"]} for r in found.bad],
    }


def _train_full(spec_doc: dict[str, Any], data: Path, seed: int, out: Path | None) -> dict[str, Any]:
    """The whole of ``headrace train`` for an image model, in a temporary project."""
    from headrace.artifacts import ArtifactStore
    from headrace.config.models import ModelSpec
    from headrace.metadata import Metadata
    from headrace.registry import Registry
    from headrace.store import Store
    from headrace.vision.train import train_image_model

    spec = ModelSpec.model_validate(
        {
            "task": "image_classification",
            "dataset": "ants_bees",
            "seed": seed,
            "image": {**spec_doc, "path": str(data)},
        }
    )
    with tempfile.TemporaryDirectory(prefix="headrace-images-") as tmp:
        meta = Metadata(f"sqlite:///{tmp}/headrace.db")
        artifacts = ArtifactStore(Path(tmp) / "artifacts")
        try:
            result = train_image_model(
                spec,
                store=Store(Path(tmp) / "lake"),
                meta=meta,
                artifacts=artifacts,
                name="ants_bees",
                out_dir=out,
                progress=say,
            )
            # The registered artifact predicts like the trained model (a reload through the flavor).
            registry = Registry(meta, artifacts)
            mv, loaded = registry.load("ants_bees", result.version.version)
            sample = sorted(data.glob("val/*/*"))[:4]
            prediction = loaded.predict_images([p.read_bytes() for p in sample])
            summary = result.summary()
            summary.update(
                {
                    "registered": mv.ref,
                    "artifact_bytes": mv.details.get("artifact_bytes"),
                    "reloaded_predictions": dict(
                        zip([p.name for p in sample], prediction.predictions, strict=True)
                    ),
                    "history": result.fit.history,
                    "f1_macro": round(result.metrics["f1_macro"], 4),
                    "total_s": round(result.seconds, 2),
                }
            )
            return summary
        finally:
            meta.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="train/<class>, val/<class> folders")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out", type=Path, default=None, help="folder for result.json and the HTML report")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: free cores)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--set", dest="sets", action="append", default=[], help="image spec field=value")
    parser.add_argument("--sweep", type=Path, default=None, help="JSON list of override maps to run in turn")
    parser.add_argument("--no-baseline", action="store_true", help="skip the logistic-regression baseline")
    parser.add_argument("--bare", action="store_true", help="fit only, even where all of headrace imports")
    args = parser.parse_args(argv)

    result: dict[str, Any] = {"benchmark": "images (ants/bees)", "data": str(args.data), "errors": []}

    def terminated(signum: int, _frame: Any) -> None:  # `timeout` sends SIGTERM: still print the results
        raise TimeoutError(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, terminated)
    started = time.perf_counter()
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.bare:
            _bare_imports()
            mode = "bare"
        else:
            mode = _mode()
        result["mode"] = mode
        result["environment"] = _environment(args.device)
        from headrace.config.vision import ImageSpec

        base_doc = _merge({"device": args.device, "threads": args.threads}, _overrides(args.sets))
        spec = ImageSpec.model_validate({**base_doc, "path": str(args.data)})
        result["spec"] = spec.model_dump(mode="json", exclude={"path"})
        say(f"mode {mode}; device {args.device}; data {args.data}")
        found, scan_t = _decode(args.data, spec, args.seed)
        result["scan"] = {
            **scan_t,
            "images": len(found.good),
            "quarantined": found.bad and [{"path": r["path"], "reason": r["reason"]} for r in found.bad],
        }
        _, images, labels, _, _ = _split(found, spec, args.seed)
        if not args.no_baseline:
            try:
                result["baseline"] = _baseline(
                    spec, images["train"], labels["train"], images["val"], labels["val"]
                )
                say(f"baseline: {result['baseline']}")
            except Exception as exc:
                result["errors"].append({"step": "baseline", "error": f"{type(exc).__name__}: {exc}"[:500]})
        runs = [{}] if args.sweep is None else json.loads(args.sweep.read_text())
        result["runs"] = []
        for overrides in runs:
            overrides = dict(overrides)
            seed = int(overrides.pop("seed", args.seed))
            doc = _merge(base_doc, overrides)
            entry: dict[str, Any] = {"overrides": overrides, "seed": seed}
            for attempt in range(2):
                try:
                    spec_i = ImageSpec.model_validate({**doc, "path": str(args.data)})
                    if mode == "full" and args.sweep is None:
                        entry.update(_train_full(dict(doc), args.data, seed, args.out))
                    else:
                        entry.update(_fit_bare(spec_i, found, seed, args.out))
                        entry["total_s"] = round(scan_t["scan_s"] + entry["fit_s"], 2)  # decode + fit
                    break
                except Exception as exc:
                    entry.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}"[:800])
                    say(traceback.format_exc())
                    if attempt == 0 and spec_i.device != "cpu" and spec_i.amp:
                        say("retrying without mixed precision")
                        doc = _merge(doc, {"amp": False})
                        continue
                    break
            shown = {k: entry.get(k) for k in ("accuracy", "selection_accuracy", "best_epoch", "total_s")}
            say(f"run {overrides}: {json.dumps(shown)}")
            result["runs"].append(entry)
        if len(result["runs"]) == 1:
            result.update({k: v for k, v in result["runs"][0].items() if k not in ("overrides",)})
            del result["runs"]
    except BaseException as exc:  # print what was measured, whatever broke
        result["errors"].append({"step": "run", "error": f"{type(exc).__name__}: {exc}"[:800]})
        say(traceback.format_exc())
    finally:
        result["wall_s"] = round(time.perf_counter() - started, 2)
        text = json.dumps(result, indent=2, default=str)
        print(text, flush=True)
        if args.out is not None:
            (args.out / "result.json").write_text(text + "\n", encoding="utf-8")
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
