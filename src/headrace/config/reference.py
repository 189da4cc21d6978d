"""The reference of ``headrace.yaml``, generated from the spec classes: a JSON Schema and a Markdown page.

``json_schema()`` is what editors and CI validate a project file against (``headrace schema``);
``markdown()`` is ``docs/config.md`` (``headrace schema --markdown``). Both are derived from
:class:`~headrace.config.Project` and the classes it reaches, so a key added to a spec class appears
in both without further work. A key's meaning comes from, in order: its ``Field(description=...)``,
a docstring under the attribute, a comment on its line, or the clause of the class docstring that
names it in double backticks (``key``: ...).
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import AfterValidator, BaseModel, BeforeValidator, SecretStr
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticUndefined, core_schema, to_jsonable_python

from . import _ENV, PROJECT_FILE, Project
from . import base as _base
from . import models as _models
from . import monitoring as _monitoring
from . import serving as _serving
from . import sources as _sources
from . import sources_db as _sources_db
from . import sources_stream as _sources_stream
from . import vision as _vision
from .base import Spec

__all__ = ["SCHEMA_ID", "json_schema", "markdown"]

SCHEMA_ID = "https://headrace.dev/schema/headrace.json"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_MODULES: tuple[ModuleType, ...] = (
    _base,
    _sources,
    _sources_db,
    _sources_stream,
    _models,
    _vision,
    _serving,
    _monitoring,
)
_ENV_DEF = "Interpolated"


# ------------------------------------------------------------------------------------ JSON Schema
class _Generator(GenerateJsonSchema):
    """Pydantic's generator, told what the before-validators of the spec classes accept."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        function = schema["function"]["function"]
        if function is _monitoring.parse_duration:
            return {
                "anyOf": [
                    {"type": "number", "exclusiveMinimum": 0},
                    {"type": "string", "pattern": _monitoring._DURATION.pattern},
                ],
                "description": "seconds, or a number with a unit: 90s, 10m, 1h, 7d, 2w",
            }
        inner = super().function_before_schema(schema)
        protocol = getattr(_sources_stream.MqttSource._protocol, "__func__", None)
        if protocol is not None and getattr(function, "__func__", None) is protocol:
            # YAML reads `protocol: 5` as a number; the validator maps 5, 3.1, 311, v5 and 3.1 to a name
            return {"anyOf": [inner, {"enum": [5, 3.1, 311, "v5", "3.1"]}]}
        return inner


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``headrace.yaml``, as written (before ``${VAR}`` interpolation)."""
    generated = Project.model_json_schema(by_alias=True, mode="validation", schema_generator=_Generator)
    for name, spec in Project.model_fields.items():
        if spec.exclude:
            generated["properties"].pop(spec.alias or name, None)
            if name in generated.get("required", []):
                generated["required"].remove(name)
    definitions = generated.setdefault("$defs", {})
    tags = _discriminator_names(generated)
    _allow_interpolation(generated, tags)
    for definition in definitions.values():
        _allow_interpolation(definition, tags)
    definitions[_ENV_DEF] = {
        "type": "string",
        "pattern": _ENV.pattern,
        "description": "${VAR} or ${VAR:-default}: the environment variable, read when the file is loaded",
    }
    head = {
        "$schema": _DRAFT,
        "$id": SCHEMA_ID,
        "title": PROJECT_FILE,
        "description": inspect.cleandoc(Project.__doc__ or "").split("\n\n")[0],
    }
    generated.pop("title", None)
    generated.pop("description", None)
    return {**head, **generated}


def _discriminator_names(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        discriminator = node.get("discriminator")
        if isinstance(discriminator, dict) and isinstance(discriminator.get("propertyName"), str):
            found.add(discriminator["propertyName"])
        for value in node.values():
            found |= _discriminator_names(value)
    elif isinstance(node, list):
        for value in node:
            found |= _discriminator_names(value)
    return found


def _allow_interpolation(definition: dict[str, Any], tags: set[str]) -> None:
    """Let every typed value of an object schema also be written as ``${VAR}`` (not discriminators)."""
    for key, value in list(definition.get("properties", {}).items()):
        if not (key in tags and "const" in value):
            definition["properties"][key] = _widen(value)


_ANNOTATIONS = ("title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly")


def _needs_env(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    if kind in ("integer", "number", "boolean"):
        return True
    if "enum" in node or "const" in node:
        return True
    return kind == "string" and any(k in node for k in ("pattern", "maxLength", "minLength"))


def _wants_env(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    return _needs_env(node) or any(_wants_env(m) for m in node.get("anyOf", []))


def _takes_text(node: Any) -> bool:
    """Whether any string at all validates (so ``${VAR}`` does already)."""
    if not isinstance(node, dict):
        return False
    plain = node.get("type") == "string" and not _needs_env(node)
    return plain or any(_takes_text(m) for m in node.get("anyOf", []))


def _widen(node: Any, here: bool = True) -> Any:
    """The schema of a value, also accepting ``${VAR}`` wherever a string would otherwise fail."""
    if not isinstance(node, dict) or "$ref" in node:
        return node
    env = {"$ref": f"#/$defs/{_ENV_DEF}"}
    if "anyOf" in node:
        members = [_widen(m, here=False) for m in node["anyOf"]]
        if here and _wants_env(node) and not _takes_text(node):
            members.append(env)
        return {**node, "anyOf": members}
    if node.get("type") == "array":
        out = dict(node)
        if "items" in node:
            out["items"] = _widen(node["items"])
        if "prefixItems" in node:
            out["prefixItems"] = [_widen(m) for m in node["prefixItems"]]
        return out
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        return {**node, "additionalProperties": _widen(node["additionalProperties"])}
    if here and _needs_env(node):
        outer = {k: v for k, v in node.items() if k in _ANNOTATIONS}
        inner = {k: v for k, v in node.items() if k not in _ANNOTATIONS}
        return {**outer, "anyOf": [inner, env]}
    return node


# --------------------------------------------------------------------------------------- Markdown
@dataclass
class _Union:
    """A discriminated union of spec classes, documented as a table of its tags."""

    name: str
    tag: str
    members: list[type[Spec]]
    module: str


@dataclass
class _Page:
    seen: set[str] = field(default_factory=set)
    tags: dict[str, _Union] = field(default_factory=dict)
    paths: dict[str, list[str]] = field(default_factory=dict)
    modules: set[str] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)


def markdown() -> str:
    """``docs/config.md``: every block and key of ``headrace.yaml`` with its type, default and meaning."""
    page = _Page()
    _collect_paths(Project, "", page.paths, set())
    out = page.lines
    out += [
        f"# {PROJECT_FILE} reference",
        "",
        "<!-- Generated from the spec classes in headrace.config: do not edit by hand. "
        "Regenerate with `headrace schema --markdown > docs/config.md`. -->",
        "",
        f"Every block and every key of `{PROJECT_FILE}`, with its type, default and meaning. "
        "A key not listed here is an error, reported with the key path and the keys expected there.",
        "",
        "- Strings may hold `${VAR}` or `${VAR:-default}`: replaced by the environment variable when "
        "the file is loaded (secrets belong there, not in the file).",
        "- *path*: a file, folder, glob or URL; a relative path is resolved against the folder of "
        f"`{PROJECT_FILE}`.",
        "- *duration*: seconds, written as a number or as text with a unit: `90s`, `10m`, `1h`, `7d`, `2w`.",
        "- *secret*: a string that prints as `**********` in logs, reprs and error messages.",
        "- `<name>` in a key path stands for a name you choose; `[]` for an item of a list.",
        "",
        "The same keys as a JSON Schema, for editors and CI: `headrace schema > headrace.schema.json` "
        "(with the YAML language server: `# yaml-language-server: $schema=headrace.schema.json` "
        "at the top of the file).",
        "",
    ]
    blocks = [(_key(name, info), info) for name, info in Project.model_fields.items() if not info.exclude]
    nested = [(key, info) for key, info in blocks if list(_referenced(info.annotation, info))]
    out += ["## Contents", "", "- [Top level](#project)"]
    out += [f"- [`{key}`](#{key})" for key, _ in nested]
    out += [""]
    summary = inspect.cleandoc(Project.__doc__ or "").split("\n\n")[0]
    out += ["## Project", "", f"The top level of `{PROJECT_FILE}`. {_to_markdown(summary)}", ""]
    out += _table(Project, _own_fields(Project))
    page.seen.add(Project.__name__)
    for key, info in nested:
        out += [f"## {key}", ""]
        queue: list[type[Spec] | _Union] = list(_referenced(info.annotation, info))
        while queue:
            item = queue.pop(0)
            queue += _section(item, page)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def _section(item: type[Spec] | _Union, page: _Page) -> list[type[Spec] | _Union]:
    """Write one class (or union) section unless written already; return what it refers to."""
    if _name(item) in page.seen:
        return []
    out = page.lines
    if isinstance(item, _Union):
        page.seen.add(item.name)
        out += [f"### {item.name}", ""]
        where = ", ".join(page.paths.get(item.name, []))
        out += [f"At {where}: one of the following, chosen by `{item.tag}`.", ""]
        out += _module_notes(item.module, page)
        out += [f"| `{item.tag}` | Keys |", "|---|---|"]
        for member in item.members:
            page.tags[member.__name__] = item
            tags = ", ".join(f"`{_literal(v)}`" for v in _tag_values(member, item.tag))
            out += [f"| {tags} | [{member.__name__}](#{member.__name__.lower()}) |"]
        out += [""]
        return list(item.members)
    pending: list[type[Spec] | _Union] = []
    for base in _spec_bases(item):
        if base.__name__ not in page.seen:
            pending += _section(base, page)
    page.seen.add(item.__name__)
    out += [f"### {item.__name__}", ""]
    paths = page.paths.get(item.__name__, [])
    subclasses = [c.__name__ for c in _documented() if item in _spec_bases(c)]
    if paths:
        out += ["At " + ", ".join(paths) + ".", ""]
    elif subclasses:
        shared = ", ".join(f"[{name}](#{name.lower()})" for name in subclasses)
        out += [f"The keys shared by {shared}.", ""]
    out += _module_notes(item.__module__, page)
    if item.__doc__ and item.__doc__ is not Spec.__doc__:
        out += [_to_markdown(inspect.cleandoc(item.__doc__)), ""]
    bases = _spec_bases(item)
    if bases:
        also = ", ".join(f"[{b.__name__}](#{b.__name__.lower()})" for b in bases)
        out += [f"Also takes every key of {also}.", ""]
    own = _own_fields(item)
    out += _table(item, own, page.tags.get(item.__name__))
    for _, info in own:
        pending += _referenced(info.annotation, info)
    return pending


def _name(item: type[Spec] | _Union) -> str:
    return item.name if isinstance(item, _Union) else item.__name__


def _module_notes(module: str, page: _Page) -> list[str]:
    """The body of a module's docstring, in the first section of a class (or union) from that module."""
    if module in page.modules:
        return []
    page.modules.add(module)
    body = _docstring_body(getattr(sys.modules.get(module), "__doc__", None))
    return [_to_markdown(body), ""] if body else []


