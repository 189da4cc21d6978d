"""headrace: from raw data to a monitored, self-correcting model in production.

The public API is what ``__all__`` lists; everything else is private and may change.
"""

from __future__ import annotations

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

__all__ = [
    "ArtifactError",
    "ArtifactStore",
    "BatchMeta",
    "ConfigError",
    "DataError",
    "GateRefused",
    "HeadraceError",
    "Metadata",
    "ModelSpec",
    "NotFound",
    "Project",
    "RegistryError",
    "ServiceUnavailable",
    "SourceError",
    "SourceSpec",
    "Store",
    "StoreError",
    "UsageError",
    "Workspace",
    "__version__",
    "load_project",
    "parse_project",
]
