"""Trust-on-first-use SSH host keys, keyed by node name.

The store is an OpenSSH known_hosts file whose "host names" are node names (aliases), not
``host:port``: loopback port forwards move between labs and runs, node names do not. The
first contact with a node records its key; every later contact must present the same key.

For tools that look hosts up by address (pyinfra, ansible, ``ssh``), :meth:`HostKeyStore.
export_known_hosts` writes a regular known_hosts file with ``[host]:port`` entries so they
can check host keys strictly. The same class reads such an export back strictly
(``record_new=False``, hosts named ``[host]:port``): verify refuses a host it does not know.

Both files are written with :func:`deploy.state.atomic_write` (no torn file after a kill).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import paramiko

from deploy.errors import ProviderError
from deploy.ssh.keys import fingerprint
from deploy.state import atomic_write

_LOCK = threading.Lock()  # serialises read-modify-write of every store in this process


def known_hosts_path(state_dir: Path) -> Path:
    """Where a lab keeps its host-key store."""
    return state_dir / "known_hosts"


def known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH files a host under: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


class HostKeyChanged(ProviderError):
    """A host offered a key other than the recorded one; never retried."""

    def __init__(self, message: str, *, hint: str, offered: paramiko.PKey) -> None:
        super().__init__(message, hint=hint)
        self.offered = offered


class UnknownHostKey(ProviderError):
    """A strict store (``record_new=False``) holds no key for the host."""


class HostKeyStore:
    """Host keys recorded on first contact, verified on every later one.

    With ``record_new=False`` nothing is recorded: a host without a key is refused.
    """

    def __init__(self, path: Path, *, record_new: bool = True) -> None:
        self.path = path
        self.record_new = record_new

    def keys(self, alias: str) -> dict[str, paramiko.PKey]:
        """The recorded keys of ``alias`` by key type (empty when never contacted)."""
        with _LOCK:
            return self._keys(self._load(), alias)

    def verify(self, alias: str, key: paramiko.PKey, *, where: str = "") -> bool:
        """Accept ``key`` for ``alias``: record it on first contact (returns True), check it later.

        Raises :class:`HostKeyChanged` naming the node, both fingerprints and the fix when the
        key differs from the recorded one, :class:`UnknownHostKey` when none is recorded and the
        store does not record new keys.
        """
        with _LOCK:
            table = self._load()
            recorded = self._keys(table, alias)
            if not recorded and not self.record_new:
                raise UnknownHostKey(
                    f"server {alias!r} not found in known_hosts {self.path}",
                    hint="the host key is exported after the node was reached; re-run `deploy up`",
                )
            if not recorded:
                table.add(alias, key.get_name(), key)
                self._save(table)
                return True
        known = recorded.get(key.get_name())
        if known is None or known.asbytes() != key.asbytes():
            raise self._mismatch(alias, where, list(recorded.values()), key)
        return False

    def export_known_hosts(self, path: Path, endpoints: Mapping[str, tuple[str, int]]) -> None:
        """Write an OpenSSH known_hosts file for ``{alias: (host, port)}``.

        Raises :class:`ProviderError` when a node's key was never recorded (export after the
        nodes were reached).
        """
        lines = []
        with _LOCK:
            table = self._load()
        for alias, (host, port) in sorted(endpoints.items()):
            recorded = self._keys(table, alias)
            if not recorded:
                raise ProviderError(
                    f"no SSH host key recorded for node {alias!r} in {self.path}",
                    hint="export known_hosts only after the node was reached over SSH",
                )
            name = known_hosts_name(host, port)
            lines += [f"{name} {k.get_name()} {k.get_base64()}\n" for k in recorded.values()]
        atomic_write(path, "".join(lines).encode())

    def forget(self, alias: str) -> bool:
        """Drop the recorded keys of ``alias`` (its machine was destroyed); True if any were kept."""
        with _LOCK:
            table = self._load()
            if table.lookup(alias) is None:
                return False
            del table[alias]
            self._save(table)
            return True

    def _load(self) -> paramiko.HostKeys:
        table = paramiko.HostKeys()
        if self.path.exists():
            table.load(str(self.path))
        return table

    def _save(self, table: paramiko.HostKeys) -> None:
        lines = [f"{name} {kind} {key.get_base64()}\n" for name in table for kind, key in table[name].items()]
        atomic_write(self.path, "".join(lines).encode())

    @staticmethod
    def _keys(table: paramiko.HostKeys, alias: str) -> dict[str, paramiko.PKey]:
        found = table.lookup(alias)
        return dict(found) if found is not None else {}

    def _mismatch(
        self, alias: str, where: str, recorded: list[paramiko.PKey], offered: paramiko.PKey
    ) -> HostKeyChanged:
        was = ", ".join(f"{fingerprint(k)} ({k.get_name()})" for k in recorded)
        at = f" at {where}" if where else ""
        return HostKeyChanged(
            f"SSH host key of node {alias!r}{at} changed: recorded {was}, now offered "
            f"{fingerprint(offered)} ({offered.get_name()}). Either the machine was re-created "
            "outside labdeploy, or something else answers on that address.",
            hint=f"if {alias!r} was rebuilt on purpose, run `deploy destroy` and deploy again, or forget "
            f"the old key with `ssh-keygen -R {alias} -f {self.path}`; otherwise find out who answers",
            offered=offered,
        )

