"""Commands on lab nodes over SSH, with the recorded host key checked strictly.

One connection per node (deploy.ssh's transport), shared by the built-in checks, ``verify:``
entries and the testinfra ``host`` fixture. Host keys come from the run's known_hosts export
(``[host]:port`` names): an unknown or changed host key is refused, never accepted. Commands
run through :func:`deploy.ssh.run_on`, which reads stdout and stderr together under one deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paramiko

from deploy.errors import ProviderError
from deploy.ssh import (
    CommandResult,
    CommandTimeout,
    HostKeyChanged,
    HostKeyStore,
    SshEndpoint,
    known_hosts_name,
    run_on,
)
from deploy.ssh import connect as ssh_connect
from deploy.verify.retry import CheckFailure

CONNECT_TIMEOUT = 10.0


def ssh_command(ssh: SshEndpoint, known_hosts: Path, command: str) -> str:
    """The OpenSSH command line that reproduces ``command`` on the node from the host."""
    return ssh.command(known_hosts=known_hosts, remote=command)


def connect(ssh: SshEndpoint, known_hosts: Path, *, node: str, timeout: float = CONNECT_TIMEOUT) -> paramiko.Transport:
    """An authenticated transport to ``ssh``; raises CheckFailure when unreachable or the host key differs."""
    store = HostKeyStore(known_hosts, record_new=False)
    try:
        return ssh_connect(ssh, known_hosts=store, alias=known_hosts_name(ssh.host, ssh.port), timeout=timeout)
    except HostKeyChanged as exc:
        raise CheckFailure(
            "SSH host key check",
            node=node,
            expected=f"host key recorded in {known_hosts}",
            seen=f"a different {exc.offered.get_name()} key ({exc.offered.fingerprint})",
            reproduce=ssh_command(ssh, known_hosts, "true"),
            final=True,
        ) from None
    except ProviderError as exc:
        raise CheckFailure(
            "SSH login",
            node=node,
            expected=f"{ssh.user}@{ssh.host}:{ssh.port} accepts the lab key with a known host key",
            seen=exc.message,
            reproduce=ssh_command(ssh, known_hosts, "true"),
        ) from None


class NodeShell:
    """Runs commands on one node; reconnects when the connection dropped."""

    def __init__(self, node: str, ssh: SshEndpoint, known_hosts: Path) -> None:
        self.node = node
        self.ssh = ssh
        self.known_hosts = known_hosts
        self._transport: paramiko.Transport | None = None

    @property
    def transport(self) -> paramiko.Transport:
        if self._transport is None or not self._transport.is_active():
            self.close()
            self._transport = connect(self.ssh, self.known_hosts, node=self.node)
        return self._transport

    def reproduce(self, command: str) -> str:
        return ssh_command(self.ssh, self.known_hosts, command)

    def run(self, command: str, timeout: float = 60.0) -> CommandResult:
        try:
            return run_on(self.transport, command, alias=self.node, timeout=timeout)
        except CommandTimeout:
            raise CheckFailure(
                f"command {command!r}",
                node=self.node,
                expected=f"it finishes within {timeout:.0f}s",
                seen="still running",
                reproduce=self.reproduce(command),
            ) from None
        except ProviderError as exc:  # the connection broke under the command
            self.close()
            raise CheckFailure(
                f"command {command!r}",
                node=self.node,
                expected="it runs over the node's SSH connection",
                seen=exc.message,
                reproduce=self.reproduce(command),
            ) from None

    def put(self, data: bytes, path: str, mode: int = 0o755) -> None:
        sftp = paramiko.SFTPClient.from_transport(self.transport)
        if sftp is None:
            raise CheckFailure(
                f"upload of {path}",
                node=self.node,
                expected="an SFTP session",
                seen="the server refused the sftp subsystem",
                reproduce=self.reproduce("true"),
            )
        with sftp:
            with sftp.open(path, "wb") as handle:
                handle.write(data)
            sftp.chmod(path, mode)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


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


class _SharedClient:
    """What testinfra's paramiko backend uses of an SSHClient: the node's checked transport."""

    def __init__(self, shell: NodeShell) -> None:
        self._shell = shell

    def get_transport(self) -> paramiko.Transport:
        return self._shell.transport


def testinfra_host(shell: NodeShell) -> Any:
    """A pytest-testinfra ``Host`` on the node's strict, already-checked SSH connection."""
    from testinfra.backend.paramiko import ParamikoBackend
    from testinfra.host import Host

    backend = ParamikoBackend(
        f"{shell.ssh.user}@{shell.ssh.host}:{shell.ssh.port}", ssh_identity_file=str(shell.ssh.key_path)
    )
    backend.__dict__["client"] = _SharedClient(shell)  # instead of the lax WarningPolicy client it would make
    host = Host(backend)
    backend.set_host(host)
    return host
