import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

import headrace


def test_all_names_resolve_and_are_sorted():
    assert headrace.__all__ == sorted(headrace.__all__, key=str)
    for name in headrace.__all__:
        assert getattr(headrace, name) is not None, name


def test_names_outside_all_are_refused():
    try:
        headrace.not_a_public_name  # noqa: B018
    except AttributeError as exc:
        assert "not_a_public_name" in str(exc)
    else:
        raise AssertionError("an unknown attribute must raise AttributeError")


def test_all_matches_the_lazy_table():
    assert set(headrace.__all__) == {*headrace._WHERE, "__version__"}


def test_public_objects_come_from_their_modules():
    assert headrace.Store is importlib.import_module("headrace.store").Store
    assert headrace.load_project is importlib.import_module("headrace.config").load_project


def test_importing_the_package_is_light():
    code = (
        "import sys, headrace, headrace.errors; "
        "print(sorted(m for m in ('polars', 'deltalake', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_module_imports():
    for info in pkgutil.walk_packages(headrace.__path__, "headrace."):
        if info.name == "headrace.__main__":
            continue  # runs the CLI
        importlib.import_module(info.name)


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_python_api_guide_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd
    import polars as pl

    from headrace.scaffold import init_project

    guide = (Path(__file__).resolve().parents[2] / "docs" / "python-api.md").read_text()
    blocks = _python_blocks(guide)
    assert len(blocks) >= 8
    init_project(tmp_path / "churn-demo")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    shown = []
    for block in blocks:
        exec(compile(block, "docs/python-api.md", "exec"), namespace)
        last = block.strip().splitlines()[-1]
        if last.isidentifier() and hasattr(namespace[last], "_repr_html_"):
            shown.append(namespace[last]._repr_html_())  # what a notebook renders under the cell
    assert namespace["ingested"].ok
    assert "<table>" in shown[0] and "customers" in shown[0]
    assert namespace["trained"].version.aliases == ("champion",)
    assert "churn@1" in shown[1] and "roc_auc" in shown[1]
    assert (tmp_path / "churn-report.html").read_text().startswith("<!")
    answers = namespace["answers"]
    assert isinstance(answers, pd.DataFrame) and len(answers) == 5
    assert list(answers.columns) == ["prediction", "proba_No", "proba_Yes"]
    assert answers[["proba_No", "proba_Yes"]].sum(axis=1).round(5).eq(1).all()
    # the labels are what the registered version answers (its threshold), for pandas and polars alike
    model = namespace["model"]
    direct = model.model.predict(pl.from_pandas(namespace["records"])).predictions
    assert answers["prediction"].tolist() == direct
    again = model.predict(pl.from_pandas(namespace["records"]))
    assert isinstance(again, pl.DataFrame) and again["prediction"].to_list() == direct


def test_predict_refuses_what_is_not_a_frame_in_one_line(tmp_path: Path) -> None:
    from headrace.api import LoadedModel

    class Stub:
        def predict(self, frame: Any) -> Any:
            raise AssertionError("never reached")

    loaded = LoadedModel(cast(Any, None), Stub())
    with pytest.raises(headrace.UsageError, match="takes a pandas or polars DataFrame; got list"):
        loaded.predict([{"a": 1}])


def test_open_names_a_missing_project(tmp_path: Path) -> None:
    with pytest.raises(headrace.ConfigError, match="headrace init"):
        headrace.open(tmp_path)