def _table(model: type[Spec], fields: list[tuple[str, FieldInfo]], union: _Union | None = None) -> list[str]:
    if not fields:
        return ["No keys of its own.", ""]
    rows = ["| Key | Type | Default | Meaning |", "|---|---|---|---|"]
    for name, info in fields:
        meaning = _meaning(model, name, info)
        if not meaning and union is not None and _key(name, info) == union.tag:
            meaning = f"selects this entry of [{union.name}](#{union.name.lower()})"
        cells = [f"`{_key(name, info)}`", _type_cell(info), _default(info), meaning]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return [*rows, ""]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _key(name: str, info: FieldInfo) -> str:
    return info.alias or name


def _own_fields(model: type[BaseModel]) -> list[tuple[str, FieldInfo]]:
    """The fields a class declares itself (inherited ones are documented with the base class)."""
    declared = set(inspect.get_annotations(model))
    inherited = set().union(*(b.model_fields for b in _spec_bases(model)))
    return [
        (name, info)
        for name, info in model.model_fields.items()
        if not info.exclude and (name in declared or name not in inherited)
    ]


def _spec_bases(model: type[BaseModel]) -> list[type[Spec]]:
    """The spec classes (with keys) that ``model`` extends directly."""
    return [b for b in model.__bases__ if issubclass(b, Spec) and b is not Spec and b.model_fields]


