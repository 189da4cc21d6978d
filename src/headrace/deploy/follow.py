"""Decisions reach what is deployed: after the registry's champion moves (a promotion or a rollback
by the monitor, the CLI or the API), every live deployment of the model is brought to it.

- a bundle that reports home (``HEADRACE_METADATA_URL``) follows its alias by itself within its
  reload period: nothing to do here but say so;
- ``local``: the front is switched to the champion (the standby slot when it already runs that
  version, else a blue/green deploy of the champion's bundle in the same kind of environment);
- ``sagemaker`` / ``kubernetes``: updated through their own APIs (``targets.update_target``); a
  rollback moves all at once. ``azureml``: said, with the command.

Each action is a deployment record and a ledger entry (``headrace.deploy.records``); ``follow``
returns one event per deployment it looked at, for the monitor's output.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import HeadraceError
from ..registry import Registry
from ..workspace import Workspace
from . import local, records

__all__ = ["follow"]

log = logging.getLogger("headrace.deploy.follow")


def follow(
    ws: Workspace, model: str, *, registry: Registry | None = None, urgent: bool = False
) -> list[dict[str, Any]]:
    """Bring the live deployments of ``model`` to its champion; one event per deployment.
    ``urgent`` (a rollback): remote targets move all at once instead of shifting traffic."""
    registry = registry or Registry(ws.meta, ws.artifacts, actor="monitor")
    champion = registry.aliases(model).get("champion")
    if champion is None:
        return []
    events: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in records.history(ws.meta, model):
        if row["status"] != "live":
            continue
        details = dict(row.get("details") or {})
        target = str(row["target"])
        if details.get("reports_home") and details.get("follows") == "champion":
            key = f"{target}:{details.get('instance')}"
            if key not in seen:
                seen.add(key)
                events.append(
                    {
                        "action": "follow",
                        "target": target,
                        "version": champion,
                        "reason": f"{target} ({details.get('instance')}) follows the champion alias itself",
                    }
                )
            continue
        if target in seen:
            continue
        seen.add(target)
        if target == "local":
            event = _follow_local(ws, model, champion, details)
        else:
            event = _follow_remote(ws, model, champion, row, urgent)
        if event is not None:
            events.append(event)
    for event in events:
        log.info("%s %s: %s", model, event["action"], event["reason"])
    return events


def _follow_local(ws: Workspace, model: str, champion: int, details: dict[str, Any]) -> dict[str, Any] | None:
    from .targets import DeployOptions, deploy, rollback

    state = local.LocalState(ws.root / ".headrace" / "deploy" / "local", model)
    current = state.read()
    live, standby = current["live"], current["standby"]
    if live is None or not local.alive(live) or live.version == champion:
        return None
    try:
        if standby is not None and standby.version == champion and local.alive(standby):
            result = rollback(ws, model, "local")
            how = f"switched back to the standby v{champion}"
        else:
            mode = str((details.get("env") or {}).get("mode") or "fresh")
            front = state.front()
            port = int(front["port"]) if front else None
            result = deploy(ws, f"{model}@{champion}", "local", options=DeployOptions(env=mode, port=port))
            how = f"deployed v{champion} next to v{live.version} and switched"
    except HeadraceError as exc:
        return {
            "action": "follow_failed",
            "target": "local",
            "version": champion,
            "reason": f"local still serves v{live.version}: {exc.one_line()}",
        }
    return {
        "action": "follow",
        "target": "local",
        "version": champion,
        "reason": f"local at {result.endpoint}: {how}",
    }


def _follow_remote(
    ws: Workspace, model: str, champion: int, row: dict[str, Any], urgent: bool
) -> dict[str, Any] | None:
    """SageMaker and Kubernetes deployments are moved through their own APIs (``update_target``:
    UpdateEndpoint with traffic shifting and auto-rollback alarms; kubectl set image + rollout);
    a rollback moves all at once. Azure ML is said, with the command that moves it."""
    from .targets import update_target

    target = str(row["target"])
    if int(row["version"]) == champion:
        return None
    if target not in ("sagemaker", "kubernetes"):
        return {
            "action": "follow_skipped",
            "target": target,
            "version": champion,
            "reason": f"{target} serves v{row['version']}; move it with "
            f"'headrace deploy {model}@{champion} --target {target}'",
        }
    try:
        result = update_target(ws, model, champion, target, traffic="all_at_once" if urgent else None)
    except HeadraceError as exc:
        return {
            "action": "follow_failed",
            "target": target,
            "version": champion,
            "reason": f"{target} still serves v{row['version']}: {exc.one_line()}",
        }
    return {
        "action": "follow",
        "target": target,
        "version": champion,
        "reason": f"{target}: v{row['version']} -> v{champion} ({result.status}"
        + (", all at once" if urgent else ", traffic shifted as deployed")
        + ")",
    }
