import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def headrace(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_init_then_status(tmp_path: Path):
    result = headrace("init", "x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "x" / "headrace.yaml").is_file()
    assert sorted(p.name for p in (tmp_path / "x" / "data" / "customers").iterdir()) == [
        "customers-1.csv",
        "customers-2.csv",
    ]
    status = headrace("status", "--json", cwd=tmp_path / "x")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["project"] == "x"
    assert [m["name"] for m in doc["models"]] == ["churn"]


def test_typo_in_project_file_is_one_line_with_exit_2(tmp_path: Path):
    headrace("init", "x", cwd=tmp_path)
    yaml_path = tmp_path / "x" / "headrace.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("features:", "featurs:"))
    result = headrace("status", cwd=tmp_path / "x")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "models.churn.featurs: unknown key (did you mean 'features'?)" in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_project_exit_2(tmp_path: Path):
    result = headrace("status", cwd=tmp_path)
    assert result.returncode == 2
    assert "headrace init" in result.stderr


def test_init_refuses_to_overwrite(tmp_path: Path):
    assert headrace("init", "x", cwd=tmp_path).returncode == 0
    again = headrace("init", "x", cwd=tmp_path)
    assert again.returncode == 2
    assert "--force" in again.stderr


def test_every_command_has_help(tmp_path: Path):
    top = headrace("--help", cwd=tmp_path)
    assert top.returncode == 0
    commands = [
        line.split()[0] for line in top.stdout.split("Commands:")[1].strip().splitlines() if line[:3].strip()
    ]
    assert "status" in commands and "init" in commands
    for command in commands:
        result = headrace(command, "--help", cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage:" in result.stdout
