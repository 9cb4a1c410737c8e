"""A real OpenSSH server on loopback for tests (``/usr/sbin/sshd`` from openssh-server).

Fixtures:
    sshd          session-scoped running server; root logs in with ``sshd.key_path`` only
    sshd_factory  function-scoped: ``sshd_factory(authorized_keys=[...])`` starts extra
                  servers (e.g. to change their host key) and stops them after the test

Every server lives in its own temporary directory (config, host key, authorized_keys,
client key, log) and listens on 127.0.0.1 at a free port. Nothing touches the host's
own sshd configuration; only /run/sshd (privilege separation dir) is created if missing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy.providers.base import SshEndpoint

SSHD = "/usr/sbin/sshd"
START_TIMEOUT = 10.0

_CONFIG = """\
ListenAddress 127.0.0.1:{port}
HostKey {host_key}
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PermitRootLogin prohibit-password
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ssh_keygen(path: Path, comment: str = "labdeploy-test") -> Path:
    """A new unencrypted ed25519 key made by OpenSSH's ssh-keygen (independent of our code)."""
    path.unlink(missing_ok=True)
    _pub(path).unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def openssh_fingerprint(public_key_file: Path) -> str:
    """``SHA256:...`` of a public key file as ``ssh-keygen -l`` prints it."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key_file)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


def _pub(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


@dataclass
class SshServer:
    """One sshd process; ``restart(new_host_key=True)`` keeps the port but changes the key."""

    directory: Path
    authorized_keys: list[str]
    host: str = "127.0.0.1"
    user: str = "root"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def key_path(self) -> Path:
        """The client private key whose public half is authorized."""
        return self.directory / "client_key"

    @property
    def host_key_path(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    @property
    def host_key_fingerprint(self) -> str:
        return openssh_fingerprint(_pub(self.host_key_path))

    @property
    def log(self) -> str:
        path = self.directory / "sshd.log"
        return path.read_text() if path.exists() else ""

    def endpoint(self, key_path: Path | None = None) -> SshEndpoint:
        return SshEndpoint(self.host, self.port, self.user, key_path or self.key_path)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.key_path.exists():
            ssh_keygen(self.key_path)
        if not self.host_key_path.exists():
            ssh_keygen(self.host_key_path, "test-host-key")
        client = _pub(self.key_path).read_text().strip()
        (self.directory / "authorized_keys").write_text("\n".join([client, *self.authorized_keys]) + "\n")
        config = self.directory / "sshd_config"
        config.write_text(_CONFIG.format(port=self.port, host_key=self.host_key_path, dir=self.directory))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        with (self.directory / "sshd.log").open("ab") as log:
            self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}:\n{self.log}")
            if _speaks_ssh(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not answer on {self.host}:{self.port} in {START_TIMEOUT}s:\n{self.log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, *, new_host_key: bool = False) -> None:
        self.stop()
        if new_host_key:
            ssh_keygen(self.host_key_path, "test-host-key-2")
        self.start()


def _speaks_ssh(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


def _require_sshd() -> None:
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip(f"{SSHD} or ssh-keygen missing: install Debian openssh-server and openssh-client")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A running sshd for the whole session: root by key ``sshd.key_path``."""
    _require_sshd()
    server = SshServer(tmp_path_factory.mktemp("sshd"), authorized_keys=[])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sshd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SshServer]]:
    """Start extra sshd servers for one test: ``sshd_factory(authorized_keys=[pub_line])``."""
    _require_sshd()
    servers: list[SshServer] = []

    def start(authorized_keys: list[str] | None = None) -> SshServer:
        server = SshServer(tmp_path_factory.mktemp("sshd"), authorized_keys=list(authorized_keys or []))
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