@cache
def _documented() -> tuple[type[Spec], ...]:
    """Every spec class reachable from Project, and the bases they share keys with."""
    found: list[type[Spec]] = []
    queue: list[Any] = [Project]
    while queue:
        item = queue.pop(0)
        members = item.members if isinstance(item, _Union) else [item]
        for model in members:
            for candidate in [*_spec_bases(model), model]:
                if candidate not in found:
                    found.append(candidate)
                    for _, info in _own_fields(candidate):
                        queue += _referenced(info.annotation, info)
    return tuple(found)


# ------------------------------------------------------------------------------------------ types
def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    metadata: list[Any] = []
    while get_origin(annotation) is Annotated:
        metadata += list(annotation.__metadata__)
        annotation = annotation.__origin__
    return annotation, metadata


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, UnionType)


def _alternatives(annotation: Any) -> list[Any]:
    """The members of a union, nested unions flattened (Annotated members kept whole)."""
    if not _is_union(annotation):
        return [annotation]
    found: list[Any] = []
    for arg in get_args(annotation):
        inner, _ = _unwrap(arg)
        found += _alternatives(arg) if _is_union(inner) and get_origin(arg) is not Annotated else [arg]
    return found


def _is_spec(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, Spec)


def _discriminated(annotation: Any, metadata: list[Any], info: FieldInfo | None) -> _Union | None:
    """The annotation as a discriminated union of spec classes, with its name, or None."""
    annotation, inner_meta = _unwrap(annotation)
    metadata = metadata + inner_meta
    if not _is_union(annotation):
        return None
    members = [_unwrap(m)[0] for m in _alternatives(annotation)]
    if not members or not all(_is_spec(m) for m in members):
        return None
    tag = next((m.discriminator for m in metadata if isinstance(m, FieldInfo) and m.discriminator), None)
    if tag is None and info is not None and isinstance(info.discriminator, str):
        tag = info.discriminator
    if not isinstance(tag, str):
        return None
    name, module = _union_name(members)
    return _Union(name, tag, members, module)


