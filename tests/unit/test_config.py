from pathlib import Path

import pytest
from pydantic import ValidationError

from headrace.config import load_project, parse_project
from headrace.errors import ConfigError

BASE = {"project": "p", "sources": {"c": {"kind": "file", "path": "data/*.csv", "dataset": "c"}}}


def test_paths_resolve_against_the_file(tmp_path: Path):
    (tmp_path / "headrace.yaml").write_text(
        "project: p\nsources:\n  c: {kind: file, path: data/*.csv, dataset: c}\n"
    )
    project = load_project(tmp_path)
    assert project.store == str(tmp_path / ".headrace/lake")
    assert project.artifacts == str(tmp_path / ".headrace/artifacts")
    assert project.metadata == f"sqlite:///{tmp_path}/.headrace/headrace.db"
    assert project.sources["c"].path == str(tmp_path / "data/*.csv")


def test_urls_are_kept():
    project = parse_project({"project": "p", "store": "s3://bucket/lake"}, "/tmp")
    assert project.store == "s3://bucket/lake"


def test_unknown_key_names_the_path_and_the_expected_keys():
    doc = {**BASE, "sources": {"c": {**BASE["sources"]["c"], "columns": {"t": {"mni": 0}}}}}
    with pytest.raises(ConfigError) as err:
        parse_project(doc, "/tmp")
    text = str(err.value)
    assert "sources.c.columns.t.mni: unknown key (did you mean 'min'?)" in text
    assert "expected one of:" in text and "max" in text


def test_wrong_type_names_what_was_expected_and_found():
    doc = {
        "project": "p",
        "models": {"m": {"task": "classification", "dataset": "d", "validation": {"folds": "x"}}},
    }
    with pytest.raises(ConfigError) as err:
        parse_project(doc, "/tmp")
    assert "models.m.validation.folds: expected a valid integer" in str(err.value)
    assert "found 'x'" in str(err.value)


def test_top_level_typo():
    with pytest.raises(ConfigError, match="modles: unknown key \\(did you mean 'models'\\?\\)"):
        parse_project({"project": "p", "modles": {}}, "/tmp")


def test_env_interpolation(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HR_TEST_STORE", "/data/lake")
    project = parse_project({"project": "p", "store": "${HR_TEST_STORE}"}, "/tmp")
    assert project.store == "/data/lake"
    project = parse_project({"project": "p", "store": "${HR_TEST_UNSET_X:-/d}"}, "/tmp")
    assert project.store == "/d"


def test_missing_env_var_is_named(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HR_TEST_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match="HR_TEST_NOT_SET is not set"):
        parse_project({"project": "p", "serving": {"admin_token": "${HR_TEST_NOT_SET}"}}, "/tmp")


def test_specs_are_frozen():
    project = parse_project(BASE, "/tmp")
    with pytest.raises(ValidationError):
        project.project = "q"  # type: ignore[misc]


def test_yaml_syntax_error_gives_the_line(tmp_path: Path):
    (tmp_path / "headrace.yaml").write_text("project: p\nsources: [\n")
    with pytest.raises(ConfigError, match="line"):
        load_project(tmp_path)


def test_missing_file_says_how_to_fix(tmp_path: Path):
    with pytest.raises(ConfigError, match="headrace init"):
        load_project(tmp_path)


def test_bad_names_refused():
    with pytest.raises(ConfigError, match="not a valid name"):
        parse_project(
            {"project": "p", "models": {"bad name": {"task": "regression", "dataset": "d"}}}, "/tmp"
        )


def expected_keys(message: str) -> set[str]:
    return set(message.split("expected one of: ", 1)[1].split(", "))


def test_unknown_key_in_an_optional_block_lists_every_key_of_that_block():
    from headrace.config.vision import ImageSpec

    image = {"path": "data/images", "epochs": 3}
    doc = {"project": "p", "models": {"m": {"task": "image_classification", "dataset": "d", "image": image}}}
    with pytest.raises(ConfigError) as err:
        parse_project(doc, "/tmp")
    text = str(err.value)
    assert "models.m.image.epochs: unknown key" in text
    assert expected_keys(text) == set(ImageSpec.model_fields)


def test_unknown_key_under_a_tagged_union_lists_that_member_and_hides_the_tag():
    http = {"kind": "http", "url": "http://127.0.0.1/x", "dataset": "h"}
    auth = {"type": "bearer", "token": "t", "scheme": "x"}
    with pytest.raises(ConfigError) as err:
        parse_project({"project": "p", "sources": {"h": {**http, "auth": auth}}}, "/tmp")
    assert "sources.h.auth.scheme: unknown key; expected one of: token, type" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_project(
            {"project": "p", "sources": {"h": {**http, "pagination": {"type": "offset", "x": 1}}}}, "/tmp"
        )
    assert "sources.h.pagination.x: unknown key" in str(err.value)
    assert expected_keys(str(err.value)) == {"type", "offset_param", "limit_param", "limit", "total_path"}


def test_expected_keys_are_written_as_in_the_file():
    with pytest.raises(ConfigError) as err:
        parse_project({"project": "p", "monitoring": {"alerts": {"fro": "5m"}}}, "/tmp")
    keys = expected_keys(str(err.value))
    assert "for" in keys and "for_" not in keys
    with pytest.raises(ConfigError) as err:
        parse_project({"project": "p", "stor": "x"}, "/tmp")
    assert "root" not in expected_keys(str(err.value))


def test_further_errors_are_counted_as_errors():
    validation = {"folds": "x", "repeats": "y", "n_iter": "z"}
    doc = {"project": "p", "models": {"m": {"task": "regression", "dataset": "d", "validation": validation}}}
    with pytest.raises(ConfigError) as err:
        parse_project(doc, "/tmp")
    assert str(err.value).endswith(" (and 2 more errors)")
    del validation["n_iter"]
    with pytest.raises(ConfigError) as err:
        parse_project(doc, "/tmp")
    assert str(err.value).endswith(" (and 1 more error)")
    assert "\n" not in str(err.value)
