"""Choosing the QEMU accelerator: KVM only where it really works, TCG otherwise.

``/dev/kvm`` existing is not enough: on nested hosts without VMX/SVM (PVM and similar) the
device is there, ``KVM_CREATE_VM`` may even succeed, and guests hang on boot. So ``auto``
requires all three: the device, ``vmx``/``svm`` in the CPU flags, and a probe that creates a
VM through the KVM API. Every input is injectable so the decision is testable with plain data.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable
from pathlib import Path

from deploy.errors import ConfigError

KVM_GET_API_VERSION = 0xAE00  # _IO(KVMIO, 0x00)
KVM_CREATE_VM = 0xAE01  # _IO(KVMIO, 0x01)
KVM_API_VERSION = 12
ACCELS = ("auto", "kvm", "tcg")

Probe = Callable[[Path], str | None]  # returns None when KVM works, else why not


def cpu_virt_flag(cpuinfo: str) -> str | None:
    """``vmx`` or ``svm`` when a ``flags`` line of /proc/cpuinfo has it, else None."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() != "flags":
            continue
        flags = set(value.split())
        for flag in ("vmx", "svm"):
            if flag in flags:
                return flag
    return None


def probe_kvm(device: Path) -> str | None:
    """Create (and drop) a VM through the KVM API; None when that works, else the reason."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open {device}: {exc.strerror}"
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        if version != KVM_API_VERSION:
            return f"{device} speaks KVM API {version}, expected {KVM_API_VERSION}"
        vm_fd = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm_fd)
    except OSError as exc:
        return f"KVM_CREATE_VM on {device} failed: {exc.strerror}"
    finally:
        os.close(fd)
    return None


def kvm_problem(cpuinfo: str, device: Path, probe: Probe) -> str | None:
    """Why KVM cannot work here, or None when it can."""
    if not device.exists():
        return f"{device} does not exist (KVM module not loaded or not exposed to this host)"
    if cpu_virt_flag(cpuinfo) is None:
        return (
            "the CPU flags have neither vmx nor svm (nested host without hardware virtualization: KVM guests hang here)"
        )
    return probe(device)


def choose_accel(
    requested: str,
    *,
    cpuinfo: str | None = None,
    device: Path = Path("/dev/kvm"),
    probe: Probe = probe_kvm,
) -> tuple[str, str | None]:
    """Return ``(accel, warning)`` for ``requested`` (auto | kvm | tcg).

    ``auto`` falls back to ``tcg`` with a one-line warning; ``kvm`` where KVM cannot work
    raises ConfigError saying why.
    """
    if requested not in ACCELS:
        raise ConfigError(f"accel must be one of {', '.join(ACCELS)}, got {requested!r}")
    if requested == "tcg":
        return "tcg", None
    text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    problem = kvm_problem(text, device, probe)
    if problem is None:
        return "kvm", None
    if requested == "kvm":
        raise ConfigError(
            f"accel: kvm was requested but KVM cannot work on this host: {problem}",
            hint="use accel: auto or accel: tcg (slower software emulation)",
        )
    return "tcg", f"KVM unusable ({problem}); using TCG software emulation (slower)"


def cpuinfo_from_capabilities(caps_xml: str) -> str:
    """A /proc/cpuinfo-like ``flags`` line from libvirt capabilities XML (for remote hosts)."""
    names = re.findall(r"<feature\s+name=['\"]([\w.-]+)['\"]", caps_xml)
    return "flags\t: " + " ".join(names) + "\n"
