"""From a resolved node to pool volumes and a :class:`DomainSpec` (no domain lifecycle here)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import libvirt

from deploy.errors import ProviderError
from deploy.model.resolved import Nic, ResolvedNode
from deploy.providers import libvirt_storage as store
from deploy.providers.base import ProviderContext, Tags
from deploy.providers.libvirt_xml import (
    Disk,
    DomainSpec,
    LabMeta,
    UserNic,
    forwarded_host_ports,
    mac_for,
    static_cidr,
)


@dataclass(frozen=True)
class Placement:
    """Where and how a provider puts its machines."""

    provider: str
    pool: str
    accel: str  # kvm | tcg
    bind: str  # host address of the user-mode port forwards
    backend: str  # slirp | passt


def user_nic(node: ResolvedNode) -> Nic | None:
    return next((nic for nic in node.nics if nic.mode == "user"), None)


def make_volumes(
    conn: libvirt.virConnect,
    pool: libvirt.virStoragePool,
    node: ResolvedNode,
    tags: Tags,
    *,
    base: str,
    ctx: ProviderContext,
) -> list[str]:
    """Root overlay, extra disks and seed ISO of ``node`` (existing ones are kept); seed last."""
    root = store.volume_name(tags.lab, node.name, "root")
    store.create_overlay(pool, root, base, node.disk_gib)
    names = [root]
    for index, size in enumerate(node.extra_disks_gib, start=1):
        names.append(store.volume_name(tags.lab, node.name, f"disk{index}"))
        store.create_blank(pool, names[-1], size)
    names.append(_seed_volume(conn, pool, node, tags, ctx))
    return names


def _seed_volume(
    conn: libvirt.virConnect, pool: libvirt.virStoragePool, node: ResolvedNode, tags: Tags, ctx: ProviderContext
) -> str:
    from deploy.images.seed import build_seed_iso

    if not ctx.ssh_public_key:
        raise ProviderError("the lab has no SSH public key to put on its machines (ctx.ssh_public_key)")
    name = store.volume_name(tags.lab, node.name, "seed")
    if store.lookup_volume(pool, name) is None:
        local = ctx.state_dir / "seeds" / f"{tags.lab}-{node.name}.iso"
        local.parent.mkdir(parents=True, exist_ok=True)
        build_seed_iso(
            local,
            hostname=node.name,
            ssh_public_key=ctx.ssh_public_key,
            instance_id=f"{tags.lab}-{node.name}-{tags.run_id}",
            user=node.ssh_user,
            static_addresses=static_addresses(conn, node, tags.lab),
            hosts=static_hosts(conn, node, tags.lab, ctx.nodes),
        )
        store.upload_volume(conn, pool, name, local)
    return name


def nic_mac(lab: str, node: str, nic: Nic) -> str:
    return nic.mac or mac_for(lab, node, nic.network)


def _static_networks(conn: libvirt.virConnect, lab: str, names: set[str]) -> dict[str, str]:
    """Lab network -> cidr, for those of ``names`` defined without ``<ip>`` (no DHCP)."""
    found: dict[str, str] = {}
    for net in sorted(names):
        try:
            cidr = static_cidr(conn.networkLookupByName(f"{lab}-{net}").XMLDesc(0))
        except libvirt.libvirtError:
            continue  # not a libvirt network of this lab (yet): nothing to configure
        if cidr:
            found[net] = cidr
    return found


def static_addresses(conn: libvirt.virConnect, node: ResolvedNode, lab: str) -> list[tuple[str, str]]:
    """(mac, ip/prefix) of the node's NICs on networks without DHCP."""
    nics = [nic for nic in node.nics if nic.mode != "user" and nic.ip]
    cidrs = _static_networks(conn, lab, {nic.network for nic in nics})
    result = []
    for nic in nics:
        if nic.network in cidrs and nic.ip:
            prefix = ipaddress.ip_network(cidrs[nic.network], strict=False).prefixlen
            result.append((nic_mac(lab, node.name, nic), f"{nic.ip}/{prefix}"))
    return result


def static_hosts(
    conn: libvirt.virConnect, node: ResolvedNode, lab: str, nodes: dict[str, ResolvedNode]
) -> list[tuple[str, str]]:
    """(ip, name) of every lab node on the networks where ``node`` has a static address."""
    mine = {nic.network for nic in node.nics if nic.mode != "user" and nic.ip}
    static = set(_static_networks(conn, lab, mine))
    if not static:
        return []
    peers = {node.name: node, **nodes}
    seen: dict[str, str] = {}
    for peer in sorted(peers.values(), key=lambda n: n.name):
        for nic in peer.nics:
            if nic.network in static and nic.ip and peer.name not in seen:
                seen[peer.name] = nic.ip
    return [(ip, name) for name, ip in seen.items()]


def fixed_addresses(node: ResolvedNode) -> dict[str, str]:
    return {nic.network: nic.ip for nic in node.nics if nic.ip}


def disks_for(pool: str, volumes: list[str]) -> tuple[Disk, ...]:
    """virtio disks vda, vdb, ... for all but the last volume, which is the seed CD-ROM."""
    disks = [Disk(pool, v, f"vd{chr(ord('a') + i)}") for i, v in enumerate(volumes[:-1])]
    disks.append(Disk(pool, volumes[-1], "hdc", device="cdrom", fmt="raw"))
    return tuple(disks)


def used_host_ports(conn: libvirt.virConnect) -> set[int]:
    """Host ports that any domain on the connection forwards (labdeploy's or not)."""
    used: set[int] = set()
    for dom in conn.listAllDomains(0):
        used |= forwarded_host_ports(dom.XMLDesc(0))
    return used


def serial_log_path(ctx: ProviderContext, domain: str) -> Path:
    folder = ctx.artifacts_dir or ctx.state_dir
    path = (folder / "consoles" / f"{domain}.log").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def domain_spec(
    where: Placement,
    node: ResolvedNode,
    tags: Tags,
    *,
    disks: tuple[Disk, ...],
    ports: dict[int, int],
    serial_log: Path,
) -> DomainSpec:
    """Everything the domain XML needs for ``node``; nested virtualization only under KVM."""
    lab = tags.lab
    nets = tuple((f"{lab}-{nic.network}", nic_mac(lab, node.name, nic)) for nic in node.nics if nic.mode != "user")
    user = user_nic(node)
    mgmt = None
    if user is not None:
        mgmt = UserNic(user.mac or mac_for(lab, node.name, user.network), ports, where.bind, where.backend)
    volumes = tuple(d.volume for d in disks)
    return DomainSpec(
        name=f"{lab}-{node.name}",
        accel=where.accel,
        cpus=node.cpus,
        memory_mib=node.memory_mib,
        disks=disks,
        networks=nets,
        meta=LabMeta(tags, where.provider, node.name, ports, volumes, node.ssh_user, fixed_addresses(node)),
        serial_log=str(serial_log),
        user_nic=mgmt,
        nested=node.nested_virtualization and where.accel == "kvm",
        gpus=tuple(g.pci for g in node.gpus),
    )
