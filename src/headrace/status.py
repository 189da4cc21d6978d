"""What ``headrace status`` shows: datasets, recent runs, models and deployments, as plain data."""

from __future__ import annotations

from typing import Any

from sqlalchemy import desc, func, select

from .errors import NotFound
from .metadata import SCHEMA
from .store import QUARANTINE_SUFFIX, Store
from .workspace import Workspace

__all__ = ["dataset_summary", "project_status", "summarize_dataset"]


def summarize_dataset(store: Store, name: str) -> dict[str, Any]:
    """Rows, versions, columns, quarantined rows and the last batch of one dataset (its time a
    datetime); what ``headrace status`` and the dashboard show."""
    info = store.info(name)
    try:
        quarantined = store.info(store.quarantine_name(name)).rows
    except NotFound:
        quarantined = 0
    last = info.last_batch
    return {
        "name": name,
        "rows": info.rows,
        "version": info.version,
        "versions": info.version + 1,
        "columns": info.columns,
        "quarantined_rows": quarantined,
        "last_batch": None
        if last is None
        else {
            "batch_id": last.batch_id,
            "source": last.source,
            "rows": last.rows,
            "at": last.timestamp,
            "version": last.version,
        },
    }


def dataset_summary(ws: Workspace, name: str) -> dict[str, Any]:
    """:func:`summarize_dataset` as plain data (the time as ISO 8601 text)."""
    doc = summarize_dataset(ws.store, name)
    last = doc["last_batch"]
    if last is not None and last["at"] is not None:
        last["at"] = last["at"].isoformat()
    return doc


def project_status(ws: Workspace, limit: int = 10) -> dict[str, Any]:
    names = [d for d in ws.store.datasets() if not d.endswith(QUARANTINE_SUFFIX)]
    datasets = [dataset_summary(ws, n) for n in names]
    t = SCHEMA.tables
    with ws.meta.begin() as conn:
        runs = (
            conn.execute(select(t["ingestion_runs"]).order_by(desc(t["ingestion_runs"].c.id)).limit(limit))
            .mappings()
            .all()
        )
        trainings = (
            conn.execute(select(t["training_runs"]).order_by(desc(t["training_runs"].c.id)).limit(limit))
            .mappings()
            .all()
        )
        versions = (
            conn.execute(
                select(
                    t["model_versions"].c.model,
                    func.count().label("versions"),
                    func.max(t["model_versions"].c.version).label("latest"),
                ).group_by(t["model_versions"].c.model)
            )
            .mappings()
            .all()
        )
        alias_rows = conn.execute(select(t["aliases"])).mappings().all()
        deploys = (
            conn.execute(select(t["deployments"]).order_by(desc(t["deployments"].c.id)).limit(limit))
            .mappings()
            .all()
        )
    alias_map: dict[str, dict[str, int]] = {}
    for row in alias_rows:
        alias_map.setdefault(row["model"], {})[row["alias"]] = row["version"]
    models = [
        {
            "name": v["model"],
            "versions": v["versions"],
            "latest": v["latest"],
            "aliases": alias_map.get(v["model"], {}),
        }
        for v in versions
    ]
    for name in ws.project.models:
        if not any(m["name"] == name for m in models):
            models.append({"name": name, "versions": 0, "latest": None, "aliases": {}})
    return {
        "project": ws.project.project,
        "root": str(ws.root),
        "datasets": datasets,
        "ingestion_runs": [_plain(r) for r in runs],
        "training_runs": [_plain(r) for r in trainings],
        "models": models,
        "deployments": [_plain(r) for r in deploys],
    }


def _plain(row: Any) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dict(row).items()}
