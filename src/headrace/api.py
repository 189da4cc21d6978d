"""The notebook-facing API: ``headrace.open(path)`` and what it hands back.

A thin layer over the stages (ingest, train, the registry, reports) that the CLI also calls; it adds
no behaviour of its own beyond accepting pandas as well as polars and rendering results in a notebook
(``_repr_html_``). Exported from ``headrace`` as ``open``, ``OpenProject``, ``LoadedModel``,
``IngestResult``, ``TrainedModel`` and ``Report``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import NotFound, UsageError

if TYPE_CHECKING:
    import polars as pl

    from .flavors import Prediction
    from .ingest.runner import RunResult
    from .registry import ModelVersion, Registry
    from .train.run import TrainResult
    from .workspace import Workspace

__all__ = ["IngestResult", "LoadedModel", "OpenProject", "Report", "TrainedModel", "open"]

_STREAMING = {"mqtt", "nats"}  # run by 'headrace stream', not by ingest()


def _html_table(rows: list[tuple[str, Any]], caption: str) -> str:
    body = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in rows
    )
    return f"<table><caption style='text-align:left'><b>{html.escape(caption)}</b></caption>{body}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


@dataclass
class IngestResult:
    """What one ``ingest()`` did: one run per source."""

    runs: list[RunResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "runs": [r.to_dict() for r in self.runs]}

    def _repr_html_(self) -> str:
        names = ("source", "dataset", "status", "rows", "quarantined", "version")
        head = "<tr>" + "".join(f"<th>{n}</th>" for n in names) + "</tr>"
        body = "".join(
            "<tr>"
            + "".join(
                f"<td>{html.escape(_fmt(v))}</td>"
                for v in (r.source, r.dataset, r.status, r.rows_committed, r.rows_quarantined, r.version)
            )
            + "</tr>"
            for r in self.runs
        )
        return f"<table><caption style='text-align:left'><b>ingest</b></caption>{head}{body}</table>"


@dataclass
class TrainedModel:
    """A trained (and registered) version: its cross-validated scores and lineage."""

    result: TrainResult

    @property
    def version(self) -> ModelVersion:
        assert self.result.version is not None
        return self.result.version

    @property
    def metrics(self) -> dict[str, float]:
        return self.result.metrics

    def to_dict(self) -> dict[str, Any]:
        return {**self.version.to_dict(), "promoted": self.result.promoted}

    def _repr_html_(self) -> str:
        mv = self.version
        summary = self.result.scorecard.get("summary", {})
        rows: list[tuple[str, Any]] = [
            ("version", mv.ref),
            ("data", f"{mv.dataset}@{mv.data_version}"),
            ("aliases", ", ".join(mv.aliases)),
            ("chosen", self.result.scorecard.get("chosen")),
        ]
        rows += [(m, f"{s['mean']:.4f} ± {s['std']:.4f}") for m, s in summary.items()]
        return _html_table(rows, f"{mv.ref} trained")


@dataclass
class Report:
    """The validation report of a version (the page ``headrace evaluate`` writes) and its document."""

    html: str
    doc: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = self.doc["metrics"]
        return metrics

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.write_text(self.html, encoding="utf-8")
        return out

    def _repr_html_(self) -> str:
        return self.html


class LoadedModel:
    """A registered model version, ready to predict on pandas or polars frames."""

    def __init__(self, version: ModelVersion, model: Any) -> None:
        self.version = version
        self.model = model

    def __repr__(self) -> str:
        return f"<LoadedModel {self.version.ref} ({self.version.task})>"

    def _repr_html_(self) -> str:
        mv = self.version
        rows: list[tuple[str, Any]] = [
            ("task", mv.task),
            ("data", f"{mv.dataset}@{mv.data_version}"),
            ("aliases", ", ".join(mv.aliases)),
            ("threshold", mv.threshold),
            *mv.metrics.items(),
        ]
        return _html_table(rows, mv.ref)

    def predict(self, frame: Any) -> Any:
        """Score ``frame`` (a pandas or polars DataFrame of input records): the same kind of frame
        back, one row per record, with ``prediction`` and, for a classifier, ``proba_<class>`` for
        each class (the label applies the version's decision threshold, as serving does)."""
        import polars as pl

        if not hasattr(self.model, "predict"):
            raise UsageError(
                f"{self.version.ref} is a {self.version.task} model; predict() takes tabular records",
                hint="use its own methods through .model (e.g. recommend)",
            )
        kind = _frame_kind(frame)
        records = pl.from_pandas(frame) if kind == "pandas" else frame
        out = _prediction_frame(self.model.predict(records), records.height)
        if kind == "polars":
            return out
        answers = out.to_pandas()
        answers.index = frame.index  # row for row with the records
        return answers


def _frame_kind(frame: Any) -> str:
    module = type(frame).__module__.split(".")[0]
    if module == "polars" and type(frame).__name__ == "DataFrame":
        return "polars"
    if module == "pandas" and type(frame).__name__ == "DataFrame":
        return "pandas"
    raise UsageError(
        f"predict() takes a pandas or polars DataFrame; got {type(frame).__name__}",
        hint="build one, e.g. pandas.DataFrame(records)",
    )


def _prediction_frame(prediction: Prediction, rows: int) -> pl.DataFrame:
    import polars as pl

    columns: dict[str, Any] = {"prediction": prediction.predictions}
    if prediction.probabilities and isinstance(prediction.probabilities[0], dict):
        for name in prediction.probabilities[0]:
            columns[f"proba_{name}"] = [p[name] for p in prediction.probabilities]
    if rows == 0:
        return pl.DataFrame({"prediction": []})
    return pl.DataFrame(columns, strict=False)


class OpenProject:
    """A headrace project opened from Python: the same stages the CLI runs. Close it (or use it as a
    context manager) to release its database connections."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def __repr__(self) -> str:
        return f"<headrace project {self.workspace.project.project!r} at {self.workspace.root}>"

    def __enter__(self) -> OpenProject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.workspace.close()

    @property
    def registry(self) -> Registry:
        from .registry import Registry

        return Registry(self.workspace.meta, self.workspace.artifacts)

    def ingest(self, *sources: str, force: bool = False) -> IngestResult:
        """Run the batch sources (all of them by default): validate, quarantine, commit."""
        from .ingest.runner import ingest, open_source
        from .lineage import LineageEmitter

        project = self.workspace.project
        names = list(sources) or [n for n, s in project.sources.items() if s.kind not in _STREAMING]
        if not names:
            raise UsageError("no batch sources in headrace.yaml", hint="add one under 'sources:'")
        runs = []
        for name in names:
            spec = project.source(name)
            if spec.kind in _STREAMING:
                raise UsageError(
                    f"source {name!r} is a {spec.kind} stream", hint=f"run 'headrace stream {name}'"
                )
            runs.append(
                ingest(
                    open_source(name, spec),
                    spec,
                    store=self.workspace.store,
                    meta=self.workspace.meta,
                    source_name=name,
                    force=force,
                    lineage=LineageEmitter.for_project(project),
                )
            )
        return IngestResult(runs)

    def train(self, name: str, *, promote: bool = False, data_version: int | None = None) -> TrainedModel:
        """Cross-validate and register a new version of a tabular model (``promote``: through its gate)."""
        from .lineage import LineageEmitter
        from .train.run import train_model

        spec = self.workspace.project.model(name)
        if spec.task not in ("classification", "regression"):
            raise UsageError(
                f"train() fits tabular models; {name!r} is a {spec.task} model",
                hint=f"run 'headrace train {name}'",
            )
        result = train_model(
            name,
            spec,
            store=self.workspace.store,
            registry=self.registry,
            data_version=data_version,
            promote=promote,
            project_root=self.workspace.root,
            lineage=LineageEmitter.for_project(self.workspace.project),
        )
        return TrainedModel(result)

    def evaluate(self, name: str, version: int | str | None = None) -> Report:
        """The validation report of ``name`` at ``version`` (default: the latest)."""
        from .train.report import build_report, load_oof

        registry = self.registry
        mv = registry.get(name, version if version is not None else "latest")
        page, doc = build_report(mv, load_oof(registry, mv))
        return Report(page, doc)

    def load_model(self, name: str, version: int | str | None = None) -> LoadedModel:
        """A registered version: a number or an alias; by default the champion, else the latest."""
        registry = self.registry
        if version is None:
            try:
                mv, model = registry.load(name, "champion")
            except NotFound:
                mv, model = registry.load(name, "latest")
        else:
            mv, model = registry.load(name, version)
        return LoadedModel(mv, model)

    def dataset(self, name: str, version: int | None = None) -> pl.DataFrame:
        """A dataset as a polars DataFrame, at ``version`` (default: the latest)."""
        store = self.workspace.store
        if not store.exists(name):
            raise NotFound(f"dataset {name!r} does not exist", hint="see 'headrace datasets list'")
        return store.read(name, version)


def open(path: str | Path | None = None) -> OpenProject:
    """Open the project whose headrace.yaml is ``path`` (a file or its folder; default: ./ or above)."""
    from .workspace import Workspace

    return OpenProject(Workspace.open(path))
