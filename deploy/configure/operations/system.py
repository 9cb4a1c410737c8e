"""Host-level operations pyinfra lacks in the shape needed: modules, swap, sysctls, holds, apt sources."""

from __future__ import annotations

import shlex
from collections.abc import Generator
from typing import Any

from pyinfra.api.operation import operation
from pyinfra.context import host
from pyinfra.facts.files import FileContents
from pyinfra.facts.server import Hostname, Sysctl

from deploy.configure.facts import ActiveSwaps, FstabSwaps, HeldPackages, LoadedKernelModule
from deploy.configure.operations import lines_text, put_text

HEADER = "# managed by labdeploy; local edits are overwritten"
_FSTAB_SWAP = r"^([^#[:space:]][^[:space:]]*[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]])"


def _file_differs(path: str, text: str) -> bool:
    current = host.get_fact(FileContents, path=path)
    return current is None or lines_text(list(current)) != text


@operation()
def kernel_modules(modules: list[str], persist_file: str = "/etc/modules-load.d/labdeploy.conf") -> Generator[Any]:
    """Load ``modules`` now and at boot (modules-load.d)."""
    missing = [m for m in modules if not host.get_fact(LoadedKernelModule, module=m)]
    if missing:
        yield "modprobe -a " + " ".join(shlex.quote(m) for m in missing)
    text = lines_text([HEADER, *modules])
    if _file_differs(persist_file, text):
        yield from put_text(persist_file, text)
    if not missing and not _file_differs(persist_file, text):
        host.noop(f"kernel modules {', '.join(modules)} are loaded and persisted")


@operation()
def swap_off(fstab: str = "/etc/fstab") -> Generator[Any]:
    """Turn swap off now and comment out swap entries of fstab (the kubelet refuses swap)."""
    active = host.get_fact(ActiveSwaps)
    in_fstab = host.get_fact(FstabSwaps)
    if active:
        yield "swapoff -a"
    if in_fstab:
        yield f"sed -i -E 's/{_FSTAB_SWAP}/# labdeploy swap off: \\1/' {shlex.quote(fstab)}"
    if not active and not in_fstab:
        host.noop("swap is off and absent from fstab")


@operation()
def sysctls(values: dict[str, str], persist_file: str = "/etc/sysctl.d/90-labdeploy.conf") -> Generator[Any]:
    """Set kernel parameters now and persist them in sysctl.d."""
    current = host.get_fact(Sysctl, keys=sorted(values))
    wrong = [k for k in sorted(values) if str(current.get(k)) != str(values[k])]
    for key in wrong:
        yield f"sysctl -w {shlex.quote(f'{key}={values[key]}')}"
    text = lines_text([HEADER, *(f"{k} = {values[k]}" for k in sorted(values))])
    if _file_differs(persist_file, text):
        yield from put_text(persist_file, text)
    if not wrong and not _file_differs(persist_file, text):
        host.noop(f"sysctls {', '.join(sorted(values))} are set and persisted")


@operation()
def apt_hold(packages: list[str]) -> Generator[Any]:
    """Hold ``packages`` at their installed version."""
    held: list[str] = host.get_fact(HeldPackages)
    missing = [p for p in packages if p not in held]
    if missing:
        yield "apt-mark hold " + " ".join(shlex.quote(p) for p in missing)
    else:
        host.noop(f"{', '.join(packages)} held")


@operation()
def apt_sources(
    text: str,
    path: str = "/etc/apt/sources.list.d/debian.sources",
    legacy: str = "/etc/apt/sources.list",
) -> Generator[Any]:
    """Make ``path`` hold ``text`` (deb822) and empty the legacy sources.list so it cannot disagree."""
    changed = False
    if _file_differs(path, text):
        changed = True
        yield from put_text(path, text)
    legacy_lines = host.get_fact(FileContents, path=legacy) or []
    if any(line.strip() and not line.lstrip().startswith("#") for line in legacy_lines):
        changed = True
        yield from put_text(legacy, lines_text([f"{HEADER}; sources are in {path}"]))
    if not changed:
        host.noop(f"apt sources in {path} are up to date")


@operation()
def hostname(hostname: str, path: str = "/etc/hostname") -> Generator[Any]:
    """Set the running hostname and /etc/hostname (no hostnamectl: works without dbus)."""
    changed = False
    if host.get_fact(Hostname) != hostname:
        changed = True
        yield f"hostname {shlex.quote(hostname)}"
    if _file_differs(path, lines_text([hostname])):
        changed = True
        yield from put_text(path, lines_text([hostname]))
    if not changed:
        host.noop(f"hostname is {hostname}")
