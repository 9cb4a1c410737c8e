"""The narrow provider interface and the registry of provider kinds.

A provider turns resolved networks and nodes into real things on one hypervisor endpoint
(one libvirt URI, one vCenter, one Vagrant project, or a set of existing hosts). Every
resource it creates carries ``Tags`` on the hypervisor itself so that ``find_resources``
can list a lab's leftovers even when the local state is gone.

A provider kind is a subclass of :class:`Provider` with a typed spec (``spec_model``, the
pydantic model of its ``providers:`` entry) and declared :class:`Capabilities`, registered
through the ``labdeploy.providers`` entry point group (see :mod:`deploy.providers.registry`):
adding a kind edits no other module. Providers raise :class:`deploy.errors.ProviderError`;
they never print or exit.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from deploy.errors import ProviderError
from deploy.model.resolved import ResolvedImage, ResolvedNetwork, ResolvedNode
from deploy.ssh.endpoint import SshEndpoint as SshEndpoint  # noqa: PLC0414 (re-export for providers)


@dataclass(frozen=True)
class Tags:
    """Ownership marks written onto every created resource."""

    lab: str
    run_id: str
    created: datetime
    expires: datetime | None = None
    state: str | None = None  # the lab's state folder: a resource whose lab state is gone is an orphan


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
    networks: dict[str, ResolvedNetwork] = field(default_factory=dict)  # the lab's networks, by name
    images: dict[str, ResolvedImage] = field(default_factory=dict)  # the lab's images, by name


@dataclass(frozen=True)
class Capabilities:
    """What a provider kind can do; ``validate`` and ``plan`` read it before any side effect."""

    network_modes: frozenset[str] = frozenset()  # lab network modes it can create
    image_sources: frozenset[str] = frozenset()  # image sources it can boot (build, file, url, template, ova)
    host_reachable_modes: frozenset[str] = frozenset()  # NIC modes through which the host reaches a guest
    snapshots: bool = False
    console: bool = False
    machines: bool = True  # creates machines (``existing`` only adopts them)


SpecT = TypeVar("SpecT", bound=BaseModel)


class Provider(abc.ABC, Generic[SpecT]):
    """One provider endpoint. Methods are idempotent: creating what exists returns it."""

    kind: ClassVar[str]
    spec_model: ClassVar[type[BaseModel]]
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, name: str, spec: SpecT, ctx: ProviderContext) -> None:
        self.name = name
        self.spec: SpecT = spec
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

    def wait_reachable(self, info: MachineInfo, known_hosts: Path, timeout: float) -> float:
        """Block until ``info``'s sshd accepts the lab key (host key checked); seconds waited.

        Providers that can see more than a TCP port (a domain that died while booting, its
        console) override this to fail early with what they saw.
        """
        import time

        from deploy.ssh import wait_for_ssh

        if info.ssh is None:
            raise ProviderError(f"machine {info.name} has no SSH endpoint to wait for")
        start = time.monotonic()
        wait_for_ssh(info.ssh, known_hosts=known_hosts, alias=info.name, timeout=timeout)
        return time.monotonic() - start

    def reap_candidates(self) -> list[TaggedResource]:
        """Every resource of every lab on this endpoint, named as the hypervisor names it."""
        return self.find_resources(None)

    def reap_remove(self, resource: TaggedResource) -> None:
        """Remove a resource that :meth:`reap_candidates` returned, whatever lab owns it."""
        self.delete_resource(resource)

    def close(self) -> None:
        """Release connections."""


SomeProvider = Provider[Any]  # a provider of any kind, as the registry and the engine hold them
