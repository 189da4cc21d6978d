import importlib
import pkgutil

import headrace


def test_all_names_exist_and_are_sorted():
    assert headrace.__all__ == sorted(headrace.__all__, key=str)
    for name in headrace.__all__:
        assert hasattr(headrace, name), name


def test_public_names_are_exactly_all():
    public = {n for n in vars(headrace) if not n.startswith("_")}
    modules = {m.name for m in pkgutil.iter_modules(headrace.__path__)}
    assert public - modules - {"annotations"} == set(headrace.__all__) - {"__version__"}


def test_every_module_imports():
    for info in pkgutil.walk_packages(headrace.__path__, "headrace."):
        if info.name == "headrace.__main__":
            continue  # runs the CLI
        if info.name.startswith("headrace.vision"):
            continue  # needs the optional torch extra; tested in tests/vision
        importlib.import_module(info.name)
