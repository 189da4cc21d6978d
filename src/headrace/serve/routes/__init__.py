"""The serving app's routers, one module per concern; each ``build(serving)`` returns an APIRouter
over the shared :class:`~headrace.serve.shared.Serving` (see ``headrace.serve.app.create_app``)."""

from __future__ import annotations

from . import admin, feedback, health, predictions, recommend, v2

__all__ = ["admin", "feedback", "health", "predictions", "recommend", "v2"]
