"""What runs inside a bundle: load the model from its folder, check it, and serve it.

The model folder (``/opt/ml/model`` in a container, where SageMaker unpacks ``model.tar.gz``; or
``HEADRACE_MODEL_DIR``; or ``--model-dir``) holds ``model.json`` (the registered version's record),
the artifact, an input example, and ``SHA256SUMS``; every file is checked against it before the
model is loaded. Nothing else is read: no headrace.yaml, no metadata database.

``python -m headrace.deploy.runtime [serve]`` is the bundle's ``serve`` entrypoint: the serving app
(the one ``headrace serve`` runs) with the SageMaker routes, under uvicorn on port 8080.
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, NotFound, RegistryError

__all__ = [
    "ARTIFACT_FILE",
    "EXAMPLE_FILE",
    "INFO_FILE",
    "SUMS_FILE",
    "BundleModel",
    "BundleRegistry",
    "answer_records",
    "create_bundle_app",
    "find_model_dir",
    "load_model_dir",
    "main",
    "verify_sums",
]

log = logging.getLogger("headrace.deploy.runtime")

INFO_FILE = "model.json"
ARTIFACT_FILE = "model.bin"
EXAMPLE_FILE = "input_example.json"
SUMS_FILE = "SHA256SUMS"
SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sums(folder: Path) -> list[str]:
    """Check every file listed in ``folder/SHA256SUMS`` (``sha256sum -c`` format); return them."""
    sums = folder / SUMS_FILE
    if not sums.is_file():
        raise ArtifactError(f"{sums} is missing", hint="rebuild the bundle with 'headrace build'")
    checked = []
    for line in sums.read_text().splitlines():
        if not line.strip():
            continue
        expected, _, name = line.partition("  ")
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{path} is listed in {SUMS_FILE} but missing", hint="rebuild the bundle")
        actual = _sha256(path)
        if actual != expected:
            raise ArtifactError(
                f"{path} does not match its sha256 in {SUMS_FILE} ({actual[:12]} != {expected[:12]})",
                hint="the bundle was modified or damaged; rebuild it with 'headrace build'",
            )
        checked.append(name)
    return checked


def find_model_dir(explicit: str | Path | None = None) -> Path:
    """The model folder: the argument, else HEADRACE_MODEL_DIR, else under AZUREML_MODEL_DIR, else
    /opt/ml/model."""
    if explicit:
        return Path(explicit)
    if os.environ.get("HEADRACE_MODEL_DIR"):
        return Path(os.environ["HEADRACE_MODEL_DIR"])
    azure = os.environ.get("AZUREML_MODEL_DIR")
    if azure:
        # Azure mounts the registered folder under its own name inside AZUREML_MODEL_DIR
        found = sorted(Path(azure).glob(f"**/{INFO_FILE}"), key=lambda p: len(p.parts))
        if found:
            return found[0].parent
    return SAGEMAKER_MODEL_DIR


@dataclass
class BundleModel:
    """A bundle's model, loaded and checked, with its registered record."""

    info: dict[str, Any]
    model: Any
    folder: Path
    _host: Any = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.info["name"])

    @property
    def version(self) -> int:
        return int(self.info["version"])

    @property
    def inputs(self) -> list[dict[str, Any]]:
        signature = self.info.get("signature") or {}
        return [dict(c) for c in signature.get("inputs") or []]

    @property
    def columns(self) -> list[str]:
        return [str(c["name"]) for c in self.inputs]

    @property
    def kinds(self) -> dict[str, str]:
        return {str(c["name"]): str(c.get("kind", "")) for c in self.inputs}

    def example(self) -> list[dict[str, Any]]:
        path = self.folder / EXAMPLE_FILE
        if path.is_file():
            return list(json.loads(path.read_text()))
        return []

    def registry(self) -> BundleRegistry:
        return BundleRegistry(self)

    def answer(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Predictions for raw records, by the serving app's own path (for Azure's score.py, which
        has no HTTP app of ours around it)."""
        if self._host is None:
            from ..serve import ModelHost

            host = ModelHost(self.registry(), [self.name])
            host.check_all()
            self._host = host
        return answer_records(self._host, self.name, list(records))


class BundleRegistry:
    """The read-only registry surface the serving app uses, over one bundled model version.

    The bundle's version is its champion and its latest; there is nothing to promote or roll back
    inside a bundle (a deployment does that by switching bundles), so those raise RegistryError.
    """

    def __init__(self, bundle: BundleModel) -> None:
        self.bundle = bundle

    def _check(self, name: str) -> None:
        if name != self.bundle.name:
            raise NotFound(f"this bundle serves {self.bundle.name!r}, not {name!r}", hint="call its own name")

    def aliases(self, name: str) -> dict[str, int]:
        self._check(name)
        return {"champion": self.bundle.version}

    def get(self, name: str, ref: int | str | None = None) -> Any:
        from dataclasses import fields
        from datetime import datetime

        from ..registry import ModelVersion

        self._check(name)
        if ref not in (None, "latest", "champion", self.bundle.version, str(self.bundle.version)):
            raise NotFound(
                f"this bundle holds {name}@{self.bundle.version}, not {ref}",
                hint="deploy the bundle of that version",
            )
        known = {f.name for f in fields(ModelVersion)}
        doc = {k: v for k, v in self.bundle.info.items() if k in known}
        doc["created_at"] = datetime.fromisoformat(str(doc["created_at"]))
        doc["aliases"] = ("champion",)
        return ModelVersion(**doc)

    def load(self, name: str, ref: int | str | None = None) -> tuple[Any, Any]:
        return self.get(name, ref), self.bundle.model

    def list(self, name: str | None = None, **_: Any) -> list[Any]:
        return [self.get(self.bundle.name)] if name in (None, self.bundle.name) else []

    def models(self) -> builtins.list[str]:
        return [self.bundle.name]

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise RegistryError(
            f"a bundle serves one fixed version ({self.bundle.name}@{self.bundle.version})",
            hint="promote or roll back in the project, then deploy: 'headrace deploy MODEL' / '--rollback'",
        )

    promote = rollback = set_alias = remove_alias = retire = register = _refuse


def answer_records(host: Any, name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``POST /models/{name}/predict`` answers, without the request ids: the records checked
    against the signature, then the fast path (a few rows) or the pipeline."""
    served = host.get(name)
    checked = served.schema.check(records) if served.schema is not None else records
    answer = served.predict_records(checked)
    doc: dict[str, Any] = {
        "model": served.name,
        "version": served.version,
        "predictions": _plain(answer.predictions),
    }
    if answer.probabilities is not None:
        doc["probabilities"] = _plain(answer.probabilities)
    return doc


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value


