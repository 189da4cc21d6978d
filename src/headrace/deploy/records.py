"""Deployments in the metadata database: one row per deployment (``deployments``) and one ledger
entry per deployment or rollback, next to the registry's own entries for the same model."""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, desc, select, update

from ..metadata import SCHEMA, Metadata, utcnow

__all__ = ["DEPLOY", "ROLLBACK", "actor", "history", "latest", "record", "set_status"]

DEPLOY = "deploy"
ROLLBACK = "deploy_rollback"

_deployments = SCHEMA.tables["deployments"]
_ledger = SCHEMA.tables["ledger"]


def actor() -> str:
    name = os.environ.get("HEADRACE_ACTOR")
    if name:
        return name
    try:
        return getpass.getuser()
    except Exception:  # no user name in a bare container
        return "unknown"


def record(
    meta: Metadata,
    *,
    model: str,
    version: int,
    target: str,
    status: str,
    endpoint: str | None,
    details: Mapping[str, Any],
    action: str = DEPLOY,
    previous_version: int | None = None,
    reason: str | None = None,
    replace_live: bool = True,
) -> int:
    """Insert a deployment row (and its ledger entry, in the same transaction); when the new one is
    live, the one live before it on the same target becomes ``replaced`` (or ``rolled_back``)."""
    now = utcnow()
    with meta.begin() as conn:
        if status == "live" and replace_live:
            conn.execute(
                update(_deployments)
                .where(
                    and_(
                        _deployments.c.model == model,
                        _deployments.c.target == target,
                        _deployments.c.status == "live",
                    )
                )
                .values(status="rolled_back" if action == ROLLBACK else "replaced")
            )
        result = conn.execute(
            _deployments.insert().values(
                model=model,
                version=version,
                target=target,
                status=status,
                created_at=now,
                endpoint=endpoint,
                details=dict(details),
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        deployment_id = int(key[0])
        conn.execute(
            _ledger.insert().values(
                ts=now,
                model=model,
                action=action,
                version=version,
                previous_version=previous_version,
                reason=reason or f"{action} to {target} ({status})",
                actor=actor(),
                details={
                    "target": target,
                    "status": status,
                    "endpoint": endpoint,
                    "deployment_id": deployment_id,
                },
            )
        )
    return deployment_id


def set_status(meta: Metadata, deployment_id: int, status: str) -> None:
    with meta.begin() as conn:
        conn.execute(update(_deployments).where(_deployments.c.id == deployment_id).values(status=status))


def latest(meta: Metadata, model: str, target: str, status: str = "live") -> dict[str, Any] | None:
    with meta.begin() as conn:
        row = (
            conn.execute(
                select(_deployments)
                .where(
                    and_(
                        _deployments.c.model == model,
                        _deployments.c.target == target,
                        _deployments.c.status == status,
                    )
                )
                .order_by(desc(_deployments.c.id))
                .limit(1)
            )
            .mappings()
            .first()
        )
    return _plain(row) if row is not None else None


def history(meta: Metadata, model: str | None = None, target: str | None = None) -> list[dict[str, Any]]:
    """Deployments, newest first."""
    query = select(_deployments).order_by(desc(_deployments.c.id))
    if model is not None:
        query = query.where(_deployments.c.model == model)
    if target is not None:
        query = query.where(_deployments.c.target == target)
    with meta.begin() as conn:
        rows = conn.execute(query).mappings().all()
    return [_plain(r) for r in rows]


def _plain(row: Any) -> dict[str, Any]:
    doc = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dict(row).items()}
    doc["details"] = dict(doc.get("details") or {})
    return doc
