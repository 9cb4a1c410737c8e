"""Shared by the bundle's build tests: one real build into a folder, and whether an ELF is static."""

from __future__ import annotations

import struct
import time
from pathlib import Path

from deploy.bundle.recipes import Recipe

PT_INTERP = 3


def build_one(recipe: Recipe, tmp: Path) -> tuple[Path, float]:
    """Build ``recipe`` into ``tmp`` (which must end up holding exactly that file); (path, seconds)."""
    out = tmp / recipe.key.name
    started = time.monotonic()
    source = recipe.produce(out)
    seconds = time.monotonic() - started
    assert source.kind == "build"
    assert source.recipe_hash == recipe.recipe_hash()
    assert sorted(p.name for p in tmp.iterdir()) == [recipe.key.name]  # exactly one file written
    print(f"\n{recipe.key.name} {recipe.key.version}: built in {seconds:.1f} s, {out.stat().st_size} bytes")
    return out, seconds


def has_interpreter(data: bytes) -> bool:
    """Whether an ELF64 little-endian file has a PT_INTERP segment (i.e. is dynamically linked)."""
    assert data[:6] == b"\x7fELF\x02\x01"
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    return PT_INTERP in types


def is_static(path: Path) -> bool:
    """An x86-64 ELF executable with program headers and no PT_INTERP (no dynamic loader)."""
    data = path.read_bytes()
    return struct.unpack_from("<H", data, 0x38)[0] > 0 and not has_interpreter(data)
