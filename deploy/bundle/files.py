"""Files of the bundle store: per-key names, flocks, hashing, work folders of dead builds."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from deploy.atomic import pid_alive
from deploy.bundle.manifest import ArtifactKey, BundleError

__all__ = ["flock", "read_pid", "remove_dead_work", "require_regular_file", "safe_name", "sha256_file"]

log = logging.getLogger("deploy.bundle.store")

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WORK_NAME = re.compile(r".+\.(\d+)\.[0-9a-f]+")


def safe_name(key: ArtifactKey) -> str:
    """A file name for a key: readable, and unique (a digest of the key guards against collisions)."""
    digest = hashlib.sha256(str(key).encode()).hexdigest()[:12]
    return f"{UNSAFE.sub('_', str(key))}-{digest}"


@contextlib.contextmanager
def flock(path: Path, on_busy: Callable[[], None] | None = None) -> Iterator[int]:
    """Hold an exclusive flock on ``path``, waiting for its holder (``on_busy`` is told first)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_busy is not None:
                on_busy()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # releases the lock; the kernel releases it too when the holder dies


def read_pid(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text().strip() or "?"
    return "?"


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def require_regular_file(key: ArtifactKey, out: Path) -> None:
    try:
        mode = os.lstat(out).st_mode
    except FileNotFoundError:
        raise BundleError(f"{key}: the producer wrote no file at {out}") from None
    if not stat.S_ISREG(mode):
        raise BundleError(f"{key}: the producer left something that is not a regular file at {out}")


def remove_dead_work(tmp: Path) -> None:
    """Remove the work folders (``<key>.<pid>.<token>``) of producers whose process is dead."""
    for name in os.listdir(tmp):
        match = _WORK_NAME.fullmatch(name)
        if match and not pid_alive(int(match.group(1))):
            log.info("removing %s, left by a build that was killed", tmp / name)
            shutil.rmtree(tmp / name, ignore_errors=True)