def load_model_dir(folder: str | Path | None = None) -> BundleModel:
    """Check the model folder against its SHA256SUMS and load the model through its flavor."""
    from ..flavors import load_flavor

    path = find_model_dir(folder)
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise NotFound(
            f"no model in {path} ({INFO_FILE} is missing)",
            hint="pass --model-dir or set HEADRACE_MODEL_DIR to the bundle's model folder",
        )
    verify_sums(path)
    info = json.loads(info_path.read_text())
    data = (path / info.get("artifact", ARTIFACT_FILE)).read_bytes()
    if info.get("artifact_sha256") and hashlib.sha256(data).hexdigest() != info["artifact_sha256"]:
        raise ArtifactError(f"the artifact in {path} is not the registered one", hint="rebuild the bundle")
    model = load_flavor(str(info["flavor"]), data)
    log.info("loaded %s@%s (%s) from %s", info["name"], info["version"], info["flavor"], path)
    return BundleModel(info=info, model=model, folder=path)


def create_bundle_app(bundle: BundleModel) -> Any:
    """The app ``headrace serve`` runs, over the bundle's model, plus the SageMaker routes."""
    from ..config.serving import ServingSpec
    from ..serve import create_app
    from .sagemaker import invocations_router

    # the bundle's version never moves: no reason to poll for a new champion often
    spec = ServingSpec(models=[bundle.name], reload_seconds=3600.0)
    app = create_app(bundle.registry(), spec, models=[bundle.name], title=f"headrace: {bundle.name}")
    host = app.state.host
    app.include_router(
        invocations_router(
            lambda records: answer_records(host, bundle.name, records),
            columns=lambda: bundle.columns,
            kinds=lambda: bundle.kinds,
            ready=host.ready,
        )
    )
    return app


