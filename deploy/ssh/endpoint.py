"""Where a machine's sshd is, and the one ``ssh`` command line shown to users for it.

:class:`SshEndpoint` lives here, not in ``providers.base``, so that the SSH package and the
providers can both use it without importing each other.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SshEndpoint:
    """How the host reaches a machine's sshd (for user-mode networking: a loopback port)."""

    host: str
    port: int
    user: str
    key_path: Path

    def to_outputs(self) -> dict[str, Any]:
        """The form kept in the state (paths as strings)."""
        return {"host": self.host, "port": self.port, "user": self.user, "key": str(self.key_path)}

    @classmethod
    def from_outputs(cls, data: dict[str, Any]) -> SshEndpoint:
        return cls(data["host"], int(data["port"]), data["user"], Path(data["key"]))

    def command(self, *, known_hosts: Path, alias: str | None = None, remote: str | None = None) -> str:
        """The OpenSSH command line that logs in (and runs ``remote``) with host keys checked strictly.

        ``known_hosts`` is the file that holds the host key; with ``alias`` (a node name) the key
        is looked up under that name (the lab's store), else under ``[host]:port`` (an export).
        """
        words = ["ssh", "-i", str(self.key_path), "-p", str(self.port), "-o", "IdentitiesOnly=yes",
                 "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}"]
        if alias:
            words += ["-o", f"HostKeyAlias={alias}"]
        words.append(f"{self.user}@{self.host}")
        if remote is not None:
            words.append(remote)
        return shlex.join(words)
