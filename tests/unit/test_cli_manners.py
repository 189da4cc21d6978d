"""CLI manners: --version, shell completion, HEADRACE_PROJECT, --json on every group and command (or a
refusal), errors as JSON under --json, and tables that are tab-separated (or whole) when piped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main

import headrace
from headrace.cli import main
from headrace.cli._app import app, apply_manners


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


@pytest.fixture
def project(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    folder = tmp_path / "proj"
    (folder / "data").mkdir(parents=True)
    (folder / "headrace.yaml").write_text(
        "project: p\nsources:\n  customers:\n    kind: file\n    path: data/*.csv\n    dataset: customers\n"
    )
    lines = ["customerID,tenure,Churn"] + [f"C{i:04d},{i % 72},{'Yes' if i % 3 else 'No'}" for i in range(50)]
    (folder / "data" / "a.csv").write_text("\n".join(lines) + "\n")
    code, _, err = cli(capsys, "--project", str(folder), "ingest")
    assert code == 0, err
    return folder


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"headrace {headrace.__version__}"


def test_headrace_project_names_the_project(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = cli(capsys, "datasets", "list")
    assert code == 2 and "headrace init" in err  # no project here ...
    monkeypatch.setenv("HEADRACE_PROJECT", str(project))
    code, out, err = cli(capsys, "datasets", "list", "--json")
    assert code == 0, err
    assert [d["name"] for d in json.loads(out)] == ["customers"]  # ... until the variable names one


def test_json_on_a_group_reaches_its_command(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = ("--project", str(project))
    outputs = []
    for args in (
        ("datasets", "--json", "list"),
        ("--json", "datasets", "list"),
        ("datasets", "list", "--json"),
        ("datasets", "--json"),
    ):
        code, out, err = cli(capsys, *p, *args)
        assert code == 0, (args, err)
        outputs.append(json.loads(out))  # one JSON document, nothing else on stdout
    assert all(o == outputs[0] for o in outputs)
    assert outputs[0][0]["rows"] == 50


def test_every_group_and_command_takes_json() -> None:
    root = typer.main.get_command(app)
    apply_manners(root)  # type: ignore[arg-type]
    seen = []

    def visit(command: Any, path: str) -> None:
        assert any("--json" in getattr(p, "opts", ()) for p in command.params), path
        seen.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            visit(sub, f"{path} {name}")

    visit(root, "headrace")
    assert {"headrace datasets list", "headrace models promote", "headrace serve"} <= set(seen)


def test_a_command_without_json_output_refuses_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for args in (("serve", "--json"), ("--json", "init", str(tmp_path / "x"))):
        code, out, _ = cli(capsys, *args)
        assert code == 2
        doc = json.loads(out)
        assert doc["ok"] is False and "has no JSON output" in doc["error"]
        assert doc["hint"] == "run it without --json"
    assert not (tmp_path / "x").exists()  # refused before it ran


def test_errors_under_json_are_json_on_stdout_with_the_same_exit_code(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = ("--project", str(project))
    plain_code, plain_out, plain_err = cli(capsys, *p, "datasets", "quarantine", "nope")
    assert plain_out == ""
    assert plain_err.startswith("error: dataset 'nope' does not exist; see 'headrace datasets list'")
    code, out, _ = cli(capsys, *p, "--json", "datasets", "quarantine", "nope")
    assert code == plain_code == 2
    assert json.loads(out) == {
        "ok": False,
        "error": "dataset 'nope' does not exist",
        "hint": "see 'headrace datasets list'",
        "exit_code": 2,
    }
    # a usage error click reports (a missing argument) and a failed run (exit 1) alike
    code, out, _ = cli(capsys, *p, "models", "show", "--json")
    doc = json.loads(out)
    assert code == 2 and doc["ok"] is False and "'model'" in doc["error"]
    assert doc["hint"] == "see 'headrace models show --help'"
    code, out, _ = cli(capsys, *p, "--json", "train", "nope")
    doc = json.loads(out)
    assert code == doc["exit_code"] and doc["ok"] is False and "nope" in doc["error"]


def test_tables_are_tab_separated_when_piped_and_whole_as_tables(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = ("--project", str(project))
    batch = json.loads(cli(capsys, *p, "datasets", "show", "customers", "--json")[1])["history"][0][
        "batch_id"
    ]
    code, out, _ = cli(capsys, *p, "datasets", "show", "customers")  # capsys: stdout is not a terminal
    assert code == 0
    lines = out.splitlines()
    header = lines.index("version\tat\toperation\tbatch\tsource\trows")
    fields = lines[header + 1].split("\t")
    assert len(fields) == 6 and fields[3] == batch and fields[5] == "50"
    assert cli(capsys, *p, "--format", "tsv", "datasets", "show", "customers")[1] == out
    # as a table (--format table) into a pipe: as wide as the words, none folded across two lines
    code, out, _ = cli(capsys, *p, "--format", "table", "datasets", "show", "customers")
    assert code == 0
    assert batch in out and "\t" not in out
    assert max(len(line) for line in out.splitlines()) > 80
    code, _, err = cli(capsys, *p, "--format", "wide", "datasets", "list")
    assert code == 2 and "--format" in err


def test_shell_completion(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "_HEADRACE_COMPLETE": "complete_bash",
        "COMP_WORDS": "headrace dat",
        "COMP_CWORD": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "headrace"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["datasets"]
    env["COMP_WORDS"], env["COMP_CWORD"] = "headrace models pro", "2"
    done = subprocess.run(
        [sys.executable, "-m", "headrace"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["promote"]
    script = subprocess.run(
        [sys.executable, "-m", "headrace", "--show-completion", "bash"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert script.returncode == 0 and "_HEADRACE_COMPLETE" in script.stdout
