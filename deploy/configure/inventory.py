"""The lab's hosts as pyinfra sees them: an Inventory with strict host-key checking."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyinfra.api.inventory import Inventory

from deploy.providers.base import SshEndpoint


@dataclass(frozen=True)
class HostTarget:
    """One node to configure: its name, how to reach its sshd, its roles and lab groups."""

    name: str
    ssh: SshEndpoint
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


def host_data(target: HostTarget, known_hosts: Path, connect_retries: int = 0) -> dict[str, Any]:
    """pyinfra ssh connector data: key auth only, known_hosts checked strictly."""
    ssh = target.ssh
    data: dict[str, Any] = {
        "ssh_hostname": ssh.host,
        "ssh_port": ssh.port,
        "ssh_user": ssh.user,
        "ssh_key": str(ssh.key_path),
        "ssh_known_hosts_file": str(known_hosts),
        "ssh_strict_host_key_checking": "yes",
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        "ssh_connect_retries": connect_retries,
        "lab_roles": target.roles,
    }
    if ssh.user != "root":
        data["_sudo"] = True
    return data


def build_inventory(targets: list[HostTarget], known_hosts: Path) -> Inventory:
    """An Inventory of ``targets``; groups are the lab groups plus ``role_<name>`` per role."""
    names = [(t.name, host_data(t, known_hosts)) for t in targets]
    groups: dict[str, list[str]] = defaultdict(list)
    for target in targets:
        for group in target.groups:
            groups[group].append(target.name)
        for role in target.roles:
            groups["role_" + role.replace("-", "_")].append(target.name)
    return Inventory(  # type: ignore[no-untyped-call]
        (names, {}), **{name: (members, {}) for name, members in groups.items()}
    )
