"""The narrow provider interface and the registry of provider kinds.

A provider turns resolved networks and nodes into real things on one hypervisor endpoint
(one libvirt URI, one vCenter, one Vagrant project, or a set of existing hosts). Every
resource it creates carries ``Tags`` on the hypervisor itself so that ``find_resources``
can list a lab's leftovers even when the local state is gone.

Providers raise :class:`deploy.errors.ProviderError`; they never print or exit.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from deploy.errors import ConfigError, ProviderError
from deploy.model.resolved import ResolvedImage, ResolvedNetwork, ResolvedNode
from deploy.ssh.endpoint import SshEndpoint as SshEndpoint  # noqa: PLC0414 (re-export for providers)


@dataclass(frozen=True)
class Tags:
    """Ownership marks written onto every created resource."""

    lab: str
    run_id: str
    created: datetime
    expires: datetime | None = None


@dataclass(frozen=True)
class MachineInfo:
    """What a provider reports about a created (or found) machine."""

    name: str
    state: str  # running | stopped | absent | unknown
    ssh: SshEndpoint | None = None
    ports: dict[int, int] = field(default_factory=dict)  # guest port -> host loopback port
    addresses: dict[str, str] = field(default_factory=dict)  # network -> address
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaggedResource:
    """A resource found on a hypervisor by its tags."""

    kind: str  # machine | network | volume | ...
    name: str
    tags: Tags
    provider: str


@dataclass
class ProviderContext:
    """What a provider may use from the run: where to keep files, the lab's SSH key."""

    lab: str
    state_dir: Path
    artifacts_dir: Path | None = None
    ssh_private_key: Path | None = None
    ssh_public_key: str | None = None
    image_cache: Path | None = None
    log: Callable[[str], None] = lambda _msg: None
    secret: Callable[[Any], str] = str
    nodes: dict[str, ResolvedNode] = field(default_factory=dict)  # the lab's nodes, by name


class Provider(abc.ABC):
    """One provider endpoint. Methods are idempotent: creating what exists returns it."""

    kind: ClassVar[str]

    def __init__(self, name: str, spec: Any, ctx: ProviderContext) -> None:
        self.name = name
        self.spec = spec
        self.ctx = ctx

    def check(self) -> None:
        """Raise ProviderError when the endpoint is unusable (before any side effect)."""

    def prepare_image(self, image: ResolvedImage) -> dict[str, Any]:
        """Make ``image`` available on this endpoint; returns outputs kept in the state."""
        return {"image": image.name}

    @abc.abstractmethod
    def create_network(self, net: ResolvedNetwork, tags: Tags) -> dict[str, Any]: ...

    @abc.abstractmethod
    def delete_network(self, name: str) -> None: ...

    @abc.abstractmethod
    def create_machine(self, node: ResolvedNode, tags: Tags) -> MachineInfo: ...

    @abc.abstractmethod
    def delete_machine(self, name: str) -> None: ...

    @abc.abstractmethod
    def status(self, name: str) -> MachineInfo: ...

    @abc.abstractmethod
    def find_resources(self, lab: str | None = None) -> list[TaggedResource]: ...

    def delete_resource(self, resource: TaggedResource) -> None:
        """Delete a resource that ``find_resources`` returned (name as the lab names it)."""
        if resource.kind == "machine":
            self.delete_machine(resource.name)
        elif resource.kind == "network":
            self.delete_network(resource.name)
        else:
            raise ProviderError(f"provider {self.name} cannot delete {resource.kind} {resource.name}")

    def close(self) -> None:
        """Release connections."""


P = TypeVar("P", bound=type[Provider])
_REGISTRY: dict[str, type[Provider]] = {}


def register(cls: P) -> P:
    """Class decorator: make a provider kind available by its ``kind``."""
    _REGISTRY[cls.kind] = cls
    return cls


def provider_class(kind: str) -> type[Provider]:
    """The provider class for ``kind``; the error lists every supported kind."""
    _load_builtin()
    try:
        return _REGISTRY[kind]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ConfigError(f"unknown provider kind {kind!r}; supported kinds: {known}") from None


def supported_kinds() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _load_builtin() -> None:
    import importlib

    for module in ("existing", "libvirt"):
        try:
            importlib.import_module(f"deploy.providers.{module}")
        except ImportError as exc:  # a provider whose library is missing stays unregistered
            if exc.name and exc.name.startswith("deploy."):
                raise
    if not _REGISTRY:
        raise ProviderError("no provider could be loaded")
