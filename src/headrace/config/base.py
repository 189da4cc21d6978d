"""Shared building blocks of the spec classes: frozen models and project-relative paths."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

__all__ = ["ProjectPath", "Spec", "is_url", "resolve_path"]


class Spec(BaseModel):
    """Base of every spec class: immutable, and unknown keys are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, validate_default=True)


def is_url(value: str) -> bool:
    return "://" in value


def resolve_path(value: str, root: Path | None) -> str:
    """A local path relative to ``root`` (the folder of headrace.yaml) made absolute; URLs as they are."""
    if is_url(value) or root is None:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = root / path
    return str(path)


def _resolve_from_context(value: str, info: ValidationInfo) -> str:
    context: Any = info.context or {}
    root = context.get("root") if isinstance(context, dict) else None
    return resolve_path(value, Path(root) if root is not None else None)


ProjectPath = Annotated[str, AfterValidator(_resolve_from_context)]
"""A path (or glob, or URL) that is resolved against the project folder when the file is loaded."""
