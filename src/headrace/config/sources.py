"""Spec classes for ingestion sources (``sources:`` in headrace.yaml)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .base import ProjectPath, Spec

__all__ = ["ColumnRule", "FileSource", "SourceSpec"]


class ColumnRule(Spec):
    """Rules and cleansing for one column."""

    type: Literal["string", "int", "float", "bool", "date", "datetime"] | None = None
    required: bool = False
    unique: bool = False
    min: float | None = None
    max: float | None = None
    allowed: list[str | int | float | bool] | None = None
    regex: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    format: str | None = None
    impute: str | int | float | None = None


class FileSource(Spec):
    kind: Literal["file"]
    path: ProjectPath
    dataset: str
    format: Literal["csv", "json", "jsonl", "parquet"] | None = None
    columns: dict[str, ColumnRule] = Field(default_factory=dict)
    cleanse: list[str] = Field(default_factory=list)


SourceSpec = Annotated[FileSource, Field(discriminator="kind")]
