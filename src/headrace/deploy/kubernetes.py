"""Kubernetes manifests for a bundle, their validation against the Kubernetes schemas, and kubectl.

The manifests: a Deployment (stable track) with readiness and liveness probes on the serving app's
``/health/ready`` and ``/health/live``, resources, a non-root read-only security context; a canary
Deployment of the same version (one replica, ``track: canary``) that the Service also selects, so it
takes a share of traffic next to the stable replicas; a HorizontalPodAutoscaler (autoscaling/v2) on
CPU; a Service; and a PodDisruptionBudget. They are validated offline with ``kubernetes-validate``,
which ships the OpenAPI-derived JSON schemas of each Kubernetes release (strict: unknown fields are
errors); where it is not installed the check is reported as skipped.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import HeadraceError, UsageError
from .plan import Plan, Step

__all__ = [
    "KubernetesOptions",
    "ValidationReport",
    "cluster_reachable",
    "execute",
    "helm_chart",
    "inference_service",
    "kubernetes_plan",
    "manifests",
    "rollback_plan",
    "update_plan",
    "validate_manifests",
]

log = logging.getLogger("headrace.deploy.kubernetes")

PORT = 8080


@dataclass(frozen=True)
class KubernetesOptions:
    image: str | None = None
    namespace: str = "default"
    replicas: int = 2
    max_replicas: int = 10
    cpu_target: int = 70
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "512Mi"
    memory_limit: str = "1Gi"
    build_image: bool = True  # False: the image is in its registry already (update_plan skips docker)
    rollout_timeout_s: int = 300


def app_name(model: str) -> str:
    """A DNS-1123 name for the model's objects."""
    text = "".join(c if c.isalnum() else "-" for c in model.lower()).strip("-")
    return f"headrace-{text}"[:50].rstrip("-")


def default_image(model: str, version: int) -> str:
    return f"{app_name(model)}:v{version}"


def _labels(model: str, version: int, track: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": app_name(model),
        "app.kubernetes.io/version": f"v{version}",
        "app.kubernetes.io/part-of": "headrace",
        "app.kubernetes.io/managed-by": "headrace",
        "headrace.dev/model": app_name(model).removeprefix("headrace-"),
    }
    if track:
        labels["headrace.dev/track"] = track
    return labels


def _deployment(model: str, version: int, image: str, o: KubernetesOptions, track: str) -> dict[str, Any]:
    name = app_name(model) if track == "stable" else f"{app_name(model)}-canary"
    selector = {"app.kubernetes.io/name": app_name(model), "headrace.dev/track": track}
    probe = {"port": "http"}
    container = {
        "name": "model",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["serve"],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": [
            {"name": "HEADRACE_MODEL_DIR", "value": "/opt/ml/model"},
            {"name": "HEADRACE_LOG_FORMAT", "value": "json"},
            {"name": "HEADRACE_TRACK", "value": track},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/health/ready", **probe},
            "initialDelaySeconds": 3,
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health/live", **probe},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "httpGet": {"path": "/health/live", **probe},
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "resources": {
            "requests": {"cpu": o.cpu_request, "memory": o.memory_request},
            "limits": {"cpu": o.cpu_limit, "memory": o.memory_limit},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": _labels(model, version, track)},
        "spec": {
            "replicas": o.replicas if track == "stable" else 1,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": _labels(model, version, track),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def manifests(
    model: str, version: int, options: KubernetesOptions | None = None
) -> dict[str, list[dict[str, Any]]]:
    """File name -> the Kubernetes objects it holds."""
    o = options or KubernetesOptions()
    image = o.image or default_image(model, version)
    name = app_name(model)
    meta = {"labels": _labels(model, version)}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, **meta},
        "spec": {
            "type": "ClusterIP",
            # both tracks: the canary's share of traffic is its share of the ready replicas
            "selector": {"app.kubernetes.io/name": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, **meta},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": o.replicas,
            "maxReplicas": o.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": o.cpu_target},
                    },
                }
            ],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, **meta},
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name, "headrace.dev/track": "stable"}},
        },
    }
    return {
        "deployment.yaml": [_deployment(model, version, image, o, "stable")],
        "service.yaml": [service],
        "hpa.yaml": [hpa],
        "pdb.yaml": [pdb],
        "canary.yaml": [_deployment(model, version, image, o, "canary")],
    }


def render(files: Mapping[str, list[dict[str, Any]]]) -> dict[str, str]:
    out = {name: yaml.safe_dump_all(docs, sort_keys=False) for name, docs in files.items()}
    out["kustomization.yaml"] = yaml.safe_dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"],
        },
        sort_keys=False,
    )
    return out


