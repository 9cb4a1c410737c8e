"""Per-lab state: resource checkpoints, run records and the lab lock.

Layout (default ``.labdeploy/<lab>/`` beside the lab file)::

    state.json      resources (input hash, status, outputs) and the last runs
    lock            holder pid, host and start time while a run holds the lab
    id_ed25519      the lab's SSH key pair (written 0600 by the ssh module)
    known_hosts.json host keys recorded on first contact

Writes are atomic (temp file, fsync, rename, fsync of the folder), so a run killed at any
instant leaves either the old or the new state, never a torn one. State never holds a
secret: callers store only references and outputs that are not secret.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploy.errors import StateError

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


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
        """Write the state atomically; any resolved secret value is masked on the way out."""
        from deploy.secrets import REDACTOR

        atomic_write(self.path, REDACTOR(json.dumps(state.to_json(), indent=1, sort_keys=True)).encode())

    @contextlib.contextmanager
    def locked(self, command: str) -> Iterator[LockInfo]:
        """Hold the lab's lock; a lock left by a dead process on this host is taken over."""
        info = LockInfo(os.getpid(), socket.gethostname(), time.time(), command)
        self._acquire(info)
        try:
            yield info
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()

    def holder(self) -> LockInfo | None:
        try:
            return LockInfo(**json.loads(self.lock_path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def _acquire(self, info: LockInfo) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            try:
                fd = os.open(self.lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                self._break_stale_lock()
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(asdict(info), handle)
            return
        holder = self.holder()
        raise StateError(f"lab {self.lab} is locked by {holder.describe() if holder else 'another run'}",
                         hint=f"wait for that run to end; if it is gone, remove {self.lock_path}")

    def _break_stale_lock(self) -> None:
        holder = self.holder()
        if holder is None:
            if time.time() - _mtime(self.lock_path) > 5:  # unreadable and old: a torn write
                _unlink(self.lock_path)
            else:
                time.sleep(0.1)
            return
        if holder.host == socket.gethostname() and not _alive(holder.pid):
            _unlink(self.lock_path)
            return
        raise StateError(f"lab {self.lab} is locked by {holder.describe()}",
                         hint=f"wait for that run to end; if it is gone, remove {self.lock_path}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
