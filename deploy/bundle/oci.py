"""A deterministic writer of OCI image layouts, as one tar file that ``ctr images import`` reads.

    File(path, mode, data=... | source=Path | link=...)     one entry of a layer; parent folders are implied
    Config(entrypoint, cmd, env, working_dir, user, labels)  the image config's ``config`` part
    Image(reference, layers, config, annotations)           reference: the full name, e.g.
                                                            registry.k8s.io/kube-apiserver:v1.36.3
    write_layout(images, out) -> list[Written]              oci-layout, index.json, blobs/sha256/<hex>

The same inputs give the same bytes: layer members sorted, uid/gid 0, mtime 0, no user names;
gzip with mtime 0 and no file name; JSON with sorted keys and no spaces. Only media types of the
OCI image spec are used (index, manifest, config, layer tar+gzip).

Naming (containerd's ``client/import.go``, ``imageName``): an index.json descriptor's
``io.containerd.image.name`` annotation is taken verbatim as the image's name; only without it is
``org.opencontainers.image.ref.name`` used, and ``ctr images import`` then prefixes a tag-only
value with ``import-<date>`` (``archive.AddRefPrefix``). So each manifest descriptor carries both:
the full name and, as the OCI spec and containerd's own exporter do, the tag alone as ref.name.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from deploy.errors import LabError

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
VERSION_LABEL = "org.opencontainers.image.version"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GZIP_LEVEL = 6
# distribution/reference: [domain/]path[:tag], lower-case path components, a tag of [\w][\w.-]{0,127}
_REFERENCE = re.compile(
    r"(?P<name>(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*):(?P<tag>[\w][\w.-]{0,127})"
)


class ImageError(LabError):
    """An image cannot be written: a bad reference, a clash of paths, an unreadable source file."""


@dataclass(frozen=True)
class File:
    """One layer entry: ``data`` bytes, or the file at ``source``, or a symlink to ``link``."""

    path: str
    mode: int = 0o644
    data: bytes | None = None
    source: Path | None = None
    link: str | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.data, self.source, self.link)) != 1:
            raise ImageError(f"image file {self.path}: give exactly one of data, source or link")
        parts = PurePosixPath("/", self.path).parts
        if ".." in parts or len(parts) < 2:
            raise ImageError(f"image file path {self.path!r} must name a file below / without '..'")

    @property
    def name(self) -> str:
        """The member name in the layer tar: relative, without a leading slash."""
        return str(PurePosixPath("/", self.path).relative_to("/"))


@dataclass(frozen=True)
class Config:
    """What a container of the image runs (the image config's ``config`` object)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = (DEFAULT_PATH,)
    working_dir: str = ""
    user: str = ""
    labels: tuple[tuple[str, str], ...] = ()

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Env": list(self.env)}
        if self.entrypoint:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            out["Cmd"] = list(self.cmd)
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.user:
            out["User"] = self.user
        if self.labels:
            out["Labels"] = dict(self.labels)
        return out


@dataclass(frozen=True)
class Image:
    reference: str  # the full name: [registry/]path:tag
    layers: tuple[tuple[File, ...], ...]
    config: Config = field(default_factory=Config)
    annotations: tuple[tuple[str, str], ...] = ()  # on the manifest (and its index descriptor)
    architecture: str = "amd64"
    os: str = "linux"

    @property
    def tag(self) -> str:
        return split_reference(self.reference)[1]


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str  # sha256:<hex>
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Written:
    """What one image became in the layout."""

    reference: str
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]  # sha256 of each layer's uncompressed tar


def split_reference(reference: str) -> tuple[str, str]:
    """(name, tag) of a full image reference; ImageError if it is not one containerd accepts."""
    found = _REFERENCE.fullmatch(reference)
    if found is None:
        raise ImageError(f"{reference!r} is not an image reference of the form [registry/]path:tag (lower-case path)")
    return found["name"], found["tag"]


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to ``sink``."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.sink.write(view)
        self.size += len(view)
        return len(view)


