"""Safe config parsing and secrets that are never printed, through the real CLI.

- a billion-laughs YAML document, one nested too deeply and one with a duplicate key are refused with
  one line (exit 2) before anything expands them;
- a secret from ``${ENV}`` put in the wrong field, and one inside an HTTP source's URL, appear in no
  output of a verbose run (errors, log lines, the status command), only ``***``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from headrace.config import MAX_YAML_VALUES, load_project
from headrace.errors import ConfigError

SECRET = "hr-Secret-7f3a9c1e"


def _cli(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headrace", "--project", str(folder), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_a_billion_laughs_document_is_refused_at_once(tmp_path: Path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        name, prev = chr(97 + i), chr(96 + i)
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    (tmp_path / "headrace.yaml").write_text("project: p\nx:\n" + "\n".join("  " + x for x in lines) + "\n")
    # counted, not expanded: 9 ** 9 lists of "lol" would never finish
    with pytest.raises(ConfigError, match=r"expands to [\d,]{11} values through its aliases"):
        load_project(tmp_path)
    result = _cli(tmp_path, "status")
    assert result.returncode == 2 and "aliases" in result.stderr and "Traceback" not in result.stderr
    assert MAX_YAML_VALUES < 3_000_000


def test_deep_nesting_and_duplicate_keys_are_one_line_errors(tmp_path: Path):
    (tmp_path / "headrace.yaml").write_text("project: p\nx: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_project(tmp_path)
    (tmp_path / "headrace.yaml").write_text("project: p\nx: " + "[" * 80 + "]" * 80 + "\n")
    with pytest.raises(ConfigError, match="nested 81 levels deep"):
        load_project(tmp_path)
    (tmp_path / "headrace.yaml").write_text("project: p\nserving:\n  port: 8001\n  port: 8002\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'port' \(lines 3 and 4\)"):
        load_project(tmp_path)
    result = _cli(tmp_path, "status")
    assert result.returncode == 2 and "duplicate key 'port' (lines 3 and 4)" in result.stderr
    # anchors and merge keys as people use them still work
    (tmp_path / "headrace.yaml").write_text(
        "project: p\nsources:\n  s:\n    kind: file\n    path: d/*.csv\n    dataset: d\n"
        "    columns: {a: &base {type: int, min: 0}, b: {<<: *base, max: 9}}\n"
    )
    columns = load_project(tmp_path).sources["s"].columns
    assert columns["b"].min == 0 and columns["b"].max == 9


def test_a_secret_is_masked_in_every_output(tmp_path: Path):
    env = {"HR_TEST_SECRET": SECRET}
    # the wrong field: the validation error would show the value
    (tmp_path / "headrace.yaml").write_text("project: p\nserving:\n  port: ${HR_TEST_SECRET}\n")
    wrong = _cli(tmp_path, "status", env=env)
    assert wrong.returncode == 2 and "serving.port" in wrong.stderr
    assert SECRET not in wrong.stdout + wrong.stderr and "***" in wrong.stderr

    # in an HTTP source's URL: the request fails (nothing listens), with retries logged verbosely
    (tmp_path / "headrace.yaml").write_text(
        "project: p\nsources:\n  api:\n    kind: http\n"
        "    url: http://127.0.0.1:9/orders?api_token=${HR_TEST_SECRET}&key2=${HR_TEST_SECRET}\n"
        "    dataset: orders\n    retries: 1\n    backoff: 0.01\n    timeout: 1\n"
    )
    run = _cli(tmp_path, "-vv", "ingest", env=env)
    assert run.returncode != 0
    status = _cli(tmp_path, "-vv", "status", env=env)
    sources = _cli(tmp_path, "datasets", "list", env=env)
    out = run.stdout + run.stderr + status.stdout + status.stderr + sources.stdout + sources.stderr
    assert "127.0.0.1:9" in out  # the failure was reported ...
    assert SECRET not in out  # ... without the secret