# -- the entrypoint -----------------------------------------------------------------------------
def _default_port() -> int:
    for name in ("SAGEMAKER_BIND_TO_PORT", "PORT"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 8080


async def _call(app: Any, method: str, path: str, body: bytes, content_type: str) -> int:
    """One request through the ASGI app in-process (the probe exercises the real request path)."""
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", content_type.encode()), (b"host", b"probe")],
        "client": ("127.0.0.1", 0),
        "server": ("probe", 80),
    }
    await app(scope, receive, send)
    return status


def _model_modules(obj: Any, depth: int = 8) -> set[str]:
    """Top-level modules of the types in a model's object graph (a pipeline's estimators and
    transformers, their arrays): the packages the artifact needs to be read back."""
    seen: set[int] = set()
    found: set[str] = set()

    def walk(value: Any, level: int) -> None:
        if level > depth or id(value) in seen:
            return
        seen.add(id(value))
        found.add(type(value).__module__.partition(".")[0])
        if isinstance(value, dict):
            for item in value.values():
                walk(item, level + 1)
        elif isinstance(value, list | tuple | set):
            for item in list(value)[:200]:
                walk(item, level + 1)
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            for item in vars(value).values():
                walk(item, level + 1)

    walk(obj, 0)
    return found


def _probe(model_dir: str | None) -> int:
    """Load, build the app, answer the example in JSON and CSV; print the distributions that
    headrace's own code imported and those the model's types come from.

    Libraries import optional packages when they happen to be installed (skops imports torch and
    pytest through scikit-learn's test helpers when present); those are not needs. So the roots are
    only the imports made *by headrace modules* plus the model's own types; ``pinned_closure`` then
    adds what those declare.
    """
    import builtins as _builtins
    import importlib.metadata as md

    direct: set[str] = set()
    original = _builtins.__import__

    def recording(
        name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        importer = (globals or {}).get("__name__", "") if isinstance(globals, dict) else ""
        if level == 0 and (importer == "headrace" or importer.startswith("headrace.")):
            direct.add(name.partition(".")[0])
        return original(name, globals, locals, fromlist, level)

    _builtins.__import__ = recording
    try:
        bundle = load_model_dir(model_dir)
        app = create_bundle_app(bundle)
        app.state.host.check_all()  # what the app's lifespan does when a server starts it
        import uvicorn  # noqa: F401  (the server is part of what serving needs)

        statuses = [asyncio.run(_call(app, "GET", "/ping", b"", "application/json"))]
        example = bundle.example()
        if example:
            body = json.dumps({"records": example}).encode()
            statuses.append(asyncio.run(_call(app, "POST", "/invocations", body, "application/json")))
            header = ",".join(bundle.columns)
            rows = [
                ",".join("" if r.get(c) is None else str(r.get(c)) for c in bundle.columns) for r in example
            ]
            csv_body = "\n".join([header, *rows]).encode()
            statuses.append(asyncio.run(_call(app, "POST", "/invocations", csv_body, "text/csv")))
    finally:
        _builtins.__import__ = original
    owners = md.packages_distributions()
    modules = direct | _model_modules(bundle.model)
    dists = sorted({d for m in modules for d in owners.get(m, []) if m != "headrace"})
    app_root = Path(__file__).resolve().parents[2]
    files = sorted(
        Path(str(m.__file__)).resolve().relative_to(app_root).as_posix()
        for name, m in list(sys.modules.items())
        if (name == "headrace" or name.startswith("headrace.")) and getattr(m, "__file__", None)
    )
    print(
        json.dumps({"distributions": dists, "modules": sorted(modules), "files": files, "statuses": statuses})
    )
    return 0 if all(s == 200 for s in statuses) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="serve", description="Serve a headrace bundle's model (SageMaker contract on port 8080)."
    )
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve"], help="SageMaker passes 'serve'"
    )
    parser.add_argument("--model-dir", default=None, help="default: $HEADRACE_MODEL_DIR or /opt/ml/model")
    parser.add_argument("--host", default=os.environ.get("HEADRACE_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=_default_port())
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.probe:
        return _probe(args.model_dir)
    import uvicorn

    app = create_bundle_app(load_model_dir(args.model_dir))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