def _union_name(members: list[type[Spec]]) -> tuple[str, str]:
    """The module-level alias that names a union (``SourceSpec``), and its module."""
    for module in _MODULES:
        for name, value in vars(module).items():
            inner, _ = _unwrap(value)
            same = _is_union(inner) and [_unwrap(m)[0] for m in _alternatives(inner)] == members
            if get_origin(value) is Annotated and same:
                return name, module.__name__
    return members[0].__name__ + "Kinds", members[0].__module__


def _tag_values(model: type[BaseModel], tag: str) -> tuple[Any, ...]:
    info = model.model_fields.get(tag)
    return get_args(_unwrap(info.annotation)[0]) if info is not None else ()


def _referenced(annotation: Any, info: FieldInfo | None = None) -> list[type[Spec] | _Union]:
    """The spec classes and discriminated unions an annotation refers to, in order."""
    union = _discriminated(annotation, [], info)
    if union is not None:
        return [union]
    annotation, _ = _unwrap(annotation)
    if _is_spec(annotation):
        return [annotation]
    found: list[type[Spec] | _Union] = []
    if _is_union(annotation):
        for member in _alternatives(annotation):
            union = _discriminated(member, [], None)
            found += [union] if union is not None else _referenced(member)
        return found
    for arg in get_args(annotation):
        if get_origin(annotation) is not Literal:
            found += _referenced(arg)
    return found


def _collect_paths(model: type[BaseModel], prefix: str, paths: dict[str, list[str]], busy: set[str]) -> None:
    """Where each spec class (and union) sits in the file, as key paths such as `sources.<name>`."""
    if model.__name__ in busy:
        return
    busy = busy | {model.__name__}
    for name, info in model.model_fields.items():
        if not info.exclude:
            path = f"{prefix}.{_key(name, info)}" if prefix else _key(name, info)
            _paths_of(info.annotation, path, paths, busy, info)


