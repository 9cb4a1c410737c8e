"""The image cache: content-addressed names, a per-entry file lock, atomic publication.

Every cached image lives directly in the cache directory under a name derived from what
defines its content (a build recipe's hash, or a download's sha256). Work happens in a
temporary file in the same directory which is renamed into place only when complete, so
a reader never sees a half-written image, and a lock file per entry makes two concurrent
requests for the same image do the work once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from deploy.atomic import atomic_output as _atomic_output
from deploy.atomic import remove_stale_temps
from deploy.errors import ConfigError

ENV_CACHE_DIR = "LABDEPLOY_CACHE_DIR"
_CHUNK = 1 << 20

Progress = Callable[[str], None]


def default_cache_dir() -> Path:
    """``$LABDEPLOY_CACHE_DIR``, else ``$LABDEPLOY_CACHE/images`` (the root the bundle uses too), else
    ``~/.cache/labdeploy/images``."""
    override = os.environ.get(ENV_CACHE_DIR)
    if override:
        return Path(override).expanduser()
    root = os.environ.get("LABDEPLOY_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "labdeploy") / "images"


def ensure_dir(path: Path) -> Path:
    """Create the cache directory; a clear ConfigError when that is impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the image cache directory {path}: {exc.strerror}",
            hint=f"set {ENV_CACHE_DIR} to a writable directory",
        ) from exc
    return path


def recipe_key(recipe: dict[str, Any]) -> str:
    """A stable hex digest of a recipe (key order and list order of packages do not matter)."""
    canonical = dict(recipe)
    if "packages" in canonical:
        canonical["packages"] = sorted(set(canonical["packages"]))
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path, on_chunk: Callable[[int], None] | None = None) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    return digest.hexdigest()


@contextlib.contextmanager
def entry_lock(cache_dir: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock for one cache entry (blocks while another process holds it)."""
    lock_path = cache_dir / f".{name}.lock"
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; it becomes ``final`` (0644) when the block succeeds.

    Call it under :func:`entry_lock`: temporary images left by builds killed earlier (their pid
    is dead) are removed first, so a SIGKILLed build does not leave gigabytes behind.
    """
    remove_stale_temps(final)
    with _atomic_output(final, 0o644) as tmp:
        yield tmp