@dataclass
class ValidationReport:
    """Which objects were checked against which Kubernetes version's schemas, and what failed."""

    validator: str
    kubernetes_version: str | None
    checked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "validator": self.validator,
            "kubernetes_version": self.kubernetes_version,
            "checked": self.checked,
            "errors": self.errors,
            "skipped": self.skipped,
            "ok": self.ok,
        }


def validate_manifests(
    files: Mapping[str, list[dict[str, Any]]], kubernetes_version: str | None = None
) -> ValidationReport:
    """Every object checked against the strict JSON schema of its kind (kubernetes-validate)."""
    try:
        import kubernetes_validate  # type: ignore[import-untyped,unused-ignore]
        from kubernetes_validate import utils as kv_utils  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return ValidationReport(
            "kubernetes-validate",
            None,
            skipped="kubernetes-validate is not installed (pip install 'headrace[deploy]')",
        )
    version = kubernetes_version or kv_utils.latest_version()
    report = ValidationReport("kubernetes-validate", version)
    for file_name, docs in files.items():
        for doc in docs:
            label = f"{file_name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path) or "(root)"
                report.errors.append(f"{label} at {path}: {exc.message}")
            except (
                kubernetes_validate.SchemaNotFoundError,
                kubernetes_validate.VersionNotSupportedError,
            ) as exc:
                report.errors.append(f"{label}: {exc.message}")
            report.checked.append(label)
    return report


