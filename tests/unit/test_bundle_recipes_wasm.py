"""The Wasm recipes without building: what their hashes cover, the chroot cache, the source check."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from deploy.bundle import ArtifactKey
from deploy.bundle import recipes_wasm as rw
from deploy.bundle.recipes import BuildError


def test_the_crun_artifact_is_named_by_debians_source_version() -> None:
    recipe = rw.crun_wasmedge()
    assert recipe.key == ArtifactKey("crun-wasmedge", "1.21-1")
    assert recipe.ref().startswith("crun 1.21-1 (Debian source) --prefix=/usr --with-wasmedge")
    assert "libwasmedge-dev 0.14.1+dfsg-3.1" in recipe.ref()


def test_the_hash_is_stable_and_ignores_where_the_cache_lives(tmp_path: Path) -> None:
    here = rw.crun_wasmedge(rw.BuildRoot(cache=tmp_path))
    assert here.recipe_hash() == rw.crun_wasmedge().recipe_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", here.recipe_hash())


@pytest.mark.parametrize(
    "change",
    [
        {"configure": ("--prefix=/usr", "--with-wasmedge")},
        {"root": rw.BuildRoot(packages=(*rw.BUILD_PACKAGES, "libyajl-dev"))},
        {"root": rw.BuildRoot(suite="forky")},
        {"key": ArtifactKey("crun-wasmedge", "1.22-1")},
    ],
)
def test_what_decides_the_binary_changes_the_hash(change: dict[str, object]) -> None:
    recipe = rw.crun_wasmedge()
    assert replace(recipe, **change).recipe_hash() != recipe.recipe_hash()  # type: ignore[arg-type]


def test_the_hash_names_the_pinned_debian_versions() -> None:
    parts = dict(rw.crun_wasmedge().inputs())
    assert rw.CRUN_ORIG_SHA256.encode() in parts["crun source"]
    assert parts["libwasmedge-dev"] == b"0.14.1+dfsg-3.1"
    assert b"libwasmedge-dev=0.14.1+dfsg-3.1" in parts["packages"]


def test_the_chroot_directory_follows_its_package_set(tmp_path: Path) -> None:
    one = rw.BuildRoot(cache=tmp_path)
    other = rw.BuildRoot(cache=tmp_path, packages=("pkgconf",))
    assert one.path.parent == tmp_path
    assert one.path.name.startswith("trixie-buildd-")
    assert one.path != other.path


def test_a_complete_chroot_is_reused_without_mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    root = rw.BuildRoot(cache=tmp_path)
    root.path.mkdir(parents=True)
    (root.path / ".labdeploy-complete").write_text("trixie\n")
    assert root.ensure() == root.path


def test_a_missing_chroot_without_mmdebstrap_says_what_to_install(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    root = rw.BuildRoot(cache=tmp_path)
    root.path.mkdir(parents=True)  # a half-made chroot (no marker) is not used
    with pytest.raises(BuildError, match="mmdebstrap is not installed") as info:
        root.ensure()
    assert "apt-get install mmdebstrap" in (info.value.hint or "")


def test_commands_enter_the_chroot_in_their_own_mount_namespace(tmp_path: Path) -> None:
    root = rw.BuildRoot(cache=tmp_path)
    argv = root.argv("echo $1", "x")
    assert argv[:3] == ["unshare", "--mount", "--fork"]
    assert argv[argv.index(rw.ENTER) + 2:] == [str(root.path), "echo $1", "sh", "x"]
    assert 'exec chroot "$root"' in rw.ENTER


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server laid out as a Debian pool: (base URL, pool/main/c/crun directory)."""
    pool = tmp_path / "mirror" / "pool" / "main" / "c" / "crun"
    pool.mkdir(parents=True)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path / "mirror"), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pool
    finally:
        server.shutdown()
        server.server_close()


def test_a_source_with_another_checksum_is_refused_and_not_kept(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    url, pool = mirror
    (pool / rw.CRUN_ORIG).write_bytes(b"not crun")
    cache = tmp_path / "cache"
    with pytest.raises(BuildError, match=f"not the pinned {rw.CRUN_ORIG_SHA256}"):
        rw.fetch_crun_source(cache, url)
    assert list((cache / "sources").iterdir()) == []


def test_an_unreachable_source_is_a_build_error(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    url, _pool = mirror  # nothing in the pool: 404
    with pytest.raises(BuildError, match="cannot fetch crun's Debian source"):
        rw.fetch_crun_source(tmp_path / "cache", url)


def test_the_pinned_checksum_is_what_a_cached_source_must_match(tmp_path: Path, mirror: tuple[str, Path]) -> None:
    url, pool = mirror
    stale = tmp_path / "cache" / "sources" / rw.CRUN_ORIG
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"truncated")  # a cached file with the wrong sha256 is fetched again, not used
    (pool / rw.CRUN_ORIG).write_bytes(b"also not crun")
    with pytest.raises(BuildError, match=hashlib.sha256(b"also not crun").hexdigest()):
        rw.fetch_crun_source(tmp_path / "cache", url)


def test_the_module_source_prints_the_hello_line() -> None:
    text = rw.HELLO_WAT.read_text()
    assert f'"{rw.HELLO_LINE}\\n"' in text
    length = re.search(r"i32.store \(i32.const 4\) \(i32.const (\d+)\)", text)  # the iovec's length field
    assert length is not None
    assert int(length.group(1)) == len(rw.HELLO_LINE) + 1


def test_the_oci_config_carries_the_wasm_annotation() -> None:
    config = rw.oci_config(["/hello.wasm"], dict([rw.WASM_ANNOTATION]))
    assert config["annotations"] == {"module.wasm.image/variant": "compat"}
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert config["process"]["args"] == ["/hello.wasm"]  # type: ignore[index]


def test_the_containerd_handler_is_the_runc_shim_with_this_crun() -> None:
    runtime = rw.containerd_runtime("/opt/labdeploy/bin/crun-wasmedge")
    assert runtime == {"runtime_type": "io.containerd.runc.v2", "pod_annotations": ["module.wasm.image/variant"],
                       "options": {"BinaryName": "/opt/labdeploy/bin/crun-wasmedge", "SystemdCgroup": True}}


def test_a_crun_without_wasmedge_is_refused() -> None:
    bookworm = ("crun version 1.8.1\ncommit: f8a0\nrundir: /run/crun\nspec: 1.0.0\n"
                "+SYSTEMD +SELINUX +APPARMOR +CAP +SECCOMP +EBPF +CRIU +YAJL")
    with pytest.raises(BuildError, match="built without WasmEdge"):
        rw.require_wasm(bookworm)
    rw.require_wasm(bookworm.replace("+YAJL", "+WASM:wasmedge +YAJL"))
    with pytest.raises(BuildError):
        rw.require_wasm(bookworm.replace("+YAJL", "+WASM:wasmtime +YAJL"))  # another Wasm engine is not this path
