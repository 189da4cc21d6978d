"""What runs inside a bundle: load the model from its folder, check it, and serve it.

The model folder (``/opt/ml/model`` in a container, where SageMaker unpacks ``model.tar.gz``; or
``HEADRACE_MODEL_DIR``; or ``--model-dir``) holds ``model.json`` (the registered version's record),
the artifact, an input example, and ``SHA256SUMS``; every file is checked against it before the
model is loaded. Nothing else is read: no headrace.yaml, no metadata database.

``python -m headrace.deploy.runtime [serve]`` is the bundle's ``serve`` entrypoint: the serving app
(the one ``headrace serve`` runs) with the SageMaker routes, under uvicorn on port 8080.

**Reporting home.** Given the project's URLs in the environment (``HEADRACE_METADATA_URL``, and
``HEADRACE_STORE_URL`` / ``HEADRACE_ARTIFACTS_URL``), the bundle joins the project: it writes its
prediction log and feedback to the project's store in batches off the request path (a bounded
buffer; what it cannot write is dropped and counted in ``headrace_prediction_log_dropped_total``,
never failing a prediction), follows a registry alias (``HEADRACE_ALIAS``, default ``champion``)
and reloads when it moves, routes the canary share to the ``challenger`` alias, and records itself
as a live deployment. While the metadata database is unreachable it keeps serving the version it
has (the bundled one at first). Without those variables it serves its own version and nothing else.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ArtifactError, HeadraceError, NotFound, RegistryError, UsageError

__all__ = [
    "ARTIFACT_FILE",
    "EXAMPLE_FILE",
    "INFO_FILE",
    "SERVING_FILE",
    "SUMS_FILE",
    "BundleModel",
    "BundleRegistry",
    "ConnectedRegistry",
    "ProjectLink",
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
SERVING_FILE = "serving.json"  # the project's serving and canary settings at build time
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


def bundle_settings(bundle: BundleModel) -> tuple[Any, Any, Any]:
    """The serving spec, canary spec and promote gate the project had when the bundle was built
    (``model/serving.json``); defaults for bundles built before it was written."""
    from ..config.models import PromoteRule
    from ..config.monitoring import CanarySpec
    from ..config.serving import ServingSpec

    path = bundle.folder / SERVING_FILE
    doc = json.loads(path.read_text()) if path.is_file() else {}
    serving = ServingSpec(**{**(doc.get("serving") or {}), "models": [bundle.name]})
    canary = CanarySpec(**doc["canary"]) if doc.get("canary") else None
    gate = PromoteRule(**doc["promote_if"]) if doc.get("promote_if") else None
    return serving, canary, gate


@dataclass(frozen=True)
class ProjectLink:
    """Where a bundle reports home: the project's metadata database, store and artifacts."""

    metadata_url: str
    store_url: str | None = None
    artifacts_url: str | None = None
    alias: str = "champion"
    target: str = "bundle"
    endpoint: str | None = None
    reload_seconds: float | None = None
    record: bool = True  # record itself in the project's deployments (``headrace deploy`` does it)

    ENV: ClassVar[dict[str, str]] = {
        "metadata_url": "HEADRACE_METADATA_URL",
        "store_url": "HEADRACE_STORE_URL",
        "artifacts_url": "HEADRACE_ARTIFACTS_URL",
        "alias": "HEADRACE_ALIAS",
        "target": "HEADRACE_TARGET",
        "endpoint": "HEADRACE_ENDPOINT",
        "reload_seconds": "HEADRACE_RELOAD_SECONDS",
        "record": "HEADRACE_RECORD_DEPLOYMENT",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProjectLink | None:
        """The link the environment names; None when ``HEADRACE_METADATA_URL`` is not set."""
        env = os.environ if environ is None else environ
        values = {key: env.get(name) or None for key, name in cls.ENV.items()}
        if not values["metadata_url"]:
            stray = [cls.ENV[k] for k in ("store_url", "artifacts_url") if values[k]]
            if stray:
                raise UsageError(
                    f"{', '.join(stray)} is set but HEADRACE_METADATA_URL is not",
                    hint="set HEADRACE_METADATA_URL to the project's metadata database URL "
                    "(the bundle reports home only with it)",
                )
            return None
        record = (values.pop("record") or "1").lower() not in ("0", "false", "no")
        reload_raw = values.pop("reload_seconds")
        try:
            reload_seconds = float(reload_raw) if reload_raw else None
        except ValueError:
            raise UsageError(
                f"HEADRACE_RELOAD_SECONDS={reload_raw!r} is not a number", hint="give seconds, e.g. 2"
            ) from None
        if reload_seconds is not None and reload_seconds <= 0:
            raise UsageError("HEADRACE_RELOAD_SECONDS must be above 0", hint="give seconds, e.g. 2")
        return cls(
            metadata_url=str(values["metadata_url"]),
            store_url=values["store_url"],
            artifacts_url=values["artifacts_url"],
            alias=values["alias"] or "champion",
            target=(values["target"] or "bundle")[:40],
            endpoint=values["endpoint"],
            reload_seconds=reload_seconds,
            record=record,
        )


class ConnectedRegistry:
    """The project's registry as a reporting bundle uses it: aliases are read from the project
    (the last answer is kept while the database is unreachable, starting from the bundled
    version), the bundled version is loaded from the bundle itself and other versions from the
    project's artifacts; everything else (promote, rollback, ledger) is the project's registry."""

    def __init__(self, bundle: BundleModel, registry: Any) -> None:
        self.bundle = bundle
        self.inner = registry
        self._offline = BundleRegistry(bundle)
        self._known: dict[str, dict[str, int]] = {}
        self.reachable = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def aliases(self, name: str) -> dict[str, int]:
        try:
            found = dict(self.inner.aliases(name))
        except HeadraceError:
            raise
        except Exception as exc:  # database down: keep serving what we have
            if self.reachable:
                log.warning("the project's metadata is unreachable (%s); serving the known versions", exc)
            self.reachable = False
            return dict(self._known.get(name) or self._offline.aliases(name))
        if not self.reachable:
            log.info("the project's metadata is reachable again")
        self.reachable = True
        self._known[name] = found
        return found

    def load(self, name: str, ref: int | str | None = None) -> tuple[Any, Any]:
        bundled = self.bundle.version
        if name == self.bundle.name and ref in (bundled, str(bundled)):
            try:
                mv = self.inner.get(name, bundled)
            except Exception:  # the record as the bundle carries it, while the database is down
                mv = self._offline.get(name, bundled)
            return mv, self.bundle.model
        return self.inner.load(name, ref)

    def get(self, name: str, ref: int | str | None = None) -> Any:
        try:
            return self.inner.get(name, ref) if ref is not None else self.inner.get(name)
        except HeadraceError:
            raise
        except Exception:
            return self._offline.get(name, ref)


class _Home:
    """A reporting bundle's record in the project's ``deployments``: live while it runs."""

    def __init__(self, link: ProjectLink, bundle: BundleModel, meta: Any) -> None:
        import socket

        self.link = link
        self.bundle = bundle
        self.meta = meta
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.deployment_id: int | None = None

    def register(self, port: int | None) -> None:
        from . import records

        if not self.link.record:
            return
        endpoint = self.link.endpoint or (f"http://{self.instance.split(':')[0]}:{port}" if port else None)
        try:
            self.deployment_id = records.record(
                self.meta,
                model=self.bundle.name,
                version=self.bundle.version,
                target=self.link.target,
                status="live",
                endpoint=endpoint,
                details={"follows": self.link.alias, "instance": self.instance, "reports_home": True},
                reason=f"bundle {self.bundle.name}@{self.bundle.version} started on {self.instance}, "
                f"following {self.link.alias!r}",
                replace_live=False,  # replicas of one deployment are live side by side
            )
        except Exception as exc:
            log.warning("could not record this deployment in the project's metadata: %s", exc)

    def stopped(self) -> None:
        from . import records

        if self.deployment_id is None:
            return
        try:
            records.set_status(self.meta, self.deployment_id, "stopped")
        except Exception as exc:
            log.warning("could not mark deployment %s stopped: %s", self.deployment_id, exc)


def create_bundle_app(
    bundle: BundleModel, link: ProjectLink | None = None, *, port: int | None = None
) -> Any:
    """The app ``headrace serve`` runs, over the bundle's model, plus the SageMaker routes.

    With a ``link`` (``ProjectLink.from_env()``) the bundle reports home: see the module's doc."""
    from ..serve import create_app
    from .sagemaker import invocations_router

    serving, canary, gate = bundle_settings(bundle)
    if link is None:
        # the bundle's version never moves: no reason to poll for a new champion often
        spec = serving.model_copy(update={"reload_seconds": 3600.0})
        app = create_app(bundle.registry(), spec, models=[bundle.name], title=f"headrace: {bundle.name}")
    else:
        app = _connected_app(bundle, link, serving, canary, port, gate)
    host = app.state.host
    # /invocations answers through the app's one prediction path (canary, log, metrics)
    app.include_router(
        invocations_router(columns=lambda: bundle.columns, kinds=lambda: bundle.kinds, ready=host.ready)
    )
    return app


def _connected_app(
    bundle: BundleModel, link: ProjectLink, serving: Any, canary: Any, port: int | None, gate: Any
) -> Any:
    import contextlib

    from starlette.concurrency import run_in_threadpool

    from ..artifacts import ArtifactStore
    from ..metadata import Metadata
    from ..registry import Registry
    from ..serve import create_app
    from ..store import Store

    meta = Metadata(link.metadata_url, migrate=False)
    # object storage settings come from the environment, under the names Delta Lake reads
    options = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "AZURE_", "GOOGLE_", "DELTA_"))}
    artifacts = ArtifactStore(link.artifacts_url, options) if link.artifacts_url else _NoArtifacts(bundle)
    registry = ConnectedRegistry(bundle, Registry(meta, artifacts, actor=f"bundle:{link.target}"))  # type: ignore[arg-type]
    store = Store(link.store_url, options) if link.store_url else None
    updates: dict[str, Any] = {}
    if link.reload_seconds is not None:
        updates["reload_seconds"] = link.reload_seconds
    spec = serving.model_copy(update=updates)
    app = create_app(
        registry,
        spec,
        store=store,
        models=[bundle.name],
        title=f"headrace: {bundle.name}",
        canary=canary,
        gates={bundle.name: gate} if gate is not None else None,  # the admin promote is gated too
    )
    app.state.host.ref = link.alias
    home = _Home(link, bundle, meta)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> Any:
        await run_in_threadpool(home.register, port)
        try:
            async with inner(a) as state:
                yield state
        finally:
            await run_in_threadpool(home.stopped)
            meta.dispose()

    app.router.lifespan_context = lifespan
    app.state.link = link
    log.info(
        "reporting home: metadata %s, prediction log %s, following %r",
        _redact(link.metadata_url),
        _redact(link.store_url) if link.store_url else "off (no HEADRACE_STORE_URL)",
        link.alias,
    )
    return app


class _NoArtifacts:
    """No HEADRACE_ARTIFACTS_URL: only the bundled version can be served."""

    def __init__(self, bundle: BundleModel) -> None:
        self.bundle = bundle

    def get_bytes(self, sha256: str) -> bytes:
        raise NotFound(
            f"this bundle holds only {self.bundle.name}@{self.bundle.version} and has no artifact store",
            hint="set HEADRACE_ARTIFACTS_URL to the project's artifacts so the bundle can follow its alias",
        )


def _redact(url: str | None) -> str:
    """A URL without its password, for the log."""
    if not url:
        return ""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


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

    app = create_bundle_app(load_model_dir(args.model_dir), ProjectLink.from_env(), port=args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
