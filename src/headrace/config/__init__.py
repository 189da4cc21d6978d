"""The project file, ``headrace.yaml``, parsed into frozen, typed spec objects.

Everything the YAML can say, Python can say: the spec classes are the API. ``load_project`` adds what
a file needs on top: ``${ENV_VAR}`` interpolation, paths resolved against the file's folder, and
errors that name the key path, what was expected and what was found.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from ..errors import ConfigError
from ..log import add_secrets
from .base import ProjectPath, Spec, is_url, resolve_path
from .lineage import LineageSpec
from .mlflow import MlflowSpec
from .models import Candidate, FeatureSpec, ModelSpec, PromoteRule, ValidationSpec
from .monitoring import MonitoringSpec, RollbackRule
from .serving import ServingSpec
from .sources import ColumnRule, SourceSpec

__all__ = [
    "PROJECT_FILE",
    "Candidate",
    "ColumnRule",
    "FeatureSpec",
    "LineageSpec",
    "ModelSpec",
    "MonitoringSpec",
    "Project",
    "ProjectPath",
    "PromoteRule",
    "RollbackRule",
    "ServingSpec",
    "SourceSpec",
    "Spec",
    "ValidationSpec",
    "find_project_file",
    "interpolate",
    "load_project",
    "parse_project",
]

PROJECT_FILE = "headrace.yaml"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Project(Spec):
    """A whole project: where data and metadata live, its sources, models, serving and monitoring.

    ``project``: the project's name (letters, digits, ``_`` or ``-``, starting with a letter).
    ``store``: where datasets live, as Delta Lake tables: a folder, or a URL such as
    ``s3://bucket/prefix``. ``metadata``: the SQLAlchemy URL of the metadata database (ingestion
    runs and cursors, training runs, model versions, the ledger, deployments): SQLite, or
    ``postgresql://USER@HOST/DB``. ``artifacts``: where trained models and reports are kept, each
    file under its sha256. ``sources``: the ingestion sources, by name. ``models``: the models, by
    name. ``serving``: the prediction server. ``monitoring``: drift, live performance and the
    retraining loop.
    """

    project: str
    store: ProjectPath = ".headrace/lake"
    metadata: str = "sqlite:///.headrace/headrace.db"
    artifacts: ProjectPath = ".headrace/artifacts"
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="object storage settings for store and artifacts (Delta's keys: AWS_REGION, "
        "AWS_ENDPOINT_URL, AWS_S3_LOCKING_PROVIDER, ...); values from ${ENV}",
    )
    sources: dict[str, SourceSpec] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    lineage: LineageSpec | None = Field(default=None, description="OpenLineage events of ingest and training")
    mlflow: MlflowSpec | None = Field(default=None, description="mirror runs, versions and aliases to MLflow")
    root: str = Field(default=".", exclude=True)

    @field_validator("project")
    @classmethod
    def _project_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a name of letters, digits, '_' or '-', starting with a letter")
        return value

    @field_validator("store", "artifacts", mode="before")
    @classmethod
    def _location(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        from ..objectstore import check_location

        try:
            return check_location(value, "location")
        except ConfigError as exc:
            raise ValueError(exc.one_line()) from None

    @field_validator("sources", "models")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _NAME.match(name):
                raise ValueError(f"{name!r} is not a valid name (letters, digits, '_' or '-')")
        return value

    @field_validator("sources")
    @classmethod
    def _writes(cls, value: dict[str, Any]) -> dict[str, Any]:
        feeding: dict[str, list[str]] = {}
        for name, spec in value.items():
            feeding.setdefault(spec.dataset, []).append(name)
            if spec.kind in ("mqtt", "nats") and spec.write not in (None, "append"):
                raise ValueError(f"{name!r}: a stream appends (write: append)")
        for name, spec in value.items():
            others = [n for n in feeding[spec.dataset] if n != name]
            if spec.write_mode == "replace" and others:
                raise ValueError(
                    f"{name!r} replaces dataset {spec.dataset!r} on each run, which {', '.join(others)} "
                    "also feed: give it a dataset of its own, or write: append or merge"
                )
        return value

    @property
    def root_path(self) -> Path:
        return Path(self.root)

    def source(self, name: str) -> Any:
        if name not in self.sources:
            raise ConfigError(
                f"no source named {name!r} in {PROJECT_FILE}",
                hint=_choices_hint(name, list(self.sources)),
            )
        return self.sources[name]

    def model(self, name: str) -> ModelSpec:
        if name not in self.models:
            raise ConfigError(
                f"no model named {name!r} in {PROJECT_FILE}",
                hint=_choices_hint(name, list(self.models)),
            )
        return self.models[name]


def _choices_hint(name: str, choices: list[str]) -> str:
    if not choices:
        return f"add it to {PROJECT_FILE}"
    close = difflib.get_close_matches(name, choices, n=1)
    prefix = f"did you mean {close[0]!r}? " if close else ""
    return f"{prefix}known: {', '.join(sorted(choices))}"


def interpolate(value: Any, path: str = "", env: dict[str, str] | None = None) -> Any:
    """Replace ``${VAR}`` (or ``${VAR:-default}``) in every string of a parsed YAML document."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    assert env is not None
    if isinstance(value, dict):
        return {k: interpolate(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{path or 'headrace.yaml'}: environment variable {name} is not set",
                hint=f"export {name}=... or write ${{{name}:-default}}",
            )

        return _ENV.sub(replace, value)
    return value


def _env_values(value: Any, env: Mapping[str, str] | None = None) -> set[str]:
    """The values ``${ENV}`` references in a document stand for: secrets until shown otherwise."""
    env = os.environ if env is None else env
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            found.update(env[m.group(1)] for m in _ENV.finditer(item) if env.get(m.group(1)))
    return {v for v in found if len(v) >= 3}


def mask(text: str, secrets: set[str]) -> str:
    """``text`` with every secret value replaced by ``***`` (longest first)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, str]:
    """Walk the spec classes along a pydantic error location to the model that holds the last key.

    Returns that model and the key path as the user wrote it (without the union tags pydantic adds:
    a discriminator value such as ``file``, or a branch name such as ``str`` or ``ThresholdSpec``).
    """
    current: Any = model
    shown: list[str] = []
    for part in loc[:-1]:
        current, is_tag = _step(current, part)
        if not is_tag:
            shown.append(str(part))
    if loc and not _step(current, loc[-1])[1]:
        shown.append(str(loc[-1]))
    return _as_model(current), ".".join(p for p in shown if p)


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _unwrap(annotation: Any) -> Any:
    while getattr(annotation, "__metadata__", None) is not None:  # Annotated[...]
        annotation = annotation.__origin__
    return annotation


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union (nested unions and Annotated[...] unwrapped), without None."""
    annotation = _unwrap(annotation)
    if get_origin(annotation) not in (Union, UnionType):
        return [annotation]
    found: list[Any] = []
    for arg in get_args(annotation):
        found.extend(m for m in _members(arg) if m not in found)
    return [m for m in found if m is not type(None)]


def _as_model(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation names: the model itself, or the one model of ``Model | None``."""
    members = _members(annotation)
    return members[0] if len(members) == 1 and _is_model(members[0]) else None


def _union_tags(member: type[BaseModel], models: list[type[BaseModel]]) -> set[Any]:
    """The discriminator values of ``member``: its Literal fields that every model of the union has."""
    tags: set[Any] = set()
    for name, field in member.model_fields.items():
        literal = all(
            name in m.model_fields and get_origin(_unwrap(m.model_fields[name].annotation)) is Literal
            for m in models
        )
        if literal:
            tags.update(get_args(_unwrap(field.annotation)))
    return tags


def _step(current: Any, part: Any) -> tuple[Any, bool]:
    """One step of an error location: the annotation it leads to, and whether it was a union tag."""
    current = _unwrap(current)
    if _is_model(current):
        for name, field in current.model_fields.items():
            if part in (name, field.alias):
                return field.annotation, False
        return current, False
    origin = get_origin(current)
    args = get_args(current)
    if origin is dict and len(args) == 2:
        return args[1], False
    if origin in (list, tuple) and args:
        return args[0], False
    members = _members(current)
    models = [m for m in members if _is_model(m)]
    if len(members) > 1:  # pydantic names the branch: a discriminator value, a class or a type name
        for member in models:
            if part == member.__name__ or (len(models) > 1 and part in _union_tags(member, models)):
                return member, True
        if isinstance(part, str) and not any(part in m.model_fields for m in models):
            return Any, True
    if len(models) == 1:  # Optional[Model]: the part is a field of that model
        return _step(models[0], part)
    return current, False


def _describe(error: dict[str, Any], root_model: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    holder, path = _model_at(root_model, loc)
    path = path or "(top level)"
    kind = error["type"]
    found = error.get("input")
    if kind == "extra_forbidden":
        fields = holder.model_fields.items() if holder else ()
        allowed = sorted(f.alias or n for n, f in fields if not f.exclude)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{path}: unknown key{suggestion}; expected one of: {', '.join(allowed)}"
    if kind == "missing":
        return f"{path}: required key is missing"
    shown = repr(found)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    message = error["msg"]
    message = message.removeprefix("Value error, ").removeprefix("Input should be ")
    return f"{path}: expected {message[0].lower() + message[1:]}; found {shown}"


MAX_YAML_VALUES = 200_000  # values a document may expand to through its aliases
MAX_YAML_DEPTH = 64  # nesting of mappings and lists


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (naming both lines)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # the base class says so in its own words
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (lines {seen[key]} and {line})",
                        key_node.start_mark,
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _measure(root: Any) -> tuple[int, int]:
    """The number of values a composed document expands to (aliases counted each time they are
    used) and its depth, in time linear in its distinct nodes."""
    sizes: dict[int, tuple[int, int]] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children: list[Any] = []
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                children += [k, v]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        if not done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        size = 1 + sum(sizes[id(c)][0] for c in children)
        depth = 1 + max((sizes[id(c)][1] for c in children), default=0)
        sizes[id(node)] = (min(size, 1 << 62), depth)
    return sizes[id(root)]


def _yaml_load(text: str, origin: str) -> Any:
    """Parse YAML safely: no tags beyond plain data, duplicate keys refused, aliases and nesting
    capped (a billion-laughs document is refused before anything expands it)."""
    try:
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            values, depth = _measure(node)
            if values > MAX_YAML_VALUES:
                raise ConfigError(
                    f"{origin}: the document expands to {values:,} values through its aliases "
                    f"(at most {MAX_YAML_VALUES:,})",
                    hint="write the values out, or use fewer nested YAML aliases (&anchor / *alias)",
                )
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(
                    f"{origin}: nested {depth} levels deep (at most {MAX_YAML_DEPTH})",
                    hint="flatten the document",
                )
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except RecursionError:
        raise ConfigError(
            f"{origin}: nested too deeply to read (over {MAX_YAML_DEPTH} levels)", hint="flatten the document"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{origin}:{where} {problem}", hint="fix the YAML syntax") from None


def parse_project(data: Any, root: Path | str = ".", origin: str = PROJECT_FILE) -> Project:
    """Validate a parsed document (a dict) into a :class:`Project`; paths resolve against ``root``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level; found {type(data).__name__}")
    secrets = _env_values(data)
    add_secrets(secrets)  # masked in every log line and error from now on
    data = interpolate(data)
    root = Path(root).resolve()
    try:
        project = Project.model_validate({**data, "root": str(root)}, context={"root": str(root)})
    except ValidationError as exc:
        problems = [_describe(dict(e), Project) for e in exc.errors()]
        extra = len(problems) - 1
        more = f" (and {extra} more error{'s' if extra > 1 else ''})" if extra else ""
        raise ConfigError(mask(f"{origin}: {problems[0]}{more}", secrets)) from None
    return project.model_copy(update={"metadata": _resolve_sqlite(project.metadata, root)})


def _resolve_sqlite(url: str, root: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////"):
        rest = url[len(prefix) :]
        if rest and rest != ":memory:":
            return prefix + resolve_path(rest, root)
    return url


def find_project_file(start: Path | str | None = None) -> Path:
    """The headrace.yaml given (a file or a folder), or the one in the current folder or above."""
    here = Path(start) if start is not None else Path.cwd()
    if here.is_file():
        return here
    if start is not None and not here.exists():
        raise ConfigError(f"{here}: no such file or folder", hint="pass --project PATH to a headrace.yaml")
    for folder in [here, *here.resolve().parents]:
        candidate = folder / PROJECT_FILE
        if candidate.is_file():
            return candidate
        if start is not None:
            break
    raise ConfigError(
        f"no {PROJECT_FILE} in {here.resolve()}" + ("" if start is not None else " or above"),
        hint="run 'headrace init' to create one, or pass --project PATH",
    )


def load_project(path: Path | str | None = None) -> Project:
    """Read and validate a headrace.yaml (a file, or a folder that holds one)."""
    file = find_project_file(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot be read ({exc})", hint="check the file") from None
    return parse_project(_yaml_load(text, file.name), root=file.parent, origin=file.name)


def storage_is_local(location: str) -> bool:
    return not is_url(location) or location.startswith("file://")
