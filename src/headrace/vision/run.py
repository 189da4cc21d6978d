"""``headrace train`` for ``task: image_classification``: one call from the CLI, one JSON document back."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from ..config.models import ModelSpec
from ..errors import ConfigError

__all__ = ["train_in_workspace"]


def train_in_workspace(
    ws: Any,
    name: str,
    spec: ModelSpec,
    *,
    promote: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train, evaluate and register ``name`` in the project ``ws`` (a :class:`headrace.Workspace`).

    The HTML report goes to ``.headrace/reports/<name>-report.html`` (and into the artifact store).
    """
    if importlib.util.find_spec("torch") is None:
        raise ConfigError(
            f"model {name!r} is an image model and needs torch, which is not installed",
            hint="pip install 'headrace[vision]'",
        )
    from .train import train_image_model

    result = train_image_model(
        spec,
        store=ws.store,
        meta=ws.meta,
        artifacts=ws.artifacts,
        name=name,
        promote=promote,
        out_dir=ws.root / ".headrace" / "reports",
        project_root=ws.root,
        progress=progress,
    )
    doc = result.summary()
    doc["metrics"] = result.metrics
    doc["aliases"] = list(getattr(result.version, "aliases", ()) or ())
    doc["report"] = str(ws.root / ".headrace" / "reports" / f"{name}-report.html")
    return doc
