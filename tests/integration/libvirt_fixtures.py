"""Fixtures for the libvirt provider tests: a running libvirtd, providers per lab, a local sshd.

Import the fixtures into a test module (``from libvirt_fixtures import ...``). Every lab
made here has a unique name and is removed (found by its metadata) when the test ends, so
the tests leave nothing behind even when they fail half-way.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import libvirt
import pytest

from deploy.model.schema import LibvirtProviderSpec
from deploy.providers.base import ProviderContext, Tags
from deploy.providers.libvirt import LibvirtProvider
from deploy.providers.libvirt_net import all_network_cidrs, find_overlap

SOCKET = Path("/var/run/libvirt/libvirt-sock")
SYSTEM = "qemu:///system"


def _running(name: str) -> bool:
    return subprocess.run(["pgrep", "-x", name], capture_output=True, check=False).returncode == 0


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.2)


def _connects() -> bool:
    try:
        libvirt.open(SYSTEM).close()
    except libvirt.libvirtError:
        return False
    return True


def kvm_device_like_udev() -> None:
    """Give /dev/kvm the owner and mode Debian's udev rule sets (root:kvm 0660).

    Without udev the node stays root-only 0600: libvirt then probes QEMU with KVM (as root)
    but finds KVM unusable for the qemu user, throws its capability cache away on every call
    and each domain define takes ~30-60 s. This is a host setup step, not a test shortcut.
    """
    kvm = Path("/dev/kvm")
    if kvm.exists() and (kvm.stat().st_mode & 0o777) != 0o660:
        shutil.chown(kvm, group="kvm")
        kvm.chmod(0o660)


@pytest.fixture(scope="session")
def libvirtd() -> str:
    """A libvirtd (and virtlogd) answering on qemu:///system; started when not running."""
    if shutil.which("libvirtd") is None:
        pytest.skip("libvirtd is not installed (Debian: libvirt-daemon-system)")
    kvm_device_like_udev()
    for daemon in ("virtlogd", "libvirtd"):
        if not _running(daemon):
            subprocess.run([daemon, "-d"], check=True)
    _wait_for(_connects, "libvirtd to accept connections on qemu:///system")
    return SYSTEM


def new_tags(lab: str, **extra: datetime | None) -> Tags:
    now = datetime.now(UTC)
    return Tags(lab, f"run-{uuid.uuid4().hex[:6]}", extra.get("created") or now,
                extra.get("expires", now + timedelta(hours=2)))


def free_cidr(prefix: int = 24) -> str:
    """A 10.x subnet that no libvirt network on this host uses yet."""
    conn = libvirt.open(SYSTEM)
    try:
        used = all_network_cidrs(conn)
    finally:
        conn.close()
    for _ in range(500):
        cidr = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/{prefix}"
        if find_overlap(cidr, used) is None:
            return str(ipaddress.ip_network(cidr, strict=False))
    raise RuntimeError("no free 10.x/24 subnet found")


@dataclass
class LabFactory:
    """Makes providers for unique test labs and removes everything they made."""

    root: Path
    uri: str
    providers: list[LibvirtProvider]

    def provider(self, lab: str | None = None, *, uri: str | None = None, **spec: str) -> LibvirtProvider:
        lab = lab or f"ldt{uuid.uuid4().hex[:6]}"
        state = self.root / lab / "state"
        state.mkdir(parents=True, exist_ok=True)
        ctx = ProviderContext(lab=lab, state_dir=state, artifacts_dir=self.root / lab / "artifacts")
        spec_fields = {"kind": "libvirt", "uri": uri or self.uri, "accel": "auto", **spec}
        prov = LibvirtProvider("local", LibvirtProviderSpec.model_validate(spec_fields), ctx)
        self.providers.append(prov)
        return prov

    def cleanup(self) -> None:
        for prov in self.providers:
            if prov._conn is not None:  # never connected: made nothing
                cleanup_lab(prov)
            prov.close()


def cleanup_lab(prov: LibvirtProvider) -> None:
    for res in sorted(prov.find_resources(prov.ctx.lab), key=lambda r: r.kind != "machine"):
        if res.kind == "machine":
            prov.delete_machine(res.name)
        elif res.kind == "network":
            prov.delete_network(res.name)
        else:
            prov.delete_volume(res.name)


@pytest.fixture
def labs(libvirtd: str, tmp_path: Path) -> Iterator[LabFactory]:
    factory = LabFactory(tmp_path, libvirtd, [])
    yield factory
    factory.cleanup()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ssh_uri(libvirtd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``qemu+ssh://root@127.0.0.1:PORT/system`` through a throwaway sshd on loopback."""
    if not libvirtd or not Path("/usr/sbin/sshd").exists() or shutil.which("ssh") is None:
        pytest.skip("openssh-server and openssh-client are needed for qemu+ssh:// tests")
    work = tmp_path_factory.mktemp("sshd")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "client")], check=True)
    (work / "authorized_keys").write_text((work / "client.pub").read_text())
    os.chmod(work / "authorized_keys", 0o600)
    port = _free_port()
    config = work / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work / 'host'}\nPidFile {work / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {work / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _listening(port), f"the test sshd on 127.0.0.1:{port}")
        yield f"qemu+ssh://root@127.0.0.1:{port}/system?keyfile={work / 'client'}&no_verify=1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
