"""The dashboard: datasets, quality, models, the ledger and drift in the browser, under ``/ui``.

Served by the same app as the API (``mount_ui`` in ``headrace.serve.app.create_app``) and on its
own by ``headrace ui``. Pages render on the server with SVG charts (no network, no build step, no
JavaScript needed to read them); the promote and rollback buttons call the admin API with the
admin token.
"""

from __future__ import annotations

from .app import MOUNT_PATH, create_ui_app, dashboard_app, mount_ui
from .data import Dashboard

__all__ = ["MOUNT_PATH", "Dashboard", "create_ui_app", "dashboard_app", "mount_ui"]