def _paths_of(annotation: Any, path: str, paths: dict[str, list[str]], busy: set[str], info: Any) -> None:
    def add(name: str, where: str) -> None:
        if where not in paths.setdefault(name, []):
            paths[name].append(where)

    union = _discriminated(annotation, [], info)
    if union is not None:
        add(union.name, f"`{path}`")
        for member in union.members:
            tags = ", ".join(f"`{union.tag}: {_literal(v)}`" for v in _tag_values(member, union.tag))
            add(member.__name__, f"`{path}` with {tags}")
            _collect_paths(member, path, paths, busy)
        return
    annotation, _ = _unwrap(annotation)
    if _is_spec(annotation):
        add(annotation.__name__, f"`{path}`")
        _collect_paths(annotation, path, paths, busy)
    elif _is_union(annotation):
        for member in _alternatives(annotation):
            _paths_of(member, path, paths, busy, None)
    elif get_origin(annotation) is dict and len(get_args(annotation)) == 2:
        _paths_of(get_args(annotation)[1], f"{path}.<name>", paths, busy, None)
    elif get_origin(annotation) in (list, tuple) and get_args(annotation):
        _paths_of(get_args(annotation)[0], f"{path}[]", paths, busy, None)


_SCALARS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
    Any: "any",
    SecretStr: "secret",
}


def _type_cell(info: FieldInfo) -> str:
    text = _type_text(info.annotation, list(info.metadata), info)
    bounds = _bounds(info.metadata)
    return f"{text} ({bounds})" if bounds else text


def _type_text(annotation: Any, metadata: list[Any], info: FieldInfo | None = None) -> str:
    union = _discriminated(annotation, metadata, info)
    if union is not None:
        return f"[{union.name}](#{union.name.lower()}) (by `{union.tag}`)"
    annotation, inner = _unwrap(annotation)
    metadata = metadata + inner
    for item in metadata:
        function = getattr(item, "func", None)
        if isinstance(item, AfterValidator) and function is _base._resolve_from_context:
            return "path"
        if isinstance(item, BeforeValidator) and function is _monitoring.parse_duration:
            return "duration"
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if _is_spec(annotation):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " or ".join(f"`{_literal(v)}`" for v in args)
    if _is_union(annotation):
        members = _alternatives(annotation)
        texts = [_type_text(m, []) for m in members if m is not type(None)]
        if type(None) in members:
            texts.append("null")
        return " or ".join(dict.fromkeys(texts))
    if origin is list and args:
        return f"list of {_grouped(_type_text(args[0], []))}"
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_grouped(_type_text(args[0], []))}"
        return "[" + ", ".join(_type_text(a, []) for a in args) + "]"
    if origin is dict and len(args) == 2:
        return f"map of {_type_text(args[0], [])} to {_grouped(_type_text(args[1], []))}"
    return getattr(annotation, "__name__", str(annotation))


def _grouped(text: str) -> str:
    return f"({text})" if " or " in text else text


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _bounds(metadata: list[Any]) -> str:
    parts: list[str] = []
    low = high = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            parts.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            parts.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            parts.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            low = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            high = item.max_length
    if low is not None and low == high:
        parts.append(f"length {low}")
    else:
        parts += [f"length ≥ {low}"] if low is not None else []
        parts += [f"length ≤ {high}"] if high is not None else []
    return ", ".join(parts)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "*required*"
    value = info.get_default(call_default_factory=True, validated_data={})
    if value is PydanticUndefined:
        return ""
    if isinstance(value, BaseModel):
        text = json.dumps(value.model_dump(mode="json", by_alias=True), ensure_ascii=False)
        return f"`{text}`" if len(text) <= 40 else "*its defaults*"
    if isinstance(value, SecretStr):
        return "`**********`"
    return f"`{json.dumps(to_jsonable_python(value), ensure_ascii=False)}`"


# ---------------------------------------------------------------------------------------- meaning
def _meaning(model: type[BaseModel], name: str, info: FieldInfo) -> str:
    if info.description:
        return _to_markdown(info.description)
    notes = _source_notes(model).get(name)
    if notes:
        return _to_markdown(notes)
    keys = {_key(n, i) for n, i in model.model_fields.items()} | set(model.model_fields)
    return _to_markdown(_docstring_clause(model, _key(name, info), keys))


