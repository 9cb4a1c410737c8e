"""Read a lab file with positions, validate it, and report every problem with file:line and path.

YAML is read with ruamel.yaml's round-trip loader so each key and list item keeps its line
and column; pydantic validation errors are mapped back onto those positions. All problems
of a file are reported together in one ConfigError.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from deploy.errors import ConfigError, Location, Problem
from deploy.model.schema import BUILTIN_PROVIDER_KINDS, Lab

PathKey = tuple[str | int, ...]


@dataclass
class Positions:
    """1-based (line, column) of every key and list item, by YAML path."""

    file: str
    at: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: PathKey) -> Location:
        """The location of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.at:
                line, col = self.at[path[:end]]
                return Location(self.file, line, col, format_path(path))
        return Location(self.file, None, None, format_path(path))


@dataclass
class LoadedLab:
    lab: Lab
    file: Path
    positions: Positions
    data: dict[str, Any]


def format_path(path: PathKey) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def read_yaml(path: Path) -> tuple[Any, Positions]:
    """Parse ``path`` into plain Python data plus the position of every key and item."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(f"cannot read the lab file: {exc.strerror}", Location(str(path)),
                                   "check the path; `deploy validate PATH` takes the lab.yaml file")]) from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, file: str) -> tuple[Any, Positions]:
    yaml = YAML(typ="rt")
    try:
        raw = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        message = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ConfigError([Problem(f"YAML syntax: {message}", Location(file, line, col),
                                   "fix the YAML syntax at that line (indentation, quotes, colons)")]) from None
    except Exception as exc:  # ruamel raises a few unmarked errors (e.g. bad unicode)
        raise ConfigError([Problem(f"YAML syntax: {exc}", Location(file), "fix the YAML syntax")]) from None
    positions = Positions(file, {(): (1, 1)})
    try:
        return _plain(raw, (), positions), positions
    except RecursionError:  # an alias inside itself (`&a [*a]`) or absurd nesting
        raise ConfigError([Problem("YAML nests too deep (an anchor used inside itself?)", Location(file, 1, 1),
                                   "remove the recursive alias (&name ... *name)")]) from None


def _plain(node: Any, path: PathKey, positions: Positions) -> Any:
    if isinstance(node, CommentedMap):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            line, col = node.lc.key(key)
            positions.at[(*path, key)] = (line + 1, col + 1)
            out[key] = _plain(value, (*path, key), positions)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            line, col = node.lc.item(index)
            positions.at[(*path, index)] = (line + 1, col + 1)
            items.append(_plain(value, (*path, index), positions))
        return items
    if isinstance(node, str):
        return str(node)
    return node


def load_lab(path: Path) -> LoadedLab:
    """Read and validate a lab file; raise one ConfigError listing every problem."""
    data, positions = read_yaml(path)
    return LoadedLab(validate_data(data, positions), path, positions, data)


def validate_data(data: Any, positions: Positions) -> Lab:
    if not isinstance(data, dict):
        hint = "a lab file is a YAML mapping that starts with `name:` (and `nodes:` or `groups:`)"
        seen = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError([Problem(f"the lab file is {seen}, not a mapping", Location(positions.file, 1, 1),
                                   hint)])
    try:
        return Lab.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(err, data, positions) for err in exc.errors()]
        raise ConfigError(_unique(problems)) from None


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[str] = set()
    out = []
    for problem in problems:
        if str(problem) not in seen:
            seen.add(str(problem))
            out.append(problem)
    return sorted(out, key=lambda p: (p.location.line or 0, p.location.column or 0))


def data_path(loc: tuple[Any, ...], data: Any) -> PathKey:
    """Drop pydantic's union/validator markers from ``loc``, keeping the real YAML keys."""
    out: list[str | int] = []
    node = data
    for part in loc:
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if (isinstance(node, dict) and part in node) or in_list:
            out.append(part)
            node = node[part]
    return tuple(out)


