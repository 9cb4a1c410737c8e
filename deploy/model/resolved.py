"""Resolved lab objects: every field set, ready for providers and stages.

These are what the lower layers (providers, images, configure, verify) consume; they never
see the raw YAML models. Sizes are plain integers (MiB / GiB), references are names that
``checks`` has already proven to exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PortForward:
    """A guest TCP port reachable from the host on loopback (user-mode networking)."""

    guest: int
    host: int | None = None  # None: the provider allocates a free port


@dataclass(frozen=True)
class Nic:
    """One network interface of a node."""

    network: str
    mode: str  # user | nat | isolated | bridge
    ip: str | None = None  # fixed address (DHCP reservation) on nat/isolated networks
    mac: str | None = None


@dataclass(frozen=True)
class ResolvedImage:
    """An image reference. Exactly one of the source fields is set, given by ``source``."""

    name: str
    source: str  # build | file | url | template | ova
    distro: str | None = None
    release: str | None = None
    packages: tuple[str, ...] = ()
    path: str | None = None  # file / ova
    url: str | None = None
    sha256: str | None = None
    template: str | None = None

    def recipe(self) -> dict[str, Any]:
        """The fields that define the image's content (its cache identity)."""
        return {k: v for k, v in self.__dict__.items() if k != "name" and v not in (None, ())}


@dataclass(frozen=True)
class ResolvedNetwork:
    name: str
    provider: str
    mode: str  # user | nat | isolated | bridge
    cidr: str | None = None
    dhcp: bool = True
    bridge: str | None = None  # host bridge for mode bridge
    reservations: tuple[tuple[str, str, str], ...] = ()  # (node, mac, ip)
    domain: str | None = None  # DNS domain for lab node names


@dataclass(frozen=True)
class GpuDevice:
    pci: str  # 0000:3b:00.0


@dataclass(frozen=True)
class ResolvedNode:
    name: str
    group: str | None
    index: int
    provider: str
    image: str
    cpus: int
    memory_mib: int
    disk_gib: int
    nics: tuple[Nic, ...]
    roles: tuple[str, ...] = ()
    nested_virtualization: bool = False
    gpus: tuple[GpuDevice, ...] = ()
    ports: tuple[PortForward, ...] = ()
    ssh: bool = True  # False: nothing logs in (no reachable SSH wait, no configure, no node checks)
    ssh_user: str = "root"
    address: str | None = None  # existing hosts: where they already are
    ssh_port: int = 22
    ssh_key: str | None = None  # existing hosts: key file; otherwise the lab key is used
    extra_disks_gib: tuple[int, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    join: Any = None  # schema.EsxiJoin: the vCenter cluster a nested ESXi node is added to
