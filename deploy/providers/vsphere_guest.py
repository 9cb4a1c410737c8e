"""What VMware Tools report about a guest, read as the vsphere provider needs it.

The machine step waits (``vsphere_tasks.wait_for``) on :data:`GUEST_PATHS` until :func:`guest_ready`;
:func:`guest_wanted` then picks the address the host uses: an IPv4 address, not loopback or
link-local (a guest reports ``fe80::`` or ``169.254.x`` while DHCP is still running), on the first
of the node's NICs that has one.
"""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address
from typing import Any

GUEST_PATHS = ["guest.toolsRunningStatus", "guest.ipAddress", "guest.net"]
TOOLS_RUNNING = "guestToolsRunning"


def usable(address: str | None) -> bool:
    """Whether ``address`` is one the host can reach the guest at (IPv4, not loopback or link-local)."""
    try:
        parsed = ip_address(address or "")
    except ValueError:
        return False
    return isinstance(parsed, IPv4Address) and not (parsed.is_loopback or parsed.is_link_local
                                                    or parsed.is_unspecified)


def guest_ready(values: dict[str, Any]) -> bool:
    """Tools run and the guest reports a usable address (on a NIC, or as its primary address)."""
    if values.get("guest.toolsRunningStatus") != TOOLS_RUNNING:
        return False
    return usable(values.get("guest.ipAddress")) or any(
        usable(ip) for nic in values.get("guest.net") or () for ip in getattr(nic, "ipAddress", None) or ())


def guest_wanted(values: dict[str, Any], networks: dict[str, str]) -> tuple[str, str] | None:
    """(address, lab network) of the guest, or None before Tools report one.

    ``networks`` maps the port group of each of the node's NICs to its lab network, in NIC order: the
    first NIC with a usable address wins; a primary address on no known NIC counts for the first NIC.
    """
    if not guest_ready(values):
        return None
    by_portgroup: dict[str, str] = {}
    for nic in values.get("guest.net") or ():
        portgroup = getattr(nic, "network", None) or ""
        address = next((ip for ip in getattr(nic, "ipAddress", None) or () if usable(ip)), None)
        if address and portgroup not in by_portgroup:
            by_portgroup[portgroup] = address
    for portgroup, network in networks.items():
        if portgroup in by_portgroup:
            return by_portgroup[portgroup], network
    primary = str(values.get("guest.ipAddress") or "")
    if usable(primary):
        return primary, next(iter(networks.values()), "")
    return None
