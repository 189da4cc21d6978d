"""The optional ``mlflow:`` block: mirror training runs, versions and alias moves to an MLflow server.

```yaml
mlflow:
  tracking_uri: http://mlflow.internal:5000    # or ${MLFLOW_TRACKING_URI}
  experiment: churn-project                     # default: the project's name
  model_prefix: "headrace."                     # MLflow registered model = prefix + model name
```

Without the block nothing is sent anywhere. With it, every version registered (a training run: its
parameters, metrics and HTML report, and the model as an MLflow pyfunc) and every alias move
(promote, rollback, retire) is mirrored after the registry has recorded it; a mirror that fails logs
one warning and never fails the registry change (headrace's registry stays the record).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import Spec

__all__ = ["MlflowSpec"]


class MlflowSpec(Spec):
    """Where to mirror the registry: an MLflow tracking server (``http(s)://``), a database URI MLflow
    reads (``sqlite:///...``, ``postgresql://...``) or a local folder (``file:///...``)."""

    tracking_uri: str = Field(description="the MLflow tracking URI (http(s)://HOST:PORT, sqlite:///..., ...)")
    experiment: str | None = Field(
        default=None, description="the MLflow experiment runs are logged to (default: the project's name)"
    )
    model_prefix: str = Field(
        default="", description="prefix of the MLflow registered model names (MLflow name = prefix + model)"
    )
    timeout_s: float = Field(
        default=5.0, gt=0, description="how long the server may take to answer before the mirror gives up"
    )

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if "://" not in value and not value.startswith(("databricks", "file:")):
            raise ValueError("a URI such as http://127.0.0.1:5000, sqlite:///mlflow.db or file:///path")
        return value.rstrip("/")
