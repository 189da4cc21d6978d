"""headrace: from raw data to a monitored, self-correcting model in production.

``headrace.open(path)`` opens a project from Python (``docs/python-api.md``). The public API is what
``__all__`` lists; everything else is private and may change. Names are
imported on first use (PEP 562), so ``import headrace.vision`` or the CLI's ``--help`` do not pay for
polars, deltalake and SQLAlchemy until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import IngestResult, LoadedModel, OpenProject, Report, TrainedModel, open
    from .artifacts import ArtifactStore
    from .config import ModelSpec, Project, SourceSpec, load_project, parse_project
    from .errors import (
        ArtifactError,
        ConfigError,
        DataError,
        GateRefused,
        HeadraceError,
        NotFound,
        RegistryError,
        ServiceUnavailable,
        SourceError,
        StoreError,
        UsageError,
    )
    from .metadata import Metadata
    from .store import BatchMeta, Store
    from .workspace import Workspace

__version__ = "0.1.0"

_WHERE = {
    "ArtifactError": "errors",
    "ArtifactStore": "artifacts",
    "BatchMeta": "store",
    "ConfigError": "errors",
    "DataError": "errors",
    "GateRefused": "errors",
    "HeadraceError": "errors",
    "IngestResult": "api",
    "LoadedModel": "api",
    "Metadata": "metadata",
    "ModelSpec": "config",
    "NotFound": "errors",
    "OpenProject": "api",
    "Project": "config",
    "RegistryError": "errors",
    "Report": "api",
    "ServiceUnavailable": "errors",
    "SourceError": "errors",
    "SourceSpec": "config",
    "Store": "store",
    "StoreError": "errors",
    "TrainedModel": "api",
    "UsageError": "errors",
    "Workspace": "workspace",
    "load_project": "config",
    "open": "api",
    "parse_project": "config",
}

__all__ = [
    "ArtifactError",
    "ArtifactStore",
    "BatchMeta",
    "ConfigError",
    "DataError",
    "GateRefused",
    "HeadraceError",
    "IngestResult",
    "LoadedModel",
    "Metadata",
    "ModelSpec",
    "NotFound",
    "OpenProject",
    "Project",
    "RegistryError",
    "Report",
    "ServiceUnavailable",
    "SourceError",
    "SourceSpec",
    "Store",
    "StoreError",
    "TrainedModel",
    "UsageError",
    "Workspace",
    "__version__",
    "load_project",
    "open",
    "parse_project",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'headrace' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
