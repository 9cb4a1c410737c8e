"""The labdeploy storage pool: base images by content hash, per-machine overlays, seed ISOs.

Volumes cannot carry libvirt metadata, so ownership is in their names
(``<lab>__<node>__<role>.<ext>``) and in the owning domain's metadata (its volume list).
Base images are shared by every lab and named ``base-<sha256 prefix>.<fmt>``. Everything is
moved through libvirt streams, so remote URIs (qemu+ssh) work the same as local ones.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import IO

import libvirt

from deploy.errors import ProviderError
from deploy.providers.libvirt_xml import pool_xml, volume_xml

GIB = 1024**3
QCOW2_MAGIC = b"QFI\xfb"
SEP = "__"


def volume_name(lab: str, node: str, role: str) -> str:
    ext = "iso" if role == "seed" else "qcow2"
    return f"{lab}{SEP}{node}{SEP}{role}.{ext}"


def volume_owner(name: str) -> tuple[str, str] | None:
    """(lab, node) encoded in a labdeploy machine volume name, or None for other volumes."""
    parts = name.split(SEP)
    return (parts[0], parts[1]) if len(parts) == 3 else None


def image_format(path: Path) -> tuple[str, int]:
    """(format, virtual size in bytes) of a local image file: qcow2 by its header, else raw."""
    with path.open("rb") as fh:
        header = fh.read(32)
    if header[:4] == QCOW2_MAGIC:
        return "qcow2", int(struct.unpack(">Q", header[24:32])[0])
    return "raw", path.stat().st_size


def content_hash(path: Path, cache_dir: Path) -> str:
    """sha256 of ``path``, remembered in ``cache_dir`` by (size, mtime) to hash big files once."""
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    cache_file = cache_dir / "image-hashes.json"
    known: dict[str, str] = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    if key not in known:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        known[key] = digest.hexdigest()
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(known, indent=1))
    return known[key]


def ensure_pool(conn: libvirt.virConnect, name: str, path: str) -> libvirt.virStoragePool:
    """The dir pool ``name`` at ``path``, defined, built and started when missing."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise ProviderError(f"cannot look up storage pool {name}: {exc}") from exc
        pool = _define_pool(conn, name, path)
    try:
        if not pool.isActive():
            pool.create(0)  # scans the directory; later changes all go through libvirt
    except libvirt.libvirtError as exc:
        raise ProviderError(f"cannot start storage pool {name} ({path}): {exc}") from exc
    return pool


def _define_pool(conn: libvirt.virConnect, name: str, path: str) -> libvirt.virStoragePool:
    try:
        pool = conn.storagePoolDefineXML(pool_xml(name, path), 0)
        pool.build(0)
        pool.setAutostart(1)
    except libvirt.libvirtError as exc:
        raise ProviderError(
            f"cannot create storage pool {name} at {path}: {exc}",
            hint="set pool: to an existing libvirt dir pool, or make its parent directory writable by libvirtd",
        ) from exc
    return pool


def lookup_volume(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol | None:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise ProviderError(f"cannot look up volume {name} in pool {pool.name()}: {exc}") from exc


def upload_volume(
    conn: libvirt.virConnect,
    pool: libvirt.virStoragePool,
    name: str,
    path: Path,
    *,
    fmt: str = "raw",
    capacity: int = 0,
) -> None:
    """Create volume ``name`` holding exactly the bytes of local file ``path``.

    ``capacity`` (the image's virtual size) is what libvirt reports for the volume; the file
    written is the uploaded one. No pool refresh: it fails while other uploads run.
    """
    size = path.stat().st_size
    vol = _create(pool, volume_xml(name, capacity or size, fmt, mode="0644"), name)
    try:
        stream = conn.newStream(0)
        vol.upload(stream, 0, size, 0)
        with path.open("rb") as fh:
            stream.sendAll(_reader, fh)
        stream.finish()
    except (libvirt.libvirtError, OSError) as exc:
        _delete(vol)
        raise ProviderError(f"uploading {path} into volume {name} failed: {exc}") from exc


def _reader(_stream: libvirt.virStream, nbytes: int, fh: IO[bytes]) -> bytes:
    return fh.read(nbytes)


def import_base(conn: libvirt.virConnect, pool: libvirt.virStoragePool, path: Path, digest: str) -> str:
    """Upload the base image once (named by content hash); returns the volume name."""
    fmt, virtual = image_format(path)
    name = f"base-{digest[:16]}.{fmt}"
    if lookup_volume(pool, name) is None:
        upload_volume(conn, pool, name, path, fmt=fmt, capacity=virtual)
    return name


def create_overlay(pool: libvirt.virStoragePool, name: str, base: str, size_gib: int) -> None:
    """A qcow2 overlay backed by volume ``base``, ``size_gib`` large (kept if it exists)."""
    if lookup_volume(pool, name) is not None:
        return
    base_vol = lookup_volume(pool, base)
    if base_vol is None:
        raise ProviderError(f"base image volume {base} is missing from pool {pool.name()}")
    base_size = base_vol.info()[1]
    if size_gib * GIB < base_size:
        raise ProviderError(
            f"disk of {size_gib} GiB for {name} is smaller than its image ({base_size / GIB:.1f} GiB)",
            hint="raise the node's disk size",
        )
    _create(pool, volume_xml(name, size_gib * GIB, "qcow2", backing=base_vol.path()), name)


def create_blank(pool: libvirt.virStoragePool, name: str, size_gib: int) -> None:
    if lookup_volume(pool, name) is None:
        _create(pool, volume_xml(name, size_gib * GIB, "qcow2"), name)


def _create(pool: libvirt.virStoragePool, xml: str, name: str) -> libvirt.virStorageVol:
    try:
        return pool.createXML(xml, 0)
    except libvirt.libvirtError as exc:
        raise ProviderError(f"cannot create volume {name} in pool {pool.name()}: {exc}") from exc


def delete_volume(pool: libvirt.virStoragePool, name: str) -> bool:
    """Delete volume ``name``; False when it was not there."""
    vol = lookup_volume(pool, name)
    if vol is None:
        return False
    _delete(vol)
    return True


def _delete(vol: libvirt.virStorageVol) -> None:
    try:
        vol.delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise ProviderError(f"cannot delete volume {vol.name()}: {exc}") from exc
