"""The gVisor, CoreDNS and Helm recipes: what they build, how they stamp it, what their hashes cover.

No compile here (tests/integration/test_bundle_tool_builds.py builds them); these read the committed
go/ modules and the recipes' argv.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from deploy.bundle import ArtifactKey
from deploy.bundle import recipes_tools as tools
from deploy.bundle.recipes import GoBuild


def _requires(recipe: GoBuild) -> dict[str, str]:
    """module -> version of every requirement line in the recipe's go.mod."""
    found: dict[str, str] = {}
    for line in (recipe.module_dir / "go.mod").read_text().splitlines():
        words = line.replace("require ", "").split()
        if len(words) >= 2 and words[1].startswith("v") and "." in words[0]:
            found[words[0]] = words[1]
    return found


def _tools(recipe: GoBuild) -> list[str]:
    text = (recipe.module_dir / "go.mod").read_text()
    block = text.partition("\ntool")[2]
    return [word for word in block.replace("(", " ").replace(")", " ").split() if "/" in word][:8]


def _all() -> list[GoBuild]:
    return [*tools.gvisor(), *(tools.coredns(v) for v in tools.COREDNS_VERSIONS), tools.helm()]


@pytest.mark.parametrize("recipe", _all(), ids=lambda r: f"{r.key.name}-{r.key.version}")
def test_each_module_is_committed_and_pins_upstream_exactly(recipe: GoBuild) -> None:
    assert tools.buildable(recipe)
    assert [p.name for p in recipe.module_files()] == ["go.mod", "go.sum"]  # no Go of our own
    upstream = {"runsc": "gvisor.dev/gvisor", "containerd-shim-runsc-v1": "gvisor.dev/gvisor",
                "coredns": "github.com/coredns/coredns", "helm": "helm.sh/helm/v3"}[recipe.key.name]
    assert _requires(recipe)[upstream] == recipe.key.version
    assert recipe.package in _tools(recipe)  # the tool line keeps the requirement through `go mod tidy`
    sums = (recipe.module_dir / "go.sum").read_text()
    assert f"{upstream} {recipe.key.version} h1:" in sums
    assert not any("=>" in line for line in (recipe.module_dir / "go.mod").read_text().splitlines())


@pytest.mark.parametrize("recipe", _all(), ids=lambda r: f"{r.key.name}-{r.key.version}")
def test_each_builds_static_for_linux_amd64_with_the_local_go(recipe: GoBuild) -> None:
    assert recipe.env() == {"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64", "GOTOOLCHAIN": "local"}
    argv = recipe.argv(Path("/o/x"))
    assert argv[:4] == ["go", "build", "-trimpath", "-ldflags"]
    assert argv[4] == " ".join(("-s", "-w", *recipe.ldflags))
    assert argv[-3:] == ["-o", "/o/x", recipe.package]
    assert "-tags" not in argv


def test_gvisor_pins_one_go_branch_pseudo_version_for_both_binaries() -> None:
    runsc, shim = tools.gvisor()
    assert (runsc.key, shim.key) == (
        ArtifactKey("runsc", tools.GVISOR_VERSION),
        ArtifactKey("containerd-shim-runsc-v1", tools.GVISOR_VERSION),
    )
    assert (runsc.key.name, shim.key.name) == tools.GVISOR_BINARIES
    assert runsc.module == shim.module == f"gvisor-{tools.GVISOR_VERSION}"
    assert (runsc.package, shim.package) == ("gvisor.dev/gvisor/runsc", "gvisor.dev/gvisor/shim")
    assert runsc.ldflags == (f"-X gvisor.dev/gvisor/runsc/version.version={tools.GVISOR_VERSION}",)
    assert shim.ldflags[1] == "-X github.com/containerd/containerd/v2/version.Revision=160fafc42237"
    assert (runsc.version_args, shim.version_args) == (("--version",), ("-v",))
    assert runsc.recipe_hash() != shim.recipe_hash()


# upstream's own go line for each module: ours repeats it, so the binaries get upstream's GODEBUG defaults
UPSTREAM_GO = {"gvisor": "1.26.3", "helm": "1.26.0", "coredns-v1.13.1": "1.24.0", "coredns-v1.14": "1.25.0"}


