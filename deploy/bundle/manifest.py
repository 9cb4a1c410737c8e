"""What the bundle holds: artifact keys, sources, artifacts, and the manifest's JSON form.

``manifest.json`` (written atomically, read without a lock)::

    {"format": 1,
     "artifacts": [{"name": "kubeadm", "version": "1.36.2", "platform": "linux/amd64",
                    "sha256": "<hex>", "size": 123, "created": 1764627000.5,
                    "source": {"kind": "build", "ref": "kubernetes", "recipe_hash": "<hex>"},
                    "checked": {"size": 123, "mtime_ns": 1764627000500000000, "inode": 42}}]}

The file of an entry is always ``objects/sha256/<sha256>`` under the store's root. ``checked``
is the file's stat when its content was last hashed: while it is unchanged the content is
trusted without hashing again (a warm check of gigabytes costs a few ``stat`` calls).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

from deploy.errors import PlanError

__all__ = ["Artifact", "ArtifactKey", "BundleError", "Record", "Source", "Stamp", "dumps", "loads"]

FORMAT = 1
_NAME = re.compile(r"[^\s@/]+")
_PLATFORM = re.compile(r"[^\s@/]+/[^\s@]+")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BundleError(PlanError):
    """The bundle cannot give an artifact: refused checksum, unreadable manifest, bad key (exit 4)."""


@dataclass(frozen=True, order=True)
class ArtifactKey:
    """What names an artifact: ``kubeadm@1.36.2/linux/amd64``."""

    name: str
    version: str
    platform: str = "linux/amd64"

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or not _NAME.fullmatch(self.version):
            raise BundleError(
                f"bad artifact key {self.name!r}@{self.version!r}: name and version must be non-empty, "
                "without spaces, '@' or '/'"
            )
        if not _PLATFORM.fullmatch(self.platform):
            raise BundleError(f"bad platform {self.platform!r} for {self.name}: expected os/arch, e.g. linux/amd64")

    def __str__(self) -> str:
        return f"{self.name}@{self.version}/{self.platform}"

    @classmethod
    def parse(cls, text: str) -> ArtifactKey:
        """The key that ``str(key)`` printed (``name@version`` alone means linux/amd64)."""
        name, at, rest = text.partition("@")
        if not at:
            raise BundleError(f"bad artifact key {text!r}: expected name@version[/os/arch]")
        version, slash, platform = rest.partition("/")
        return cls(name, version, platform) if slash else cls(name, version)


@dataclass(frozen=True)
class Source:
    """Where an artifact came from: a build recipe (and the hash of its inputs) or an upstream URL."""

    kind: Literal["build", "upstream"]
    ref: str
    recipe_hash: str | None = None


@dataclass(frozen=True)
class Artifact:
    """One listed artifact; ``path`` is its absolute object file (read it, never write it)."""

    key: ArtifactKey
    sha256: str
    size: int
    source: Source
    created: float
    path: Path


class Stamp(NamedTuple):
    """A file's stat as it was when its content was hashed."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class Record:
    """A manifest entry: the artifact and the stamp of its file when last hashed."""

    artifact: Artifact
    stamp: Stamp


def object_path(objects: Path, sha256: str) -> Path:
    return objects / sha256


def dumps(records: dict[ArtifactKey, Record]) -> bytes:
    """The manifest's JSON (entries sorted by key, so diffs of it are readable)."""
    entries = [_entry(records[key]) for key in sorted(records)]
    return (json.dumps({"format": FORMAT, "artifacts": entries}, indent=2) + "\n").encode()


def loads(data: bytes, objects: Path, where: Path) -> dict[ArtifactKey, Record]:
    """Parse a manifest; ``objects`` is the folder of the object files, ``where`` names it in errors."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _unreadable(where, f"not JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("artifacts"), list):
        raise _unreadable(where, f"expected {{'format': {FORMAT}, 'artifacts': [...]}}")
    records: dict[ArtifactKey, Record] = {}
    for index, entry in enumerate(cast(list[Any], doc["artifacts"])):
        try:
            record = _record(entry, objects)
        except (KeyError, TypeError, ValueError, PlanError) as exc:
            raise _unreadable(where, f"entry {index} is malformed ({exc!r})") from exc
        records[record.artifact.key] = record
    return records


def _entry(record: Record) -> dict[str, Any]:
    art = record.artifact
    return {
        "name": art.key.name,
        "version": art.key.version,
        "platform": art.key.platform,
        "sha256": art.sha256,
        "size": art.size,
        "created": art.created,
        "source": {"kind": art.source.kind, "ref": art.source.ref, "recipe_hash": art.source.recipe_hash},
        "checked": record.stamp._asdict(),
    }


def _record(entry: dict[str, Any], objects: Path) -> Record:
    key = ArtifactKey(_str(entry["name"]), _str(entry["version"]), _str(entry["platform"]))
    sha = _str(entry["sha256"])
    if not _HEX64.fullmatch(sha):
        raise ValueError(f"sha256 {sha!r} is not 64 lowercase hex digits")
    src = entry["source"]
    kind = _str(src["kind"])
    if kind not in ("build", "upstream"):
        raise ValueError(f"source kind {kind!r}")
    recipe_hash = src.get("recipe_hash")
    source = Source(cast(Literal["build", "upstream"], kind), _str(src["ref"]), _opt_str(recipe_hash))
    checked = entry["checked"]
    stamp = Stamp(_int(checked["size"]), _int(checked["mtime_ns"]), _int(checked["inode"]))
    created = entry["created"]
    if not isinstance(created, int | float) or isinstance(created, bool):
        raise TypeError(f"created {created!r}")
    art = Artifact(key, sha, _int(entry["size"]), source, float(created), object_path(objects, sha))
    return Record(art, stamp)


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _opt_str(value: object) -> str | None:
    return None if value is None else _str(value)


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _unreadable(where: Path, why: str) -> BundleError:
    return BundleError(
        f"the bundle manifest {where} is unreadable: {why}",
        hint=f"move {where} aside; the next `deploy bundle build` lists what it (re)builds",
    )
