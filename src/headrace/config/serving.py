"""Spec classes for serving (``serving:`` in headrace.yaml).

The admin token (reload, promote, rollback) is a secret: write ``admin_token: ${HEADRACE_ADMIN_TOKEN}``
in the file, or leave it out and the server reads the environment variable named by
``admin_token_env`` at start. With no token at all, admin routes refuse every request.
"""

from __future__ import annotations

import os

from pydantic import Field, SecretStr, field_validator

from .base import Spec

__all__ = ["PredictionLogSpec", "ServingSpec"]


class PredictionLogSpec(Spec):
    """Where predictions and feedback go: datasets in the project's store, written in batches."""

    enabled: bool = True
    dataset: str = "predictions"
    feedback_dataset: str = "predictions__feedback"
    flush_seconds: float = Field(default=1.0, gt=0)
    batch_rows: int = Field(default=1000, ge=1)
    max_queue: int = Field(default=100_000, ge=1)  # beyond this, rows are dropped and counted


class ServingSpec(Spec):
    models: list[str] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    admin_token: SecretStr | None = None
    admin_token_env: str = "HEADRACE_ADMIN_TOKEN"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_batch_rows: int = Field(default=10_000, ge=1)
    reload_seconds: float = Field(default=2.0, gt=0)  # how often the champion alias is checked
    fast_path: bool = True
    gc_freeze: bool = Field(
        default=True, description="after loading, keep what is loaded out of the garbage collector's passes"
    )
    redis_url: str | None = None  # live recommender state shared by replicas; in process when unset
    redis_prefix: str = "headrace:live"
    interactions_dataset: str | None = None  # default: the recommender's training dataset
    prediction_log: PredictionLogSpec = Field(default_factory=PredictionLogSpec)

    @field_validator("admin_token", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    def token(self) -> str | None:
        """The admin token: from the file, else from the environment variable; None if neither."""
        if self.admin_token is not None:
            return self.admin_token.get_secret_value()
        return os.environ.get(self.admin_token_env) or None
