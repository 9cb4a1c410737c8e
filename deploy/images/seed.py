"""cloud-init NoCloud seed ISOs (volume label ``cidata``), written in Python with pycdlib.

The seed carries ``meta-data`` (instance-id, local-hostname), ``user-data`` (a
``#cloud-config`` that sets the hostname, installs the SSH key for root and the image's
default user and turns password logins off) and, when given, ``network-config``. The same
input always gives the same bytes: pycdlib's clock is pinned while the ISO is written.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import sys
import threading
import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pycdlib

from deploy.atomic import atomic_write
from deploy.errors import ConfigError

# Fixed timestamp written into every seed (2024-01-01T00:00:00Z) so the ISO is reproducible.
SEED_EPOCH = 1_704_067_200.0
_CLOCK_LOCK = threading.Lock()
_PYCDLIB_MODULES = ("pycdlib.pycdlib", "pycdlib.headervd", "pycdlib.dates", "pycdlib.utils")


def meta_data(hostname: str, instance_id: str) -> str:
    """The NoCloud meta-data document."""
    return json.dumps({"instance-id": instance_id, "local-hostname": hostname}, indent=2) + "\n"


def networkd_file(mac: str, address: str) -> str:
    """A systemd-networkd unit giving the NIC with ``mac`` the static ``address`` (ip/prefix)."""
    return (
        f"[Match]\nMACAddress={mac}\n\n"
        f"[Network]\nAddress={address}\nDHCP=no\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        "LLMNR=no\nMulticastDNS=no\n"
    )


def hosts_file(hostname: str, hosts: Sequence[tuple[str, str]]) -> str:
    """/etc/hosts: loopback, this machine's own name, then ``(address, name)`` of lab peers."""
    short = hostname.split(".", 1)[0]
    lines = ["127.0.0.1 localhost", f"127.0.1.1 {hostname} {short}" if short != hostname else f"127.0.1.1 {short}"]
    lines += [f"{ip} {name}" for ip, name in hosts]
    lines.append("::1 localhost ip6-localhost ip6-loopback")
    return "\n".join(lines) + "\n"


def static_network_script(
    hostname: str, static_addresses: Sequence[tuple[str, str]], hosts: Sequence[tuple[str, str]]
) -> str:
    """Shell (run as cloud-init ``bootcmd``, before sshd starts) that sets the static addresses.

    bootcmd runs in cloud-init's init stage ahead of ``write_files`` and long before
    ``runcmd``; doing the writes here means the addresses are up when SSH first answers.
    """
    lines = ["set -e", "mkdir -p /etc/systemd/network"]
    for mac, address in static_addresses:
        path = f"/etc/systemd/network/10-labdeploy-{mac.replace(':', '').lower()}.network"
        lines.append(f"printf '%s' {shlex.quote(networkd_file(mac, address))} > {path}")
    if hosts:
        lines.append(f"printf '%s' {shlex.quote(hosts_file(hostname, hosts))} > /etc/hosts")
    # bootcmd runs before dbus is up: networkctl (a D-Bus client) fails then; restarting
    # networkd through systemd's own socket applies the new file (sshd has not started yet)
    lines.append("networkctl reload 2>/dev/null || systemctl restart systemd-networkd.service")
    return "\n".join(lines) + "\n"


def user_data(
    hostname: str,
    ssh_public_key: str,
    user: str = "root",
    *,
    static_addresses: Sequence[tuple[str, str]] = (),
    hosts: Sequence[tuple[str, str]] = (),
) -> str:
    """The ``#cloud-config`` user-data document (JSON is valid YAML, and quoting-safe).

    ``static_addresses`` are ``(mac, ip/prefix)`` of NICs on networks without DHCP; ``hosts``
    are ``(ip, name)`` of lab nodes reachable there (written to /etc/hosts, no DNS server needed).
    """
    short = hostname.split(".", 1)[0]
    config: dict[str, Any] = {
        "hostname": short,
        "fqdn": hostname,
        "prefer_fqdn_over_hostname": False,
        "manage_etc_hosts": not hosts,
        "disable_root": False,
        "ssh_pwauth": False,
        "ssh_authorized_keys": [ssh_public_key],
    }
    if user != "root":
        config["users"] = [
            "default",
            {
                "name": user,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "shell": "/bin/bash",
                "lock_passwd": True,
                "ssh_authorized_keys": [ssh_public_key],
            },
        ]
    if static_addresses or hosts:
        config["bootcmd"] = [["sh", "-c", static_network_script(hostname, static_addresses, hosts)]]
    return "#cloud-config\n" + json.dumps(config, indent=2) + "\n"


def build_seed_iso(
    path: Path,
    *,
    hostname: str,
    ssh_public_key: str,
    instance_id: str,
    user: str = "root",
    network_config: str | None = None,
    static_addresses: Sequence[tuple[str, str]] = (),
    hosts: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write a NoCloud seed ISO to ``path`` (replacing it) and return ``path``."""
    _validate(hostname, ssh_public_key, instance_id)
    files = {
        "meta-data": meta_data(hostname, instance_id),
        "user-data": user_data(hostname, ssh_public_key.strip(), user, static_addresses=static_addresses, hosts=hosts),
    }
    if network_config is not None:
        files["network-config"] = network_config
    atomic_write(path, _iso_bytes(files), 0o644)
    return path


def _validate(hostname: str, ssh_public_key: str, instance_id: str) -> None:
    if not hostname or any(c.isspace() for c in hostname):
        raise ConfigError(f"seed: hostname {hostname!r} is not a valid host name")
    if not instance_id:
        raise ConfigError("seed: instance_id is empty", hint="pass a unique id per machine")
    parts = ssh_public_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ConfigError(
            "seed: ssh_public_key is not an OpenSSH public key (expected 'ssh-ed25519 AAAA...')",
            hint="pass the contents of the .pub file, not the private key",
        )


def _iso_bytes(files: dict[str, str]) -> bytes:
    iso = pycdlib.PyCdlib()
    with _pinned_clock():
        iso.new(interchange_level=3, vol_ident="cidata", joliet=3, rock_ridge="1.09")
        for index, (name, text) in enumerate(sorted(files.items())):
            payload = text.encode()
            iso_name = f"/{name.replace('-', '').upper()[:8]}{index}.;1"
            iso.add_fp(io.BytesIO(payload), len(payload), iso_name, rr_name=name, joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
    iso.close()
    return out.getvalue()


class _FixedClock(types.SimpleNamespace):
    """Stands in for the ``time`` module inside pycdlib: a fixed 'now', always UTC."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextlib.contextmanager
def _pinned_clock() -> Iterator[None]:
    clock = _FixedClock(time=lambda: SEED_EPOCH, localtime=time.gmtime)
    with _CLOCK_LOCK:
        modules = [sys.modules[name] for name in _PYCDLIB_MODULES if name in sys.modules]
        saved = [getattr(module, "time") for module in modules]  # noqa: B009
        try:
            for module in modules:
                setattr(module, "time", clock)  # noqa: B010
            yield
        finally:
            for module, original in zip(modules, saved, strict=True):
                setattr(module, "time", original)  # noqa: B010