@pytest.mark.parametrize("recipe", _all(), ids=lambda r: f"{r.key.name}-{r.key.version}")
def test_each_module_asks_for_the_go_version_upstream_declares(recipe: GoBuild) -> None:
    text = (recipe.module_dir / "go.mod").read_text()
    wanted = next(go for prefix, go in UPSTREAM_GO.items() if recipe.module.startswith(prefix))
    assert f"\ngo {wanted}\n" in text
    assert "toolchain" not in text


@pytest.mark.parametrize("version", tools.COREDNS_VERSIONS)
def test_coredns_recipe_stamps_the_commit_its_makefile_would(version: str) -> None:
    recipe = tools.coredns(version)
    assert recipe.key == ArtifactKey("coredns", version)
    assert (recipe.module, recipe.package) == (f"coredns-{version}", "github.com/coredns/coredns")
    commit = tools.coredns_commit(version)
    assert len(commit) == 7
    assert int(commit, 16) >= 0
    assert recipe.ldflags == (f"-X github.com/coredns/coredns/coremain.GitCommit={commit}",)
    assert recipe.version_args == ("-version",)


def test_coredns_commits_are_the_releases_where_known_and_distinct() -> None:
    assert tools.coredns_commit("v1.13.1") == "1db4568"
    assert tools.coredns_commit("v1.14.2") == "dd1df4f"
    assert len({tools.coredns_commit(v) for v in tools.COREDNS_VERSIONS}) == len(tools.COREDNS_VERSIONS)
    assert tools.coredns_commit("v1.14.6") == tools.coredns_commit("v1.14.6")


def test_coredns_covers_what_kubeadm_expects_for_each_minor() -> None:
    assert {"v1.13.1", "v1.14.2", "v1.14.6"} <= set(tools.COREDNS_VERSIONS)  # kubeadm 1.35, 1.36, 1.37


def test_helm_stamps_version_and_the_kubernetes_minor_of_its_client_go() -> None:
    recipe = tools.helm()
    assert recipe.key == ArtifactKey("helm", "v3.22.0")
    assert recipe.package == "helm.sh/helm/v3/cmd/helm"
    assert recipe.ldflags[:2] == (
        "-X helm.sh/helm/v3/internal/version.version=v3.22.0",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
    )
    client_go = _requires(recipe)["k8s.io/client-go"]  # v0.37.0, as Helm's Makefile reads it
    minor = client_go.split(".")[1]
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        assert f"-X {pkg}.k8sVersionMajor=1" in recipe.ldflags
        assert f"-X {pkg}.k8sVersionMinor={minor}" in recipe.ldflags
    assert recipe.version_args == ("version", "--short")
    with pytest.raises(KeyError):
        tools.helm("v3.99.0")  # an unpinned Helm has no module and no stamps


def test_hashes_are_stable_distinct_and_follow_go_sum(tmp_path: Path) -> None:
    hashes = [recipe.recipe_hash() for recipe in _all()]
    assert hashes == [recipe.recipe_hash() for recipe in _all()]
    assert len(set(hashes)) == len(hashes)
    recipe = tools.coredns("v1.14.6")
    root = tmp_path / "go"
    shutil.copytree(recipe.module_dir, root / recipe.module)
    copy = replace(recipe, modules_root=root)
    assert copy.recipe_hash() == recipe.recipe_hash()
    with (root / recipe.module / "go.sum").open("a") as handle:
        handle.write("example.com/x v1.0.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
    assert copy.recipe_hash() != recipe.recipe_hash()
    assert replace(recipe, ldflags=("-X github.com/coredns/coredns/coremain.GitCommit=0000000",)).recipe_hash() != (
        recipe.recipe_hash()
    )


def test_buildable_is_false_without_a_committed_module(tmp_path: Path) -> None:
    assert not tools.buildable(replace(tools.coredns("v1.14.6"), modules_root=tmp_path))
    assert not tools.buildable(tools.coredns("v1.99.0"))
