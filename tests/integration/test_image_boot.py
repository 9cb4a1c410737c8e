"""A built image boots under plain QEMU (TCG), takes hostname and key from the NoCloud seed,
serves SSH on a loopback forward, has python3 and reaches the Debian mirror through SLIRP.

The image comes from the shared cache (built on the first run, ~1-2 min); each release is
booted once and shared by its tests.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass

import paramiko
import pytest

from deploy.images import ensure_image
from deploy.model.resolved import ResolvedImage
from tests.integration.images_fixtures import BootedVm, boot_vm, run, wait_for_ssh

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]

REQUIRED = ("qemu-system-x86_64", "qemu-img", "mmdebstrap", "mke2fs", "ssh-keygen")


@dataclass
class Guest:
    release: str
    hostname: str
    vm: BootedVm
    ssh: paramiko.SSHClient
    build_s: float


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def guest(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    missing = [tool for tool in REQUIRED if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"host lacks {', '.join(missing)} (Debian: qemu-system-x86 qemu-utils mmdebstrap)")
    release = str(request.param)
    image = ResolvedImage(name=f"debian-{release}", source="build", distro="debian", release=release)
    start = time.monotonic()
    path = ensure_image(image)
    build_s = time.monotonic() - start
    hostname = f"img-{release}.lab.test"
    with boot_vm(path, tmp_path_factory.mktemp(release), hostname) as vm:
        client = wait_for_ssh(vm)
        print(f"\n{release}: image ready in {build_s:.1f} s, SSH after {vm.ssh_ready_after:.1f} s (TCG, 1 vCPU)")
        yield Guest(release, hostname, vm, client, build_s)
        client.close()


def test_hostname_and_key_come_from_the_seed(guest: Guest, record_property: pytest.RecordProperty) -> None:
    record_property(f"{guest.release}_image_ready_s", round(guest.build_s, 1))
    record_property(f"{guest.release}_ssh_ready_s", round(guest.vm.ssh_ready_after, 1))
    status, out = run(guest.ssh, "hostname; hostname -f; id -un")
    assert status == 0, out
    assert out.split() == ["img-" + guest.release, guest.hostname, "root"]


def test_python3_is_installed(guest: Guest) -> None:
    status, out = run(guest.ssh, "python3 -c 'import sys; print(sys.version_info.major)'")
    assert (status, out.strip()) == (0, "3")


def test_password_login_is_off(guest: Guest) -> None:
    status, out = run(guest.ssh, "sshd -T | grep -E '^(passwordauthentication|permitrootlogin) '")
    assert status == 0, out
    assert sorted(out.split("\n")[:2]) == ["passwordauthentication no", "permitrootlogin without-password"]


def test_dhcp_on_the_nic_and_kernel_logs_on_serial(guest: Guest) -> None:
    status, out = run(guest.ssh, "networkctl list --no-legend; cat /proc/cmdline")
    assert status == 0, out
    assert "routable" in out
    assert "console=ttyS0" in out
    assert "Linux version" in guest.vm.serial_log.read_text(errors="replace")


def test_root_filesystem_grew_to_the_overlay_size(guest: Guest) -> None:
    status, out = run(guest.ssh, "df -B1 --output=size / | tail -n 1")
    assert status == 0, out
    assert int(out) > 3.5 * 2**30  # the image is 3 GiB, the overlay 4 GiB: growpart + resize2fs ran


def test_guest_reaches_the_debian_mirror(guest: Guest) -> None:
    status, out = run(guest.ssh, "apt-get update 2>&1", timeout=300)
    assert status == 0, out
    assert "Err:" not in out, out
