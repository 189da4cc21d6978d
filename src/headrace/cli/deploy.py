"""``headrace build`` and ``headrace deploy``: bundles, and putting them live with a way back."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UsageError
from ._app import app, console, emit_json, workspace


@app.command("build")
def build_command(
    ctx: typer.Context,
    model: str = typer.Argument(
        ..., help="MODEL or MODEL@VERSION (a number or an alias); default: the champion"
    ),
    out: Path | None = typer.Option(
        None, "--out", help="bundle folder (default: .headrace/bundles/MODEL-vN)"
    ),
    image: str | None = typer.Option(
        None, "--image", help="image name for the manifests (default: headrace-MODEL:vN)"
    ),
    json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """Write a deployable bundle: model + sha256 manifest, pinned requirements, serving entrypoint,
    Dockerfile, Kubernetes manifests, SageMaker model.tar.gz and Azure ML endpoint files."""
    from ..deploy.bundle import build_bundle

    ws = workspace(ctx)
    try:
        bundle = build_bundle(ws, model, out, image=image)
    finally:
        ws.close()
    if json:
        emit_json(bundle.to_dict())
        return
    checks = bundle.info["checks"]
    kube, lint = checks["kubernetes"], checks["dockerfile"]
    console.print(f"bundle of {bundle.model}@{bundle.version} in {bundle.path}", markup=False)
    console.print(f"tarball: {bundle.tarball}", markup=False)
    console.print(f"requirements: {len(bundle.info['requirements'])} pinned packages (requirements.txt)")
    kube_state = kube["skipped"] or ("valid" if kube["ok"] else "INVALID")
    console.print(
        f"kubernetes manifests: {kube_state} ({kube['validator']}, schemas of Kubernetes "
        f"{kube['kubernetes_version']}, {len(kube['checked'])} objects)",
        markup=False,
    )
    issues = lint["issues"]
    lint_state = lint["skipped"] or (f"{len(issues)} issue(s)" if issues else "clean")
    console.print(f"Dockerfile lint: {lint_state} ({lint['linter']})", markup=False)
    for issue in lint["issues"]:
        console.print(f"  {issue}", markup=False)
    console.print(f"next: docker build -t {bundle.info['image']} {bundle.path}", markup=False)


@app.command("deploy")
def deploy_command(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="MODEL or MODEL@VERSION; default version: the champion"),
    target: str = typer.Option("local", "--target", "-t", help="local | kubernetes | sagemaker | azureml"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print every command and request; change nothing"),
    rollback: bool = typer.Option(
        False, "--rollback", help="put the previous deployment on TARGET back live"
    ),
    stop: bool = typer.Option(False, "--stop", help="local: stop the model's live and standby servers"),
    status: bool = typer.Option(False, "--status", help="local: show the live and standby servers"),
    env: str = typer.Option(
        "fresh", "--env", help="local: 'fresh' venv with the pinned requirements, or 'inherit' this one's"
    ),
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="local: the stable port (default: as before, else 8700)"
    ),
    image: str | None = typer.Option(None, "--image", help="container image (kubernetes, sagemaker)"),
    rebuild: bool = typer.Option(False, "--rebuild", help="build the bundle again even if one is there"),
    canary: bool = typer.Option(False, "--canary", help="kubernetes: apply only the canary Deployment"),
    namespace: str = typer.Option("default", "--namespace", help="kubernetes namespace"),
    region: str = typer.Option("us-east-1", "--region", envvar="AWS_REGION", help="sagemaker: AWS region"),
    role: str | None = typer.Option(
        None, "--role", envvar="HEADRACE_SAGEMAKER_ROLE", help="sagemaker: execution role ARN"
    ),
    bucket: str | None = typer.Option(
        None, "--bucket", envvar="HEADRACE_SAGEMAKER_BUCKET", help="sagemaker: S3 bucket"
    ),
    account: str | None = typer.Option(
        None, "--account", envvar="AWS_ACCOUNT_ID", help="sagemaker: AWS account id"
    ),
    instance_type: str | None = typer.Option(
        None, "--instance-type", help="sagemaker / azureml instance type"
    ),
    subscription: str | None = typer.Option(
        None, "--subscription", envvar="AZURE_SUBSCRIPTION_ID", help="azureml: subscription id"
    ),
    resource_group: str | None = typer.Option(
        None, "--resource-group", envvar="AZURE_RESOURCE_GROUP", help="azureml: resource group"
    ),
    aml_workspace: str | None = typer.Option(
        None, "--workspace", envvar="AZUREML_WORKSPACE", help="azureml: workspace name"
    ),
    traffic: int | None = typer.Option(
        None, "--traffic", min=1, max=99, help="azureml: canary share in percent first"
    ),
    json: bool = typer.Option(False, "--json", help="print one JSON document"),
) -> None:
    """Deploy a model version (default: the champion) to a target, or roll it back.

    local: the bundle in its own virtual environment on a loopback port of its own, contract-checked,
    then switched live behind one stable address (--port); the previous version stands by on its own
    port for --rollback. Every local version reports its predictions and feedback to the project.
    kubernetes: kubectl apply when a cluster answers, else the manifests and commands.
    sagemaker / azureml: boto3 / azure-ai-ml with credentials; --dry-run prints the requests without them.
    """
    from ..deploy.azureml import AzureMLOptions
    from ..deploy.kubernetes import KubernetesOptions
    from ..deploy.sagemaker import SageMakerOptions
    from ..deploy.targets import (
        TARGETS,
        DeployOptions,
        deploy,
        local_status,
        stop_local,
    )
    from ..deploy.targets import (
        rollback as do_rollback,
    )

    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}", hint=f"use one of {', '.join(TARGETS)}")
    if sum([rollback, stop, status]) > 1:
        raise UsageError("--rollback, --stop and --status exclude each other", hint="pass one of them")
    if (stop or status) and target != "local":
        raise UsageError(
            "--stop and --status apply to --target local", hint="drop them or use --target local"
        )
    options = DeployOptions(
        env=env,
        port=port,
        image=image,
        rebuild=rebuild,
        canary=canary,
        kubernetes=KubernetesOptions(namespace=namespace),
        sagemaker=SageMakerOptions(
            region=region,
            role=role,
            bucket=bucket,
            account=account,
            image=image,
            instance_type=instance_type or SageMakerOptions.instance_type,
        ),
        azureml=AzureMLOptions(
            subscription=subscription,
            resource_group=resource_group,
            workspace=aml_workspace,
            canary_percent=traffic,
            instance_type=instance_type or AzureMLOptions.instance_type,
        ),
    )
    ws = workspace(ctx)
    try:
        if status:
            doc = local_status(ws, model.partition("@")[0])
            if json:
                emit_json(doc)
            else:
                for slot, info in doc.items():
                    running = "running" if info and info["running"] else "not running"
                    if info is None:
                        line = "none"
                    elif slot == "front":
                        line = f"{info['url']} (pid {info['pid']}, {running}): the stable address"
                    else:
                        line = f"v{info['version']} at {info['url']} (pid {info['pid']}, {running})"
                    console.print(f"{slot}: {line}", markup=False, soft_wrap=True)
            return
        if stop:
            result = stop_local(ws, model.partition("@")[0])
        elif rollback:
            result = do_rollback(ws, model, target, dry_run=dry_run, options=options)
        else:
            result = deploy(ws, model, target, dry_run=dry_run, options=options)
    finally:
        ws.close()
    if json:
        emit_json(result.to_dict())
        return
    for line in result.lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
