"""Provider kinds, found through the ``labdeploy.providers`` entry point group.

Each entry point names a :class:`~deploy.providers.base.Provider` subclass, optionally with the
extra that installs its library (``vsphere = "pkg.mod:Class [vsphere]"``), as pyinfra finds its
connectors. Nothing here imports a provider module until its kind is asked for, so ``validate``
and ``plan`` stay cheap; a kind whose library is missing is reported with the install command
instead of looking unknown.
"""

from __future__ import annotations

import difflib
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from deploy.errors import ConfigError

if TYPE_CHECKING:
    from deploy.providers.base import SomeProvider

GROUP = "labdeploy.providers"
DISTRIBUTION = "labdeploy"
_LOCK = threading.Lock()
_LOADED: dict[str, type[SomeProvider]] = {}


@dataclass(frozen=True)
class KindUnavailable:
    """Why a registered kind cannot be loaded here (its optional library is missing)."""

    kind: str
    missing: str
    extras: tuple[str, ...]

    def message(self) -> str:
        extras = ",".join(self.extras)
        install = f"pip install '{DISTRIBUTION}[{extras}]'" if extras else f"pip install {self.missing}"
        return f"provider kind {self.kind!r} needs {self.missing}: {install}"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def kinds() -> list[str]:
    """Every registered kind, loadable or not."""
    return sorted(_entry_points())


def provider_class(kind: str) -> type[SomeProvider]:
    """The class of ``kind``; ConfigError names the supported kinds or the missing library."""
    with _LOCK:
        if kind in _LOADED:
            return _LOADED[kind]
    found = _entry_points().get(kind)
    if found is None:
        raise ConfigError(_unknown(kind))
    cls = _load(found)
    with _LOCK:
        _LOADED[kind] = cls
    return cls


class KindUnavailableError(ConfigError):
    """A registered kind whose optional library is not installed."""

    def __init__(self, why: KindUnavailable) -> None:
        super().__init__(why.message())
        self.why = why


def unavailable(kind: str) -> KindUnavailable | None:
    """Why ``kind`` cannot be loaded, or None when it can (or is unknown: see :func:`known`)."""
    try:
        provider_class(kind)
    except KindUnavailableError as exc:
        return exc.why
    except ConfigError:
        return None
    return None


def known(kind: str) -> bool:
    return kind in _entry_points()


def _load(found: EntryPoint) -> type[SomeProvider]:
    from deploy.providers.base import Provider

    try:
        cls = found.load()
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        if missing.startswith("deploy."):
            raise
        raise KindUnavailableError(KindUnavailable(found.name, missing, tuple(found.extras))) from None
    if not (isinstance(cls, type) and issubclass(cls, Provider)) or cls.kind != found.name:
        raise ConfigError(f"entry point {found.name} = {found.value} is not a Provider of kind {found.name!r}",
                          hint="fix the package that registers it")
    return cls


def _unknown(kind: str) -> str:
    names = kinds()
    near = difflib.get_close_matches(kind, names, n=1)
    guess = f" (did you mean {near[0]!r}?)" if near else ""
    return f"unknown provider kind {kind!r}{guess}; supported kinds: {', '.join(names) or 'none'}"