def _entries(files: Sequence[File]) -> list[tuple[str, File | None]]:
    """Every member of a layer, sorted by name: the files and their implied parent folders (None)."""
    members: dict[str, File | None] = {}
    for item in files:
        if item.name in members:
            raise ImageError(f"image path /{item.name} is given twice in one layer")
        members[item.name] = item
    for name in list(members):
        for parent in PurePosixPath(name).parents:
            if str(parent) != ".":
                if members.get(str(parent)) is not None:
                    raise ImageError(f"image path /{parent} is a file and also a folder of /{name}")
                members[str(parent)] = None
    return sorted(members.items())


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add(tar: tarfile.TarFile, name: str, item: File | None) -> None:
    if item is None:
        tar.addfile(_info(name + "/", tarfile.DIRTYPE, 0o755))
    elif item.link is not None:
        info = _info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = item.link
        tar.addfile(info)
    elif item.data is not None:
        info = _info(name, tarfile.REGTYPE, item.mode)
        info.size = len(item.data)
        tar.addfile(info, io.BytesIO(item.data))
    else:
        assert item.source is not None
        try:
            with item.source.open("rb") as handle:
                info = _info(name, tarfile.REGTYPE, item.mode)
                info.size = os.fstat(handle.fileno()).st_size
                tar.addfile(info, handle)
        except OSError as exc:
            raise ImageError(f"image file /{name}: cannot read {item.source}: {exc.strerror}") from exc


def write_layer(files: Sequence[File], out: Path) -> tuple[Descriptor, str]:
    """Write one gzip layer to ``out``: (its descriptor, the diff_id of its uncompressed tar)."""
    with out.open("wb") as raw:
        compressed = _Hashing(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, compresslevel=GZIP_LEVEL, mtime=0) as gz:
            plain = _Hashing(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for name, item in _entries(files):
                    _add(tar, name, item)
    digest = f"sha256:{compressed.sha.hexdigest()}"
    return Descriptor(LAYER, digest, compressed.size), f"sha256:{plain.sha.hexdigest()}"


def _config_json(image: Image, diff_ids: Sequence[str]) -> bytes:
    return canonical_json({
        "architecture": image.architecture,
        "os": image.os,
        "config": image.config.as_json(),
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
    })


def _manifest_json(image: Image, config: Descriptor, layers: Sequence[Descriptor]) -> bytes:
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config.as_json(),
        "layers": [layer.as_json() for layer in layers],
    }
    if image.annotations:
        manifest["annotations"] = dict(image.annotations)
    return canonical_json(manifest)


