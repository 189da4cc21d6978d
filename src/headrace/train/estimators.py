"""The estimator catalog: the estimators a project may name, and their parameters checked up front.

A name maps to a scikit-learn class per task (lightgbm and xgboost only when installed; headrace does
not depend on them). Parameters are checked against the estimator's own constraints before any data
is read, so a typo or an out-of-range value fails in a second with scikit-learn's own message.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = [
    "CATALOG",
    "EstimatorEntry",
    "available",
    "check_int",
    "check_number",
    "is_distribution",
    "make_estimator",
    "validate_candidate",
]


@dataclass(frozen=True)
class EstimatorEntry:
    name: str
    classifier: str | None  # "module:Class"
    regressor: str | None
    defaults: Mapping[str, Any] = ()  # type: ignore[assignment]
    classifier_defaults: Mapping[str, Any] = ()  # type: ignore[assignment]
    random_state: bool = False
    class_weight: bool = False
    requires: str | None = None

    def target(self, task: str) -> str | None:
        return self.classifier if task == "classification" else self.regressor


CATALOG: dict[str, EstimatorEntry] = {
    e.name: e
    for e in [
        EstimatorEntry(
            "logistic_regression",
            "sklearn.linear_model:LogisticRegression",
            None,
            {"max_iter": 2000},
            random_state=True,
            class_weight=True,
        ),
        EstimatorEntry("linear_regression", None, "sklearn.linear_model:LinearRegression"),
        EstimatorEntry("ridge", None, "sklearn.linear_model:Ridge", random_state=True),
        EstimatorEntry("lasso", None, "sklearn.linear_model:Lasso", {"max_iter": 5000}, random_state=True),
        EstimatorEntry(
            "elastic_net", None, "sklearn.linear_model:ElasticNet", {"max_iter": 5000}, random_state=True
        ),
        EstimatorEntry(
            "random_forest",
            "sklearn.ensemble:RandomForestClassifier",
            "sklearn.ensemble:RandomForestRegressor",
            {"n_estimators": 200},
            random_state=True,
            class_weight=True,
        ),
        EstimatorEntry(
            "extra_trees",
            "sklearn.ensemble:ExtraTreesClassifier",
            "sklearn.ensemble:ExtraTreesRegressor",
            {"n_estimators": 200},
            random_state=True,
            class_weight=True,
        ),
        EstimatorEntry(
            "hist_gradient_boosting",
            "sklearn.ensemble:HistGradientBoostingClassifier",
            "sklearn.ensemble:HistGradientBoostingRegressor",
            random_state=True,
            class_weight=True,
        ),
        EstimatorEntry(
            "knn", "sklearn.neighbors:KNeighborsClassifier", "sklearn.neighbors:KNeighborsRegressor"
        ),
        EstimatorEntry(
            "svm",
            "sklearn.svm:SVC",
            "sklearn.svm:SVR",
            classifier_defaults={"probability": True},
            random_state=False,
            class_weight=True,
        ),
        EstimatorEntry(
            "lightgbm",
            "lightgbm:LGBMClassifier",
            "lightgbm:LGBMRegressor",
            {"verbose": -1},
            random_state=True,
            class_weight=True,
            requires="lightgbm",
        ),
        EstimatorEntry(
            "xgboost",
            "xgboost:XGBClassifier",
            "xgboost:XGBRegressor",
            random_state=True,
            requires="xgboost",
        ),
    ]
}


def available() -> list[str]:
    """Catalog names whose package is installed."""
    return [n for n, e in CATALOG.items() if e.requires is None or importlib.util.find_spec(e.requires)]


def _entry(name: str, task: str, where: str) -> EstimatorEntry:
    entry = CATALOG.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, list(CATALOG), n=1)
        prefix = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"{where}: unknown estimator {name!r}", hint=f"{prefix}known: {', '.join(available())}"
        )
    if entry.requires and importlib.util.find_spec(entry.requires) is None:
        raise ConfigError(
            f"{where}: estimator {name!r} needs the {entry.requires} package, which is not installed",
            hint=f"pip install {entry.requires}, or choose one of: {', '.join(available())}",
        )
    if entry.target(task) is None:
        fits = [n for n, e in CATALOG.items() if e.target(task) is not None and n in available()]
        other = "regression" if task == "classification" else "classification"
        raise ConfigError(
            f"{where}: {name!r} is a {other} estimator, and this model's task is {task}",
            hint=f"for {task} use one of: {', '.join(fits)}",
        )
    return entry


def _class(entry: EstimatorEntry, task: str) -> type[Any]:
    target = entry.target(task)
    assert target is not None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return,unused-ignore]


def make_estimator(
    name: str,
    task: str,
    params: Mapping[str, Any] | None = None,
    *,
    seed: int | None = None,
    class_weight: bool = False,
    where: str = "candidates",
) -> Any:
    """An unfitted estimator from the catalog with ``params`` (fixed values) checked."""
    entry = _entry(name, task, where)
    cls = _class(entry, task)
    kwargs: dict[str, Any] = dict(entry.defaults or {})
    if task == "classification":
        kwargs.update(entry.classifier_defaults or {})
    if entry.random_state and seed is not None:
        kwargs["random_state"] = seed
    if class_weight and task == "classification" and entry.class_weight:
        kwargs["class_weight"] = "balanced"
    estimator = cls(**kwargs)
    _set_checked(estimator, dict(params or {}), where)
    return estimator


def _check_keys(estimator: Any, keys: list[str], where: str) -> None:
    valid = estimator.get_params(deep=False)
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, list(valid), n=1)
            prefix = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{where}: {type(estimator).__name__} has no parameter {key!r}",
                hint=f"{prefix}its parameters: {', '.join(sorted(valid))}",
            )


def _set_checked(estimator: Any, params: dict[str, Any], where: str) -> None:
    _check_keys(estimator, list(params), where)
    estimator.set_params(**params)
    validate = getattr(estimator, "_validate_params", None)
    if validate is None:
        return
    try:
        validate()
    except (ValueError, TypeError) as exc:  # sklearn's InvalidParameterError is both
        raise ConfigError(f"{where}: {str(exc).splitlines()[0]}") from None


def is_distribution(value: Any) -> bool:
    """A random-search distribution: ``{loguniform: [low, high]}``, ``{uniform: ...}``, ``{randint: ...}``."""
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in _DISTRIBUTIONS


_DISTRIBUTIONS = ("loguniform", "uniform", "randint")


def distribution(value: Mapping[str, Any], where: str) -> Any:
    from scipy import stats

    kind, bounds = next(iter(value.items()))
    if not (isinstance(bounds, list | tuple) and len(bounds) == 2):
        raise ConfigError(
            f"{where}: {kind} takes [low, high]; got {bounds!r}", hint=f"e.g. {kind}: [0.01, 10]"
        )
    low, high = bounds
    if kind == "loguniform":
        return stats.loguniform(low, high)
    if kind == "uniform":
        return stats.uniform(low, high - low)
    return stats.randint(int(low), int(high) + 1)


def validate_candidate(
    name: str, task: str, params: Mapping[str, Any], *, search: str, where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a candidate's params into fixed values and searched ones (lists or distributions), and
    check every value against the estimator. Returns ``(fixed, searched)``."""
    fixed: dict[str, Any] = {}
    searched: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"{where}.params.{key}: an empty list", hint="give at least one value")
            searched[key] = value
        elif is_distribution(value):
            if search != "random":
                raise ConfigError(
                    f"{where}.params.{key}: a distribution needs validation.search: random",
                    hint="or give a list of values for the grid",
                )
            searched[key] = distribution(value, f"{where}.params.{key}")
        else:
            fixed[key] = value
    estimator = make_estimator(name, task, fixed, where=where)
    for key, values in searched.items():
        _check_keys(estimator, [key], where)
        for value in values if isinstance(values, list) else []:
            _set_checked(estimator, {key: value}, where)
    return fixed, searched


def check_int(owner: str, name: str, value: Any, *, minimum: int) -> None:
    """scikit-learn's message template for our own parameters."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"The {name!r} parameter of {owner} must be an int >= {minimum}. Got {value!r} instead."
        )


def check_number(owner: str, name: str, value: Any, *, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value < high:
        raise ConfigError(
            f"The {name!r} parameter of {owner} must be a float in the range ({low}, {high}). "
            f"Got {value!r} instead."
        )
