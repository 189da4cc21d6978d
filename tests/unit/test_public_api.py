import importlib
import pkgutil
import subprocess
import sys

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
