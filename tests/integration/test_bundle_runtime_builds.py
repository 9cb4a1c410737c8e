"""Real builds of the runtime stack from the Go module proxy: containerd, its runc shim, runc, CNI plugins.

The caches are the real ones ($LABDEPLOY_CACHE/go, default ~/.cache/labdeploy/go), so a rerun on the
same machine only links. Cold, containerd takes about four minutes on two cores and runc about two;
each artifact is built once per session (module-scoped fixtures). runc needs gcc and Debian's
libseccomp-dev (static libseccomp.a) and pkg-config.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from deploy.bundle import BundleStore
from deploy.bundle import recipes_runtimes as rt
from deploy.bundle.recipes import Recipe
from tests.integration.bundle_fixtures import build_one, has_interpreter

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed"),
]

CONTAINERD = "v2.4.2"
RUNC = "v1.4.4"
CNI = "v1.10.0"



def _by_name(recipes: list[Recipe]) -> dict[str, Recipe]:
    return {recipe.key.name: recipe for recipe in recipes}


@pytest.fixture(scope="module")
def containerd_bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    recipes = _by_name(rt.containerd(CONTAINERD))
    return {name: build_one(recipe, tmp_path_factory.mktemp(name))[0] for name, recipe in recipes.items()}


@pytest.fixture(scope="module")
def runc_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("pkg-config") is None or not Path("/usr/lib/x86_64-linux-gnu/libseccomp.a").is_file():
        pytest.skip("runc needs libseccomp-dev and pkg-config (apt-get install libseccomp-dev pkg-config)")
    return build_one(rt.runc(RUNC)[0], tmp_path_factory.mktemp("runc"))[0]


@pytest.fixture(scope="module")
def cni_tgz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_one(rt.cni_plugins(CNI)[0], tmp_path_factory.mktemp("cni"))[0]


def test_containerd_reports_the_upstream_version_and_is_static(containerd_bins: dict[str, Path]) -> None:
    recipe = _by_name(rt.containerd(CONTAINERD))["containerd"]
    revision = rt.stand_in_commit(rt.CONTAINERD_MODULE, CONTAINERD)
    assert recipe.check(containerd_bins["containerd"]) == f"containerd {rt.CONTAINERD_MODULE} {CONTAINERD} {revision}"
    assert not has_interpreter(containerd_bins["containerd"].read_bytes())


def test_the_runc_shim_reports_the_same_version_and_is_static(containerd_bins: dict[str, Path]) -> None:
    shim = containerd_bins["containerd-shim-runc-v2"]
    output = _by_name(rt.containerd(CONTAINERD))["containerd-shim-runc-v2"].check(shim)
    assert f"Version:  {CONTAINERD}" in output
    assert f"Revision: {rt.stand_in_commit(rt.CONTAINERD_MODULE, CONTAINERD)}" in output
    assert not has_interpreter(shim.read_bytes())


def test_runc_reports_its_version_spec_and_libseccomp(runc_bin: Path) -> None:
    output = rt.runc(RUNC)[0].check(runc_bin)
    lines = dict(line.split(": ", 1) for line in output.splitlines()[1:])
    assert output.splitlines()[0] == f"runc version {RUNC.lstrip('v')}"
    assert lines["commit"] == rt.stand_in_commit(rt.RUNC_MODULE, RUNC)
    assert lines["spec"].startswith("1.")
    assert lines["libseccomp"].startswith("2.")  # seccomp really compiled in, not the stub


def test_runc_is_static_pie_like_upstreams_release(runc_bin: Path) -> None:
    data = runc_bin.read_bytes()
    assert not has_interpreter(data)
    assert struct.unpack_from("<H", data, 0x10)[0] == 3  # ET_DYN: position-independent, no loader
    ldd = subprocess.run(["ldd", str(runc_bin)], capture_output=True, text=True, check=False)
    assert "libseccomp" not in ldd.stdout


def test_cni_archive_is_shaped_like_upstreams(cni_tgz: Path) -> None:
    with tarfile.open(cni_tgz, "r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]  # tarfile reads the "./" entry as "."
    assert names == [".", *sorted(f"./{p.rpartition('/')[2]}" for p in rt.CNI_PLUGINS)]
    for wanted in ("bridge", "host-local", "loopback", "portmap", "bandwidth", "firewall", "tuning"):
        assert f"./{wanted}" in names
    assert {(m.mode, m.uid, m.gid, m.mtime) for m in members} == {(0o755, 0, 0, 0)}
    assert cni_tgz.read_bytes()[4:8] == b"\0\0\0\0"  # gzip header mtime


def test_cni_check_reports_plugin_and_spec_versions(cni_tgz: Path) -> None:
    about, *_, versions = rt.cni_plugins(CNI)[0].check(cni_tgz).splitlines()
    assert about == f"CNI bridge plugin {CNI}"
    answer = json.loads(versions)  # CNI_COMMAND=VERSION: the spec versions, on the last line
    assert "1.0.0" in answer["supportedVersions"]
    assert answer["cniVersion"].startswith("1.")


@pytest.mark.parametrize("plugin", ["host-local", "loopback", "portmap", "bandwidth", "firewall", "tuning"])
def test_each_lab_plugin_is_static_and_stamped(cni_tgz: Path, plugin: str, tmp_path: Path) -> None:
    with tarfile.open(cni_tgz, "r:gz") as tar:
        extracted = tar.extractfile(f"./{plugin}")
        assert extracted is not None
        data = extracted.read()
    assert not has_interpreter(data)
    path = tmp_path / plugin
    path.write_bytes(data)
    path.chmod(0o755)
    about = subprocess.run([str(path)], capture_output=True, text=True, timeout=30, check=True).stderr
    assert f"plugin {CNI}" in about


def test_a_rebuild_through_the_store_is_byte_identical_and_checks(cni_tgz: Path, tmp_path: Path) -> None:
    recipe = rt.cni_plugins(CNI)[0]
    store = BundleStore(tmp_path / "bundle")  # a fresh store; the Go caches stay the real ones
    artifact, outcome = store.ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())  # a warm relink
    assert outcome == "built"
    assert artifact.sha256 == hashlib.sha256(cni_tgz.read_bytes()).hexdigest()
    assert artifact.source.recipe_hash == recipe.recipe_hash()
    assert recipe.check(artifact.path).startswith(f"CNI bridge plugin {CNI}")
    assert store.verify() == []
    assert list((tmp_path / "bundle" / "tmp").iterdir()) == []  # the scratch folder went with the build