def cluster_reachable() -> str | None:
    """None when kubectl is installed and its current context answers, else why not."""
    if shutil.which("kubectl") is None:
        return "kubectl is not installed"
    context = subprocess.run(
        ["kubectl", "config", "current-context"], capture_output=True, text=True, check=False
    )
    if context.returncode != 0:
        return "kubectl has no current context (no cluster configured)"
    probe = subprocess.run(
        ["kubectl", "version", "--request-timeout=5s", "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"the cluster of context {context.stdout.strip()!r} does not answer"
    return None


def kubernetes_plan(info: Mapping[str, Any], options: KubernetesOptions, *, canary: bool = False) -> Plan:
    model, version = str(info["model"]), int(info["version"])
    image = options.image or default_image(model, version)
    name = app_name(model)
    plan = Plan(
        target="kubernetes",
        model=model,
        version=version,
        settings={"image": image, "namespace": options.namespace, "deployment": name, "canary": canary},
    )
    plan.add(
        Step("command", "build the serving image from the bundle", argv=("docker", "build", "-t", image, "."))
    )
    if "/" in image.split(":")[0]:
        plan.add(Step("command", "push the image to its registry", argv=("docker", "push", image)))
    else:
        plan.notes.append(
            f"image {image} has no registry: load it into the cluster's nodes (kind load docker-image, "
            "minikube image load) or pass --image REGISTRY/NAME:TAG"
        )
    if canary:
        plan.add(
            Step(
                "command",
                "start the canary next to the stable replicas",
                argv=("kubectl", "apply", "-n", options.namespace, "-f", "kubernetes/canary.yaml"),
            )
        )
        plan.add(
            Step(
                "check",
                "wait for the canary",
                argv=(
                    "kubectl",
                    "rollout",
                    "status",
                    "-n",
                    options.namespace,
                    f"deployment/{name}-canary",
                    "--timeout=300s",
                ),
            )
        )
        plan.notes.append(
            "promote the canary with 'headrace deploy MODEL --target kubernetes' (applies the stable "
            "deployment at this version), then: "
            f"kubectl delete -n {options.namespace} deployment/{name}-canary"
        )
        return plan
    plan.add(
        Step(
            "command",
            "apply the Deployment, Service, HorizontalPodAutoscaler and PodDisruptionBudget",
            argv=("kubectl", "apply", "-n", options.namespace, "-k", "kubernetes/"),
        )
    )
    plan.add(
        Step(
            "check",
            "wait for the rolling update (readiness on /health/ready)",
            argv=(
                "kubectl",
                "rollout",
                "status",
                "-n",
                options.namespace,
                f"deployment/{name}",
                "--timeout=300s",
            ),
        )
    )
    return plan


def rollback_plan(model: str, version: int, previous: Mapping[str, Any], options: KubernetesOptions) -> Plan:
    name = app_name(model)
    plan = Plan(
        target="kubernetes",
        model=model,
        version=int(previous["version"]),
        action="rollback",
        settings={"namespace": options.namespace, "deployment": name, "from_version": version},
    )
    plan.add(
        Step(
            "command",
            "undo the last rollout (Kubernetes keeps the previous ReplicaSet)",
            argv=("kubectl", "rollout", "undo", "-n", options.namespace, f"deployment/{name}"),
        )
    )
    plan.add(
        Step(
            "check",
            "wait for the rollback",
            argv=(
                "kubectl",
                "rollout",
                "status",
                "-n",
                options.namespace,
                f"deployment/{name}",
                "--timeout=300s",
            ),
        )
    )
    return plan


def update_plan(model: str, version: int, options: KubernetesOptions) -> Plan:
    """Move the model's live Deployment to ``version`` in place: ``kubectl set image`` (a rolling
    update behind the readiness probe), the change cause for ``kubectl rollout history``, then
    ``kubectl rollout status``; when the rollout does not finish, ``kubectl rollout undo`` puts the
    previous ReplicaSet back and waits for it."""
    image = options.image or default_image(model, version)
    name = app_name(model)
    ns = options.namespace
    timeout = f"--timeout={options.rollout_timeout_s}s"
    plan = Plan(
        target="kubernetes",
        model=model,
        version=version,
        action="update",
        settings={"image": image, "namespace": ns, "deployment": name, "canary": False},
    )
    if options.build_image:
        plan.add(
            Step(
                "command",
                "build the serving image from the bundle",
                argv=("docker", "build", "-t", image, "."),
            )
        )
        if "/" in image.split(":")[0]:
            plan.add(Step("command", "push the image to its registry", argv=("docker", "push", image)))
    plan.add(
        Step(
            "command",
            f"roll the Deployment to v{version}",
            argv=("kubectl", "set", "image", "-n", ns, f"deployment/{name}", f"model={image}"),
        )
    )
    plan.add(
        Step(
            "command",
            "say why, for kubectl rollout history",
            argv=(
                "kubectl",
                "annotate",
                "-n",
                ns,
                f"deployment/{name}",
                f"kubernetes.io/change-cause=headrace: {model} v{version} ({image})",
                "--overwrite",
            ),
        )
    )
    plan.add(
        Step(
            "check",
            "wait for the rolling update (readiness on /health/ready)",
            argv=("kubectl", "rollout", "status", "-n", ns, f"deployment/{name}", timeout),
        )
    )
    plan.add(
        Step(
            "command",
            "the rollout did not finish: undo it (the previous ReplicaSet comes back)",
            argv=("kubectl", "rollout", "undo", "-n", ns, f"deployment/{name}"),
            when="rollout failed",
        )
    )
    plan.add(
        Step(
            "check",
            "wait for the undo",
            argv=("kubectl", "rollout", "status", "-n", ns, f"deployment/{name}", timeout),
            when="rollout failed",
        )
    )
    return plan


def execute(
    plan: Plan, bundle_dir: Path, *, steps: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Run the plan's commands (docker, kubectl) from the bundle folder; one record per step.

    Every program the plan needs is looked for first, so a missing one stops the plan before it
    changes anything. A failed ``rollout status`` runs the steps marked ``rollout failed`` (the undo)
    and then raises, naming what was undone."""
    records: list[dict[str, Any]] = steps if steps is not None else []
    programs = sorted({s.argv[0] for s in plan.steps if s.argv})
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        raise UsageError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed, so the "
            f"{plan.action} of {plan.model}@{plan.version} on Kubernetes cannot run",
            hint=f"install {', '.join(missing)} (with a context for the cluster), or run the plan's "
            "commands (--dry-run prints them) where they are",
        )
    failure: str | None = None
    for step in plan.steps:
        started = time.monotonic()
        if (step.when == "rollout failed") != (failure is not None):
            records.append({"step": step.title, "call": shlex.join(step.argv), "outcome": "skipped"})
            continue
        log.info("kubernetes: %s: %s", step.title, step.render())
        done = subprocess.run(list(step.argv), cwd=bundle_dir, capture_output=True, text=True, check=False)
        tail = " ".join((done.stderr or done.stdout or "").split())[-300:]
        record = {
            "step": step.title,
            "call": shlex.join(step.argv),
            "outcome": "done" if done.returncode == 0 else "failed",
            "seconds": round(time.monotonic() - started, 3),
        }
        if done.returncode != 0:
            record["error"] = tail
        records.append(record)
        if done.returncode == 0:
            continue
        if (
            step.argv[:3] == ("kubectl", "rollout", "status")
            and failure is None
            and any(s.when == "rollout failed" for s in plan.steps)
        ):
            failure = f"{step.render()} failed: {tail}"
            continue
        raise HeadraceError(
            f"Kubernetes step '{step.title}' failed: {tail or f'exit status {done.returncode}'}"
            + (f" (after: {failure})" if failure else ""),
            hint="see kubectl describe deployment and the pods' events",
        )
    if failure is not None:
        raise HeadraceError(
            f"the {plan.action} of {plan.model} to v{plan.version} on Kubernetes did not finish and was "
            f"undone with kubectl rollout undo: {failure}",
            hint="the previous version serves again; see the new pods' events and logs",
        )
    return records


# -- KServe and Helm ---------------------------------------------------------------------------
KSERVE_CONTAINER = "kserve-container"  # the name KServe gives (and expects of) a predictor's container


def inference_service(
    model: str, version: int, options: KubernetesOptions | None = None, *, canary_percent: int = 10
) -> dict[str, Any]:
    """A KServe ``InferenceService`` (serving.kserve.io/v1beta1) running the bundle's image as a
    custom predictor container. The server speaks the Open Inference Protocol v2 (``/v2/...``), said
    by ``PROTOCOL=v2`` and the ``serving.kserve.io/protocol-version`` label, and answers KServe's
    probes on the same health routes as the Deployment. ``canaryTrafficPercent``: the share of
    requests the newest revision takes when the service is updated to a new version (KServe keeps
    the previous revision for the rest until it is promoted)."""
    if not 0 <= canary_percent <= 100:
        raise UsageError(f"canary traffic percent must be 0..100; got {canary_percent}")
    o = options or KubernetesOptions()
    stable = _deployment(model, version, o.image or default_image(model, version), o, "stable")
    pod = stable["spec"]["template"]
    container = dict(pod["spec"]["containers"][0])
    container["name"] = KSERVE_CONTAINER
    container["env"] = [*container["env"][:2], {"name": "PROTOCOL", "value": "v2"}]
    container.pop("volumeMounts", None)  # KServe mounts its own; /tmp stays writable there
    container["securityContext"] = {**container["securityContext"], "readOnlyRootFilesystem": False}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": app_name(model),
            "namespace": o.namespace,
            "labels": {**_labels(model, version), "serving.kserve.io/protocol-version": "v2"},
            "annotations": {
                **pod["metadata"]["annotations"],
                "serving.kserve.io/enable-prometheus-scraping": "true",
            },
        },
        "spec": {
            "predictor": {
                "minReplicas": o.replicas,
                "maxReplicas": o.max_replicas,
                "scaleMetric": "cpu",
                "scaleTarget": o.cpu_target,
                "canaryTrafficPercent": canary_percent,
                "containers": [container],
            }
        },
    }


# the values a chart's defaults hold, and where they go in the kustomize objects
_HELM_VALUES = ("image", "replicas", "maxReplicas", "cpuTarget", "resources")


def helm_chart(model: str, version: int, options: KubernetesOptions | None = None) -> dict[str, str]:
    """A minimal Helm chart (relative path -> text) whose default values render exactly the
    kustomize files' objects: the same Deployment, Service, HorizontalPodAutoscaler and
    PodDisruptionBudget; ``image``, ``replicas``, ``maxReplicas``, ``cpuTarget`` and ``resources``
    are values to override (``helm install NAME helm/CHART --set image=...``)."""
    o = options or KubernetesOptions()
    image = o.image or default_image(model, version)
    marked = KubernetesOptions(**{**o.__dict__, "image": "__image__"})
    files = manifests(model, version, marked)
    deployment = files["deployment.yaml"][0]
    deployment["spec"]["replicas"] = "__replicas__"
    deployment["spec"]["template"]["spec"]["containers"][0]["resources"] = "__resources__"
    hpa = files["hpa.yaml"][0]["spec"]
    hpa["minReplicas"], hpa["maxReplicas"] = "__replicas__", "__maxReplicas__"
    hpa["metrics"][0]["resource"]["target"]["averageUtilization"] = "__cpuTarget__"
    values = {
        "image": image,
        "replicas": o.replicas,
        "maxReplicas": o.max_replicas,
        "cpuTarget": o.cpu_target,
        "resources": {
            "requests": {"cpu": o.cpu_request, "memory": o.memory_request},
            "limits": {"cpu": o.cpu_limit, "memory": o.memory_limit},
        },
    }
    name = app_name(model)
    out = {
        f"{name}/Chart.yaml": yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": name,
                "description": f"headrace model {model}, version {version}",
                "type": "application",
                "version": f"0.{version}.0",
                "appVersion": f"v{version}",
            },
            sort_keys=False,
        ),
        f"{name}/values.yaml": yaml.safe_dump(values, sort_keys=False),
    }
    for file_name in ("deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"):
        text = yaml.safe_dump_all(files[file_name], sort_keys=False)
        for key in _HELM_VALUES:
            if key == "resources":  # a mapping: indented under its key
                text = _block_value(text, "__resources__", ".Values.resources")
            else:
                text = text.replace(f"__{key}__", "{{ .Values." + key + " }}")
        out[f"{name}/templates/{file_name}"] = text
    return out


def _block_value(text: str, marker: str, path: str) -> str:
    lines = []
    for line in text.splitlines():
        if line.rstrip().endswith(f": {marker}"):
            key, _, _ = line.partition(f": {marker}")
            indent = len(key) - len(key.lstrip()) + 2
            lines.append(f"{key}:")
            lines.append(f"{{{{- toYaml {path} | nindent {indent} }}}}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"
