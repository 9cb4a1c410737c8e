"""Per-lab state: resource checkpoints, run records and the lab lock.

Layout (default ``.labdeploy/<lab>/`` beside the lab file)::

    state.json          resources (input hash, status, outputs) and the last runs
    lock                flock'ed while a run holds the lab; holds its pid, host, start and command
    id_ed25519          the lab's SSH private key (0600; deploy.ssh.keys), id_ed25519.pub beside it
    known_hosts         host keys recorded on first contact, OpenSSH format keyed by node name
                        (deploy.ssh.hostkeys); checked strictly afterwards
    ssh_known_hosts     the same keys as ``[host]:port`` lines, exported for OpenSSH, pyinfra and verify
    libvirt-<provider>-images.json, image-hashes.json
                        the libvirt provider's record of base volumes and image content hashes

Writes are atomic (:func:`deploy.atomic.atomic_write`: temp file, fsync, rename, fsync of
the folder), so a run killed at any instant leaves either the old or the new state, never a
torn one; the temp file a killed save leaves is removed by the next save. State never holds
a secret: callers store only references and outputs that are not secret, and
:func:`deploy.secrets.redact` masks any resolved value on the way out as a backstop.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploy.atomic import atomic_write, remove_stale_temps
from deploy.errors import StateError

__all__ = ["LabState", "LockInfo", "ResourceRecord", "RunRecord", "StateStore", "atomic_write"]

STATE_VERSION = 1
MAX_RUNS = 50


@dataclass
class ResourceRecord:
    id: str
    kind: str
    input_hash: str
    status: str  # ok | failed | running | interrupted
    provider: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    updated: float = 0.0
    run_id: str | None = None


@dataclass
class RunRecord:
    run_id: str
    command: str
    started: float
    finished: float | None = None
    outcome: str = "running"  # ok | failed | interrupted | running
    changed: int = 0
    artifacts: str | None = None


@dataclass
class LabState:
    lab: str
    resources: dict[str, ResourceRecord] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)
    version: int = STATE_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "lab": self.lab,
                "resources": {k: asdict(v) for k, v in sorted(self.resources.items())},
                "runs": [asdict(r) for r in self.runs[-MAX_RUNS:]]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        return cls(lab=data["lab"], version=data.get("version", STATE_VERSION),
                   resources={k: ResourceRecord(**v) for k, v in data.get("resources", {}).items()},
                   runs=[RunRecord(**r) for r in data.get("runs", [])])


@dataclass(frozen=True)
class LockInfo:
    pid: int
    host: str
    started: float
    command: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host} ({self.command}, since {when})"


class StateStore:
    """The state folder of one lab."""

    def __init__(self, root: Path, lab: str) -> None:
        self.root = root
        self.lab = lab
        self.path = root / "state.json"
        self.lock_path = root / "lock"

    def load(self) -> LabState:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return LabState(self.lab)
        except (OSError, ValueError) as exc:
            hint = f"move {self.path} away to start fresh; `deploy destroy` finds resources by their tags"
            raise StateError(f"state file {self.path} cannot be read: {exc}", hint=hint) from None
        if data.get("version", 0) > STATE_VERSION:
            raise StateError(f"state file {self.path} was written by a newer labdeploy",
                             hint="upgrade labdeploy")
        return LabState.from_json(data)

    def save(self, state: LabState) -> None:
        """Write the state atomically, every resolved secret value masked before serialising.

        Temporary files of earlier writers killed mid-save (SIGKILL leaves them behind) are
        removed first; callers save under :meth:`locked`, so no live writer owns them.
        """
        from deploy.secrets import redact

        remove_stale_temps(self.path)
        atomic_write(self.path, json.dumps(redact(state.to_json()), indent=1, sort_keys=True).encode())

    @contextlib.contextmanager
    def locked(self, command: str) -> Iterator[LockInfo]:
        """Hold the lab's lock (``flock`` on the lock file) for the block.

        The kernel releases a flock when its holder dies, however it dies, so there is no stale
        lock to break. The lock file is never unlinked (a contender that unlinked it would let a
        third process lock a new inode beside the holder's); the holder writes its pid, host,
        start and command into it after acquiring, and truncates it before releasing.
        """
        info = LockInfo(os.getpid(), socket.gethostname(), time.time(), command)
        fd = self._acquire()
        try:
            _write_holder(fd, info)
            remove_stale_temps(self.path)
            yield info
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # releases the flock

    def holder(self) -> LockInfo | None:
        """Who holds the lock now, or ``None`` when nobody does."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd)
            return None  # nobody holds it: what the file says is left over from a dead holder
        finally:
            os.close(fd)  # also drops the probe's shared lock

    def _acquire(self) -> int:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open the lock file {self.lock_path}: {exc.strerror}",
                             hint="the state folder must be writable by the user running deploy") from None
        for attempt in range(_ATTEMPTS):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if attempt + 1 < _ATTEMPTS:  # a holder() probe holds a shared lock for microseconds
                    time.sleep(0.005)
        holder = _read_holder(fd)
        os.close(fd)
        raise StateError(f"lab {self.lab} is locked by {holder.describe() if holder else 'another run'}",
                         hint=f"wait for that run to end (the lock in {self.lock_path} is released "
                              "when its holder exits, even if killed)")


_ATTEMPTS = 3


def _write_holder(fd: int, info: LockInfo) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(asdict(info)).encode(), 0)


def _read_holder(fd: int) -> LockInfo | None:
    try:
        data = json.loads(os.pread(fd, 64 * 1024, 0) or b"null")
        return LockInfo(**data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None
