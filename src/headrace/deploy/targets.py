"""``headrace deploy``: one entry point for the four targets, with a dry run and a way back.

Each target builds (or reuses) the model's bundle, then a :class:`Plan`; ``dry_run`` returns the
plan untouched. A real run carries it out: ``local`` starts the bundle next to the live version and
switches after the contract checks; ``kubernetes`` runs kubectl when a cluster answers, else records
the deployment as ``planned`` and prints the commands; ``sagemaker`` and ``azureml`` need boto3 or
azure-ai-ml and credentials. Every real deployment and rollback is a row of ``deployments`` and an
entry of the ledger.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ArtifactError, HeadraceError, NotFound, RegistryError, UsageError
from ..metadata import SCHEMA, utcnow
from ..registry import Registry, split_ref
from ..workspace import Workspace
from . import azureml, kubernetes, local, records, sagemaker
from .bundle import Bundle, build_bundle, resolve_version
from .plan import Plan, Step

__all__ = [
    "STEP",
    "TARGETS",
    "DeployOptions",
    "DeployResult",
    "deploy",
    "local_status",
    "rollback",
    "stop_local",
    "update_target",
]

log = logging.getLogger("headrace.deploy")

TARGETS = ("local", "kubernetes", "sagemaker", "azureml")
STEP = "deploy_step"  # the ledger action of one step of a cloud deployment, update or rollback
_LEDGER = SCHEMA.tables["ledger"]


@dataclass(frozen=True)
class DeployOptions:
    env: str = "fresh"  # local: fresh | inherit
    port: int | None = None  # local: the front's port (default: the one it had, else 8700)
    image: str | None = None
    rebuild: bool = False
    canary: bool = False  # kubernetes: apply only the canary Deployment
    kubernetes: kubernetes.KubernetesOptions = field(default_factory=kubernetes.KubernetesOptions)
    sagemaker: sagemaker.SageMakerOptions = field(default_factory=sagemaker.SageMakerOptions)
    azureml: azureml.AzureMLOptions = field(default_factory=azureml.AzureMLOptions)


@dataclass
class DeployResult:
    model: str
    version: int
    target: str
    action: str  # deploy | update | rollback | stop
    status: str  # live | planned | dry-run | stopped
    endpoint: str | None = None
    bundle: str | None = None
    previous_version: int | None = None
    plan: Plan | None = None
    contract: local.ContractReport | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "target": self.target,
            "action": self.action,
            "status": self.status,
            "endpoint": self.endpoint,
            "bundle": self.bundle,
            "previous_version": self.previous_version,
            "plan": self.plan.to_dict() if self.plan else None,
            "contract": self.contract.to_dict() if self.contract else None,
            "details": self.details,
        }

    def lines(self) -> list[str]:
        head = f"{self.action} {self.model}@{self.version} to {self.target}: {self.status}"
        if self.previous_version is not None:
            head += f" (previous: v{self.previous_version})"
        out = [head]
        if self.endpoint:
            out.append(f"endpoint: {self.endpoint}")
        if self.contract is not None:
            for c in self.contract.checks:
                out.append(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['detail']}")
        if self.plan is not None and self.status in ("dry-run", "planned"):
            out.extend(self.plan.render())
        return out


def _bundle(ws: Workspace, model_ref: str, options: DeployOptions) -> Bundle:
    """The bundle of the version asked for: reused when one is built and intact, else built."""
    name, ref = split_ref(model_ref)
    mv = resolve_version(Registry(ws.meta, ws.artifacts), name, ref)
    folder = (
        ws.root
        / ".headrace"
        / "bundles"
        / f"{''.join(c if c.isalnum() or c in '-_.' else '-' for c in name)}-v{mv.version}"
    )
    if not options.rebuild and (folder / "bundle.json").is_file():
        try:
            existing = Bundle.open(folder)
            existing.verify()
            if existing.info.get("artifact_sha256") == mv.artifact_sha256 and (
                options.image is None or existing.info.get("image") == options.image
            ):
                return existing
        except (ArtifactError, NotFound, ValueError) as exc:
            log.info("rebuilding %s: %s", folder, exc)
    kube = replace(options.kubernetes, image=options.image) if options.image else options.kubernetes
    return build_bundle(ws, f"{name}@{mv.version}", folder, image=options.image, kubernetes_options=kube)


def deploy(
    ws: Workspace,
    model_ref: str,
    target: str,
    *,
    dry_run: bool = False,
    options: DeployOptions | None = None,
) -> DeployResult:
    """Deploy ``MODEL[@VERSION]`` (default: the champion) to ``target``."""
    options = options or DeployOptions()
    if target not in TARGETS:
        raise UsageError(f"unknown deployment target {target!r}", hint=f"use one of {', '.join(TARGETS)}")
    bundle = _bundle(ws, model_ref, options)
    if target == "local":
        return _deploy_local(ws, bundle, options, dry_run)
    if target == "kubernetes":
        plan = kubernetes.kubernetes_plan(
            bundle.info,
            replace(options.kubernetes, image=options.image or bundle.info.get("image")),
            canary=options.canary,
        )
    elif target == "sagemaker":
        so = replace(options.sagemaker, image=options.image) if options.image else options.sagemaker
        plan = sagemaker.sagemaker_plan(bundle.info, so, bundle.example())
    else:
        plan = azureml.azureml_plan(bundle.info, options.azureml, bundle.example())
    plan.settings["bundle"] = str(bundle.path)
    result = DeployResult(
        bundle.model, bundle.version, target, "deploy", "dry-run", bundle=str(bundle.path), plan=plan
    )
    if dry_run:
        return result
    previous = records.latest(ws.meta, bundle.model, target)
    result.previous_version = previous["version"] if previous else None
    _run_remote(ws, result, target, plan, bundle.path)
    return result


def _run_remote(ws: Workspace, result: DeployResult, target: str, plan: Plan, bundle_dir: Path) -> None:
    """Carry a cloud plan out; the deployment row, its ledger entry and one ledger entry per step
    that ran are written whether it succeeds or fails (a failed attempt is resumed by running the
    same deploy again)."""
    steps: list[dict[str, Any]] = []
    what = {"deploy": "deployed", "update": "moved", "rollback": "rolled back"}.get(plan.action, plan.action)
    since = f" from v{result.previous_version}" if result.previous_version is not None else ""
    try:
        status, endpoint, details = _execute(target, plan, bundle_dir, steps)
    except HeadraceError as exc:
        deployment_id = records.record(
            ws.meta,
            model=result.model,
            version=result.version,
            target=target,
            status="failed",
            endpoint=None,
            details={
                "steps": steps,
                "plan": plan.to_dict(),
                "bundle": str(bundle_dir),
                "error": exc.one_line(),
            },
            previous_version=result.previous_version,
            replace_live=False,
            reason=f"{plan.action} to {target} failed: {exc.one_line()}",
        )
        _ledger_steps(ws, result, target, steps, deployment_id)
        raise
    result.status, result.endpoint, result.details = status, endpoint, {**details, "steps": steps}
    deployment_id = records.record(
        ws.meta,
        model=result.model,
        version=result.version,
        target=target,
        status=status,
        endpoint=endpoint,
        details={**details, "steps": steps, "plan": plan.to_dict(), "bundle": str(bundle_dir)},
        previous_version=result.previous_version,
        replace_live=status == "live",
        reason=f"{what} to v{result.version} on {target}{since} ({status})",
    )
    _ledger_steps(ws, result, target, steps, deployment_id)


def _ledger_steps(
    ws: Workspace, result: DeployResult, target: str, steps: list[dict[str, Any]], deployment_id: int
) -> None:
    """One ledger entry per step that ran (skipped ones are in the deployment row's details)."""
    ran = [s for s in steps if s.get("outcome") != "skipped"]
    if not ran:
        return
    now, who = utcnow(), records.actor()
    with ws.meta.begin() as conn:
        for step in ran:
            conn.execute(
                _LEDGER.insert().values(
                    ts=now,
                    model=result.model,
                    action=STEP,
                    version=result.version,
                    previous_version=result.previous_version,
                    reason=f"{target}: {step['step']}: {step['outcome']}"
                    + (f" ({step['error']})" if step.get("error") else ""),
                    actor=who,
                    details={"target": target, "deployment_id": deployment_id, **step},
                )
            )


def _execute(
    target: str, plan: Plan, bundle_dir: Path, steps: list[dict[str, Any]] | None = None
) -> tuple[str, str | None, dict[str, Any]]:
    steps = steps if steps is not None else []
    if target == "kubernetes":
        if plan.action != "update":
            reason = kubernetes.cluster_reachable()
            if reason is not None:
                plan.notes.append(f"not applied: {reason}; run the commands above from {bundle_dir}")
                return "planned", None, {"reason": reason}
        kubernetes.execute(plan, bundle_dir, steps=steps)
        return "live", f"service/{plan.settings['deployment']} -n {plan.settings['namespace']}", {}
    if target == "sagemaker":
        done = sagemaker.execute(plan, bundle_dir, steps=steps)
        return (
            "live",
            str(plan.settings["endpoint_name"]),
            {
                "endpoint_config": done["endpoint_config"],
                "model_name": done["model_name"],
                "answer": done["answer"],
            },
        )
    answer = azureml.execute(plan, bundle_dir)
    return (
        "live",
        str(plan.settings["endpoint_name"]),
        {
            "deployment": plan.settings.get("deployment_name"),
            "answer": answer,
        },
    )


# -- updates (what the monitor calls when the champion moves) -----------------------------------
def _image_for(old_image: str | None, old: int, new: int, given: str | None, target: str) -> str | None:
    """The image of version ``new``: the one given, else the live one's with its ``:v{old}`` tag (the
    convention headrace names images by) moved to ``:v{new}``."""
    if given:
        return given
    if old_image and old_image.endswith(f":v{old}"):
        return old_image[: -len(f":v{old}")] + f":v{new}"
    raise UsageError(
        f"the live {target} deployment runs image {old_image!r}, which is not tagged :v{old}, so the image "
        f"of v{new} cannot be named from it",
        hint="pass image= (the image of the version to move to)",
    )


def update_target(
    ws: Workspace,
    model: str,
    version: int,
    target: str,
    *,
    traffic: str | None = None,
    image: str | None = None,
    options: DeployOptions | None = None,
    dry_run: bool = False,
) -> DeployResult:
    """Move the live deployment of ``model`` on ``target`` (``sagemaker`` or ``kubernetes``) to
    ``version`` through the target's own API, with the settings it was deployed with (region, role,
    bucket, namespace, ...) unless ``options`` says otherwise.

    - sagemaker: the version's model and endpoint configuration are made (or reused), CloudWatch
      alarms on its variant's 5XX share and p99 latency are set, and UpdateEndpoint shifts traffic
      blue/green (``traffic``: canary | linear | all_at_once; default: as deployed) with
      AutoRollbackConfiguration on those alarms; it waits until the endpoint serves the version (a
      rollback by SageMaker is an error naming it).
    - kubernetes: ``kubectl set image`` + ``rollout status``; ``rollout undo`` when it does not finish.

    Each step is a ledger entry (action ``deploy_step``), and the whole a deployment row with its
    own ledger entry, written on failure too. A rollback decided by the monitor is the same call
    with the previous version (``traffic="all_at_once"`` to move at once)."""
    if target not in ("sagemaker", "kubernetes"):
        raise UsageError(
            f"update_target moves sagemaker and kubernetes deployments, not {target!r}",
            hint="use deploy() for local and azureml",
        )
    live = records.latest(ws.meta, model, target)
    if live is None:
        raise RegistryError(
            f"model {model!r} has no live deployment on {target} to update",
            hint=f"deploy it first with 'headrace deploy {model} --target {target}'",
        )
    old = int(live["version"])
    settings = _plan_settings(live)
    if not settings.get("image"):  # a rollback's record: the settings of that version's own deploy
        earlier = next(
            (_plan_settings(r) for r in records.history(ws.meta, model, target)
             if int(r["version"]) == old and _plan_settings(r).get("image")),
            {},
        )  # fmt: skip
        settings = {**earlier, **{k: v for k, v in settings.items() if v is not None}}
    given = options or DeployOptions()
    if target == "sagemaker":
        so = options.sagemaker if options is not None else _sagemaker_options(settings)
        so = replace(
            so,
            image=_image_for(so.image or settings.get("image"), old, version, image, target),
            traffic=traffic or so.traffic,
        )
        bundle = _bundle(ws, f"{model}@{version}", replace(given, image=None))
        plan = sagemaker.sagemaker_plan(bundle.info, so, bundle.example())
        plan.action = "update"
    else:
        ko = (
            options.kubernetes
            if options is not None
            else kubernetes.KubernetesOptions(namespace=str(settings.get("namespace") or "default"))
        )
        ko = replace(ko, image=_image_for(ko.image or settings.get("image"), old, version, image, target))
        bundle = _bundle(ws, f"{model}@{version}", replace(given, image=None))
        plan = kubernetes.update_plan(model, version, ko)
    plan.settings["bundle"] = str(bundle.path)
    result = DeployResult(
        model, version, target, "update", "dry-run", bundle=str(bundle.path), plan=plan, previous_version=old
    )
    if dry_run:
        return result
    _run_remote(ws, result, target, plan, bundle.path)
    return result


def _plan_settings(row: dict[str, Any]) -> dict[str, Any]:
    return dict(((row.get("details") or {}).get("plan") or {}).get("settings") or {})


def _sagemaker_options(settings: dict[str, Any]) -> sagemaker.SageMakerOptions:
    """The options a SageMaker deployment was made with, from its plan's settings."""
    fields = {f: settings[f] for f in _SAGEMAKER_FIELDS if settings.get(f) is not None}
    if str(fields.get("account", "")).startswith("<"):
        fields.pop("account")
    return sagemaker.SageMakerOptions(**fields)


_SAGEMAKER_FIELDS = (
    "region",
    "role",
    "bucket",
    "account",
    "instance_type",
    "instance_count",
    "traffic",
    "canary_percent",
    "linear_percent",
    "wait_seconds",
    "error_rate",
    "p99_latency_ms",
    "alarm_periods",
    "build_image",
    "endpoint_url",
)


# -- local --------------------------------------------------------------------------------------
def _local_root(ws: Workspace) -> Path:
    return ws.root / ".headrace" / "deploy"


def local_plan(bundle: Bundle, env_mode: str, root: Path) -> Plan:
    plan = Plan(
        target="local",
        model=bundle.model,
        version=bundle.version,
        settings={"env": env_mode, "bundle": str(bundle.path)},
    )
    env_dir = str(root / "envs" / f"{env_mode}-<sha256 of requirements.txt>")
    if env_mode == "fresh":
        plan.add(
            Step(
                "command",
                "create a fresh virtual environment (reused while the pins are the same)",
                argv=("python", "-m", "venv", env_dir),
            )
        )
        plan.add(
            Step(
                "command",
                "install the pinned requirements",
                argv=(
                    f"{env_dir}/bin/python",
                    "-m",
                    "pip",
                    "install",
                    "--no-deps",
                    "--no-compile",
                    "-r",
                    "requirements.txt",
                ),
            )
        )
        plan.add(
            Step("command", "check the set is complete", argv=(f"{env_dir}/bin/python", "-m", "pip", "check"))
        )
    else:
        plan.add(
            Step(
                "command",
                "create a virtual environment that sees this one's packages",
                argv=("python", "-m", "venv", "--without-pip", env_dir),
            )
        )
    plan.add(
        Step(
            "check",
            "check every pin of requirements.txt is what the environment imports",
            call="importlib.metadata.version",
            params={"requirements": len(bundle.info.get("requirements") or [])},
        )
    )
    plan.add(
        Step(
            "command",
            "start the bundle on a free loopback port",
            argv=(
                f"{env_dir}/bin/python",
                "serve",
                "--model-dir",
                "model",
                "--host",
                "127.0.0.1",
                "--port",
                "<FREE_PORT>",
            ),
        )
    )
    plan.add(
        Step(
            "check",
            "contract: /ping within 2 s, health routes, /invocations in JSON and CSV",
            call="check_contract",
            params={"records": len(bundle.example())},
        )
    )
    plan.add(
        Step(
            "file",
            "switch: the new version becomes live, the previous one stands by for rollback",
            path=str(root / "local" / f"{bundle.model}.json"),
        )
    )
    return plan


def _home(ws: Workspace, version: int) -> dict[str, str]:
    """A local slot reports home (prediction log, feedback, deployments) pinned to its version:
    which version the front sends traffic to is the switch's business, not the alias's."""
    project = ws.project
    return local.link_env(
        str(project.metadata), str(project.store), str(project.artifacts), alias=str(version)
    )


def _champion(ws: Workspace, model: str) -> int | None:
    try:
        return Registry(ws.meta, ws.artifacts).aliases(model).get("champion")
    except Exception:
        return None


def _deploy_local(ws: Workspace, bundle: Bundle, options: DeployOptions, dry_run: bool) -> DeployResult:
    root = _local_root(ws)
    plan = local_plan(bundle, options.env, root)
    result = DeployResult(
        bundle.model, bundle.version, "local", "deploy", "dry-run", bundle=str(bundle.path), plan=plan
    )
    if dry_run:
        return result
    state = local.LocalState(root / "local", bundle.model)
    python, env_facts = local.ensure_env(bundle, root / "envs", options.env)
    # the front first: it holds its port before the slot picks a free one (503 until a slot is live)
    front = local.ensure_front(state, root / "logs", options.port)
    slot = local.start_bundle(bundle, python, root / "logs", home=_home(ws, bundle.version))
    try:
        startup = local.wait_ready(slot)
        report = local.check_contract(slot.url, bundle.example(), bundle.columns)
    except BaseException:
        local.stop_process(slot)
        raise
    current = state.read()
    live, standby = current["live"], current["standby"]
    details: dict[str, Any] = {
        "port": slot.port,
        "pid": slot.pid,
        "slot_url": slot.url,
        "env": env_facts,
        "startup_seconds": round(startup, 3),
        "contract": report.to_dict(),
        "bundle": str(bundle.path),
        "reports_home": True,
    }
    if not report.ok:
        local.stop_process(slot)
        records.record(
            ws.meta,
            model=bundle.model,
            version=bundle.version,
            target="local",
            status="failed",
            endpoint=slot.url,
            details=details,
            replace_live=False,
            reason=f"contract checks failed: {'; '.join(report.failures())}",
        )
        raise HeadraceError(
            f"{bundle.model}@{bundle.version} failed its contract checks: {'; '.join(report.failures())}",
            hint=f"the live version is unchanged; see the server log {slot.log}",
        )
    details["front"] = front["url"]
    champion = _champion(ws, bundle.model)
    details["registry_champion"] = champion
    live_now = live if live is not None and local.alive(live) else None
    if standby is not None and (live_now is None or standby.pid != live_now.pid):
        local.stop_process(standby)  # the one before the previous: no longer a rollback target
    differs = "" if champion in (None, bundle.version) else f"; the registry's champion is v{champion}"
    slot.deployment_id = records.record(
        ws.meta,
        model=bundle.model,
        version=bundle.version,
        target="local",
        status="live",
        endpoint=front["url"],
        details=details,
        previous_version=live.version if live else None,
        reason=f"contract checks passed; traffic switched at {front['url']}{differs}",
    )
    state.write(slot, live_now)  # the switch: the front's next request goes to this slot
    result.status, result.endpoint, result.contract = "live", front["url"], report
    result.previous_version = live.version if live else None
    result.details = details
    return result


def _restart(ws: Workspace, slot: local.Slot) -> local.Slot:
    bundle = Bundle.open(slot.bundle)
    fresh = local.start_bundle(
        bundle, Path(slot.python), _local_root(ws) / "logs", home=_home(ws, bundle.version)
    )
    try:
        local.wait_ready(fresh)
    except BaseException:
        local.stop_process(fresh)
        raise
    fresh.deployment_id = slot.deployment_id
    return fresh


def rollback(
    ws: Workspace, model: str, target: str, *, dry_run: bool = False, options: DeployOptions | None = None
) -> DeployResult:
    """Put the previous deployment of ``model`` on ``target`` back live (SageMaker: in the region and
    through the endpoint it was deployed with, unless ``options`` are given)."""
    given = options
    options = options or DeployOptions()
    name, _ = split_ref(model)
    if target not in TARGETS:
        raise UsageError(f"unknown deployment target {target!r}", hint=f"use one of {', '.join(TARGETS)}")
    if target == "local":
        return _rollback_local(ws, name, dry_run)
    live = records.latest(ws.meta, name, target)
    if live is None:
        raise RegistryError(
            f"model {name!r} has no live deployment on {target}",
            hint=f"deploy it with 'headrace deploy {name} --target {target}'",
        )
    previous = next(
        (
            r
            for r in records.history(ws.meta, name, target)
            if r["id"] < live["id"] and r["status"] == "replaced" and r["version"] != live["version"]
        ),
        None,
    )
    if previous is None:
        raise RegistryError(
            f"model {name!r} has no previous deployment on {target} to roll back to",
            hint="deploy another version first",
        )
    back = {"version": previous["version"], **dict(previous["details"] or {})}
    if target == "kubernetes":
        plan = kubernetes.rollback_plan(name, live["version"], back, options.kubernetes)
    elif target == "sagemaker":
        settings = dict(((live.get("details") or {}).get("plan") or {}).get("settings") or {})
        so = options.sagemaker if given is not None else _sagemaker_options(settings)
        plan = sagemaker.rollback_plan(name, live["version"], back, so)
    else:
        plan = azureml.rollback_plan(name, live["version"], back, options.azureml)
    result = DeployResult(
        name, previous["version"], target, "rollback", "dry-run", previous_version=live["version"], plan=plan
    )
    if dry_run:
        return result
    bundle_dir = Path(str(back.get("bundle") or ws.root))
    steps: list[dict[str, Any]] = []
    status, endpoint, details = _execute(target, plan, bundle_dir, steps)
    deployment_id = records.record(
        ws.meta,
        model=name,
        version=previous["version"],
        target=target,
        status=status,
        endpoint=endpoint or previous.get("endpoint"),
        details={**details, "steps": steps, "plan": plan.to_dict(), "rolled_back_from": live["version"]},
        action=records.ROLLBACK,
        previous_version=live["version"],
        replace_live=status == "live",
    )
    result.status, result.endpoint, result.details = status, endpoint, {**details, "steps": steps}
    _ledger_steps(ws, result, target, steps, deployment_id)
    return result


def _rollback_local(ws: Workspace, model: str, dry_run: bool) -> DeployResult:
    state = local.LocalState(_local_root(ws) / "local", model)
    current = state.read()
    live, standby = current["live"], current["standby"]
    if live is None or standby is None:
        raise local.no_previous(model)
    plan = Plan(
        target="local",
        model=model,
        version=standby.version,
        action="rollback",
        settings={"from_version": live.version},
    )
    plan.add(
        Step(
            "check",
            f"v{standby.version} is still running (restarted from its bundle if not)",
            call="check_contract",
            params={"url": standby.url},
        )
    )
    plan.add(
        Step(
            "file",
            f"switch: v{standby.version} becomes live; v{live.version} is stopped",
            path=str(state.path),
        )
    )
    result = DeployResult(
        model, standby.version, "local", "rollback", "dry-run", previous_version=live.version, plan=plan
    )
    if dry_run:
        return result
    restored = standby if local.alive(standby) else _restart(ws, standby)
    bundle = Bundle.open(restored.bundle)
    report = local.check_contract(restored.url, bundle.example(), bundle.columns)
    if not report.ok:
        raise HeadraceError(
            f"v{restored.version} of {model} fails its contract checks, so it was not restored: "
            + "; ".join(report.failures()),
            hint=f"v{live.version} stays live; see {restored.log}",
        )
    registry_note = _agree_on_rollback(ws, model, left=live.version, restored=restored.version)
    state.write(restored, None)  # the switch first: the front sends the next request to the restored
    front = local.ensure_front(state, _local_root(ws) / "logs")
    restored.deployment_id = records.record(
        ws.meta,
        model=model,
        version=restored.version,
        target="local",
        status="live",
        endpoint=front["url"],
        details={
            "port": restored.port,
            "pid": restored.pid,
            "slot_url": restored.url,
            "front": front["url"],
            "bundle": restored.bundle,
            "contract": report.to_dict(),
            "rolled_back_from": live.version,
            "registry": registry_note,
        },
        action=records.ROLLBACK,
        previous_version=live.version,
        reason=f"rolled back from v{live.version}; {registry_note}",
    )
    local.stop_process(live)  # uvicorn finishes what it is answering; new requests went elsewhere
    result.status, result.endpoint, result.contract = "live", front["url"], report
    result.details = {"port": restored.port, "pid": restored.pid, "registry": registry_note}
    return result


def _agree_on_rollback(ws: Workspace, model: str, *, left: int, restored: int) -> str:
    """A deploy rollback and the registry's champion agree: when the version left was the champion,
    the champion is rolled back too; whatever still differs is said (and recorded by the caller)."""
    registry = Registry(ws.meta, ws.artifacts)
    champion = _champion(ws, model)
    if champion == left:
        try:
            champion = registry.rollback(
                model, reason=f"deploy rollback on local from v{left} to v{restored}"
            ).version
        except RegistryError as exc:
            return f"the registry's champion stays v{left} ({exc.one_line()})"
    if champion == restored:
        return f"the registry's champion is v{restored} too"
    if champion is None:
        return "the registry has no champion"
    return f"the registry's champion is v{champion}, local serves v{restored}"


def local_status(ws: Workspace, model: str) -> dict[str, Any]:
    """The local switch of ``model``: its live and standby slots, and whether each still runs."""
    switch = local.LocalState(_local_root(ws) / "local", model)
    state = switch.read()
    doc: dict[str, Any] = {
        k: None if s is None else {**s.to_dict(), "running": local.alive(s)} for k, s in state.items()
    }
    front = switch.front()
    doc["front"] = (
        None
        if front is None
        else {**front, "url": f"http://127.0.0.1:{front['port']}", "running": local.front_alive(front)}
    )
    return doc


def stop_local(ws: Workspace, model: str) -> DeployResult:
    """Stop the local front, live and standby processes of ``model`` (by their process ids)."""
    state = local.LocalState(_local_root(ws) / "local", model)
    current = state.read()
    live = current["live"]
    local.stop_front(state)
    stopped = [
        s.version for s in (current["live"], current["standby"]) if s is not None and local.stop_process(s)
    ]
    if live is not None and live.deployment_id is not None:
        records.set_status(ws.meta, live.deployment_id, "stopped")
    state.write(None, None)
    return DeployResult(
        model, live.version if live else 0, "local", "stop", "stopped", details={"stopped_versions": stopped}
    )
