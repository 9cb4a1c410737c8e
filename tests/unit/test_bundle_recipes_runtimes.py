"""Runtime recipes without a compile: keys, argv as upstream's release builds, hashes, the tgz packer, check()."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from deploy.bundle import ArtifactKey
from deploy.bundle import recipes_runtimes as rt
from deploy.bundle.recipes import GO_MODULES, BuildError, GoBuild

OUT = Path("/out/x")


def _all() -> list[GoBuild]:
    found = [*rt.containerd("v2.4.2"), *rt.runc("v1.4.4"), *rt.cni_plugins("v1.10.0")]
    assert all(isinstance(r, GoBuild) for r in found)
    return [r for r in found if isinstance(r, GoBuild)]


def test_keys_are_the_upstream_names_and_tags() -> None:
    assert [r.key for r in _all()] == [
        ArtifactKey("containerd", "v2.4.2"),
        ArtifactKey("containerd-shim-runc-v2", "v2.4.2"),
        ArtifactKey("runc", "v1.4.4"),
        ArtifactKey("cni-plugins", "v1.10.0"),
    ]
    assert [r.version_args for r in _all()[:3]] == [("--version",), ("-v",), ("--version",)]


def test_containerd_builds_like_make_static() -> None:
    daemon, shim = rt.containerd("v2.4.2")
    assert isinstance(daemon, GoBuild)
    assert isinstance(shim, GoBuild)
    revision = rt.stand_in_commit(rt.CONTAINERD_MODULE, "v2.4.2")
    pkg = "github.com/containerd/containerd/v2"
    assert daemon.argv(OUT) == [
        "go", "build", "-trimpath",
        "-ldflags", f"-s -w -X {pkg}/version.Version=v2.4.2 -X {pkg}/version.Revision={revision}"
        f" -X {pkg}/version.Package={pkg}",
        "-tags", "urfave_cli_no_docs,osusergo,netgo,static_build,no_btrfs",
        "-o", str(OUT), f"{pkg}/cmd/containerd",
    ]  # fmt: skip
    assert shim.argv(OUT)[-1] == f"{pkg}/cmd/containerd-shim-runc-v2"
    assert "no_grpc" in shim.tags
    assert daemon.env()["CGO_ENABLED"] == shim.env()["CGO_ENABLED"] == "0"


def test_runc_builds_like_make_static_on_amd64() -> None:
    (recipe,) = rt.runc("v1.4.4")
    assert isinstance(recipe, GoBuild)
    commit = rt.stand_in_commit(rt.RUNC_MODULE, "v1.4.4")
    assert recipe.argv(OUT) == [
        "go", "build", "-trimpath", "-buildmode=pie",
        "-ldflags", f"-s -w -X main.gitCommit={commit} -linkmode external -extldflags -static-pie",
        "-tags", "seccomp,urfave_cli_no_docs,netgo,osusergo",
        "-o", str(OUT), "github.com/opencontainers/runc",
    ]  # fmt: skip
    assert recipe.env()["CGO_ENABLED"] == "1"


def test_cni_archive_builds_every_linux_plugin_into_one_folder() -> None:
    (recipe,) = rt.cni_plugins("v1.10.0")
    assert isinstance(recipe, rt.GoArchive)
    argv = recipe.argv(Path("/scratch/bin"))
    out = argv.index("-o")
    assert argv[out + 1] == "/scratch/bin/"  # a folder: go build writes one binary per main package
    plugins = {p.rpartition("/")[2] for p in argv[out + 2 :]}
    assert {"bridge", "host-local", "loopback", "portmap", "bandwidth", "firewall", "tuning"} <= plugins
    assert len(plugins) == len(rt.CNI_PLUGINS) == 18
    assert "-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=v1.10.0" in argv[4]
    assert recipe.env()["CGO_ENABLED"] == "0"


def test_every_module_pins_its_upstream_at_the_artifacts_version_and_names_its_tools() -> None:
    for recipe in _all():
        mod = (GO_MODULES / recipe.module / "go.mod").read_text()
        upstream = rt.CNI_MODULE if recipe.key.name == "cni-plugins" else recipe.package.split("/cmd/")[0]
        assert re.search(rf"^\s*{re.escape(upstream)} {re.escape(recipe.key.version)}\b", mod, re.M), recipe.key
        packages = recipe.packages if isinstance(recipe, rt.GoArchive) else (recipe.package,)
        for package in packages:
            assert re.search(rf"^\s*(tool )?{re.escape(package)}$", mod, re.M), package
        go_line = re.search(r"^go (\d+)\.(\d+)", mod, re.M)
        assert go_line is not None
        assert (int(go_line[1]), int(go_line[2])) <= (1, 26)  # no Go 1.27 toolchain needed
        assert f"{upstream} {recipe.key.version} h1:" in (GO_MODULES / recipe.module / "go.sum").read_text()


def _copy(recipe: GoBuild, tmp: Path) -> GoBuild:
    shutil.copytree(GO_MODULES / recipe.module, tmp / recipe.module)
    return replace(recipe, modules_root=tmp)


@pytest.mark.parametrize("index", range(4))
def test_recipe_hashes_are_stable_and_cover_go_sum(index: int, tmp_path: Path) -> None:
    recipe = _all()[index]
    copy = _copy(recipe, tmp_path)
    assert copy.recipe_hash() == recipe.recipe_hash() == _all()[index].recipe_hash()
    with (tmp_path / recipe.module / "go.sum").open("a") as handle:
        handle.write("example.com/x v1.0.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
    assert copy.recipe_hash() != recipe.recipe_hash()


def test_the_four_hashes_differ_and_an_unpinned_version_has_no_module() -> None:
    assert len({r.recipe_hash() for r in _all()}) == 4
    with pytest.raises(BuildError, match=re.escape("runc-v1.4.3/go.mod")):
        rt.runc("v1.4.3")[0].recipe_hash()


def test_runc_hash_covers_the_linked_libseccomp(monkeypatch: pytest.MonkeyPatch) -> None:
    (recipe,) = rt.runc("v1.4.4")
    before = recipe.recipe_hash()
    monkeypatch.setattr(rt, "_libseccomp_version", lambda: b"2.6.0")
    assert recipe.recipe_hash() != before
    assert ("libseccomp", b"2.6.0") in recipe.inputs()


def test_runc_without_libseccomp_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(rt, "_libseccomp_version", lambda: b"libseccomp-missing")
    with pytest.raises(BuildError) as caught:
        rt.runc("v1.4.4")[0].build(tmp_path / "runc")
    assert "libseccomp" in str(caught.value) + str(caught.value.hint)
    assert list(tmp_path.iterdir()) == []


def _folder(tmp: Path, name: str, mtime: int, mode: int) -> Path:
    folder = tmp / name
    folder.mkdir()
    for plugin, body in (("tuning", b"T" * 10), ("bridge", b"B" * 2000), ("loopback", b"")):
        path = folder / plugin
        path.write_bytes(body)
        path.chmod(mode)
        os.utime(path, (mtime, mtime))
    return folder


def test_pack_tgz_is_byte_identical_whatever_the_files_times_and_modes(tmp_path: Path) -> None:
    one, two = tmp_path / "one.tgz", tmp_path / "two.tgz"
    rt.pack_tgz(_folder(tmp_path, "a", 1_000_000, 0o700), one)
    rt.pack_tgz(_folder(tmp_path, "b", 2_000_000, 0o755), two)
    assert hashlib.sha256(one.read_bytes()).hexdigest() == hashlib.sha256(two.read_bytes()).hexdigest()
    assert gzip.decompress(one.read_bytes())[:2] == b"./"  # the root entry first, as upstream's archive
    with tarfile.open(one, "r:gz") as tar:
        members = tar.getmembers()
        assert tar.extractfile("./bridge").read() == b"B" * 2000  # type: ignore[union-attr]
    assert [m.name for m in members] == [".", "./bridge", "./loopback", "./tuning"]
    assert {(m.uid, m.gid, m.uname, m.mtime) for m in members} == {(0, 0, "root", 0)}
    assert {m.mode for m in members[1:]} == {0o755}


PLUGIN = """#!/bin/sh
if [ "$CNI_COMMAND" = VERSION ]; then echo '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}'
elif [ -z "$CNI_COMMAND" ]; then echo "CNI bridge plugin v9.9.9" >&2; echo "CNI protocol versions supported: 1.1.0" >&2
else echo "unexpected CNI_COMMAND=$CNI_COMMAND" >&2; exit 3; fi
"""


def _archive_with(tmp: Path, name: str, body: str) -> Path:
    folder = tmp / "plugins"
    folder.mkdir()
    (folder / name).write_text(body)
    out = tmp / "cni.tgz"
    rt.pack_tgz(folder, out)
    return out


def test_check_reports_about_and_version_json_of_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNI_COMMAND", "ADD")  # the caller's CNI_* variables never reach the plugin
    archive = _archive_with(tmp_path, "bridge", PLUGIN)
    output = rt.cni_plugins("v1.10.0")[0].check(archive)
    assert output.splitlines() == [
        "CNI bridge plugin v9.9.9",
        "CNI protocol versions supported: 1.1.0",
        '{"cniVersion":"1.1.0","supportedVersions":["1.0.0","1.1.0"]}',
    ]


def test_check_refuses_an_archive_without_the_probe(tmp_path: Path) -> None:
    archive = _archive_with(tmp_path, "loopback", PLUGIN)
    with pytest.raises(BuildError, match=re.escape("./bridge")):
        rt.cni_plugins("v1.10.0")[0].check(archive)


def test_check_reports_a_failing_plugin(tmp_path: Path) -> None:
    archive = _archive_with(tmp_path, "bridge", "#!/bin/sh\necho broken >&2\nexit 1\n")
    with pytest.raises(BuildError, match="exited 1: broken"):
        rt.cni_plugins("v1.10.0")[0].check(archive)


def test_check_refuses_a_file_that_is_not_an_archive(tmp_path: Path) -> None:
    bogus = tmp_path / "cni.tgz"
    bogus.write_bytes(b"not a tarball")
    with pytest.raises(BuildError, match="cannot extract"):
        rt.cni_plugins("v1.10.0")[0].check(bogus)
