"""Model flavors: how a registered model's artifact turns back into something that predicts.

The registry stores each version's artifact bytes (content-addressed) and the name of its flavor.
A flavor is a class with ``flavor`` (its name), ``to_bytes()`` and ``from_bytes(data)``; serving
then calls the task's methods on it:

- tabular (classification, regression): ``predict(frame) -> Prediction``
- image_classification: ``predict_images(list[bytes]) -> Prediction``
- recommendation: ``recommend(user_id, k, exclude) -> list[(item_id, score)]``

Flavors are found by name through ``FLAVORS`` (module path and class), imported lazily so that a
project without torch can still load its tabular models.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .errors import RegistryError

__all__ = ["FLAVORS", "Flavor", "Prediction", "flavor_class", "load_flavor"]


@dataclass
class Prediction:
    """What a model answers for a batch of records, one entry per record."""

    predictions: list[Any]
    probabilities: list[dict[str, float]] | list[float] | None = None
    classes: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Flavor(Protocol):
    flavor: str

    def to_bytes(self) -> bytes: ...

    @classmethod
    def from_bytes(cls, data: bytes) -> Flavor: ...


# flavor name -> "module:Class"; each task's module adds its line here.
FLAVORS: dict[str, str] = {
    "image": "headrace.vision.model:ImageClassifier",
    "recommender": "headrace.recommend.flavor:RecommenderModel",
    "tabular": "headrace.train.tabular:TabularModel",
}


def flavor_class(name: str) -> type[Any]:
    try:
        target = FLAVORS[name]
    except KeyError:
        raise RegistryError(
            f"unknown model flavor {name!r}",
            hint=f"known flavors: {', '.join(sorted(FLAVORS)) or 'none'}; upgrade headrace?",
        ) from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RegistryError(
            f"model flavor {name!r} needs {exc.name or module_name}, which is not installed",
            hint="install headrace with the extra that provides it, e.g. pip install 'headrace[vision]'",
        ) from exc
    found: type[Any] = getattr(module, class_name)
    return found


def load_flavor(name: str, data: bytes) -> Any:
    return flavor_class(name).from_bytes(data)
