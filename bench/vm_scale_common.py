"""Shared pieces of bench/vm_scale.py: the image, the key, loopback ports, the SSH-ready wait.

Every tool is measured the same way: from the moment it is asked to create N machines until
each machine's loopback-forwarded sshd answered with a banner *and* accepted the benchmark
key (paramiko public-key auth), all under one deadline. Nothing here talks to an address
outside 127.0.0.0/8.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import paramiko

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.images import ensure_image
from deploy.model.resolved import ResolvedImage
from deploy.ssh.keys import generate_keypair

PREFIX = "ldbench"
logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # refused banners while booting are expected
CPUS, MEMORY_MIB, DISK_GIB = 1, 1024, 8  # the quickstart lab's node size, for every tool


class Skip(Exception):
    """A tool cannot be measured on this host; the message says exactly why."""


@dataclass(frozen=True)
class Bench:
    """What every tool gets: the base image, the key pair, a scratch dir, the per-VM deadline."""

    image: Path
    key: Path
    pubkey: str
    workdir: Path
    deadline: float  # seconds a single VM may take to SSH-ready
    tag: str  # unique per benchmark process: names of everything created start with it


def prepare(workdir: Path, deadline: float, tag: str) -> Bench:
    image = ensure_image(ResolvedImage(name="debian12", source="build", distro="debian", release="bookworm"))
    key, pub = generate_keypair(workdir / "key")
    return Bench(image, key, pub, workdir, deadline, tag)


def free_ports(count: int, start: int = 47000) -> list[int]:
    """``count`` loopback TCP ports nobody listens on (checked by binding them)."""
    found: list[int] = []
    port = start
    while len(found) < count and port < 60000:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                found.append(port)
            except OSError:
                pass
        port += 1
    return found


def ssh_ready_once(port: int, key: paramiko.PKey, user: str, timeout: float) -> bool:
    """One attempt: banner, key exchange and public-key auth on 127.0.0.1:port."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:
        return False
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = timeout
        transport.start_client(timeout=timeout)
        transport.auth_publickey(user, key)
        return transport.is_authenticated()
    except (paramiko.SSHException, EOFError, OSError):
        return False
    finally:
        transport.close()
        sock.close()


def wait_ssh(port: int, key_path: Path, deadline_at: float, user: str = "root") -> float:
    """Poll until SSH on the loopback port accepts the key; the monotonic time it did."""
    key = paramiko.Ed25519Key.from_private_key_file(str(key_path))
    while time.monotonic() < deadline_at:
        if ssh_ready_once(port, key, user, min(10.0, max(deadline_at - time.monotonic(), 0.5))):
            return time.monotonic()
        time.sleep(0.5)
    raise TimeoutError(f"SSH on 127.0.0.1:{port} did not accept the key before the deadline")


def wait_all(ports: list[int], key_path: Path, deadline_at: float, user: str = "root") -> float:
    """Wait for every port in parallel threads; the monotonic time the last one was ready."""
    results: dict[int, float | BaseException] = {}

    def one(port: int) -> None:
        try:
            results[port] = wait_ssh(port, key_path, deadline_at, user)
        except BaseException as exc:
            results[port] = exc

    parallel([partial(one, p) for p in ports])
    errors = [r for r in results.values() if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    return max(float(r) for r in results.values() if not isinstance(r, BaseException))


def parallel(jobs: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=job, daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run(cmd: list[str], timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command with a deadline; on failure the error carries the output tail."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n" + "\n".join(tail))
    return proc
