"""KServe InferenceService validated offline against (a transcribed subset of) its CRD schema, and the
Helm chart rendered with its default values compared with the kustomize files' objects."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from headrace.deploy import kubernetes
from headrace.deploy.kubernetes import KubernetesOptions, helm_chart, inference_service, manifests, render
from headrace.errors import UsageError

SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "kserve_inferenceservice_v1beta1.schema.json").read_text()
)
OPTIONS = KubernetesOptions(image="registry.example/churn:v3", namespace="ml", replicas=3, max_replicas=7)


def _errors(doc: dict[str, Any]) -> list[str]:
    return [e.message for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(doc)]


def test_inference_service_validates_against_the_crd_schema() -> None:
    isvc = inference_service("churn", 3, OPTIONS, canary_percent=10)
    assert _errors(isvc) == []
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (3, 7)
    [container] = predictor["containers"]
    assert container["name"] == kubernetes.KSERVE_CONTAINER and container["image"] == OPTIONS.image
    assert {"name": "PROTOCOL", "value": "v2"} in container["env"]
    assert isvc["metadata"]["labels"]["serving.kserve.io/protocol-version"] == "v2"
    assert isvc["metadata"]["namespace"] == "ml"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"


def test_the_schema_check_catches_what_kserve_would_refuse() -> None:
    isvc = inference_service("churn", 3, OPTIONS)
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["canaryTrafficPercent"] = 150
    assert any("150" in e for e in _errors(bad))
    bad = copy.deepcopy(isvc)
    del bad["spec"]["predictor"]["containers"][0]["name"]
    assert any("'name' is a required property" in e for e in _errors(bad))
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["canaryTraficPercent"] = 10  # misspelt: pruned by the API server
    assert any("canaryTraficPercent" in e for e in _errors(bad))
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["scaleMetric"] = "gpu"
    assert any("gpu" in e for e in _errors(bad))
    with pytest.raises(UsageError, match=r"0\.\.100"):
        inference_service("churn", 3, OPTIONS, canary_percent=101)


_EXPR = re.compile(r"\{\{(-?)\s*(.*?)\s*\}\}")


def render_chart(templates: dict[str, str], values: dict[str, Any]) -> list[dict[str, Any]]:
    """A tiny Helm renderer for what the chart uses: ``{{ .Values.K }}`` (a scalar) and
    ``{{- toYaml .Values.K | nindent N }}``; anything else is an error, so the chart cannot grow
    template logic this test would not render."""

    def value(path: str) -> Any:
        assert path.startswith(".Values."), path
        out: Any = values
        for part in path.removeprefix(".Values.").split("."):
            out = out[part]
        return out

    docs: list[dict[str, Any]] = []
    for text in templates.values():
        rendered = ""
        pos = 0
        for match in _EXPR.finditer(text):
            before = text[pos : match.start()]
            chomp, expr = match.group(1), match.group(2)
            if chomp:
                before = before.rstrip()
            rendered += before
            toyaml = re.fullmatch(r"toYaml (\S+) \| nindent (\d+)", expr)
            if toyaml:
                block = yaml.safe_dump(value(toyaml.group(1)), sort_keys=False).rstrip("\n")
                pad = " " * int(toyaml.group(2))
                rendered += "\n" + "\n".join(pad + line for line in block.splitlines())
            elif re.fullmatch(r"\.Values\.[A-Za-z.]+", expr):
                rendered += (
                    yaml.safe_dump(value(expr), default_flow_style=True).strip().removesuffix("...").strip()
                )
            else:
                raise AssertionError(f"template expression the tiny renderer does not know: {expr}")
            pos = match.end()
        rendered += text[pos:]
        docs.extend(d for d in yaml.safe_load_all(rendered) if d)
    return docs


def _key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def _kustomize(folder: Path) -> list[dict[str, Any]]:
    """The kustomize output: ``kubectl kustomize`` where kubectl is installed, else the resources the
    kustomization lists, read as they are (the kustomization has no patches or transformers)."""
    if shutil.which("kubectl"):
        done = subprocess.run(
            ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=True
        )
        return [d for d in yaml.safe_load_all(done.stdout) if d]
    listed = yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    return [d for f in listed for d in yaml.safe_load_all((folder / f).read_text()) if d]


def test_the_helm_chart_renders_the_kustomize_manifests(tmp_path: Path) -> None:
    folder = tmp_path / "kubernetes"
    folder.mkdir()
    for name, text in render(manifests("churn", 3, OPTIONS)).items():
        (folder / name).write_text(text)
    expected = sorted(_kustomize(folder), key=_key)
    assert [k for k, _ in map(_key, expected)] == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]

    chart = helm_chart("churn", 3, OPTIONS)
    name = kubernetes.app_name("churn")
    meta = yaml.safe_load(chart[f"{name}/Chart.yaml"])
    assert meta["apiVersion"] == "v2" and meta["name"] == name and meta["appVersion"] == "v3"
    values = yaml.safe_load(chart[f"{name}/values.yaml"])
    templates = {k: v for k, v in chart.items() if "/templates/" in k}
    assert sorted(render_chart(templates, values), key=_key) == expected

    # the values are what an install overrides
    values.update(image="registry.example/churn:v4", replicas=5)
    docs = {d["kind"]: d for d in render_chart(templates, values)}
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/churn:v4"
    assert (
        docs["Deployment"]["spec"]["replicas"] == docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 5
    )
