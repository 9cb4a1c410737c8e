"""Real Wasm: crun built with WasmEdge in a trixie chroot, and a WASI module run in a container by it.

The chroot (mmdebstrap of trixie from Debian's mirror, ~2 min cold) is the real cache under
$LABDEPLOY_CACHE/wasm and is reused; the crun build (~1.5 min on two cores) lands in the machine's
real BundleStore, so it runs once per machine and each later run checks the cached binary. The
container runs inside the chroot, since the binary and libwasmedge0 link trixie's glibc; it runs as
root with crun's cgroups disabled.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from deploy.bundle import Artifact, BundleStore
from deploy.bundle import recipes_wasm as rw

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="a chroot and a container need root"),
    pytest.mark.skipif(shutil.which("mmdebstrap") is None and not rw.BuildRoot().ready,
                       reason="mmdebstrap is not installed (apt-get install mmdebstrap)"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is not installed"),
]


@pytest.fixture(scope="module")
def store() -> BundleStore:
    return BundleStore()


@pytest.fixture(scope="module")
def crun(store: BundleStore) -> Artifact:
    recipe = rw.crun_wasmedge()
    cold = not recipe.root.ready
    started = time.monotonic()
    recipe.root.ensure()
    chroot = time.monotonic() - started
    artifact, outcome = store.ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())
    build = time.monotonic() - started - chroot
    print(f"\ncrun-wasmedge: chroot {'made' if cold else 'reused'} in {chroot:.1f} s, "
          f"crun {outcome} in {build:.1f} s, {artifact.size} bytes")
    return artifact


@pytest.fixture(scope="module")
def hello(store: BundleStore) -> Artifact:
    recipe = rw.hello_wasm()
    return store.ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())[0]


def test_the_built_crun_reports_wasmedge(crun: Artifact) -> None:
    version = rw.crun_wasmedge().check(crun.path)
    assert version.splitlines()[0] == f"crun version {rw.CRUN_VERSION}"
    assert rw.WASM_FEATURE in version.split()
    assert "+YAJL" in version.split()  # embedded yajl: libyajl2 is not needed on the node


def test_the_binary_needs_only_libraries_of_a_trixie_base_system(crun: Artifact) -> None:
    root = rw.crun_wasmedge().root
    done = root.output('exec ldd "$1"', root.place(crun.path, "check/crun"))
    assert done.returncode == 0, done.stderr
    libraries = {line.split()[0] for line in done.stdout.splitlines() if ".so" in line}
    expected = {"libsystemd.so.0", "libseccomp.so.2", "libcap.so.2", "libc.so.6", "libm.so.6"}
    assert libraries - {"linux-vdso.so.1", "/lib64/ld-linux-x86-64.so.2"} == expected
    # WasmEdge is not linked but dlopened: the node's libwasmedge0 (NODE_PACKAGES) provides it
    assert b"libwasmedge.so.0" in crun.path.read_bytes()


def test_a_second_ensure_is_cached(store: BundleStore, crun: Artifact) -> None:
    recipe = rw.crun_wasmedge()
    started = time.monotonic()
    again, outcome = store.ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())
    assert (outcome, again.sha256) == ("cached", crun.sha256)
    assert time.monotonic() - started < 2.0
    assert store.verify() == []


def test_hello_wasm_is_a_webassembly_module(hello: Artifact) -> None:
    assert rw.hello_wasm().check(hello.path).startswith("valid wasm, ")  # wabt's wasm-validate
    assert hello.path.read_bytes()[:8] == b"\0asm\x01\0\0\0"
    assert hello.size < 512


def test_crun_runs_the_module_through_wasmedge(crun: Artifact, hello: Artifact, tmp_path: Path) -> None:
    module = tmp_path / "hello.wasm"
    shutil.copyfile(hello.path, module)
    done = rw.run_wasm(rw.crun_wasmedge().root, crun.path, module)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{rw.HELLO_LINE}\n"


def test_without_the_annotation_the_module_is_not_run(crun: Artifact, hello: Artifact, tmp_path: Path) -> None:
    module = tmp_path / "hello.wasm"
    shutil.copyfile(hello.path, module)
    done = rw.run_wasm(rw.crun_wasmedge().root, crun.path, module, annotations={}, name="labdeploy-plain")
    assert done.returncode != 0  # the kernel cannot exec a .wasm file: the annotation is what routes it
    assert rw.HELLO_LINE not in done.stdout
    assert "exec" in done.stderr.lower()
