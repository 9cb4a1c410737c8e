"""The one atomic file writer: readers see the old content or the new one, never a mix.

A write goes to a temporary file in the target's own folder (same filesystem, so the
rename is atomic), is fsynced, renamed onto the target, and the folder is fsynced so the
rename itself survives a power loss. Any exception removes the temporary file.

A process killed with SIGKILL cannot clean up after itself, so temporary names carry the
writer's pid (``.state.json.<pid>.<token>.tmp``): :func:`remove_stale_temps` deletes the
ones whose writer is dead. Callers that own a folder (the state store under its lock, the
image cache under an entry lock) call it before they write.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output", "atomic_write", "remove_stale_temps", "temp_path"]


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path`` that names this process (unique per call)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically, with permissions exactly ``mode`` (umask aside)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_output(final: Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` for tools that write by name (``qemu-img``, ...).

    When the block succeeds the file is fsynced, given ``mode`` and renamed onto ``final``;
    when it raises (or the file was never created) the temporary file is removed.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except BaseException:
        _unlink(tmp)
        raise
    fsync_dir(final.parent)


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` left by writers that are dead; return them.

    Only names this module makes are touched, and only when their pid is not a live process
    (a live pid, even a reused one, keeps its file: removing a live writer's file would be worse
    than leaving a stale one).
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]+\.tmp")
    removed: list[Path] = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return removed
    for name in names:
        match = pattern.fullmatch(name)
        if match and not pid_alive(int(match.group(1))):
            _unlink(path.parent / name)
            removed.append(path.parent / name)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (EPERM: it exists, not ours)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
