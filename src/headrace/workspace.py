"""The one place that sees the whole project: it opens the store, metadata and artifacts it names.

Stages receive their own spec and the handles they need from here; none of them reads the whole
``Project`` (so each stays testable on its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from .artifacts import ArtifactStore
from .config import Project, load_project
from .metadata import Metadata
from .store import Store

__all__ = ["Workspace"]


@dataclass
class Workspace:
    """A project with its store, metadata database and artifact store, opened lazily."""

    project: Project

    @classmethod
    def open(cls, path: str | Path | None = None) -> Workspace:
        return cls(load_project(path))

    @property
    def root(self) -> Path:
        return self.project.root_path

    @cached_property
    def store(self) -> Store:
        return Store(self.project.store, self.project.storage_options)

    @cached_property
    def meta(self) -> Metadata:
        meta = Metadata(self.project.metadata)
        if self.project.mlflow is not None:  # every Registry on this handle mirrors to MLflow
            from .bridges.mlflow_bridge import mirror_for

            meta.registry_mirror = mirror_for(self.project)  # type: ignore[attr-defined]
        return meta

    @cached_property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(self.project.artifacts, self.project.storage_options)

    def close(self) -> None:
        if "meta" in self.__dict__:
            self.meta.dispose()
