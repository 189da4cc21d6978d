"""A corrupt artifact is never promoted, deployed or served: promote (even --force) refuses it with one
line naming the file, 'headrace models verify' finds it (exit 1), and the registry does not move."""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.cli import main
from headrace.config import ModelSpec
from headrace.datagen import churn
from headrace.deploy import build_bundle
from headrace.errors import ArtifactError
from headrace.registry import Registry
from headrace.scaffold import init_project
from headrace.store import BatchMeta
from headrace.train.run import train_model
from headrace.workspace import Workspace

SPEC = {
    "task": "classification",
    "dataset": "customers",
    "target": "Churn",
    "features": {"drop": ["customerID"]},
    "candidates": [{"estimator": "logistic_regression"}],
    "validation": {"strategy": "holdout"},
}


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out + captured.err


def test_a_corrupt_artifact_is_refused_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = Workspace.open(init_project(tmp_path, name="integrity", rows=100))
    ws.store.append("customers", churn(400, seed=2), BatchMeta("test"))
    registry = Registry(ws.meta, ws.artifacts)
    spec = ModelSpec.model_validate(SPEC)
    first = train_model("churn", spec, store=ws.store, registry=registry, promote=True).version
    second = train_model("churn", spec, store=ws.store, registry=registry).version
    assert first is not None and second is not None
    code, out = _cli(capsys, "--project", str(tmp_path), "models", "verify")
    assert code == 0 and "2 versions checked, 0 bad" in out

    # one byte of the second version's artifact changes on disk
    path = ws.artifacts.path(second.artifact_sha256 or "")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    for extra in ([], ["--force"]):
        code, out = _cli(
            capsys, "--project", str(tmp_path), "models", "promote", f"churn@{second.version}", *extra
        )
        assert code == 1, out
        line = out.strip().splitlines()[-1]
        assert f"churn@{second.version}" in line and "corrupt" in line and str(path) in line
    assert registry.aliases("churn")["champion"] == first.version  # nothing moved
    code, out = _cli(capsys, "--project", str(tmp_path), "models", "verify", "--json")
    assert code == 1 and '"bad": 1' in out
    with pytest.raises(ArtifactError, match="corrupt"):
        build_bundle(ws, f"churn@{second.version}")  # nor is it bundled for a deployment
    ws.close()
