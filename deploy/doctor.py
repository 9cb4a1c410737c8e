"""Host prerequisites: each check says what it found and the command that fixes it."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _binary(name: str, package: str) -> Callable[[], Finding]:
    def check() -> Finding:
        path = shutil.which(name)
        return Finding(name, bool(path), path or "not found", "" if path else f"apt-get install -y {package}")

    return check


def libvirt_reachable(uri: str = "qemu:///system") -> Finding:
    if importlib.util.find_spec("libvirt") is None:
        return Finding("libvirt-python", False, "module libvirt not importable",
                       "apt-get install -y libvirt-dev pkg-config && pip install libvirt-python")
    import libvirt

    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        return Finding(f"libvirt {uri}", False, str(exc).splitlines()[0],
                       "apt-get install -y libvirt-daemon-system && (systemctl start libvirtd || libvirtd -d)")
    version = conn.getLibVersion()
    conn.close()
    return Finding(f"libvirt {uri}", True, f"libvirt {version // 1000000}.{version // 1000 % 1000}")


def acceleration() -> Finding:
    try:
        from deploy.providers.accel import choose_accel
    except ImportError:
        return Finding("acceleration", False, "accel probe unavailable", "pip install -e .")
    accel, warning = choose_accel("auto")
    if accel == "kvm":
        return Finding("acceleration", True, "KVM works: guests run at native speed")
    return Finding("acceleration", True, f"TCG (software emulation): {warning or 'KVM unusable here'}",
                   "nothing to fix for labs; on bare metal enable VT-x/AMD-V in firmware to get KVM")


CHECKS: list[Callable[[], Finding]] = [
    libvirt_reachable,
    acceleration,
    _binary("qemu-system-x86_64", "qemu-system-x86"),
    _binary("qemu-img", "qemu-utils"),
    _binary("mmdebstrap", "mmdebstrap"),
    _binary("ssh", "openssh-client"),
    _binary("ansible-playbook", "ansible-core (pip install ansible-core)"),
]


def run_checks() -> list[Finding]:
    return [check() for check in CHECKS]
