"""Commands on lab nodes over SSH, with the recorded host key checked strictly.

One connection per node, shared by the built-in checks, ``verify:`` entries and the
testinfra ``host`` fixture. An unknown or changed host key is refused, never accepted.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import paramiko

from deploy.providers.base import SshEndpoint
from deploy.ssh import CommandResult
from deploy.verify.retry import CheckFailure


def ssh_command(ssh: SshEndpoint, known_hosts: Path, command: str) -> str:
    """The OpenSSH command line that reproduces ``command`` on the node from the host."""
    return (
        f"ssh -i {shlex.quote(str(ssh.key_path))} -p {ssh.port} -o StrictHostKeyChecking=yes "
        f"-o UserKnownHostsFile={shlex.quote(str(known_hosts))} {ssh.user}@{ssh.host} "
        f"{shlex.quote(command)}"
    )


def connect(ssh: SshEndpoint, known_hosts: Path, *, node: str, timeout: float = 10.0) -> paramiko.SSHClient:
    """An SSH client to ``ssh``; raises CheckFailure when unreachable or the host key differs."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            ssh.host,
            port=ssh.port,
            username=ssh.user,
            key_filename=str(ssh.key_path),
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise CheckFailure(
            "SSH host key check",
            node=node,
            expected=f"host key recorded in {known_hosts}",
            seen=f"a different {exc.key.get_name()} key ({exc.key.fingerprint})",
            reproduce=ssh_command(ssh, known_hosts, "true"),
            final=True,
        ) from None
    except (paramiko.SSHException, OSError) as exc:
        client.close()
        raise CheckFailure(
            "SSH login",
            node=node,
            expected=f"{ssh.user}@{ssh.host}:{ssh.port} accepts the lab key with a known host key",
            seen=f"{type(exc).__name__}: {exc}",
            reproduce=ssh_command(ssh, known_hosts, "true"),
        ) from None
    return client


class NodeShell:
    """Runs commands on one node; reconnects once when the connection dropped."""

    def __init__(self, node: str, ssh: SshEndpoint, known_hosts: Path) -> None:
        self.node = node
        self.ssh = ssh
        self.known_hosts = known_hosts
        self._client: paramiko.SSHClient | None = None

    @property
    def client(self) -> paramiko.SSHClient:
        transport = self._client.get_transport() if self._client else None
        if self._client is None or transport is None or not transport.is_active():
            self.close()
            self._client = connect(self.ssh, self.known_hosts, node=self.node)
        return self._client

    def reproduce(self, command: str) -> str:
        return ssh_command(self.ssh, self.known_hosts, command)

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        _, out, err = self.client.exec_command(command, timeout=timeout)
        try:
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
            rc = out.channel.recv_exit_status()
        except TimeoutError:
            raise CheckFailure(
                f"command {command!r}",
                node=self.node,
                expected=f"it finishes within {timeout:.0f}s",
                seen="still running",
                reproduce=self.reproduce(command),
            ) from None
        return CommandResult(rc, stdout, stderr)

    def put(self, data: bytes, path: str, mode: int = 0o755) -> None:
        with self.client.open_sftp() as sftp:
            with sftp.open(path, "wb") as handle:
                handle.write(data)
            sftp.chmod(path, mode)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class ShellPool:
    """One :class:`NodeShell` per node for a whole verify run."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts
        self._shells: dict[str, NodeShell] = {}

    def get(self, node: str, ssh: SshEndpoint) -> NodeShell:
        if node not in self._shells:
            self._shells[node] = NodeShell(node, ssh, self.known_hosts)
        return self._shells[node]

    def close(self) -> None:
        for shell in self._shells.values():
            shell.close()
        self._shells.clear()


def testinfra_host(shell: NodeShell) -> Any:
    """A pytest-testinfra ``Host`` on the node's strict, already-checked SSH connection."""
    from testinfra.backend.paramiko import ParamikoBackend
    from testinfra.host import Host

    backend = ParamikoBackend(
        f"{shell.ssh.user}@{shell.ssh.host}:{shell.ssh.port}", ssh_identity_file=str(shell.ssh.key_path)
    )
    backend.__dict__["client"] = shell.client  # replace the lax WarningPolicy client it would make
    host = Host(backend)
    backend.set_host(host)
    return host
