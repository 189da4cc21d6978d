"""MLflow: export a version as a pyfunc model, import an sklearn-flavor model, mirror the registry.

- :func:`export_pyfunc` writes an MLflow model folder (``headrace models export MODEL[@V] --format
  mlflow DIR``) whose pyfunc answers as headrace serves: the decision threshold, the class names, the
  input schema as its signature, and the package versions the version was trained with pinned in its
  requirements (``headrace`` among them: the pyfunc prepares features with headrace's own code).
- :func:`import_model` registers an MLflow sklearn-flavor model (``headrace models import
  mlflow:runs:/ID/model`` or ``mlflow:models:/NAME/3``) as a new tabular version, its inputs read
  from the model's signature and its lineage (source URI, run, metrics) in the version's details.
- :class:`MlflowMirror` follows registry changes when headrace.yaml has an ``mlflow:`` block: each
  registered version becomes an MLflow run (parameters, metrics, the HTML report, the pyfunc) and an
  MLflow model version; the MLflow model's aliases are kept equal to headrace's. A mirror failure is
  one warning in the log, never a failed registry change.

MLflow (``pip install 'headrace[mlflow]'``: the ``mlflow-skinny`` client) is imported only here.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NotFound, RegistryError, ServiceUnavailable, UsageError

if TYPE_CHECKING:
    from ..config.mlflow import MlflowSpec
    from ..registry import ModelVersion, Registry

__all__ = [
    "MlflowMirror",
    "export_pyfunc",
    "import_model",
    "mirror_for",
    "requirements_of",
    "signature_of",
]

log = logging.getLogger("headrace.mlflow")

_MLFLOW_TYPES = {"number": "double", "bool": "boolean", "string": "string", "date": "datetime"}
_MLFLOW_TYPES["datetime"] = "datetime"


def _mlflow() -> Any:
    try:
        import mlflow

        from . import pyfunc  # imports mlflow.pyfunc without the warning MLflow's own types give
    except ImportError:
        raise UsageError(
            "MLflow is not installed", hint="pip install 'headrace[mlflow]' (the mlflow-skinny client)"
        ) from None
    assert pyfunc.PythonModel is not None
    return mlflow


# -- export -------------------------------------------------------------------------------------------
def signature_of(model: Any) -> Any:
    """The MLflow signature of a tabular model: one required column per raw input, and the answer's
    columns (``prediction``, ``proba_<class>``)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs: list[Any] = [
        ColSpec(_MLFLOW_TYPES.get(c["kind"], "string"), c["name"], required=True) for c in model.plan.inputs
    ]
    if model.task == "classification":
        kind = "string" if all(isinstance(c, str) for c in model.classes_) else "long"
        outputs: list[Any] = [ColSpec(kind, "prediction")]
        outputs += [ColSpec("double", f"proba_{c}") for c in model.classes_]
    else:
        outputs = [ColSpec("double", "prediction")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def requirements_of(mv: ModelVersion) -> list[str]:
    """The packages ``mv`` was trained with, pinned (``python`` is MLflow's python_env, not pip's),
    and the installed MLflow client, which loads the pyfunc."""
    packages = {k: v for k, v in (mv.packages or {}).items() if k != "python"}
    try:
        packages.setdefault("mlflow-skinny", importlib.metadata.version("mlflow-skinny"))
    except importlib.metadata.PackageNotFoundError:
        packages.setdefault("mlflow", importlib.metadata.version("mlflow"))
    return [f"{name}=={version}" for name, version in sorted(packages.items())]


def export_pyfunc(registry: Registry, mv: ModelVersion, out: Path) -> dict[str, Any]:
    """Write ``mv`` as an MLflow pyfunc model folder at ``out`` (which must not exist or be empty)."""
    mlflow = _mlflow()
    from . import pyfunc

    if mv.flavor != "tabular":
        raise UsageError(
            f"{mv.ref} is a {mv.flavor} model; the MLflow export takes tabular models",
            hint="export a classification or regression model",
        )
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty", hint="name a new folder")
    if out.exists():
        out.rmdir()  # MLflow writes the folder itself
    _, model = registry.load(mv.name, mv.version)
    with tempfile.TemporaryDirectory(prefix="headrace-export-") as tmp:
        artifact = Path(tmp) / f"{mv.name}-v{mv.version}.skops"
        artifact.write_bytes(registry.artifacts.get_bytes(mv.artifact_sha256 or ""))
        with warnings.catch_warnings():  # it asks for an input example: the signature says it all
            warnings.filterwarnings(
                "ignore", message=".*input example was not provided", category=UserWarning
            )
            mlflow.pyfunc.save_model(
                path=str(out),
                python_model=str(Path(pyfunc.__file__).with_name("pyfunc_model.py")),  # models from code
                artifacts={pyfunc.ARTIFACT_KEY: str(artifact)},
                signature=signature_of(model),
                pip_requirements=requirements_of(mv),
                metadata=_carried(mv, model),
            )
    return {
        "model": mv.name,
        "version": mv.version,
        "format": "mlflow",
        "path": str(out),
        **_carried(mv, model),
    }


def _carried(mv: ModelVersion, model: Any) -> dict[str, Any]:
    return {
        "headrace_model": mv.name,
        "headrace_version": mv.version,
        "task": mv.task,
        "threshold": model.threshold,
        "classes": [str(c) for c in model.classes_] if model.classes_ is not None else None,
        "positive": None if model.positive is None else str(model.positive),
        "artifact_sha256": mv.artifact_sha256,
        "dataset": f"{mv.dataset}@{mv.data_version}" if mv.dataset else None,
    }


# -- import -------------------------------------------------------------------------------------------
def import_model(
    registry: Registry, uri: str, name: str, *, tracking_uri: str | None = None, reason: str | None = None
) -> ModelVersion:
    """Register the MLflow sklearn-flavor model at ``uri`` (``runs:/...``, ``models:/...`` or a path)
    as a new tabular version of ``name``."""
    _mlflow()
    import mlflow
    import mlflow.sklearn
    from mlflow.models import get_model_info

    from ..train.features import FeaturePlan
    from ..train.run import package_versions
    from ..train.tabular import TabularModel

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        info = get_model_info(uri)
    except Exception as exc:
        raise NotFound(
            f"MLflow model {uri} cannot be read ({_first_line(exc)})",
            hint="check the URI (runs:/RUN_ID/PATH or models:/NAME/VERSION) and the mlflow tracking_uri",
        ) from None
    if "sklearn" not in info.flavors:
        raise UsageError(
            f"MLflow model {uri} has no sklearn flavor (it has {', '.join(sorted(info.flavors))})",
            hint="log the model with mlflow.sklearn.log_model",
        )
    inputs = info.signature.inputs.to_dict() if info.signature is not None and info.signature.inputs else []
    if not inputs or any("name" not in c for c in inputs):
        raise UsageError(
            f"MLflow model {uri} has no column-based input signature",
            hint="log it with a signature: mlflow.sklearn.log_model(..., signature=infer_signature(X, y))",
        )
    estimator = mlflow.sklearn.load_model(uri)
    pipeline = _as_pipeline(estimator)
    plan_inputs: list[dict[str, str]] = []
    numeric: list[str] = []
    categorical: list[str] = []
    for col in inputs:
        kind = "string" if col["type"] == "string" else "bool" if col["type"] == "boolean" else "number"
        plan_inputs.append({"name": col["name"], "type": col["type"], "kind": kind})
        (categorical if kind == "string" else numeric).append(col["name"])
    if any(c["kind"] == "bool" for c in plan_inputs):
        raise UsageError(
            f"MLflow model {uri} takes boolean columns, which headrace's tabular models read as numbers",
            hint="log the model with those columns as numbers",
        )
    plan = FeaturePlan(inputs=plan_inputs, derive={}, dates={}, numeric=numeric, categorical=categorical)
    order = [c["name"] for c in inputs]
    if plan.feature_columns != order:  # headrace hands numbers first: put the columns back in fit order
        pipeline = _reordered(pipeline, plan, order)
    classifier = hasattr(pipeline, "predict_proba") and hasattr(pipeline, "classes_")
    classes = [_plain(c) for c in pipeline.classes_] if classifier else None
    model = TabularModel(
        pipeline,
        task="classification" if classifier else "regression",
        plan=plan,
        classes=classes,
        threshold=None,
        target=None,
    )
    data = model.to_bytes()
    try:
        TabularModel.from_bytes(data)
    except Exception as exc:  # a type skops does not trust: headrace could never load it
        raise RegistryError(
            f"MLflow model {uri} cannot be kept as a headrace artifact ({_first_line(exc)})",
            hint="import pipelines built from scikit-learn's own estimators",
        ) from None
    lineage = _lineage(mlflow, uri, info)
    return registry.register(
        name,
        task=model.task,
        flavor=TabularModel.flavor,
        artifact=data,
        artifact_format="skops",
        metrics=lineage.pop("metrics", {}),
        params=lineage.pop("params", {}),
        signature=model.signature,
        threshold=None,
        details={"source": "mlflow", "source_uri": uri, **lineage},
        code_version=f"mlflow:{uri}",
        packages=package_versions(),
        reason=reason or f"imported from MLflow {uri}",
    )


def _reordered(pipeline: Any, plan: Any, order: list[str]) -> Any:
    """``pipeline`` behind a step that puts the prepared columns (numbers first) back in ``order``,
    the order it was fitted with (scikit-learn checks the names and their order)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    sample = pd.DataFrame({**{n: [0.0] for n in plan.numeric}, **{n: ["a"] for n in plan.categorical}})
    reorder = ColumnTransformer(
        [("columns", "passthrough", order)], verbose_feature_names_out=False
    ).set_output(transform="pandas")
    reorder.fit(sample)
    return Pipeline([("order", reorder), *pipeline.steps])


def _as_pipeline(estimator: Any) -> Any:
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        return estimator
    if hasattr(estimator, "predict"):
        return Pipeline([("model", estimator)])
    raise UsageError(f"the MLflow model is a {type(estimator).__name__}, not a scikit-learn estimator")


def _lineage(mlflow: Any, uri: str, info: Any) -> dict[str, Any]:
    """What MLflow knows of the model's origin: its run (parameters, metrics) and registered version."""
    out: dict[str, Any] = {
        "mlflow_model_uuid": info.model_uuid,
        "mlflow_tracking_uri": mlflow.get_tracking_uri(),
    }
    run_id = info.run_id
    client = mlflow.MlflowClient()
    if uri.startswith("models:/"):
        out["mlflow_registered_model"] = uri.removeprefix("models:/")
    if run_id:
        out["mlflow_run_id"] = run_id
        try:
            run = client.get_run(run_id)
            out["metrics"] = dict(run.data.metrics)
            out["params"] = dict(run.data.params)
        except Exception as exc:  # the model folder outlived its run: lineage without it
            log.warning("MLflow run %s of %s could not be read: %s", run_id, uri, _first_line(exc))
    return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# -- mirror -------------------------------------------------------------------------------------------
def mirror_for(project: Any) -> MlflowMirror | None:
    """The mirror the project's ``mlflow:`` block asks for (None without one)."""
    spec = getattr(project, "mlflow", None)
    if spec is None:
        return None
    return MlflowMirror(spec, experiment=spec.experiment or project.project)


class MlflowMirror:
    """Mirrors registry changes to an MLflow tracking server (see the module's docstring).

    ``changed`` is what :class:`headrace.registry.Registry` calls after each change it committed;
    it is idempotent: the MLflow model's aliases are made equal to headrace's each time, and a version
    missing in MLflow (registered while the server was down) is mirrored when an alias reaches it."""

    def __init__(self, spec: MlflowSpec, *, experiment: str) -> None:
        self.spec = spec
        self.experiment = experiment
        self._client: Any = None

    def mlflow_name(self, name: str) -> str:
        return f"{self.spec.model_prefix}{name}"

    def changed(self, registry: Registry, name: str, action: str, version: int | None) -> None:
        said = io.StringIO()
        try:
            # MLflow prints each run's URL to stdout, which is a command's --json answer
            with contextlib.redirect_stdout(said):
                self._changed(registry, name, action, version)
        except Exception as exc:  # the registry is the record: a mirror never fails its change
            log.warning(
                "MLflow mirror of %s %s%s to %s failed: %s",
                action,
                name,
                f"@{version}" if version is not None else "",
                self.spec.tracking_uri,
                _first_line(exc),
            )
        if said.getvalue().strip():
            log.debug("MLflow said: %s", said.getvalue().strip())

    def _changed(self, registry: Registry, name: str, action: str, version: int | None) -> None:
        client = self.client()
        model_name = self.mlflow_name(name)
        self._ensure_registered_model(client, model_name, name)
        if action == "register" and version is not None:
            self.mirror_version(registry, registry.get(name, version))
        if action == "retire" and version is not None:
            found = self._mlflow_version(client, model_name, version)
            if found is not None:
                client.set_model_version_tag(model_name, found, "headrace.status", "retired")
        self.sync_aliases(registry, name)

    def client(self) -> Any:
        if self._client is None:
            mlflow = _mlflow()
            self._check_reachable()
            self._client = mlflow.MlflowClient(tracking_uri=self.spec.tracking_uri)
        return self._client

    def _check_reachable(self) -> None:
        """A server that is down fails in ``timeout_s``, not after MLflow's minutes of retries."""
        uri = self.spec.tracking_uri
        if not uri.startswith(("http://", "https://")):
            return
        import httpx

        try:
            httpx.get(f"{uri}/health", timeout=self.spec.timeout_s)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"MLflow server {uri} is unreachable ({_first_line(exc)})",
                hint="start it, or fix mlflow.tracking_uri in headrace.yaml",
            ) from None

    def _experiment_id(self, client: Any) -> str:
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(client.create_experiment(self.experiment))
        except Exception:  # created meanwhile by another process
            again = client.get_experiment_by_name(self.experiment)
            if again is None:
                raise
            return str(again.experiment_id)

    @staticmethod
    def _ensure_registered_model(client: Any, model_name: str, name: str) -> None:
        try:
            client.get_registered_model(model_name)
        except Exception:
            client.create_registered_model(
                model_name, tags={"headrace.model": name}, description=f"mirrored from headrace ({name})"
            )

    def _mlflow_version(self, client: Any, model_name: str, version: int) -> str | None:
        """The MLflow version number that mirrors headrace's ``version`` (tag ``headrace.version``)."""
        for found in client.search_model_versions(f"name='{model_name}'"):
            if (found.tags or {}).get("headrace.version") == str(version):
                return str(found.version)
        return None

    def mirror_version(self, registry: Registry, mv: ModelVersion) -> str:
        """``mv`` as an MLflow run (its training: parameters, metrics, report, the pyfunc) and an MLflow
        model version tagged with headrace's version number; the MLflow version number is returned."""
        client = self.client()
        model_name = self.mlflow_name(mv.name)
        existing = self._mlflow_version(client, model_name, mv.version)
        if existing is not None:
            return existing
        from mlflow.entities import Metric, Param

        run = client.create_run(
            self._experiment_id(client),
            run_name=f"{mv.name} v{mv.version}",
            tags={
                "headrace.model": mv.name,
                "headrace.version": str(mv.version),
                "headrace.dataset": f"{mv.dataset}@{mv.data_version}" if mv.dataset else "",
                "headrace.code_version": mv.code_version or "",
                "headrace.run_id": "" if mv.run_id is None else str(mv.run_id),
                "mlflow.source.name": "headrace",
            },
        )
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, 0) for k, v in _flat_numbers(mv.metrics).items()]
            params = [Param(k, _param_text(v)) for k, v in _flat(mv.params).items()]
            params += [Param("headrace.dataset", f"{mv.dataset}@{mv.data_version}")] if mv.dataset else []
            if mv.threshold is not None:
                params.append(Param("headrace.threshold", repr(float(mv.threshold))))
            for i in range(
                0, max(len(metrics), len(params)), 100
            ):  # log_batch takes 1000 metrics, 100 params
                client.log_batch(run_id, metrics=metrics[i : i + 100], params=params[i : i + 100])
            with tempfile.TemporaryDirectory(prefix="headrace-mirror-") as tmp:
                report = self._report(registry, mv, Path(tmp))
                if report is not None:
                    client.log_artifact(run_id, str(report))
                source = None
                if mv.flavor == "tabular" and mv.status != "retired":
                    folder = Path(tmp) / "model"
                    export_pyfunc(registry, mv, folder)
                    client.log_artifacts(run_id, str(folder), artifact_path="model")
                    source = f"{run.info.artifact_uri}/model"
            client.set_terminated(run_id, "FINISHED")
        except Exception:
            client.set_terminated(run_id, "FAILED")
            raise
        created = client.create_model_version(
            model_name,
            source or f"{run.info.artifact_uri}",
            run_id=run_id,
            tags={"headrace.version": str(mv.version), "headrace.artifact_sha256": mv.artifact_sha256 or ""},
            description=f"headrace {mv.ref}",
        )
        log.info("mirrored %s to MLflow %s version %s", mv.ref, model_name, created.version)
        return str(created.version)

    @staticmethod
    def _report(registry: Registry, mv: ModelVersion, folder: Path) -> Path | None:
        if not mv.details.get("scorecard") or not mv.details.get("oof_sha256"):
            return None
        from ..train.report import build_report, load_oof

        html, _doc = build_report(mv, load_oof(registry, mv))
        path = folder / f"{mv.name}-v{mv.version}.html"
        path.write_text(html, encoding="utf-8")
        return path

    def sync_aliases(self, registry: Registry, name: str) -> None:
        """Make the MLflow model's aliases those of headrace's ``name`` (mirroring versions they reach)."""
        client = self.client()
        model_name = self.mlflow_name(name)
        wanted = registry.aliases(name)
        current = dict(client.get_registered_model(model_name).aliases or {})
        for alias, version in sorted(wanted.items()):
            target = self._mlflow_version(client, model_name, version)
            if target is None:
                target = self.mirror_version(registry, registry.get(name, version))
            if str(current.get(alias)) != target:
                client.set_registered_model_alias(model_name, alias, target)
        for alias in sorted(set(current) - set(wanted)):
            client.delete_registered_model_alias(model_name, alias)


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _flat_numbers(values: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in _flat(values).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v
    }


def _param_text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."