class _Blobs:
    """Blob files in a work folder, by digest (each written once)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths: dict[str, Path] = {}

    def add_bytes(self, media_type: str, data: bytes) -> Descriptor:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        path = self.folder / digest.removeprefix("sha256:")
        path.write_bytes(data)
        self.paths[digest] = path
        return Descriptor(media_type, digest, len(data))

    def add_layer(self, files: Sequence[File]) -> tuple[Descriptor, str]:
        work = self.folder / f"layer-{len(self.paths)}.tmp"
        desc, diff_id = write_layer(files, work)
        path = self.folder / desc.digest.removeprefix("sha256:")
        os.replace(work, path)
        self.paths[desc.digest] = path
        return desc, diff_id


def _write_image(image: Image, blobs: _Blobs) -> Written:
    split_reference(image.reference)
    pairs = [blobs.add_layer(files) for files in image.layers]
    layers = tuple(desc for desc, _ in pairs)
    diff_ids = tuple(diff for _, diff in pairs)
    config = blobs.add_bytes(CONFIG, _config_json(image, diff_ids))
    manifest = blobs.add_bytes(MANIFEST, _manifest_json(image, config, layers))
    return Written(image.reference, manifest, config, layers, diff_ids)


def _index_json(images: Sequence[Image], written: Sequence[Written]) -> bytes:
    manifests = []
    for image, done in zip(images, written, strict=True):
        desc = done.manifest.as_json()
        desc["platform"] = {"architecture": image.architecture, "os": image.os}
        desc["annotations"] = {**dict(image.annotations), NAME_ANNOTATION: image.reference, REF_ANNOTATION: image.tag}
        manifests.append(desc)
    return canonical_json({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests})


def _outer(tar: tarfile.TarFile, name: str, size: int, handle: IO[bytes] | None) -> None:
    info = _info(name, tarfile.DIRTYPE if handle is None else tarfile.REGTYPE, 0o755 if handle is None else 0o644)
    info.size = size
    tar.addfile(info, handle)


def write_layout(images: Sequence[Image], out: Path) -> list[Written]:
    """Write ``images`` as one OCI image-layout tar at ``out`` (uncompressed; its layers are gzip)."""
    if not images:
        raise ImageError("an image layout needs at least one image")
    names = [image.reference for image in images]
    if len(set(names)) != len(names):
        raise ImageError(f"an image layout names an image twice: {names}")
    with tempfile.TemporaryDirectory(prefix=".oci-", dir=out.parent) as tmp:
        blobs = _Blobs(Path(tmp))
        written = [_write_image(image, blobs) for image in images]
        index = _index_json(images, written)
        with out.open("wb") as raw, tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            layout = canonical_json({"imageLayoutVersion": "1.0.0"})
            _outer(tar, "oci-layout", len(layout), io.BytesIO(layout))
            _outer(tar, "index.json", len(index), io.BytesIO(index))
            _outer(tar, "blobs/", 0, None)
            _outer(tar, "blobs/sha256/", 0, None)
            for digest, path in sorted(blobs.paths.items()):
                with path.open("rb") as handle:
                    _outer(tar, f"blobs/sha256/{digest.removeprefix('sha256:')}", path.stat().st_size, handle)
    return written


def read_layout(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every regular member of a layout tar with its bytes (for checks and tests; small images only)."""
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                yield member.name, handle.read()


def manifests(path: Path) -> dict[str, str]:
    """Image name -> manifest digest, from a layout tar's index.json (what ``ctr image ls`` shows after import)."""
    with tarfile.open(path, "r:") as tar:
        try:
            handle = tar.extractfile("index.json")
        except KeyError:
            handle = None
        if handle is None:
            raise ImageError(f"{path}: no index.json; not an OCI image layout")
        index = json.loads(handle.read())
    return {desc.get("annotations", {}).get(NAME_ANNOTATION, ""): str(desc["digest"]) for desc in index["manifests"]}


def verify_layout(path: Path) -> list[str]:
    """Check a layout tar (every blob's sha256 matches its name, index and manifests name blobs present).

    Returns the image names of index.json, in order; ImageError on the first problem found.
    """
    members = dict(read_layout(path))
    if json.loads(members.get("oci-layout", b"{}")).get("imageLayoutVersion") != "1.0.0":
        raise ImageError(f"{path}: no oci-layout file of version 1.0.0")
    blobs = {name.removeprefix("blobs/sha256/"): data for name, data in members.items() if name.startswith("blobs/")}
    for hexdigest, data in blobs.items():
        if hashlib.sha256(data).hexdigest() != hexdigest:
            raise ImageError(f"{path}: blob {hexdigest} does not hash to its name")
    index = json.loads(members["index.json"])
    names = []
    for desc in index["manifests"]:
        manifest = json.loads(_blob(blobs, desc, path))
        for child in [manifest["config"], *manifest["layers"]]:
            _blob(blobs, child, path)
        names.append(desc.get("annotations", {}).get(NAME_ANNOTATION, ""))
    return names


def _blob(blobs: dict[str, bytes], desc: dict[str, Any], path: Path) -> bytes:
    data = blobs.get(str(desc["digest"]).removeprefix("sha256:"))
    if data is None or len(data) != desc["size"]:
        raise ImageError(f"{path}: {desc['mediaType']} {desc['digest']} is missing or not {desc['size']} bytes")
    return data
