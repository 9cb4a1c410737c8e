"""libvirt networks and host port forwards: CIDR clash checks, port allocation, network CRUD."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import libvirt

from deploy.errors import ProviderError
from deploy.model.resolved import PortForward, ResolvedNetwork
from deploy.providers.libvirt_xml import LabMeta, network_bridge, network_cidrs, network_xml, parse_meta

PORT_RANGE = (40000, 49999)
IpNet = ipaddress.IPv4Network | ipaddress.IPv6Network


def find_overlap(cidr: str, existing: Iterable[tuple[str, IpNet]], *, skip: str = "") -> str | None:
    """Name and subnet of the first existing network (other than ``skip``) overlapping ``cidr``."""
    wanted = ipaddress.ip_network(cidr, strict=False)
    for name, net in existing:
        if name != skip and net.version == wanted.version and net.overlaps(wanted):
            return f"{name} ({net})"
    return None


def port_is_free(bind: str, port: int) -> bool:
    """True when nothing on this host is bound to ``bind:port`` (TCP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((bind, port))
        except OSError:
            return False
    return True


def allocate_ports(
    wanted: Iterable[PortForward],
    used: set[int],
    *,
    is_free: Callable[[int], bool],
    port_range: tuple[int, int] = PORT_RANGE,
) -> dict[int, int]:
    """Map guest ports to host ports: fixed ones must be unused, the rest take the next free."""
    result: dict[int, int] = {}
    taken = set(used)
    for fwd in wanted:
        if fwd.guest in result:
            continue
        if fwd.host is not None:
            if fwd.host in taken or not is_free(fwd.host):
                raise ProviderError(
                    f"host port {fwd.host} for guest port {fwd.guest} is already in use",
                    hint="pick another host port in the node's ports, or leave it empty to allocate one",
                )
            result[fwd.guest] = fwd.host
        else:
            result[fwd.guest] = _next_free(taken, is_free, port_range)
        taken.add(result[fwd.guest])
    return result


def _next_free(taken: set[int], is_free: Callable[[int], bool], port_range: tuple[int, int]) -> int:
    for port in range(port_range[0], port_range[1] + 1):
        if port not in taken and is_free(port):
            return port
    raise ProviderError(
        f"no free host port left in {port_range[0]}-{port_range[1]} for a user-mode forward",
        hint="delete unused labs (deploy destroy) to release forwarded ports",
    )


# ---------------------------------------------------------------- networks on a connection


def all_network_cidrs(conn: libvirt.virConnect) -> list[tuple[str, IpNet]]:
    """(network name, subnet) for every defined libvirt network, active or not."""
    return [(net.name(), cidr) for net in conn.listAllNetworks() for cidr in network_cidrs(net.XMLDesc(0))]


def lookup_network(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork | None:
    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return None
        raise ProviderError(f"cannot look up libvirt network {name}: {exc}") from exc


def ensure_network(conn: libvirt.virConnect, name: str, net: ResolvedNetwork, meta: LabMeta) -> dict[str, Any]:
    """Define and start network ``name`` for ``net`` unless this lab already has it."""
    existing = lookup_network(conn, name)
    if existing is not None:
        _check_owner(existing, name, meta.tags.lab)
    elif net.mode != "bridge":
        _check_cidr(conn, name, net)
    if existing is None:
        xml = network_xml(
            name,
            net.mode,
            replace(meta, cidr=net.cidr or ""),
            cidr=net.cidr,
            bridge=net.bridge,
            domain=net.domain,
            reservations=net.reservations,
            dhcp=net.dhcp,
        )
        existing = _define(conn, name, xml)
    _start(existing, name)
    return {
        "libvirt_name": name,
        "mode": net.mode,
        "cidr": net.cidr,
        "bridge": network_bridge(existing.XMLDesc(0)),
    }


def _check_owner(network: libvirt.virNetwork, name: str, lab: str) -> None:
    meta = parse_meta(network.XMLDesc(0))
    if meta is None or meta.tags.lab != lab:
        owner = f"lab {meta.tags.lab!r}" if meta else "something other than labdeploy"
        raise ProviderError(
            f"libvirt network {name} already exists and belongs to {owner}, not lab {lab!r}",
            hint=f"rename the network or the lab, or remove it: virsh net-destroy {name}; virsh net-undefine {name}",
        )


def _check_cidr(conn: libvirt.virConnect, name: str, net: ResolvedNetwork) -> None:
    if not net.cidr:
        raise ProviderError(f"network {net.name} (mode {net.mode}) needs a cidr")
    clash = find_overlap(net.cidr, all_network_cidrs(conn), skip=name)
    if clash:
        raise ProviderError(
            f"network {net.name}: cidr {net.cidr} overlaps the existing libvirt network {clash}",
            hint="choose a cidr that no other libvirt network on this host uses",
        )


def _define(conn: libvirt.virConnect, name: str, xml: str) -> libvirt.virNetwork:
    try:
        network = conn.networkDefineXML(xml)
        network.setAutostart(True)
    except libvirt.libvirtError as exc:
        raise ProviderError(f"libvirt refused to define network {name}: {exc}") from exc
    return network


def _start(network: libvirt.virNetwork, name: str) -> None:
    if network.isActive():
        return
    try:
        network.create()
    except libvirt.libvirtError as exc:
        raise ProviderError(
            f"cannot start libvirt network {name}: {exc}",
            hint="libvirt needs dnsmasq (Debian: dnsmasq-base) for DHCP and DNS on lab networks",
        ) from exc


def remove_network(network: libvirt.virNetwork) -> None:
    """Stop and undefine a network (already-gone is fine)."""
    try:
        if network.isActive():
            network.destroy()
        network.undefine()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
            raise ProviderError(f"cannot delete libvirt network {network.name()}: {exc}") from exc
