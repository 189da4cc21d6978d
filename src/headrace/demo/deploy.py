"""The demo's deploy stage: bundle the churn champion, deploy it locally, check the contract.

The local deployment stays up for the monitor stage, which runs the closed loop against it (the
bundle reports home), and stops it.

The local deployment uses ``env="inherit"`` (a new venv over this environment's packages, every pin
checked) because installing the pinned requirements into a fresh venv takes a minute or more; that
is what ``headrace deploy churn --target local`` does by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from ..deploy.bundle import build_bundle
from ..deploy.plan import Plan
from ..deploy.targets import DeployOptions, deploy, stop_local

if TYPE_CHECKING:
    from . import DemoContext

__all__ = ["demo_stage"]


def _calls(plan: Plan | None) -> str:
    if plan is None:
        return ""
    return ", ".join(s.call or " ".join(s.argv[:2]) for s in plan.steps)


def demo_stage(ctx: DemoContext) -> list[str]:
    ws = ctx.ws
    bundle = build_bundle(ws, "churn")
    checks = bundle.info["checks"]
    kube, lint = checks["kubernetes"], checks["dockerfile"]
    issues = lint["issues"]
    lint_state = lint["skipped"] or (f"{len(issues)} issues" if issues else "clean")
    kube_state = kube["skipped"] or ("valid" if kube["ok"] else "INVALID")
    lines = [
        f"bundle of churn@{bundle.version}: {bundle.path.relative_to(ws.root)} (+ {bundle.tarball.name})",
        f"  {len(bundle.info['requirements'])} pinned packages; Dockerfile, Kubernetes, SageMaker, "
        "Azure ML files",
        f"  Kubernetes manifests: {kube_state} (schemas of {kube['kubernetes_version']}); "
        f"Dockerfile lint: {lint_state}",
    ]
    from ..deploy.local import free_port

    result = deploy(ws, "churn", "local", options=DeployOptions(env="inherit", port=free_port()))
    try:
        assert result.contract is not None and result.endpoint is not None
        ping = next(c for c in result.contract.checks if c["name"] == "ping")
        passed = sum(c["ok"] for c in result.contract.checks)
        lines.append(
            f"deployed locally at {result.endpoint} (env: venv over this one's packages, pins checked; "
            f"started in {result.details['startup_seconds']:.1f} s); it reports its predictions home"
        )
        lines.append(
            f"  contract: {passed}/{len(result.contract.checks)} checks passed; /ping in "
            f"{ping['seconds'] * 1000:.0f} ms; /invocations in JSON and CSV agree"
        )
        record = bundle.example()[:1]
        answer = httpx.post(f"{result.endpoint}/invocations", json={"records": record}, timeout=30).json()
        proba = {k: round(v, 3) for k, v in (answer.get("probabilities") or [{}])[0].items()}
        lines.append(f"  POST /invocations -> {answer['predictions'][0]!r} {proba}")
        for target in ("sagemaker", "azureml"):
            plan = deploy(ws, "churn", target, dry_run=True).plan
            lines.append(f"{target} --dry-run: {len(plan.steps) if plan else 0} steps: {_calls(plan)}")
    except BaseException:
        stop_local(ws, "churn")
        raise
    ctx.facts["deploy"] = {"bundle": str(bundle.path), "endpoint": result.endpoint, "version": bundle.version}
    return lines
