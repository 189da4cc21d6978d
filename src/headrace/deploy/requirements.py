"""The exact packages a bundle needs: the distributions its serving runtime imports, with everything
they declare as dependencies, each pinned to the version installed in the running environment.

The roots come from a probe: a fresh interpreter loads the bundle's model, builds the serving app and
answers a prediction, then reports which distributions own the modules it imported. Their declared
dependencies (``importlib.metadata`` requirements whose markers hold here, with the extras asked for)
close the set, so ``pip install --no-deps -r requirements.txt`` followed by ``pip check`` is complete
and reproducible: a lock file of the serving path, not of the whole project.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..errors import HeadraceError

__all__ = [
    "RUNTIME_ROOTS",
    "Pin",
    "cached_probe",
    "model_distributions",
    "pinned_closure",
    "probe_distributions",
    "probe_key",
    "render_requirements",
]

log = logging.getLogger("headrace.deploy.requirements")

# What the serving process needs whatever the probe sees: the ASGI server (with its fast loop and
# HTTP parser, as ``headrace serve`` runs it) and the packages the request parsers import lazily.
RUNTIME_ROOTS: tuple[str, ...] = ("uvicorn[standard]", "fastapi", "python-multipart", "orjson")

# Distributions never pinned: headrace itself travels as source in the bundle; pip and friends come
# with the interpreter or the image.
_NEVER = frozenset({"headrace", "pip", "setuptools", "wheel"})


@dataclass(frozen=True, order=True)
class Pin:
    name: str
    version: str

    def line(self) -> str:
        return f"{self.name}=={self.version}"


def pinned_closure(roots: Iterable[str]) -> list[Pin]:
    """Every installed distribution reachable from ``roots`` through declared dependencies, pinned."""
    env = {k: str(v) for k, v in default_environment().items()}
    found: dict[str, tuple[str, frozenset[str]]] = {}
    todo: list[tuple[str, frozenset[str]]] = []
    for root in roots:
        req = Requirement(root)
        todo.append((req.name, frozenset(req.extras)))
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in _NEVER:
            continue
        seen = found.get(key)
        if seen is not None and extras <= seen[1]:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            log.debug("%s is not installed; left out of the pins", name)
            continue
        wanted = extras | (seen[1] if seen else frozenset())
        found[key] = (dist.version, wanted)
        for text in dist.requires or []:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": extra}) for extra in ("", *sorted(wanted))
            ):
                continue
            todo.append((req.name, frozenset(req.extras)))
    return sorted(Pin(name, version) for name, (version, _extras) in found.items())


def model_distributions(model: object) -> list[str]:
    """The distributions the model object's types come from (its estimators, arrays, ...)."""
    from .runtime import _model_modules

    owners = md.packages_distributions()
    return sorted({d for m in _model_modules(model) for d in owners.get(m, []) if m != "headrace"})


def render_requirements(pins: Iterable[Pin], header: str) -> str:
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [pin.line() for pin in sorted(pins)]
    return "\n".join(lines) + "\n"


def probe_key(model_info: dict[str, object]) -> str:
    """What a probe's answer depends on besides headrace's code: the model's flavor and task, and
    this environment (interpreter and installed packages)."""
    digest = hashlib.sha256()
    for key in ("flavor", "task"):
        digest.update(f"{key}={model_info.get(key)}".encode())
    digest.update(f"{sys.version} {sys.prefix}".encode())
    for dist in sorted(md.distributions(), key=lambda d: str(d.metadata["Name"])):
        digest.update(f"{dist.metadata['Name']}=={dist.version}".encode())
    return digest.hexdigest()


def _file_hashes(app_dir: Path, names: Iterable[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        path = app_dir / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return out


def cached_probe(app_dir: Path, model_dir: Path, model_info: dict[str, object], cache: Path) -> list[str]:
    """``probe_distributions``, remembered in ``cache`` (a JSON file): an answer is reused while the
    environment (``probe_key``) and every headrace source file the probe imported are unchanged, so
    the second bundle of a model (or another model of the same flavor) skips the subprocess. The
    model's own types are read in process each time (they differ between versions)."""
    key = probe_key(model_info)
    known: dict[str, Any] = {}
    if cache.is_file():
        try:
            known = dict(json.loads(cache.read_text()))
        except ValueError:
            known = {}
    entry = known.get(key)
    if isinstance(entry, dict) and entry.get("files") == _file_hashes(app_dir, entry.get("files") or {}):
        return [str(d) for d in entry["distributions"]]
    distributions, files = probe_distributions(app_dir, model_dir, with_files=True)
    known[key] = {"distributions": distributions, "files": _file_hashes(app_dir, files)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(known, indent=1, sort_keys=True))
    return distributions


@overload
def probe_distributions(app_dir: Path, model_dir: Path, *, timeout: float = ...) -> list[str]: ...
@overload
def probe_distributions(
    app_dir: Path, model_dir: Path, *, with_files: Literal[True], timeout: float = ...
) -> tuple[list[str], list[str]]: ...
def probe_distributions(
    app_dir: Path, model_dir: Path, *, with_files: bool = False, timeout: float = 180.0
) -> list[str] | tuple[list[str], list[str]]:
    """The distributions the bundle's runtime imports while it loads, builds its app and predicts.

    Runs ``python -m headrace.deploy.runtime --probe`` in a fresh interpreter (this process has
    imported far more than serving needs), with the bundle's own copy of headrace first on the path.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(app_dir), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ inside the bundle being built
    proc = subprocess.run(
        [sys.executable, "-m", "headrace.deploy.runtime", "--probe", "--model-dir", str(model_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise HeadraceError(
            f"the bundle's runtime failed to load its model while probing its imports ({tail})",
            hint="check that the model loads with 'headrace models show' and rerun 'headrace build'",
        )
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    distributions = [str(name) for name in doc["distributions"]]
    if with_files:
        return distributions, [str(f) for f in doc.get("files") or []]
    return distributions
