"""Spec classes for serving (``serving:`` in headrace.yaml)."""

from __future__ import annotations

from pydantic import Field

from .base import Spec

__all__ = ["ServingSpec"]


class ServingSpec(Spec):
    models: list[str] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    admin_token: str | None = None
