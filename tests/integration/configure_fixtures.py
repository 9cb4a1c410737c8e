"""Test hosts for the configure stage: a trixie rootfs with its own sshd on loopback.

The rootfs (mmdebstrap, cached in the image cache) runs in its own mount and PID namespace,
chrooted, with sshd listening on 127.0.0.1 only. It shares the host's kernel and network
namespace, so only package and file operations are run against it (no sysctls, no modprobe,
no hostname). Real VMs cover the rest.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from deploy.configure.inventory import HostTarget
from deploy.providers.base import SshEndpoint

PACKAGES = "openssh-server,ca-certificates"
MIRROR = "http://deb.debian.org/debian"


def cache_dir() -> Path:
    from deploy.images.cache import default_cache_dir

    path = default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rootfs_tarball(release: str = "trixie") -> Path:
    """The cached rootfs tarball, built with mmdebstrap on first use."""
    tarball = cache_dir() / f"configure-testhost-{release}.tar"
    if tarball.exists():
        return tarball
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed (apt-get install mmdebstrap)")
    partial = tarball.with_suffix(".partial.tar")
    subprocess.run(
        ["mmdebstrap", "--variant=minbase", f"--include={PACKAGES}", release, str(partial), MIRROR],
        check=True,
        capture_output=True,
    )
    partial.rename(tarball)
    return tarball


@dataclass
class ChrootHost:
    """A running chroot sshd: where it is and how to reach it."""

    root: Path
    target: HostTarget
    known_hosts: Path
    process: subprocess.Popen[bytes]

    def run(self, command: str, timeout: float = 120) -> tuple[int, str, str]:
        return ssh_run(self.target, self.known_hosts, command, timeout)


def ssh_run(target: HostTarget, known_hosts: Path, command: str, timeout: float = 120) -> tuple[int, str, str]:
    """Run ``command`` over ssh with strict host-key checking; (status, stdout, stderr)."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    ssh = target.ssh
    client.connect(
        ssh.host,
        ssh.port,
        ssh.user,
        key_filename=str(ssh.key_path),
        look_for_keys=False,
        allow_agent=False,
        timeout=30,
    )
    try:
        _, out, err = client.exec_command(command, timeout=timeout)
        status = out.channel.recv_exit_status()
        return status, out.read().decode(), err.read().decode()
    finally:
        client.close()


def _prepare_root(root: Path, tarball: Path, key: Path, port: int) -> None:
    with tarfile.open(tarball) as tar:
        tar.extractall(root, filter="fully_trusted")
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)
    shutil.copy(key.with_suffix(".pub"), root / "root/.ssh/authorized_keys")
    (root / "etc/ssh/sshd_config.d/labdeploy-test.conf").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\nUsePAM no\n"
    )
    subprocess.run(["chroot", str(root), "ssh-keygen", "-A"], check=True, capture_output=True)
    # no systemd inside: keep maintainer scripts from trying to start daemons
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)


