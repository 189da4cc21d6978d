"""Spec classes for serving (``serving:`` in headrace.yaml).

Two secrets guard the server, each from the file or the environment:

- the **admin token** (reload, promote, rollback): write ``admin_token: ${HEADRACE_ADMIN_TOKEN}`` in the
  file, or leave it out and the server reads the environment variable named by ``admin_token_env``;
- the **write token** (``POST /feedback``, ``POST /interactions``: every route that stores what a
  client says): ``write_token``, else the variable named by ``write_token_env``
  (``HEADRACE_WRITE_TOKEN``). It must differ from the admin token, so a client that reports ground
  truth cannot promote.

With no token, the routes it guards refuse every request (403). ``limits`` bounds what one request
may carry; a larger request is refused (413, 422 or 431) before any per-record work.
"""

from __future__ import annotations

import os
from typing import Any, Literal, get_args

from pydantic import Field, SecretStr, field_validator, model_validator

from .base import Spec

__all__ = ["LimitsSpec", "PredictionLogSpec", "ServingSpec"]


class PredictionLogSpec(Spec):
    """Where predictions and feedback go: datasets in the project's store, written in batches."""

    enabled: bool = True
    dataset: str = "predictions"
    feedback_dataset: str = "predictions__feedback"
    flush_seconds: float = Field(default=1.0, gt=0)
    batch_rows: int = Field(default=1000, ge=1)
    max_queue: int = Field(default=100_000, ge=1)  # beyond this, rows are dropped and counted


class LimitsSpec(Spec):
    """What one request may carry. Each limit is checked before any per-record work, and a request
    past one is answered at once: 413 (body, records), 431 (headers) or 422 (depth, string length)."""

    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="request body size (413 beyond)")
    max_header_bytes: int = Field(
        default=16_384, ge=1024, description="all request header names and values together (431 beyond)"
    )
    max_records: int = Field(
        default=64, ge=1, description="records per /models/{name}/predict request (413 beyond)"
    )
    max_batch_records: int = Field(
        default=10_000,
        ge=1,
        description="records per /predict/batch, /v2 infer and /invocations request (413 beyond)",
    )
    max_feedback_items: int = Field(
        default=1000, ge=1, description="items per /feedback request (413 beyond)"
    )
    max_depth: int = Field(default=16, ge=3, le=500, description="JSON nesting depth of a body (422 beyond)")
    max_string_length: int = Field(
        default=65_536, ge=16, description="bytes of one JSON string in a body, as sent (422 beyond)"
    )
    max_errors: int = Field(
        default=20, ge=1, description="problems listed in a 422 answer; the rest are only counted"
    )
    offload_bytes: int = Field(
        default=16_384,
        ge=0,
        description="bodies larger than this are parsed and validated in the worker thread pool, "
        "off the event loop (health checks and metrics keep answering)",
    )


LaneRoute = Literal["predict", "batch", "recommendations", "interactions"]


class ServingSpec(Spec):
    models: list[str] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    admin_token: SecretStr | None = None
    admin_token_env: str = "HEADRACE_ADMIN_TOKEN"
    write_token: SecretStr | None = Field(
        default=None, description="token for POST /feedback and /interactions (differs from the admin token)"
    )
    write_token_env: str = "HEADRACE_WRITE_TOKEN"
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    reload_seconds: float = Field(default=2.0, gt=0)  # how often the champion alias is checked
    fast_path: bool = True
    fast_lane: list[LaneRoute] = Field(
        default_factory=lambda: list(get_args(LaneRoute)),
        description="routes matched by a raw ASGI dispatch and handed to their endpoint without FastAPI's "
        "router and dependency machinery (the same answers, byte for byte); [] sends every route through "
        "FastAPI",
    )
    gc_freeze: bool = Field(
        default=True, description="after loading, keep what is loaded out of the garbage collector's passes"
    )
    redis_url: str | None = None  # live recommender state shared by replicas; in process when unset
    redis_prefix: str = "headrace:live"
    interactions_dataset: str | None = None  # default: the recommender's training dataset
    prediction_log: PredictionLogSpec = Field(default_factory=PredictionLogSpec)

    @model_validator(mode="before")
    @classmethod
    def _limits_moved(cls, data: Any) -> Any:
        """``max_body_bytes`` and ``max_batch_rows`` were top-level keys: still read, into ``limits``."""
        if not isinstance(data, dict) or not ({"max_body_bytes", "max_batch_rows"} & set(data)):
            return data
        data = dict(data)
        limits = data.get("limits") or {}
        limits = limits.model_dump() if isinstance(limits, LimitsSpec) else dict(limits)
        if "max_body_bytes" in data:
            limits.setdefault("max_body_bytes", data.pop("max_body_bytes"))
        if "max_batch_rows" in data:
            limits.setdefault("max_batch_records", data.pop("max_batch_rows"))
        data["limits"] = limits
        return data

    @field_validator("admin_token", "write_token", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _tokens_differ(self) -> ServingSpec:
        if (
            self.admin_token is not None
            and self.write_token is not None
            and self.admin_token.get_secret_value() == self.write_token.get_secret_value()
        ):
            raise ValueError("serving.write_token must differ from serving.admin_token")
        return self

    def token(self) -> str | None:
        """The admin token: from the file, else from the environment variable; None if neither."""
        if self.admin_token is not None:
            return self.admin_token.get_secret_value()
        return os.environ.get(self.admin_token_env) or None

    def write_token_value(self) -> str | None:
        """The write token: from the file, else from the environment variable; None if neither."""
        if self.write_token is not None:
            return self.write_token.get_secret_value()
        return os.environ.get(self.write_token_env) or None