@cache
def _source_notes(model: type[BaseModel]) -> dict[str, str]:
    """Per attribute of a class: a docstring under it, else the comments on its lines."""
    try:
        source = inspect.getsource(model)
    except (OSError, TypeError):
        return {}
    source = textwrap.dedent(source)
    try:
        tree = ast.parse(source)
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (SyntaxError, tokenize.TokenError):
        return {}
    comments: dict[int, list[str]] = {}
    for token in tokens:
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if text and not re.match(r"(noqa|type:|pragma)\b", text):
                comments.setdefault(token.start[0], []).append(text)
    notes: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, after in zip(body, [*body[1:], None], strict=True):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        is_doc = (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        )
        if is_doc:
            assert isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
            notes[node.target.id] = inspect.cleandoc(str(after.value.value))
            continue
        lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
        texts = [text for line in lines for text in comments.get(line, [])]
        if texts:
            notes[node.target.id] = " ".join(texts)
    return notes


_CODE = re.compile(r"``([^`]+)``")


def _mentions(text: str, key: str) -> bool:
    return any(re.match(re.escape(key) + r"(?![A-Za-z0-9_])", span) for span in _CODE.findall(text))


def _leading(text: str, key: str) -> bool:
    """Whether the text starts by naming ``key`` (alone or in a run such as ``min``/``max``)."""
    match = re.match(r"(?:``[^`]+``(?:\s*(?:/|,|or|and)\s*)?)+", text.strip())
    return match is not None and _mentions(match.group(0), key)


def _docstring_clause(model: type[BaseModel], key: str, keys: set[str]) -> str:
    """The clause of the class docstrings (the class's, then its bases') that explains ``key``."""
    loose: str | None = None
    for owner in model.__mro__:
        if owner in (Spec, BaseModel) or not owner.__dict__.get("__doc__"):
            continue
        for sentence in _sentences(inspect.cleandoc(owner.__dict__["__doc__"])):
            if not _mentions(sentence, key):
                continue
            for group in _groups(sentence, keys):
                if _leading(group, key):
                    return re.sub(r"^``" + re.escape(key) + r"``:\s*", "", group)
                if loose is None and _mentions(group, key):
                    loose = group
    return loose or ""


def _sentences(doc: str) -> Iterator[str]:
    for paragraph in re.split(r"\n\s*\n", doc):
        if paragraph.lstrip().startswith("```"):
            continue
        for item in re.split(r"\n\s*(?:\d+\.|[-*])\s+", "\n" + paragraph):  # items of a list apart
            text = " ".join(item.split())
            if text:
                yield from re.split(r"(?<=[.!?])\s+(?=[A-Z`(\"'])", text)


def _groups(sentence: str, keys: set[str]) -> list[str]:
    """A sentence cut at top-level semicolons; a clause that does not start with a key stays with the
    clause before it."""
    clauses: list[str] = []
    depth, start, in_code = 0, 0, False
    i = 0
    while i < len(sentence):
        if sentence.startswith("``", i):
            in_code = not in_code
            i += 2
            continue
        char = sentence[i]
        if not in_code:
            depth += char in "([{"
            depth -= char in ")]}"
            if char == ";" and depth <= 0:
                clauses.append(sentence[start:i].strip())
                start = i + 1
        i += 1
    clauses.append(sentence[start:].strip())
    groups: list[str] = []
    for clause in clauses:
        if groups and not any(_leading(clause, k) for k in keys):
            groups[-1] += "; " + clause
        else:
            groups.append(clause)
    return groups


def _docstring_body(doc: str | None) -> str:
    """A module docstring without its summary line (what the module is, to a developer)."""
    if not doc:
        return ""
    parts = re.split(r"\n\s*\n", inspect.cleandoc(doc), maxsplit=1)
    return parts[1].strip() if len(parts) > 1 else ""


def _to_markdown(text: str) -> str:
    """reStructuredText habits of the docstrings (``code``, :class:`X`) as Markdown, fences kept."""
    pieces = re.split(r"(```.*?```)", text, flags=re.DOTALL)
    for i in range(0, len(pieces), 2):
        piece = re.sub(r":(?:class|func|meth|mod|attr):`~?(?:[\w.]+\.)?(\w+)`", _reference, pieces[i])
        pieces[i] = _CODE.sub(lambda m: f"`{m.group(1)}`", piece)
    return "".join(pieces)


def _reference(match: re.Match[str]) -> str:
    name = match.group(1)
    if any(model.__name__ == name for model in _documented()):
        return f"[{name}](#{name.lower()})"
    return f"`{name}`"
