"""Trust-on-first-use SSH host keys, keyed by node name.

The store is an OpenSSH known_hosts file whose "host names" are node names (aliases), not
``host:port``: loopback port forwards move between labs and runs, node names do not. The
first contact with a node records its key; every later contact must present the same key.

For tools that look hosts up by address (pyinfra, ansible, ``ssh``), :meth:`HostKeyStore.
export_known_hosts` writes a regular known_hosts file with ``[host]:port`` entries so they
can check host keys strictly.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

import paramiko

from deploy.errors import ProviderError
from deploy.ssh_keys import fingerprint

_LOCK = threading.Lock()  # serialises read-modify-write of every store in this process


def known_hosts_path(state_dir: Path) -> Path:
    """Where a lab keeps its host-key store."""
    return state_dir / "known_hosts"


class HostKeyStore:
    """Host keys recorded on first contact, verified on every later one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def keys(self, alias: str) -> dict[str, paramiko.PKey]:
        """The recorded keys of ``alias`` by key type (empty when never contacted)."""
        with _LOCK:
            return self._keys(self._load(), alias)

    def verify(self, alias: str, key: paramiko.PKey, *, where: str = "") -> bool:
        """Accept ``key`` for ``alias``: record it on first contact (returns True), check it later.

        Raises :class:`ProviderError` naming the node, both fingerprints and the fix when the
        key differs from the recorded one.
        """
        with _LOCK:
            table = self._load()
            recorded = self._keys(table, alias)
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
            name = host if port == 22 else f"[{host}]:{port}"
            lines += [f"{name} {k.get_name()} {k.get_base64()}\n" for k in recorded.values()]
        _write_atomic(path, "".join(lines))

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        table.save(str(tmp))
        os.replace(tmp, self.path)

    @staticmethod
    def _keys(table: paramiko.HostKeys, alias: str) -> dict[str, paramiko.PKey]:
        found = table.lookup(alias)
        return dict(found) if found is not None else {}

    def _mismatch(
        self, alias: str, where: str, recorded: list[paramiko.PKey], offered: paramiko.PKey
    ) -> ProviderError:
        was = ", ".join(f"{fingerprint(k)} ({k.get_name()})" for k in recorded)
        at = f" at {where}" if where else ""
        return ProviderError(
            f"SSH host key of node {alias!r}{at} changed: recorded {was}, now offered "
            f"{fingerprint(offered)} ({offered.get_name()}). Either the machine was re-created "
            "outside labdeploy, or something else answers on that address.",
            hint=f"if {alias!r} was rebuilt on purpose, run `deploy destroy` and deploy again, or forget "
            f"the old key with `ssh-keygen -R {alias} -f {self.path}`; otherwise find out who answers",
        )


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