def _start_sshd(root: Path) -> subprocess.Popen[bytes]:
    script = (
        "set -e; mount --make-rprivate /; "
        f"mount -t proc proc {root}/proc; mount --rbind /dev {root}/dev; "
        f"mkdir -p {root}/run/sshd; exec chroot {root} /usr/sbin/sshd -D -e"
    )
    return subprocess.Popen(
        ["unshare", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_port(port: int, process: subprocess.Popen[bytes], deadline: float = 20) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"chroot sshd exited: {process.stderr.read().decode() if process.stderr else ''}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"chroot sshd did not listen on 127.0.0.1:{port} within {deadline}s")


def start_chroot_host(
    base: Path, name: str = "testhost", tarball: Path | None = None, roles: tuple[str, ...] = ("runtimes",)
) -> ChrootHost:
    """Extract the rootfs (default: ``rootfs_tarball()``) under ``base``, start its sshd, return how to reach it."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("the chroot test host needs root and unshare(1)")
    tarball = tarball or rootfs_tarball()
    base.mkdir(parents=True, exist_ok=True)
    key = base / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    root, port = base / "root", free_port()
    root.mkdir()
    _prepare_root(root, tarball, key, port)
    process = _start_sshd(root)
    _wait_port(port, process)
    host_key = (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {' '.join(host_key)}\n")
    target = HostTarget(name, SshEndpoint("127.0.0.1", port, "root", key), roles=roles)
    return ChrootHost(root, target, known_hosts, process)


def stop_chroot_host(host: ChrootHost) -> None:
    host.process.kill()  # unshare --kill-child takes the namespace's processes with it
    host.process.wait(timeout=20)


@pytest.fixture(scope="session")
def chroot_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChrootHost]:
    host = start_chroot_host(tmp_path_factory.mktemp("chroot-host"))
    yield host
    stop_chroot_host(host)


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _name(text: str) -> bytes:
    return _uleb(len(text)) + text.encode()


def _section(section_id: int, items: list[bytes]) -> bytes:
    body = _uleb(len(items)) + b"".join(items)
    return bytes([section_id]) + _uleb(len(body)) + body


def _i32(value: int) -> bytes:
    """i32.const with a signed LEB128 immediate (non-negative values only)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if (value == 0 and not byte & 0x40) or value == -1:
            out.append(byte)
            return b"\x41" + bytes(out)
        out.append(byte | 0x80)


def hello_wasm(text: str) -> bytes:
    """A WASI module (the binary form of a few lines of WAT) whose _start writes ``text`` to stdout.

    (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
    (memory (export "memory") 1) (data (i32.const 8) "<text>")
    (func (export "_start") iov at 0 = {8, len}; drop (fd_write 1 0 1 100))
    """
    data = text.encode()
    store = b"\x36\x02\x00"  # i32.store align=2 offset=0
    code = (
        _i32(0)
        + _i32(8)
        + store
        + _i32(4)
        + _i32(len(data))
        + store
        + _i32(1)
        + _i32(0)
        + _i32(1)
        + _i32(100)
        + b"\x10\x00\x1a\x0b"  # call 0, drop, end
    )
    body = b"\x00" + code  # no locals
    return b"".join(
        [
            b"\x00asm\x01\x00\x00\x00",
            _section(1, [b"\x60\x04\x7f\x7f\x7f\x7f\x01\x7f", b"\x60\x00\x00"]),
            _section(2, [_name("wasi_snapshot_preview1") + _name("fd_write") + b"\x00\x00"]),
            _section(3, [b"\x01"]),
            _section(5, [b"\x00\x01"]),
            _section(7, [_name("memory") + b"\x02\x00", _name("_start") + b"\x00\x01"]),
            _section(10, [_uleb(len(body)) + body]),
            _section(11, [b"\x00" + _i32(8) + b"\x0b" + _uleb(len(data)) + data]),
        ]
    )


@dataclass
class TcgVm:
    """A trixie guest under plain QEMU (TCG), its sshd forwarded to a loopback port."""

    target: HostTarget
    known_hosts: Path
    process: subprocess.Popen[bytes]
    workdir: Path

    def run(self, command: str, timeout: float = 300) -> tuple[int, str, str]:
        return ssh_run(self.target, self.known_hosts, command, timeout)


def _banner(port: int) -> bool:
    """Whether an sshd greets on the port (SLIRP accepts and drops connections before that)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


def _wait_ssh_key(port: int, process: subprocess.Popen[bytes], deadline: float) -> str:
    """The guest's ed25519 host key, read over the forwarded port once sshd answers."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError("qemu exited before the guest's sshd came up")
        if not _banner(port):
            time.sleep(2)
            continue
        try:
            with paramiko.Transport(("127.0.0.1", port)) as transport:
                transport.get_security_options().key_types = ["ssh-ed25519"]
                transport.start_client(timeout=10)
                key = transport.get_remote_server_key()
                return f"{key.get_name()} {key.get_base64()}"
        except (OSError, paramiko.SSHException, EOFError):
            time.sleep(2)
    raise RuntimeError(f"guest sshd did not answer on 127.0.0.1:{port} within {deadline}s")


# Baked into the VM image to save apt time under TCG (wasmedge alone is ~60 MB). crun is left
# out on purpose: the configure stage must install it for real.
VM_IMAGE_PACKAGES = ("containerd", "wasmedge")


def boot_tcg_vm(
    workdir: Path,
    name: str = "node1",
    memory_mib: int = 2048,
    packages: tuple[str, ...] = VM_IMAGE_PACKAGES,
    roles: tuple[str, ...] = ("base", "containerd"),
) -> TcgVm:
    """Boot the image builder's trixie image (overlay on the cached image) and wait for ssh."""
    from deploy.images import build_seed_iso, ensure_image
    from deploy.model.resolved import ResolvedImage

    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    recipe = ResolvedImage(name="trixie", source="build", distro="debian", release="trixie", packages=packages)
    base = ensure_image(recipe)
    overlay, key = workdir / "disk.qcow2", workdir / "id_ed25519"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay), "8G"], check=True
    )
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    seed = build_seed_iso(
        workdir / "seed.iso",
        hostname=name,
        ssh_public_key=key.with_suffix(".pub").read_text(),
        instance_id=f"configure-test-{name}",
    )
    port = free_port()
    process = subprocess.Popen(
        [
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            str(memory_mib),
            "-smp",
            "2",
            "-nographic",
            "-serial",
            f"file:{workdir / 'serial.log'}",
            "-monitor",
            "none",
            "-drive",
            f"file={overlay},if=virtio",
            "-cdrom",
            str(seed),
            "-netdev",
            f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device",
            "virtio-net-pci,netdev=n0",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        host_key = _wait_ssh_key(port, process, deadline=300)
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_key}\n")
        target = HostTarget(name, SshEndpoint("127.0.0.1", port, "root", key), roles=roles)
        vm = TcgVm(target, known_hosts, process, workdir)
        _wait_login(vm)
    except BaseException:
        process.kill()
        process.wait(timeout=30)
        raise
    return vm


def _wait_login(vm: TcgVm, deadline: float = 180) -> None:
    """Key login works once cloud-init has installed the key."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if vm.run("cloud-init status --wait >/dev/null 2>&1; true", timeout=deadline)[0] == 0:
                return
        except (OSError, paramiko.SSHException):
            time.sleep(3)
    raise RuntimeError("could not log in to the guest with the lab key")


def stop_tcg_vm(vm: TcgVm) -> None:
    vm.process.kill()
    vm.process.wait(timeout=30)


def busybox_oci_archive(busybox: bytes, name: str) -> bytes:
    """An OCI image layout tarball with one layer: a static busybox at /bin/busybox (+ /bin/sh)."""
    import hashlib
    import io
    import json

    def blob(data: bytes) -> tuple[str, bytes]:
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    layer_io = io.BytesIO()
    with tarfile.open(fileobj=layer_io, mode="w") as layer:
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(busybox), 0o755
        layer.addfile(info, io.BytesIO(busybox))
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        layer.addfile(link)
    layer_digest, layer_data = blob(layer_io.getvalue())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    config_digest, config_data = blob(json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_data),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer_data)}
        ],
    }
    manifest_digest, manifest_data = blob(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_data),
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": json.dumps(index).encode()}
    for digest, data in ((layer_digest, layer_data), (config_digest, config_data), (manifest_digest, manifest_data)):
        files["blobs/sha256/" + digest.split(":")[1]] = data
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def static_busybox(workdir: Path) -> bytes:
    """The static busybox binary from Debian's busybox-static package (apt-get download + dpkg-deb)."""
    subprocess.run(["apt-get", "download", "-q", "busybox-static"], cwd=workdir, check=True, capture_output=True)
    (deb,) = workdir.glob("busybox-static_*.deb")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "bb")], check=True)
    return (workdir / "bb/bin/busybox").read_bytes()