def _problem(err: Any, data: Any, positions: Positions) -> Problem:
    path = data_path(tuple(err["loc"]), data)
    kind = err["type"]
    if kind == "extra_forbidden":
        return _unknown_key(path, data, positions)
    if kind == "missing":
        missing = err["loc"][-1]
        return Problem(f"missing key {missing!r}", positions.locate(path),
                       f"add `{missing}:` under {format_path(path)}")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = err.get("ctx", {}).get("expected_tags") or _provider_kinds()
        seen = err.get("ctx", {}).get("tag", "")
        message = f"unknown provider kind {seen!r}" if seen else "a provider needs kind:"
        return Problem(message, positions.locate(path), f"kind is one of {tags}")
    return Problem(_message(err), positions.locate(path), _hint(err))


def _provider_kinds() -> str:
    return ", ".join(repr(kind) for kind in BUILTIN_PROVIDER_KINDS)


def _message(err: Any) -> str:
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "literal_error":
        return f"{err['input']!r} is not allowed; {message.lower().replace('input should be', 'use')}"
    if err["type"] == "string_pattern_mismatch" and "a-z0-9" in str(err.get("ctx", {}).get("pattern")):
        return f"{err['input']!r} is not a valid name: use lower-case letters, digits and dashes"
    if err["type"] == "string_pattern_mismatch":
        return f"{err['input']!r} has the wrong form"
    return message


def _hint(err: Any) -> str:
    wanted = {"int": "a whole number", "float": "a number", "bool": "true or false"}
    kind = str(err["type"]).split("_")[0]
    if kind in wanted and err["type"].endswith(("_parsing", "_type")):
        return f"write {wanted[kind]}, not {err['input']!r}"
    return ""


def _unknown_key(path: PathKey, data: Any, positions: Positions) -> Problem:
    key = str(path[-1])
    valid = sorted(_valid_keys(path[:-1], data))
    message = unknown_name("key", key, path, positions) + did_you_mean(key, valid)
    return Problem(message, positions.locate(path), f"valid keys here: {', '.join(valid)}")


def unknown_name(what: str, name: str, path: PathKey, positions: Positions) -> str:
    """``unknown key 'memroy' at groups.workers (line 21)``: ``path`` ends at the name itself."""
    line = positions.at.get(path, (None, None))[0]
    return f"unknown {what} {name!r} at {format_path(path[:-1])}" + (f" (line {line})" if line else "")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``: did you mean 'memory'?`` for the nearest of ``choices``, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f": did you mean {close[0]!r}?" if close else ""


def _valid_keys(path: PathKey, data: Any) -> list[str]:
    model = _model_at(Lab, path, data)
    return list(model.model_fields) if model else []


def _model_at(annotation: Any, path: PathKey, data: Any) -> type[BaseModel] | None:
    annotation = _strip(annotation, data)
    if not path:
        return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    head, rest = path[0], path[1:]
    child = data.get(head) if isinstance(data, dict) else None
    if isinstance(data, list) and isinstance(head, int):
        child = data[head]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        info = annotation.model_fields.get(str(head))
        return _model_at(info.annotation, rest, child) if info else None
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (dict, list) and args:
        return _model_at(args[-1], rest, child)
    return None


def _strip(annotation: Any, data: Any) -> Any:
    """Unwrap Annotated and Optional; pick the union member whose ``kind`` matches ``data``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            annotation = _union_member(typing.get_args(annotation), data)
        else:
            return annotation


def _union_member(members: tuple[Any, ...], data: Any) -> Any:
    candidates = [m for m in members if m is not type(None)]
    kind = data.get("kind") if isinstance(data, dict) else None
    for member in candidates:
        fields = getattr(member, "model_fields", {})
        if "kind" in fields and kind in typing.get_args(fields["kind"].annotation):
            return member
    models = [m for m in candidates if isinstance(m, type) and issubclass(m, BaseModel)]
    return models[0] if models else candidates[0]
