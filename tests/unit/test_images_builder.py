"""The image builder's decisions: recipes and cache keys, validation, mirror, disk layout,
errors from a failing mmdebstrap (a real run against a closed loopback port)."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deploy.errors import ConfigError
from deploy.images import ImageBuildError, builder, children, ensure_image
from deploy.images.cache import atomic_output, default_cache_dir, entry_lock, recipe_key
from deploy.images.children import alive
from deploy.images.disk import GIB, PART_START, disk_size_for, mbr
from deploy.model.resolved import ResolvedImage

MIRROR = "http://deb.debian.org/debian"


def build(release: str = "bookworm", packages: tuple[str, ...] = (), distro: str = "debian") -> ResolvedImage:
    return ResolvedImage(name="img", source="build", distro=distro, release=release, packages=packages)


def test_cache_key_ignores_package_order_and_duplicates() -> None:
    one = builder.entry_name(build(packages=("curl", "jq")), MIRROR)
    two = builder.entry_name(build(packages=("jq", "curl", "jq")), MIRROR)
    assert one == two
    assert one.startswith("debian-bookworm-")
    assert one.endswith(".qcow2")


@pytest.mark.parametrize(
    "other",
    [
        (build(release="trixie"), MIRROR),
        (build(packages=("jq",)), MIRROR),
        (build(), "http://mirror.internal/debian"),
    ],
)
def test_cache_key_changes_with_release_packages_and_mirror(other: tuple[ResolvedImage, str]) -> None:
    assert builder.entry_name(*other) != builder.entry_name(build(), MIRROR)


def test_cache_key_changes_with_builder_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = builder.entry_name(build(), MIRROR)
    monkeypatch.setattr(builder, "BUILDER_VERSION", "next")
    assert builder.entry_name(build(), MIRROR) != before


def test_recipe_key_is_stable_across_dict_order() -> None:
    assert recipe_key({"a": 1, "b": [2]}) == recipe_key({"b": [2], "a": 1})


@pytest.mark.parametrize(
    ("image", "needle"),
    [
        (build(distro="fedora"), "cannot build distro 'fedora'; supported: debian"),
        (build(release="buster"), "release 'buster'; supported: bookworm, trixie"),
        (build(packages=("curl", "rm -rf /")), "not Debian package names: rm -rf /"),
    ],
)
def test_bad_recipes_are_config_errors(image: ResolvedImage, needle: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=needle):
        ensure_image(image, tmp_path)


@pytest.mark.parametrize("source", ["template", "ova"])
def test_sources_of_other_providers_name_the_provider(source: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vsphere provider"):
        ensure_image(ResolvedImage(name="esxi8", source=source), tmp_path)


def test_cached_build_returns_at_once(tmp_path: Path) -> None:
    cached = tmp_path / builder.entry_name(build(), MIRROR)
    cached.write_bytes(b"qcow2")
    start = time.monotonic()
    assert ensure_image(build(), tmp_path, mirror=MIRROR + "/") == cached
    assert time.monotonic() - start < 5  # a hit, not a ~60 s build


def test_concurrent_requests_for_one_recipe_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def slow_build(_image: ResolvedImage, _mirror: str, final: Path, _on_progress: object) -> None:
        calls.append(final.name)
        time.sleep(0.3)
        final.write_bytes(b"built")

    monkeypatch.setattr(builder, "_build", slow_build)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_image(build(), tmp_path, mirror=MIRROR)))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len(set(results)) == 1
    assert len(results) == 3


def test_entry_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    order: list[str] = []

    def second() -> None:
        with entry_lock(tmp_path, "x"):
            order.append("second")

    with entry_lock(tmp_path, "x"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.2)
        order.append("first")
    thread.join()
    assert order == ["first", "second"]


def test_atomic_output_leaves_nothing_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "image.qcow2"

    def failing_build() -> None:
        with atomic_output(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("build died")

    with pytest.raises(RuntimeError):
        failing_build()
    assert list(tmp_path.iterdir()) == []
    with atomic_output(final) as tmp:
        tmp.write_bytes(b"whole")
    assert final.read_bytes() == b"whole"
    assert list(tmp_path.iterdir()) == [final]


def test_default_cache_dir_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LABDEPLOY_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LABDEPLOY_CACHE_DIR")
    monkeypatch.setenv("LABDEPLOY_CACHE", str(tmp_path / "root"))  # the one root the bundle uses too
    assert default_cache_dir() == tmp_path / "root" / "images"
    monkeypatch.delenv("LABDEPLOY_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "labdeploy" / "images"


def test_default_mirror_reads_deb822_and_one_line_sources(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    oneline = tmp_path / "sources.list"
    oneline.write_text("# comment\ndeb [arch=amd64] https://other.example/debian bookworm main\n")
    unrelated = tmp_path / "google.list"
    unrelated.write_text("deb https://packages.cloud.google.com/apt cloud-sdk main\n")
    assert builder.default_mirror([unrelated, deb822, oneline]) == "http://mirror.example/debian"
    assert builder.default_mirror([oneline]) == "https://other.example/debian"
    assert builder.default_mirror([unrelated, tmp_path / "absent"]) == builder.FALLBACK_MIRROR


def test_mbr_has_boot_code_one_active_linux_partition_and_signature() -> None:
    boot = bytes(range(256)) * 2
    record = mbr(boot, 3 * GIB, 0x12345678)
    assert len(record) == 512
    assert record[:440] == boot[:440]
    assert struct.unpack_from("<I", record, 440)[0] == 0x12345678
    status, ptype, start, count = record[446], record[450], *struct.unpack_from("<II", record, 454)
    assert (status, ptype, start) == (0x80, 0x83, PART_START)
    assert start + count == 3 * GIB // 512
    assert record[462:510] == bytes(48)
    assert record[510:] == b"\x55\xaa"


def test_disk_size_leaves_room_and_is_whole_gib() -> None:
    assert disk_size_for(500 << 20) == 3 * GIB
    big = disk_size_for(4 * GIB)
    assert big % GIB == 0
    assert big >= 4 * GIB * 5 // 4 + GIB


@pytest.mark.timeout(120)
def test_failing_mmdebstrap_reports_log_tail_and_path(tmp_path: Path) -> None:
    messages: list[str] = []
    with pytest.raises(ImageBuildError) as err:
        ensure_image(build(), tmp_path, messages.append, mirror="http://127.0.0.1:9/debian")
    log = err.value.log_path
    assert log.is_file()
    assert "mmdebstrap exited with" in err.value.message
    assert f"full log: {log}" in err.value.message
    assert "127.0.0.1:9" in err.value.message  # the tail shows what apt could not reach
    assert messages[0].startswith("building debian bookworm with mmdebstrap")
    assert not any(p.name.startswith(".work-") for p in tmp_path.iterdir())
    assert not list(tmp_path.glob("*.qcow2"))


# --- build children die with deploy; a killed build's leftovers are cleaned -------------------

_SPAWNER = """
import sys, time
from pathlib import Path
from deploy.images import children
record = Path(sys.argv[2]) if len(sys.argv) > 2 else None
proc = children.spawn(["sh", "-c", sys.argv[1]], record, stdout=sys.stdout)
time.sleep(600)
"""



def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def _killed_deploy(script: str, record: Path | None = None) -> int:
    """Start a python that spawns ``sh -c script`` (which prints a pid), SIGKILL that python; the pid."""
    argv = [sys.executable, "-c", _SPAWNER, script, *([str(record)] if record else [])]
    deploy = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    assert deploy.stdout is not None
    pid = int(deploy.stdout.readline())
    assert alive(pid)
    deploy.kill()
    deploy.wait()
    return pid


def test_a_build_child_dies_when_deploy_is_sigkilled() -> None:
    child = _killed_deploy("echo $$; exec sleep 600")
    assert _gone_within(child, 5), "the build child outlived the SIGKILLed deploy"


def test_leaving_the_block_by_an_exception_kills_the_whole_group() -> None:
    script = ["sh", "-c", "sleep 600 & echo $!; wait"]
    seen: list[tuple[subprocess.Popen[str], int]] = []

    def failing_step() -> None:
        with children.running(script, stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            seen.append((proc, int(proc.stdout.readline())))
            raise RuntimeError("build step failed")

    with pytest.raises(RuntimeError):
        failing_step()
    ((proc, grandchild),) = seen
    assert _gone_within(grandchild, 5)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.timeout(120)
def test_rerun_after_a_killed_build_kills_its_stragglers_and_builds_again(tmp_path: Path) -> None:
    final = tmp_path / builder.entry_name(build(), "http://127.0.0.1:9/debian")
    work = builder.work_dir(final)
    (work / "root/var/cache/apt").mkdir(parents=True)
    (work / "root/var/cache/apt/pkgcache.bin").write_bytes(b"x" * 4096)
    # mmdebstrap's own children (apt, dpkg) are not its PDEATHSIG: a grandchild that writes on
    writer = f"while true; do touch {work}/root/f$(date +%N); sleep 0.01; done"
    straggler = _killed_deploy(f"sh -c '{writer}' & echo $!; wait", record=work / children.RECORD)
    try:
        time.sleep(0.3)
        assert alive(straggler)
        with pytest.raises(ImageBuildError) as err:
            ensure_image(build(), tmp_path, mirror="http://127.0.0.1:9/debian")
        assert not alive(straggler)
    finally:  # a failed assertion must not leave the writer looping in /tmp (it did once, under load)
        with contextlib.suppress(ProcessLookupError):
            os.kill(straggler, signal.SIGKILL)
    assert "mmdebstrap exited with" in err.value.message  # the build ran, not OSError(39, 'Directory not empty')
    assert not work.exists()


def test_a_recorded_group_whose_leader_lives_is_left_alone(tmp_path: Path) -> None:
    proc = children.spawn(["sleep", "600"])
    try:
        record = tmp_path / children.RECORD
        record.write_text(f"{proc.pid}\n")
        assert children.kill_recorded(record) == []
        assert alive(proc.pid)
    finally:
        children.kill_group(proc)
    assert not alive(proc.pid)
