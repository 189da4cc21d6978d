"""OpenLineage run events for ingestion and training (the optional ``lineage:`` block).

Plain JSON over HTTP in the OpenLineage RunEvent shape (spec 2-0-2): a START when a run begins, then
COMPLETE or FAIL, each with the run's id, its job (``ingest.SOURCE``, ``train.MODEL``), and its input
and output datasets. Datasets and models are named within one namespace (the block's ``namespace``,
default the project's name): a source is ``sources/NAME``, a dataset is its name and a model version
``models/NAME``, each version in the standard ``version`` dataset facet. Sending never raises: a
receiver that is down or refuses an event logs one warning and the run goes on (the metadata database
keeps headrace's own lineage).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Project
    from .config.lineage import LineageSpec

__all__ = ["PRODUCER", "SCHEMA_URL", "LineageEmitter", "LineageRun"]

log = logging.getLogger("headrace.lineage")

PRODUCER = "https://github.com/headrace/headrace"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
_FACETS = "https://openlineage.io/spec/facets"


def _facet(schema: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": f"{_FACETS}/{schema}", **fields}


@dataclass
class LineageEmitter:
    """Sends a project's run events to one OpenLineage receiver."""

    spec: LineageSpec
    namespace: str

    @classmethod
    def for_project(cls, project: Project) -> LineageEmitter | None:
        """The project's emitter, or None without a ``lineage:`` block (then nothing is ever sent)."""
        spec = project.lineage
        return None if spec is None else cls(spec, spec.namespace or project.project)

    def dataset(self, name: str, version: int | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {"namespace": self.namespace, "name": name}
        if version is not None:
            facet = "1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet"
            doc["facets"] = {"version": _facet(facet, datasetVersion=str(version))}
        return doc

    def source(self, name: str) -> dict[str, Any]:
        return self.dataset(f"sources/{name}")

    def model(self, name: str, version: int) -> dict[str, Any]:
        return self.dataset(f"models/{name}", version)

    def start(
        self, job: str, *, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]] | None = None
    ) -> LineageRun:
        run = LineageRun(self, job, inputs=inputs, outputs=outputs or [])
        run.send("START")
        return run

    def send(self, event: dict[str, Any]) -> bool:
        """POST one event; False (with a warning logged) when it did not arrive."""
        import httpx

        url = f"{self.spec.url}/{self.spec.endpoint.lstrip('/')}"
        headers = {"Authorization": f"Bearer {self.spec.api_key}"} if self.spec.api_key else {}
        try:
            response = httpx.post(url, json=event, headers=headers, timeout=self.spec.timeout_s)
            response.raise_for_status()
        except Exception as exc:  # never fails the run
            log.warning(
                "lineage: the %s event of %s did not reach %s (%s); the run goes on",
                event.get("eventType"),
                event.get("job", {}).get("name"),
                url,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return False
        return True


@dataclass
class LineageRun:
    """One run's events: ``send('START')`` when created, then ``complete()`` or ``fail()`` once."""

    emitter: LineageEmitter
    job: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    ended: bool = False

    def complete(self, outputs: list[dict[str, Any]] | None = None) -> None:
        if outputs is not None:
            self.outputs = outputs
        self._end("COMPLETE", None)

    def fail(self, error: BaseException | str) -> None:
        self._end("FAIL", error)

    def _end(self, kind: str, error: BaseException | str | None) -> None:
        if self.ended:
            return
        self.ended = True
        self.send(kind, error)

    def event(self, kind: str, error: BaseException | str | None = None) -> dict[str, Any]:
        facets: dict[str, Any] = {}
        if error is not None:
            message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            facet = "1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet"
            facets["errorMessage"] = _facet(facet, message=message[:2000], programmingLanguage="python")
        job_type = _facet(
            "2-0-3/JobTypeJobFacet.json#/$defs/JobTypeJobFacet",
            processingType="BATCH",
            integration="HEADRACE",
            jobType=self.job.split(".")[0].upper(),
        )
        return {
            "eventType": kind,
            "eventTime": datetime.now(UTC).isoformat(),
            "run": {"runId": self.run_id, "facets": facets},
            "job": {"namespace": self.emitter.namespace, "name": self.job, "facets": {"jobType": job_type}},
            "inputs": self.inputs,
            "outputs": self.outputs,
            "producer": PRODUCER,
            "schemaURL": SCHEMA_URL,
        }

    def send(self, kind: str, error: BaseException | str | None = None) -> bool:
        try:
            event = self.event(kind, error)
        except Exception as exc:  # a bug here must not fail the run either
            log.warning("lineage: could not build the %s event of %s: %s", kind, self.job, exc)
            return False
        return self.emitter.send(event)
