"""Turn a guest root directory into a BIOS-bootable disk, without loop devices or mounts.

Layout (MBR, so the disk boots under any BIOS firmware: QEMU, libvirt, Vagrant, kcli)::

    sector 0          GRUB boot.img (first 440 bytes), disk signature, partition table
    sectors 1..2047   GRUB core.img in the gap before the first partition
    sector 2048..     partition 1, type 0x83, active: ext4 made by ``mke2fs -d <root>``

GRUB's boot.img loads the sector after the MBR by default, and core.img's first sector
(diskboot) loads the rest from the sectors that follow, so no ``grub-install`` is needed.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

SECTOR = 512
PART_START = 2048  # sectors: the first partition starts at 1 MiB
MIB = 1 << 20
GIB = 1 << 30
MIN_DISK = 3 * GIB
_BOOT_CODE = 440

RunCommand = Callable[[list[str]], None]


def tree_size(root: Path) -> int:
    """Bytes the files under ``root`` occupy (allocated blocks, hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def disk_size_for(content: int) -> int:
    """Virtual disk size: room for the content plus 1 GiB and 25 %, whole GiB, at least 3 GiB."""
    wanted = PART_START * SECTOR + content + content // 4 + GIB
    return max(MIN_DISK, -(-wanted // GIB) * GIB)


def mbr(boot_code: bytes, disk_bytes: int, signature: int) -> bytes:
    """A master boot record: boot code, disk signature and one active Linux partition."""
    sectors = disk_bytes // SECTOR - PART_START
    entry = struct.pack(
        "<B3sB3sII",
        0x80,  # active
        bytes((32, 33, 0)),  # CHS of LBA 2048 (255 heads, 63 sectors)
        0x83,
        bytes((0xFE, 0xFF, 0xFF)),  # beyond CHS range: use LBA
        PART_START,
        sectors,
    )
    table = entry + bytes(16 * 3)
    return boot_code[:_BOOT_CODE] + struct.pack("<IH", signature, 0) + table + b"\x55\xaa"


def write_disk(
    raw: Path,
    root: Path,
    *,
    fs_uuid: str,
    boot_img: bytes,
    core_img: bytes,
    run: RunCommand,
) -> int:
    """Write the bootable raw disk ``raw`` holding ``root``; returns its size in bytes."""
    if len(core_img) > (PART_START - 1) * SECTOR:
        raise ValueError(f"GRUB core.img is {len(core_img)} bytes; it does not fit before the partition")
    size = disk_size_for(tree_size(root))
    with raw.open("wb") as handle:
        handle.truncate(size)
    fs_bytes = size - PART_START * SECTOR
    run(_mke2fs_command(raw, root, fs_uuid, fs_bytes))
    signature = int(fs_uuid.replace("-", "")[:8], 16)
    with raw.open("r+b") as handle:
        handle.write(mbr(boot_img, size, signature))
        handle.write(core_img)
    return size


def _mke2fs_command(raw: Path, root: Path, fs_uuid: str, fs_bytes: int) -> list[str]:
    return [
        "mke2fs", "-t", "ext4", "-F", "-q",
        "-L", "root",
        "-U", fs_uuid,
        "-E", f"offset={PART_START * SECTOR},root_owner=0:0",
        "-d", str(root),
        str(raw),
        f"{fs_bytes // 1024}k",
    ]  # fmt: skip
