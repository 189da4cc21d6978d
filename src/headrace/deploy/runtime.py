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
import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, DataError, NotFound

__all__ = [
    "ARTIFACT_FILE",
    "EXAMPLE_FILE",
    "INFO_FILE",
    "SUMS_FILE",
    "BundleModel",
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

    def answer(self, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Predictions for raw records, as the REST API answers them."""
        import polars as pl

        if not hasattr(self.model, "predict"):
            raise DataError(
                f"model {self.name} ({self.info.get('task')}) does not predict from records",
                hint="use the serving API's recommendation routes for this model",
            )
        frame = pl.DataFrame(list(records), infer_schema_length=None) if records else pl.DataFrame()
        prediction = self.model.predict(frame)
        doc: dict[str, Any] = {
            "model": self.name,
            "version": self.version,
            "predictions": _plain(prediction.predictions),
        }
        if prediction.probabilities is not None:
            doc["probabilities"] = _plain(prediction.probabilities)
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
    """The serving app for one bundled model, with the SageMaker routes (/ping, /invocations)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from .sagemaker import invocations_router

    app = FastAPI(title=f"headrace {bundle.name}@{bundle.version}", version=str(bundle.version))

    @app.get("/health/live")
    def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready")
    def ready() -> Any:
        return JSONResponse({"status": "ready", "models": {bundle.name: bundle.version}})

    app.include_router(
        invocations_router(
            bundle.answer, columns=lambda: bundle.columns, kinds=lambda: bundle.kinds, ready=lambda: True
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


def _probe(model_dir: str | None) -> int:
    """Load, build the app, answer the example in JSON and CSV; print the distributions imported."""
    import importlib.metadata as md

    bundle = load_model_dir(model_dir)
    app = create_bundle_app(bundle)
    example = bundle.example()
    import uvicorn  # noqa: F401  (the server is part of what serving needs)

    statuses = [asyncio.run(_call(app, "GET", "/ping", b"", "application/json"))]
    if example:
        body = json.dumps({"records": example}).encode()
        statuses.append(asyncio.run(_call(app, "POST", "/invocations", body, "application/json")))
        header = ",".join(bundle.columns)
        rows = [",".join("" if r.get(c) is None else str(r.get(c)) for c in bundle.columns) for r in example]
        csv_body = "\n".join([header, *rows]).encode()
        statuses.append(asyncio.run(_call(app, "POST", "/invocations", csv_body, "text/csv")))
    owners = md.packages_distributions()
    dists: set[str] = set()
    for module in list(sys.modules):
        top = module.partition(".")[0]
        for dist in owners.get(top, []):
            dists.add(dist)
    print(json.dumps({"distributions": sorted(dists), "statuses": statuses}))
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
