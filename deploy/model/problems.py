"""Helpers the semantic checks share: a Problem at a YAML path, where a node's field was written."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from deploy.errors import Problem
from deploy.model.load import LoadedLab, PathKey
from deploy.model.resolve import ResolvedLab


def problem(loaded: LoadedLab, path: PathKey, message: str, hint: str = "") -> Problem:
    return Problem(message, loaded.positions.locate(path), hint)


def first_written(loaded: LoadedLab, *paths: PathKey) -> PathKey:
    """The first of ``paths`` the file has a position for (else the last one)."""
    return next((p for p in paths if p in loaded.positions.at), paths[-1])


def field_path(loaded: LoadedLab, resolved: ResolvedLab, node: str, name: str) -> PathKey:
    """Where a node's field was written: the node itself, its group, or the defaults."""
    group = resolved.nodes[node].group
    for path in (("nodes", node, name), ("groups", str(group), name), ("defaults", name)):
        if path in loaded.positions.at:
            return path
    return resolved.sources.get(node, ("nodes", node))


def names(mapping: Mapping[str, object] | list[str]) -> str:
    return ", ".join(sorted(mapping)) or "(none defined)"


def node_layers(resolved: ResolvedLab, field: str) -> Iterator[tuple[PathKey, Any]]:
    """(YAML path, value) of ``field`` in the defaults, each group and each node that wrote it."""
    lab = resolved.lab
    layers: list[tuple[PathKey, Any]] = [(("defaults",), lab.defaults)]
    layers += [(("groups", name), spec) for name, spec in lab.groups.items()]
    layers += [(("nodes", name), spec) for name, spec in lab.nodes.items()]
    for path, spec in layers:
        if field in spec.model_fields_set and getattr(spec, field) is not None:
            yield (*path, field), getattr(spec, field)
