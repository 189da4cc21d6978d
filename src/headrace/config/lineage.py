"""The optional ``lineage:`` block: OpenLineage run events for ingestion and training.

```yaml
lineage:
  url: http://marquez.internal:5000     # events are POSTed to URL/api/v1/lineage
  namespace: churn-project               # default: the project's name
```

Without the block nothing is sent. With it, each ingestion run (source -> ``dataset`` with its new
version) and each training run (``dataset`` at the version it read -> the registered model version)
sends START, then COMPLETE or FAIL, as plain JSON in the OpenLineage RunEvent shape. A receiver that
is down or refuses an event logs one warning; it never fails the run (headrace's own lineage, in
the metadata database, stays the record).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import Spec

__all__ = ["LineageSpec"]


class LineageSpec(Spec):
    """Where to send OpenLineage events: any receiver of the OpenLineage HTTP API (Marquez, DataHub,
    OpenMetadata, a collector)."""

    url: str = Field(description="the receiver's base URL, http(s)://HOST:PORT")
    endpoint: str = Field(default="api/v1/lineage", description="the path events are POSTed to, under url")
    namespace: str | None = Field(
        default=None,
        description="the OpenLineage namespace of jobs and datasets (default: project name)",
    )
    api_key: str | None = Field(
        default=None, description="sent as 'Authorization: Bearer KEY' (use ${ENV} for the value)"
    )
    timeout_s: float = Field(
        default=5.0, gt=0, description="how long the receiver may take to answer an event"
    )

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("an http(s):// URL of an OpenLineage receiver")
        return value.rstrip("/")
