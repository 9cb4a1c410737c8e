"""The libvirt provider: lab networks, storage and QEMU domains on one libvirt URI.

Its spec is :class:`deploy.model.schema.LibvirtProviderSpec` (defaults live there only).

Machines get a user-mode management NIC whose loopback port forwards (SSH plus the node's
ports) are recorded in the domain's metadata, so they stay stable across runs. Every domain
and network carries ``<ld:lab>`` metadata (see :mod:`libvirt_xml`), which is all that
``find_resources``, ``delete_*`` and :func:`reap` need.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import libvirt

from deploy.errors import ProviderError
from deploy.model.resolved import PortForward, ResolvedImage, ResolvedNetwork, ResolvedNode
from deploy.model.schema import LibvirtProviderSpec
from deploy.providers import libvirt_inventory as inv
from deploy.providers import libvirt_machine as machine
from deploy.providers import libvirt_storage as store
from deploy.providers.accel import choose_accel, cpuinfo_from_capabilities
from deploy.providers.base import (
    Capabilities,
    MachineInfo,
    Provider,
    ProviderContext,
    SshEndpoint,
    TaggedResource,
    Tags,
)
from deploy.providers.libvirt_net import (
    allocate_ports,
    ensure_network,
    lookup_network,
    port_is_free,
    remove_network,
)
from deploy.providers.libvirt_xml import (
    LabMeta,
    domain_xml,
    parse_meta,
)

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors become exceptions, never stderr

# Shared by every provider in this process (labs of one run may share a libvirt host):
_ALLOC_LOCK = threading.Lock()  # host port allocation + domain define
_NET_LOCK = threading.Lock()  # CIDR clash check + network define
_IMAGE_LOCK = threading.Lock()  # base image upload
STATE_NAMES = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_SHUTOFF: "stopped"}
PASST_MIN_LIBVIRT = 10_000_000  # libvirt 9.x's young passt backend is not trusted by default


def is_local_uri(uri: str) -> bool:
    host = urlparse(uri).hostname or ""
    return host in ("", "localhost", "::1") or host.startswith("127.")


class LibvirtProvider(Provider[LibvirtProviderSpec]):
    kind = "libvirt"
    spec_model = LibvirtProviderSpec
    capabilities = Capabilities(
        network_modes=frozenset({"user", "isolated", "nat", "bridge"}),
        image_sources=frozenset({"build", "file", "url"}),
        host_reachable_modes=frozenset({"user"}),
        console=True,
    )

    def __init__(self, name: str, spec: LibvirtProviderSpec, ctx: ProviderContext) -> None:
        super().__init__(name, spec, ctx)
        self.uri = spec.uri
        self.requested_accel = spec.accel
        self.pool_name = spec.pool
        self.pool_path = spec.pool_path or f"/var/lib/libvirt/images/{self.pool_name}"
        self.bind = spec.ssh_host_bind
        self.user_backend = spec.user_backend
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.RLock()
        self._accel: str | None = None
        self._bases: dict[str, str] = {}  # image name -> base volume

    # ------------------------------------------------------------ connection

    @property
    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is None:
                self._conn = self._open()
            return self._conn

    def _open(self) -> libvirt.virConnect:
        try:
            return libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise ProviderError(
                f"cannot connect to libvirt at {self.uri}: {exc.get_error_message()}",
                hint="start libvirtd (libvirtd -d; virtlogd -d) on that host; for qemu+ssh:// URIs "
                "check that `ssh` to the host works without a password and libvirt is installed there",
            ) from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
                self._conn = None

    def check(self) -> None:
        """Connect and decide the accelerator (``accel: kvm`` where it cannot work fails here)."""
        self.conn.getLibVersion()
        self.accel()

    def accel(self) -> str:
        """The accelerator for this endpoint (decided once, warning logged)."""
        with self._lock:
            if self._accel is None:
                self._accel = self._choose_accel()
            return self._accel

    def _choose_accel(self) -> str:
        if is_local_uri(self.uri):
            accel, warning = choose_accel(self.requested_accel)
        else:
            cpuinfo = cpuinfo_from_capabilities(self.conn.getCapabilities())
            # the remote /dev/kvm cannot be looked at; libvirt's kvm domain capabilities stand for it
            accel, warning = choose_accel(
                self.requested_accel, cpuinfo=cpuinfo, device=Path("/"), probe=self._remote_kvm_probe
            )
        if warning:
            self.ctx.log(f"{self.name}: {warning}")
        return accel

    def _remote_kvm_probe(self, _device: Path) -> str | None:
        try:
            self.conn.getDomainCapabilities(None, None, None, "kvm", 0)
        except libvirt.libvirtError as exc:
            return f"libvirt at {self.uri} offers no kvm domains: {exc.get_error_message()}"
        return None

    def _pool(self) -> libvirt.virStoragePool:
        with self._lock:
            return store.ensure_pool(self.conn, self.pool_name, self.pool_path)

    # ------------------------------------------------------------ images

    def prepare_image(self, image: ResolvedImage) -> dict[str, Any]:
        """Import the cached image once into the pool as ``base-<sha256>`` (cheap when done)."""
        if image.source not in ("build", "file", "url"):
            raise ProviderError(f"image {image.name}: the libvirt provider cannot use {image.source} images")
        from deploy.images import ensure_image

        path = Path(ensure_image(image, cache_dir=self.ctx.image_cache))
        digest = store.content_hash(path, self.ctx.state_dir)
        pool = self._pool()
        with _IMAGE_LOCK:  # one upload per base volume in this process
            volume = store.import_base(self.conn, pool, path, digest)
            self.use_base_volume(image.name, volume)
        return {"pool": self.pool_name, "volume": volume, "sha256": digest}

    def use_base_volume(self, image_name: str, volume: str) -> None:
        """Remember the pool volume of an image, also for later runs that skip the images stage."""
        self._bases[image_name] = volume
        known = self._recorded_bases()
        known[image_name] = volume
        self._bases_file.parent.mkdir(parents=True, exist_ok=True)
        self._bases_file.write_text(json.dumps(known, indent=1, sort_keys=True))

    @property
    def _bases_file(self) -> Path:
        return self.ctx.state_dir / f"libvirt-{self.name}-images.json"

    def _recorded_bases(self) -> dict[str, str]:
        if not self._bases_file.exists():
            return {}
        return dict(json.loads(self._bases_file.read_text()))

    def _base_volume(self, node: ResolvedNode) -> str:
        base = self._bases.get(node.image) or self._recorded_bases().get(node.image)
        if base is None:
            raise ProviderError(
                f"image {node.image} of node {node.name} was not prepared on provider {self.name}",
                hint="run the images stage (prepare_image) before creating machines",
            )
        return base

    # ------------------------------------------------------------ networks

    def network_name(self, lab: str, net: str) -> str:
        return f"{lab}-{net}"

    def create_network(self, net: ResolvedNetwork, tags: Tags) -> dict[str, Any]:
        if net.mode == "user":
            return {"mode": "user"}  # QEMU user-mode networking lives on each domain
        name = self.network_name(tags.lab, net.name)
        with _NET_LOCK:  # CIDR check + define, against networks made by other threads
            return ensure_network(self.conn, name, net, LabMeta(tags, provider=self.name))

    def delete_network(self, name: str) -> None:
        for candidate in (self.network_name(self.ctx.lab, name), name):
            network = lookup_network(self.conn, candidate)
            if network is not None and self._owned(parse_meta(network.XMLDesc(0))):
                remove_network(network)
                return

    def _owned(self, meta: LabMeta | None) -> bool:
        return meta is not None and meta.tags.lab == self.ctx.lab

    # ------------------------------------------------------------ machines

    def domain_name(self, lab: str, node: str) -> str:
        return f"{lab}-{node}"

    def create_machine(self, node: ResolvedNode, tags: Tags) -> MachineInfo:
        name = self.domain_name(tags.lab, node.name)
        dom = inv.lookup_domain(self.conn, name)
        if dom is None:
            dom = self._define_machine(name, node, tags)
        meta = self._check_owner(dom, name, tags.lab)
        self._start(dom, name)
        return self._info(dom, meta)

    def _check_owner(self, dom: libvirt.virDomain, name: str, lab: str) -> LabMeta:
        meta = inv.domain_meta(dom)
        if meta is None or meta.tags.lab != lab:
            owner = f"lab {meta.tags.lab!r}" if meta else "something other than labdeploy"
            raise ProviderError(
                f"libvirt domain {name} already exists and belongs to {owner}, not lab {lab!r}",
                hint="rename the node or the lab, or remove that domain first",
            )
        return meta

    def _define_machine(self, name: str, node: ResolvedNode, tags: Tags) -> libvirt.virDomain:
        base = self._base_volume(node)
        if node.nested_virtualization and self.accel() != "kvm":
            self.ctx.log(f"{node.name}: nested virtualization needs KVM; this {self.accel()} guest has none")
        volumes = machine.make_volumes(self.conn, self._pool(), node, tags, base=base, ctx=self.ctx)
        with _ALLOC_LOCK:  # allocated ports are taken once the domain is defined
            existing = inv.lookup_domain(self.conn, name)
            if existing is not None:
                return existing
            ports = self._allocate(node) if machine.user_nic(node) else {}
            spec = machine.domain_spec(
                self._placement(),
                node,
                tags,
                disks=machine.disks_for(self.pool_name, volumes),
                ports=ports,
                serial_log=machine.serial_log_path(self.ctx, name),
            )
            try:
                return self.conn.defineXML(domain_xml(spec))
            except libvirt.libvirtError as exc:
                raise ProviderError(f"libvirt refused domain {name}: {exc.get_error_message()}") from exc

    def _allocate(self, node: ResolvedNode) -> dict[int, int]:
        local = is_local_uri(self.uri)
        wanted = [PortForward(22), *node.ports]
        used = machine.used_host_ports(self.conn)
        return allocate_ports(wanted, used, is_free=lambda p: not local or port_is_free(self.bind, p))

    def _placement(self) -> machine.Placement:
        return machine.Placement(self.name, self.pool_name, self.accel(), self.bind, self._backend())

    def _backend(self) -> str:
        if self.user_backend in ("slirp", "passt"):
            return self.user_backend
        passt_ok = is_local_uri(self.uri) and shutil.which("passt") is not None
        return "passt" if passt_ok and self.conn.getLibVersion() >= PASST_MIN_LIBVIRT else "slirp"

    def _start(self, dom: libvirt.virDomain, name: str) -> None:
        if dom.isActive():
            return
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            raise ProviderError(
                f"libvirt could not start domain {name}: {exc.get_error_message()}",
                hint="a forwarded host port may be taken by another program, or the disk images unreadable "
                "by the qemu user (see /etc/libvirt/qemu.conf)",
            ) from exc

    def _info(self, dom: libvirt.virDomain, meta: LabMeta) -> MachineInfo:
        state = STATE_NAMES.get(dom.state()[0], "unknown")
        ssh = None
        if 22 in meta.ports and self.ctx.ssh_private_key is not None:
            host = self.bind if is_local_uri(self.uri) else (urlparse(self.uri).hostname or self.bind)
            host = "127.0.0.1" if host in ("0.0.0.0", "") else host
            ssh = SshEndpoint(host, meta.ports[22], meta.ssh_user, self.ctx.ssh_private_key)
        extra = {
            "domain": dom.name(),
            "uri": self.uri,
            "accel": self.accel(),
            "serial_log": self._console(dom),
        }
        return MachineInfo(meta.node, state, ssh, dict(meta.ports), dict(meta.addresses), extra=extra)

    def _console(self, dom: libvirt.virDomain) -> str:
        log = ET.fromstring(dom.XMLDesc(0)).find("devices/serial/log")
        return log.get("file", "") if log is not None else ""

    def status(self, name: str) -> MachineInfo:
        dom, meta = self._find(name)
        if dom is None or meta is None:
            return MachineInfo(name, "absent")
        return self._info(dom, meta)

    def _find(self, name: str) -> tuple[libvirt.virDomain | None, LabMeta | None]:
        for candidate in (self.domain_name(self.ctx.lab, name), name):
            dom = inv.lookup_domain(self.conn, candidate)
            meta = inv.domain_meta(dom) if dom is not None else None
            if dom is not None and self._owned(meta):
                return dom, meta
        return None, None

    def delete_machine(self, name: str) -> None:
        dom, meta = self._find(name)
        if dom is not None:
            inv.remove_domain(self.conn, self.pool_name, dom)
        node = meta.node if meta else name
        inv.remove_node_volumes(self.conn, self.pool_name, self.ctx.lab, node)

    def delete_volume(self, name: str) -> None:
        """Remove one of this lab's machine volumes (an orphan left by a killed run)."""
        owner = store.volume_owner(name)
        pool = inv.lookup_pool(self.conn, self.pool_name)
        if owner is not None and owner[0] == self.ctx.lab and pool is not None:
            store.delete_volume(pool, name)

    def find_resources(self, lab: str | None = None) -> list[TaggedResource]:
        """Tagged machines and networks (named as the lab names them) and machine volumes."""
        return [_lab_named(r) for r in inv.find_tagged(self.conn, self.pool_name, self.name, lab)]

    def delete_resource(self, resource: TaggedResource) -> None:
        if resource.kind == "volume":
            self.delete_volume(resource.name)
        else:
            super().delete_resource(resource)

    def wait_reachable(self, info: MachineInfo, known_hosts: Path, timeout: float) -> float:  # noqa: ARG002
        """Wait until the machine's sshd accepts the lab key, failing at once if its domain dies."""
        from deploy.providers.libvirt_wait import wait_machine

        return wait_machine(self, info, timeout)  # the store of known_hosts is the lab's, as here

    def reap_candidates(self) -> list[TaggedResource]:
        """Tagged domains, networks and volumes of every lab, plus base images no volume uses."""
        from datetime import UTC, datetime

        found = inv.find_tagged(self.conn, self.pool_name, self.name, None)
        return found + inv.unused_bases(self.conn, self.pool_name, self.name, datetime.now(UTC))

    def reap_remove(self, resource: TaggedResource) -> None:
        inv.remove_resource(self.conn, self.pool_name, resource)


def _lab_named(res: TaggedResource) -> TaggedResource:
    prefix = f"{res.tags.lab}-"
    if res.kind == "volume" or not res.name.startswith(prefix):
        return res
    return TaggedResource(res.kind, res.name.removeprefix(prefix), res.tags, res.provider)
