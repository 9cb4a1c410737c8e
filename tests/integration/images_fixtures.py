"""Boot an image under plain QEMU (TCG) with a NoCloud seed and reach it over SSH.

Shared by the image tests and usable by others: ``boot_vm`` starts a 1-vCPU guest on a
throwaway overlay with user-mode networking (SSH forwarded to a free loopback port) and the
serial console in a file; ``wait_for_ssh`` polls sshd with paramiko until a deadline.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko

from deploy.images import build_seed_iso


@dataclass
class BootedVm:
    port: int
    serial_log: Path
    key: paramiko.Ed25519Key
    started: float  # time.monotonic() when QEMU was started
    ssh_ready_after: float = 0.0  # seconds from start to the first successful SSH login


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_key(directory: Path) -> tuple[paramiko.Ed25519Key, str]:
    """A throwaway ed25519 key pair made with ssh-keygen: (private key, public key line)."""
    path = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return paramiko.Ed25519Key.from_private_key_file(str(path)), (directory / "id_ed25519.pub").read_text()


def qemu_command(overlay: Path, seed: Path, port: int, serial_log: Path) -> list[str]:
    return [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "1",
        "-display", "none", "-monitor", "none", "-serial", f"file:{serial_log}",
        "-drive", f"file={overlay},if=virtio,format=qcow2",
        "-drive", f"file={seed},media=cdrom,readonly=on",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
    ]  # fmt: skip


@contextlib.contextmanager
def boot_vm(image: Path, workdir: Path, hostname: str) -> Iterator[BootedVm]:
    """Boot ``image`` (untouched: the guest writes to an overlay) with a seed for ``hostname``."""
    key, public = new_key(workdir)
    seed = build_seed_iso(workdir / "seed.iso", hostname=hostname, ssh_public_key=public, instance_id=hostname)
    overlay = workdir / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image), str(overlay), "4G"],
        check=True,
    )
    port, serial_log = free_port(), workdir / "serial.log"
    proc = subprocess.Popen(qemu_command(overlay, seed, port, serial_log), stderr=subprocess.PIPE)
    try:
        yield BootedVm(port=port, serial_log=serial_log, key=key, started=time.monotonic())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def connect(vm: BootedVm, user: str = "root") -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a fresh throwaway guest
    client.connect(
        "127.0.0.1", port=vm.port, username=user, pkey=vm.key, timeout=10,
        banner_timeout=20, auth_timeout=20, allow_agent=False, look_for_keys=False,
    )  # fmt: skip
    return client


def wait_for_ssh(vm: BootedVm, deadline_s: float = 300.0) -> paramiko.SSHClient:
    """Log in as root over the loopback forward; on timeout, fail with the serial log's tail."""
    end = vm.started + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            client = connect(vm)
        except (OSError, paramiko.SSHException) as exc:
            last = exc
            time.sleep(1)
            continue
        vm.ssh_ready_after = time.monotonic() - vm.started
        return client
    tail = vm.serial_log.read_text(errors="replace")[-3000:] if vm.serial_log.exists() else "(no serial log)"
    raise TimeoutError(f"no SSH login on 127.0.0.1:{vm.port} within {deadline_s:.0f} s ({last!r}); serial:\n{tail}")


def run(client: paramiko.SSHClient, command: str, timeout: float = 180.0) -> tuple[int, str]:
    """Run ``command`` in the guest: (exit status, stdout + stderr)."""
    _stdin, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode() + stderr.read().decode()
    return stdout.channel.recv_exit_status(), out
