"""The bundle store on a real folder: build, cache, stale recipes, corruption, checksums, prune, manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import deploy.bundle.store
from deploy.bundle import Artifact, ArtifactKey, BundleError, BundleStore, Source
from deploy.bundle.manifest import dumps, loads
from deploy.errors import PlanError

KEY = ArtifactKey("kubeadm", "1.36.2")


class Maker:
    """A producer that writes given bytes and counts its calls."""

    def __init__(self, data: bytes = b"kubeadm binary\n", *, executable: bool = False, hash_: str | None = "r1"):
        self.data = data
        self.executable = executable
        self.hash = hash_
        self.calls: list[Path] = []

    def __call__(self, path: Path) -> Source:
        self.calls.append(path)
        path.write_bytes(self.data)
        if self.executable:
            path.chmod(0o755)
        return Source("build", "kubernetes", self.hash)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _store(tmp_path: Path) -> BundleStore:
    return BundleStore(tmp_path / "bundle")


def _corrupt(art: Artifact, data: bytes) -> None:
    art.path.chmod(0o644)
    art.path.write_bytes(data)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_builds_once_then_returns_the_cached_artifact(tmp_path: Path) -> None:
    store, make = _store(tmp_path), Maker(b"\x7fELF kubeadm", executable=True)
    art, outcome = store.ensure(KEY, make, recipe_hash="r1")
    assert outcome == "built"
    assert art.path == store.root / "objects" / "sha256" / _sha(b"\x7fELF kubeadm")
    assert art.path.is_absolute()
    assert art.path.read_bytes() == b"\x7fELF kubeadm"
    assert (art.sha256, art.size) == (_sha(b"\x7fELF kubeadm"), 12)
    assert art.source == Source("build", "kubernetes", "r1")
    assert art.path.stat().st_mode & 0o777 == 0o555  # read-only, executable kept
    again, outcome = store.ensure(KEY, make, recipe_hash="r1")
    assert (again, outcome) == (art, "cached")
    assert len(make.calls) == 1
    assert store.get(KEY) == art
    assert store.list() == [art]
    assert os.listdir(store.root / "tmp") == []


def test_a_second_store_on_the_same_root_reads_the_manifest_back(tmp_path: Path) -> None:
    store = _store(tmp_path)
    art, _ = store.ensure(KEY, Maker(), recipe_hash="r1")
    other = ArtifactKey("etcd", "3.6.4", "linux/arm64")
    up, _ = store.ensure(other, lambda p: (p.write_bytes(b"etcd"), Source("upstream", "https://x/etcd.tgz"))[1])
    assert BundleStore(store.root).list() == [up, art]
    doc = json.loads(store.manifest_path.read_bytes())
    assert doc["format"] == 1
    entry = next(e for e in doc["artifacts"] if e["name"] == "etcd")
    assert entry["platform"] == "linux/arm64"
    assert entry["source"] == {"kind": "upstream", "ref": "https://x/etcd.tgz", "recipe_hash": None}
    assert set(entry) == {"name", "version", "platform", "sha256", "size", "created", "source", "checked"}
    records = loads(store.manifest_path.read_bytes(), store.objects, store.manifest_path)
    assert dumps(records) == store.manifest_path.read_bytes()


def test_source_without_a_recipe_hash_gets_the_one_ensure_was_given(tmp_path: Path) -> None:
    art, _ = _store(tmp_path).ensure(KEY, Maker(hash_=None), recipe_hash="r7")
    assert art.source.recipe_hash == "r7"
    with pytest.raises(BundleError, match="recipe hash r1, ensure"):
        _store(tmp_path).ensure(ArtifactKey("x", "1"), Maker(hash_="r1"), recipe_hash="r2")


def test_a_changed_recipe_rebuilds_and_drops_the_old_object(tmp_path: Path) -> None:
    store = _store(tmp_path)
    old, _ = store.ensure(KEY, Maker(b"old"), recipe_hash="r1")
    new, outcome = store.ensure(KEY, Maker(b"new", hash_="r2"), recipe_hash="r2")
    assert outcome == "built"
    assert new.source.recipe_hash == "r2"
    assert store.list() == [new]
    assert not old.path.exists()
    assert os.listdir(store.objects) == [new.sha256]
    assert store.ensure(KEY, Maker(), recipe_hash="r2")[1] == "cached"
    assert store.ensure(KEY, Maker())[1] == "cached"  # no recipe hash given: any cached one will do


def test_changed_bytes_are_never_used_and_ensure_rebuilds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = _store(tmp_path)
    art, _ = store.ensure(KEY, Maker(b"good bytes"), recipe_hash="r1")
    _corrupt(art, b"evil bytes")
    caplog.set_level(logging.WARNING, "deploy.bundle")
    assert store.get(KEY) is None
    warning = caplog.text
    assert str(KEY) in warning
    assert _sha(b"good bytes") in warning
    assert _sha(b"evil bytes") in warning
    assert store.list() == []  # delisted, and the bad object is gone
    assert not art.path.exists()
    make = Maker(b"good bytes")
    rebuilt, outcome = store.ensure(KEY, make, recipe_hash="r1")
    assert (outcome, len(make.calls)) == ("built", 1)
    assert rebuilt.path.read_bytes() == b"good bytes"
    assert store.list() == [rebuilt]


def test_ensure_rebuilds_a_corrupt_object_without_a_get_first(tmp_path: Path) -> None:
    store = _store(tmp_path)
    art, _ = store.ensure(KEY, Maker(b"A" * 4096), recipe_hash="r1")
    _corrupt(art, b"A" * 4095 + b"B")
    rebuilt, outcome = store.ensure(KEY, Maker(b"A" * 4096), recipe_hash="r1")
    assert outcome == "built"
    assert rebuilt.path.read_bytes() == b"A" * 4096
    assert store.verify() == []


def test_warm_checks_stat_and_do_not_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path)
    keys = [ArtifactKey(f"tool{i}", "1.0") for i in range(40)]
    for i, key in enumerate(keys):
        store.ensure(key, Maker(os.urandom(1 << 18) + bytes([i])), recipe_hash="r1")

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"hashed {path} on a warm check")

    monkeypatch.setattr(deploy.bundle.store, "sha256_file", no_hashing)
    started = time.monotonic()
    assert store.missing(keys) == []
    assert all(store.ensure(key, Maker(), recipe_hash="r1")[1] == "cached" for key in keys)
    assert time.monotonic() - started < 1.0


def test_same_stat_means_trusted_until_verify_hashes_everything(tmp_path: Path) -> None:
    store = _store(tmp_path)
    art, _ = store.ensure(KEY, Maker(b"0123456789"), recipe_hash="r1")
    before = art.path.stat()
    art.path.chmod(0o644)
    with art.path.open("r+b") as handle:  # same inode, same size, mtime put back
        handle.write(b"X")
    os.utime(art.path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert store.get(KEY) == art  # the stat shortcut: documented trade-off
    [(key, problem)] = store.verify()
    assert key == KEY
    assert f"manifest {art.sha256}, file {_sha(b'X123456789')}" in problem


def test_a_touched_but_intact_file_is_hashed_once_and_restamped(tmp_path: Path) -> None:
    store = _store(tmp_path)
    art, _ = store.ensure(KEY, Maker(b"payload"), recipe_hash="r1")
    os.utime(art.path, ns=(1, 1_000_000_000))
    assert store.get(KEY) == art
    checked = json.loads(store.manifest_path.read_bytes())["artifacts"][0]["checked"]
    assert checked["mtime_ns"] == 1_000_000_000


def test_a_missing_file_is_reported_then_delisted(tmp_path: Path) -> None:
    store = _store(tmp_path)
    art, _ = store.ensure(KEY, Maker(), recipe_hash="r1")
    art.path.unlink()
    assert store.verify() == [(KEY, f"missing file {art.path}")]
    assert store.missing([KEY, KEY]) == [KEY, KEY]
    assert store.list() == []


def test_expected_checksum_mismatch_is_refused_and_nothing_is_listed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(BundleError, match="published checksum") as err:
        store.ensure(KEY, Maker(b"tampered"), expect_sha256=_sha(b"genuine"))
    assert _sha(b"tampered") in err.value.message
    assert isinstance(err.value, PlanError)
    assert err.value.exit_code == 4
    assert store.list() == []
    assert os.listdir(store.objects) == []
    assert os.listdir(store.root / "tmp") == []
    art, outcome = store.ensure(KEY, Maker(b"genuine"), expect_sha256=_sha(b"genuine").upper())
    assert (outcome, art.sha256) == ("built", _sha(b"genuine"))
    assert store.ensure(KEY, Maker(b"other"), expect_sha256=_sha(b"genuine"))[1] == "cached"


def test_a_failing_producer_leaves_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)

    def broken(path: Path) -> Source:
        path.write_bytes(b"half")
        raise RuntimeError("compiler crashed")

    with pytest.raises(RuntimeError, match="compiler crashed"):
        store.ensure(KEY, broken)
    with pytest.raises(BundleError, match="wrote no file"):
        store.ensure(KEY, lambda _path: Source("build", "nothing"))
    assert store.list() == []
    assert os.listdir(store.objects) == []
    assert os.listdir(store.root / "tmp") == []


def test_a_producer_may_run_a_real_subprocess(tmp_path: Path) -> None:
    def shell(path: Path) -> Source:
        subprocess.run(["sh", "-c", 'sleep 0.1; echo x > "$1"', "sh", str(path)], check=True, timeout=30)
        return Source("build", "shell")

    art, outcome = _store(tmp_path).ensure(KEY, shell)
    assert (outcome, art.path.read_bytes(), art.sha256) == ("built", b"x\n", _sha(b"x\n"))


def test_work_folders_of_dead_builds_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.ensure(ArtifactKey("first", "1"), Maker())
    dead = store.root / "tmp" / f"kubeadm.{_dead_pid()}.0abc"
    live = store.root / "tmp" / f"kubeadm.{os.getppid()}.0abc"
    for folder in (dead, live):
        folder.mkdir()
        (folder / "kubeadm").write_bytes(b"half")
    store.ensure(KEY, Maker())
    assert not dead.exists()
    assert live.exists()


def test_prune_keeps_the_newest_versions_per_name_and_platform(tmp_path: Path) -> None:
    store = _store(tmp_path)
    made: dict[ArtifactKey, Artifact] = {}
    for version in ("1.35.0", "1.37.0", "1.36.0"):  # creation order, not version order, decides
        for platform in ("linux/amd64", "linux/arm64"):
            key = ArtifactKey("kubelet", version, platform)
            made[key] = store.ensure(key, Maker(f"{version} {platform}".encode()))[0]
    shared = ArtifactKey("pause", "3.10")
    made[shared] = store.ensure(shared, Maker(b"1.35.0 linux/amd64"))[0]  # same bytes as an old kubelet
    with pytest.raises(BundleError, match="0 or more"):
        store.prune(-1)
    removed = store.prune(2)
    assert [a.key for a in removed] == [
        ArtifactKey("kubelet", "1.35.0", "linux/amd64"),
        ArtifactKey("kubelet", "1.35.0", "linux/arm64"),
    ]
    assert {a.key.version for a in store.list() if a.key.name == "kubelet"} == {"1.36.0", "1.37.0"}
    assert store.get(shared) == made[shared]  # its object is still named by pause
    assert not made[ArtifactKey("kubelet", "1.35.0", "linux/arm64")].path.exists()
    assert len(os.listdir(store.objects)) == 5
    assert store.verify() == []
    assert len(store.prune(0)) == 5
    assert os.listdir(store.objects) == []


def test_root_comes_from_labdeploy_cache_or_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABDEPLOY_CACHE", str(tmp_path / "cache"))
    store = BundleStore()
    assert store.root == tmp_path / "cache" / "bundle"
    store.ensure(KEY, Maker())
    assert (tmp_path / "cache" / "bundle" / "manifest.json").is_file()
    monkeypatch.delenv("LABDEPLOY_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert BundleStore().root == tmp_path / "home" / ".cache" / "labdeploy" / "bundle"
    assert BundleStore().list() == []
    assert not (tmp_path / "home").exists()  # reading an empty store creates nothing


def test_an_unwritable_root_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(BundleError, match="cannot create the bundle store") as err:
        BundleStore(tmp_path / "file" / "bundle").ensure(KEY, Maker())
    assert "LABDEPLOY_CACHE" in err.value.hint


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not JSON"),
        (b'{"format": 9, "artifacts": []}', "expected"),
        (b'{"format": 1, "artifacts": [{}]}', "entry 0"),
    ],
)
def test_an_unreadable_manifest_is_a_clear_error(tmp_path: Path, content: bytes, why: str) -> None:
    store = _store(tmp_path)
    store.root.mkdir()
    store.manifest_path.write_bytes(content)
    with pytest.raises(BundleError, match=why) as err:
        store.get(KEY)
    assert str(store.manifest_path) in err.value.message
    assert "move" in err.value.hint


def test_keys_print_parse_and_refuse_bad_parts() -> None:
    key = ArtifactKey("containerd-shim-runsc-v1", "v0.0.0-20250802011938-fc9c972fa636", "linux/arm64")
    assert str(key) == "containerd-shim-runsc-v1@v0.0.0-20250802011938-fc9c972fa636/linux/arm64"
    assert ArtifactKey.parse(str(key)) == key
    assert ArtifactKey.parse("runc@1.3.0") == ArtifactKey("runc", "1.3.0", "linux/amd64")
    for bad in ("runc", "@1.0", "runc@", "runc@1.0/amd64", "a b@1"):
        with pytest.raises(BundleError):
            ArtifactKey.parse(bad)


def test_an_expected_checksum_that_is_no_sha256_is_refused_before_building(tmp_path: Path) -> None:
    make = Maker()
    with pytest.raises(BundleError, match="not a sha256"):
        _store(tmp_path).ensure(KEY, make, expect_sha256="md5:abc")
    assert make.calls == []


def test_threads_share_the_key_lock_and_lose_no_manifest_entry(tmp_path: Path) -> None:
    store = _store(tmp_path)
    calls: list[str] = []
    gate = threading.Event()

    def slow(path: Path) -> Source:
        calls.append(path.name)
        gate.wait(10)
        path.write_bytes(b"same key")
        return Source("build", "r")

    keys = [ArtifactKey(f"t{i}", "1") for i in range(8)]
    with ThreadPoolExecutor(max_workers=10) as pool:
        same = [pool.submit(store.ensure, KEY, slow) for _ in range(2)]
        others = [pool.submit(store.ensure, key, Maker(key.name.encode())) for key in keys]
        assert [f.result(timeout=30)[1] for f in others] == ["built"] * 8  # not held up by KEY's build
        gate.set()
        outcomes = sorted(f.result(timeout=30)[1] for f in same)
    assert outcomes == ["built", "cached"]
    assert len(calls) == 1
    assert [a.key for a in store.list()] == sorted([KEY, *keys])


def test_get_answers_when_the_store_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path)
    art, _ = store.ensure(KEY, Maker(b"payload"))
    os.utime(art.path, ns=(1, 1_000_000_000))  # forces a hash, then a restamp that cannot be written

    def refuse(path: Path, *_: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(deploy.bundle.store, "atomic_write", refuse)
    assert store.get(KEY) == art
    assert json.loads(store.manifest_path.read_bytes())["artifacts"][0]["checked"]["mtime_ns"] != 1_000_000_000
