"""The one atomic writer: content, exact mode, no temp file after success, failure or a dead writer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import deploy.atomic
from deploy.atomic import atomic_output, atomic_write, remove_stale_temps, temp_path
from deploy.images.seed import build_seed_iso
from deploy.state import atomic_write as state_atomic_write


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_writes_bytes_with_exactly_the_mode_asked(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "sub" / "report.html", b"<html/>", 0o644)
    finally:
        os.umask(old)
    path = tmp_path / "sub" / "report.html"
    assert path.read_bytes() == b"<html/>"
    assert path.stat().st_mode & 0o777 == 0o644
    atomic_write(path, b"new", 0o600)
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(path.parent) == ["report.html"]


def test_large_data_is_written_whole(tmp_path: Path) -> None:
    data = os.urandom(3 << 20) * 4  # 12 MiB: more than one os.write may take
    atomic_write(tmp_path / "big", data)
    assert (tmp_path / "big").read_bytes() == data


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temp(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    atomic_write(path, b"old")

    def full_disk(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(deploy.atomic.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_temp_names_carry_the_pid_and_differ_per_call(tmp_path: Path) -> None:
    first, second = temp_path(tmp_path / "state.json"), temp_path(tmp_path / "state.json")
    assert first != second
    assert first.name.startswith(f".state.json.{os.getpid()}.")
    assert first.name.endswith(".tmp")
    assert first.parent == tmp_path


def test_stale_temps_of_dead_writers_only_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "image.qcow2"
    dead = tmp_path / f".image.qcow2.{_dead_pid()}.abcdef01.tmp"
    live = tmp_path / f".image.qcow2.{os.getpid()}.abcdef01.tmp"
    other = tmp_path / f".other.qcow2.{_dead_pid()}.abcdef01.tmp"
    for path in (dead, live, other):
        path.write_bytes(b"half")
    assert remove_stale_temps(target) == [dead]
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name])
    assert remove_stale_temps(tmp_path / "missing" / "x") == []


def test_atomic_output_for_tools_that_write_by_name(tmp_path: Path) -> None:
    final = tmp_path / "disk.qcow2"

    def failing_tool() -> None:
        with atomic_output(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("qemu-img died")

    with pytest.raises(RuntimeError):
        failing_tool()
    assert os.listdir(tmp_path) == []
    with atomic_output(final, 0o640) as tmp:
        subprocess.run(["sh", "-c", f"printf whole > {tmp}"], check=True)
    assert final.read_bytes() == b"whole"
    assert final.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["disk.qcow2"]


def test_seed_iso_is_written_atomically(tmp_path: Path) -> None:
    path = build_seed_iso(tmp_path / "seed.iso", hostname="vm1", instance_id="i-1",
                          ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB test")
    assert path.stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["seed.iso"]


def test_state_module_re_exports_the_writer() -> None:
    assert state_atomic_write is atomic_write
