"""The bundle store: content-addressed artifact files, a manifest, per-key locks, atomic publication.

Layout under the root (``$LABDEPLOY_CACHE/bundle`` or ``~/.cache/labdeploy/bundle``)::

    manifest.json           entries by key (see deploy.bundle.manifest), replaced atomically
    manifest.lock           flock'ed around every read-modify-write of the manifest
    objects/sha256/<hex>    the files, read-only, named by their content
    locks/<key>.lock        flock'ed while one process makes that artifact (holds its pid)
    tmp/<key>.<pid>.<tok>/  where a producer writes; gone after, or removed once its pid is dead

A producer writes into ``tmp/``; the file is hashed there and only then moved into
``objects/`` and listed, in one step under the manifest lock. A process killed at any point
leaves nothing listed that is not whole. Objects are removed only under the manifest lock and
only when no entry names them.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

from deploy.atomic import atomic_write, fsync_dir, remove_stale_temps
from deploy.bundle.files import UNSAFE, flock, read_pid, remove_dead_work, require_regular_file, safe_name, sha256_file
from deploy.bundle.manifest import Artifact, ArtifactKey, BundleError, Record, Source, Stamp, dumps, loads

__all__ = ["ENV_CACHE", "BundleStore", "Outcome", "Producer", "default_root"]

log = logging.getLogger(__name__)

ENV_CACHE = "LABDEPLOY_CACHE"
Producer = Callable[[Path], Source]
Outcome = Literal["built", "cached"]


def default_root() -> Path:
    """``$LABDEPLOY_CACHE/bundle``, else ``~/.cache/labdeploy/bundle``."""
    override = os.environ.get(ENV_CACHE)
    base = Path(override).expanduser() if override else Path.home() / ".cache" / "labdeploy"
    return base / "bundle"


class BundleStore:
    """Versioned, checksummed artifacts shared by every lab and process of this user."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root if root is not None else default_root()).expanduser().absolute()
        self.manifest_path = self.root / "manifest.json"
        self.objects = self.root / "objects" / "sha256"
        self._locks = self.root / "locks"
        self._tmp = self.root / "tmp"

    # -- reading ---------------------------------------------------------------------------

    def get(self, key: ArtifactKey) -> Artifact | None:
        """The listed artifact for ``key`` if its file is intact, else None (and it is delisted)."""
        record = self._read().get(key)
        return None if record is None else self._intact(record)

    def list(self) -> builtins.list[Artifact]:
        """Every listed artifact, by name, platform and version (use get/verify to check files)."""
        arts = [r.artifact for r in self._read().values()]
        return sorted(arts, key=lambda a: (a.key.name, a.key.platform, a.key.version))

    def missing(self, keys: Iterable[ArtifactKey]) -> builtins.list[ArtifactKey]:
        """The keys that have no intact artifact, in the order given."""
        return [key for key in keys if self.get(key) is None]

    def verify(self) -> builtins.list[tuple[ArtifactKey, str]]:
        """Hash every listed file (no stat shortcut); every problem found, by key."""
        problems: builtins.list[tuple[ArtifactKey, str]] = []
        for key, record in sorted(self._read().items()):
            art = record.artifact
            try:
                before = Stamp.of(os.stat(art.path))
            except FileNotFoundError:
                problems.append((key, f"missing file {art.path}"))
                continue
            actual = sha256_file(art.path)
            if actual != art.sha256:
                problems.append((key, f"sha256 mismatch: manifest {art.sha256}, file {actual} ({art.path})"))
            elif before != record.stamp:
                self._restamp(key, art.sha256, art.path, before)
        return problems

    # -- writing ---------------------------------------------------------------------------

    def ensure(
        self,
        key: ArtifactKey,
        produce: Producer,
        *,
        recipe_hash: str | None = None,
        expect_sha256: str | None = None,
    ) -> tuple[Artifact, Outcome]:
        """The artifact for ``key``: the cached one if intact and current, else one ``produce`` makes.

        Current means: same ``recipe_hash`` when one is given (another one means the recipe
        changed), same sha256 as ``expect_sha256`` when one is given. A produced file with
        another sha256 than ``expect_sha256`` is refused (BundleError) and not listed. While one
        process produces a key, others ensuring it wait, then return it as "cached".
        """
        expect = expect_sha256.lower() if expect_sha256 is not None else None
        if expect is not None and not re.fullmatch(r"[0-9a-f]{64}", expect):
            raise BundleError(f"{key}: expected checksum {expect_sha256!r} is not a sha256 (64 hex digits)")
        cached = self._current(key, recipe_hash, expect)
        if cached is not None:
            return cached, "cached"
        self._prepare()
        with self._key_lock(key):
            remove_dead_work(self._tmp)
            cached = self._current(key, recipe_hash, expect)
            if cached is not None:
                return cached, "cached"
            return self._build(key, produce, recipe_hash, expect), "built"

    def prune(self, keep: int) -> builtins.list[Artifact]:
        """Keep the ``keep`` newest (by creation) versions per (name, platform); return the removed."""
        if keep < 0:
            raise BundleError(f"prune --keep must be 0 or more, not {keep}")
        if not self.root.exists():
            return []
        self._prepare()
        with self._manifest_lock():
            records = self._read()
            removed = _beyond_newest(list(records.values()), keep)
            for record in removed:
                del records[record.artifact.key]
            self._write(records)
        remove_dead_work(self._tmp)
        return [r.artifact for r in removed]

    # -- internals -------------------------------------------------------------------------

    def _current(self, key: ArtifactKey, recipe_hash: str | None, expect: str | None) -> Artifact | None:
        art = self.get(key)
        if art is None:
            return None
        if recipe_hash is not None and art.source.recipe_hash != recipe_hash:
            log.info("%s: recipe changed (%s -> %s); rebuilding", key, art.source.recipe_hash, recipe_hash)
            return None
        if expect is not None and art.sha256 != expect:
            log.info("%s: published checksum changed (%s -> %s); fetching again", key, art.sha256, expect)
            return None
        return art

    def _intact(self, record: Record) -> Artifact | None:
        art = record.artifact
        try:
            before = Stamp.of(os.stat(art.path))
        except FileNotFoundError:
            log.warning("%s: its file %s is missing; dropped from the bundle", art.key, art.path)
            self._drop(record, None)
            return None
        if before == record.stamp:
            return art
        actual = sha256_file(art.path)
        if actual == art.sha256:
            self._restamp(art.key, art.sha256, art.path, before)
            return art
        log.warning(
            "%s: file %s is corrupt: sha256 %s, the manifest says %s; not used, dropped (ensure rebuilds it)",
            art.key, art.path, actual, art.sha256,
        )  # fmt: skip
        self._drop(record, before)
        return None

    def _build(self, key: ArtifactKey, produce: Producer, recipe_hash: str | None, expect: str | None) -> Artifact:
        work = self._tmp / f"{safe_name(key)}.{os.getpid()}.{secrets.token_hex(4)}"
        work.mkdir(parents=True)
        try:
            out = work / UNSAFE.sub("_", key.name)
            source = _checked_source(key, produce(out), recipe_hash)
            require_regular_file(key, out)
            sha = sha256_file(out)
            if expect is not None and sha != expect:
                raise BundleError(
                    f"{key}: the file from {source.ref} has sha256 {sha}, but its published checksum is {expect}; "
                    "refused, not stored",
                    hint="the download is damaged or the pinned checksum is wrong; nothing was listed",
                )
            return self._publish(key, out, sha, source)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _publish(self, key: ArtifactKey, out: Path, sha: str, source: Source) -> Artifact:
        fd = os.open(out, os.O_RDONLY | os.O_CLOEXEC)
        try:
            executable = os.fstat(fd).st_mode & 0o111
            os.fchmod(fd, 0o555 if executable else 0o444)
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.objects / sha
        with self._manifest_lock():
            os.replace(out, final)
            fsync_dir(self.objects)
            st = os.stat(final)
            art = Artifact(key, sha, st.st_size, source, time.time(), final)
            records = self._read()
            records[key] = Record(art, Stamp.of(st))
            self._write(records)
        return art

    def _restamp(self, key: ArtifactKey, sha: str, path: Path, before: Stamp) -> None:
        """Record that the file (stat ``before`` when hashed) still holds its content.

        Only saves the next hash: a store this process cannot write (shared, read-only) is fine.
        """
        with contextlib.suppress(OSError, BundleError), self._manifest_lock():
            if Stamp.of(os.stat(path)) != before:
                return  # changed while we hashed: leave it to the next check
            records = self._read()
            record = records.get(key)
            if record is not None and record.artifact.sha256 == sha:
                records[key] = Record(record.artifact, before)
                self._write(records)

    def _drop(self, record: Record, corrupt: Stamp | None) -> None:
        """Delist ``record``; when its object is still the corrupt file seen, delist every user of it.

        The object itself goes with the write (nothing names it any more); an object that
        another process replaced with a good copy meanwhile has another stamp and stays.
        """
        art = record.artifact
        with self._manifest_lock():
            records = self._read()
            current = records.get(art.key)
            if current is not None and current.artifact.sha256 == art.sha256:
                del records[art.key]
            with contextlib.suppress(FileNotFoundError):
                if corrupt is not None and Stamp.of(os.stat(art.path)) == corrupt:
                    records = {k: r for k, r in records.items() if r.artifact.sha256 != art.sha256}
            self._write(records)

    def _read(self) -> dict[ArtifactKey, Record]:
        try:
            data = self.manifest_path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as exc:
            raise BundleError(
                f"cannot read the bundle manifest {self.manifest_path}: {exc.strerror}",
                hint=f"make {self.root} readable, or set {ENV_CACHE} to another folder",
            ) from exc
        return loads(data, self.objects, self.manifest_path)

    def _write(self, records: dict[ArtifactKey, Record]) -> None:
        """Write the manifest and remove objects it no longer names (call under the manifest lock)."""
        remove_stale_temps(self.manifest_path)
        atomic_write(self.manifest_path, dumps(records), 0o644)
        named = {r.artifact.sha256 for r in records.values()}
        for name in os.listdir(self.objects):
            if name not in named:
                with contextlib.suppress(FileNotFoundError):
                    (self.objects / name).unlink()

    def _prepare(self) -> None:
        try:
            for folder in (self.objects, self._locks, self._tmp):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BundleError(
                f"cannot create the bundle store {self.root}: {exc.strerror}",
                hint=f"set {ENV_CACHE} to a writable directory (the store is $LABDEPLOY_CACHE/bundle)",
            ) from exc

    @contextlib.contextmanager
    def _key_lock(self, key: ArtifactKey) -> Iterator[None]:
        path = self._locks / f"{safe_name(key)}.lock"

        def busy() -> None:
            log.info("%s: another process (pid %s) is making it; waiting for it", key, read_pid(path))

        with flock(path, on_busy=busy) as fd:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield

    @contextlib.contextmanager
    def _manifest_lock(self) -> Iterator[None]:
        self._prepare()
        with flock(self.root / "manifest.lock"):
            yield


def _checked_source(key: ArtifactKey, source: object, recipe_hash: str | None) -> Source:
    if not isinstance(source, Source):
        raise BundleError(f"{key}: the producer returned {source!r}, not a Source")
    if recipe_hash is None or source.recipe_hash == recipe_hash:
        return source
    if source.recipe_hash is None:
        return replace(source, recipe_hash=recipe_hash)
    raise BundleError(f"{key}: the producer says recipe hash {source.recipe_hash}, ensure() was given {recipe_hash}")


def _beyond_newest(records: list[Record], keep: int) -> list[Record]:
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        groups.setdefault((record.artifact.key.name, record.artifact.key.platform), []).append(record)
    removed: list[Record] = []
    for group in groups.values():
        group.sort(key=lambda r: (r.artifact.created, r.artifact.key.version), reverse=True)
        removed.extend(group[keep:])
    return sorted(removed, key=lambda r: r.artifact.key)
