"""Checks of the ``providers:`` section against the registered provider kinds.

The schema knows the built-in kinds' fields; every other kind comes from the
``labdeploy.providers`` entry point group, and its fields are checked here by that kind's own
spec model, with the same positioned problems. A registered kind whose library is missing is
reported with its install command, and what a kind declares it cannot do (a network mode) is
refused here rather than halfway through ``deploy up``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from pydantic import ValidationError

from deploy.errors import ConfigError, Problem
from deploy.model.load import LoadedLab, _problem
from deploy.model.resolve import ResolvedLab
from deploy.model.schema import BUILTIN_PROVIDER_KINDS, PluginProviderSpec


def check_provider_kinds(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    from deploy.providers import registry

    for name, spec in resolved.providers.items():
        path = ("providers", name)
        if spec.kind not in BUILTIN_PROVIDER_KINDS and not registry.known(spec.kind):
            yield Problem(f"unknown provider kind {spec.kind!r}", loaded.positions.locate(path), _kinds_hint(spec.kind))
            continue
        try:
            cls = registry.provider_class(spec.kind) if registry.known(spec.kind) else None
        except ConfigError as exc:
            yield Problem(exc.message, loaded.positions.locate((*path, "kind")), exc.hint)
            continue
        if cls is not None and isinstance(spec, PluginProviderSpec):
            yield from _plugin_fields(loaded, name, cls.spec_model, spec)


def _plugin_fields(loaded: LoadedLab, name: str, model: type, spec: PluginProviderSpec) -> Iterator[Problem]:
    try:
        model.model_validate(spec.model_dump())  # type: ignore[attr-defined]
    except ValidationError as exc:
        for err in exc.errors():
            moved = {**err, "loc": ("providers", name, *err["loc"])}
            yield _problem(moved, loaded.data, loaded.positions)


def check_provider_capabilities(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    """Network modes a registered kind declares it cannot create."""
    from deploy.providers import registry

    for net in resolved.networks.values():
        spec = resolved.providers.get(net.provider)
        if spec is None or not registry.known(spec.kind) or registry.unavailable(spec.kind):
            continue
        modes = registry.provider_class(spec.kind).capabilities.network_modes
        if net.mode not in modes:
            yield Problem(f"network {net.name}: provider {net.provider} ({spec.kind}) cannot make {net.mode} networks",
                          loaded.positions.locate(("networks", net.name)),
                          f"use one of: {', '.join(sorted(modes)) or 'none'}")


def _kinds_hint(kind: str) -> str:
    from deploy.providers import registry

    names = sorted({*BUILTIN_PROVIDER_KINDS, *registry.kinds()})
    near = difflib.get_close_matches(kind, names, n=1)
    guess = f"did you mean {near[0]!r}? " if near else ""
    builtin = ", ".join(repr(k) for k in BUILTIN_PROVIDER_KINDS)
    extra = sorted(set(registry.kinds()) - set(BUILTIN_PROVIDER_KINDS))
    plugins = f"; registered by packages: {', '.join(extra)}" if extra else ""
    return f"{guess}kind is one of {builtin}{plugins}"
