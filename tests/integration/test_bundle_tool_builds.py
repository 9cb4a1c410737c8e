"""Real builds of gVisor (runsc, the containerd shim), CoreDNS, Helm and kube-network-policies from the Go module proxy.

The caches are the real ones ($LABDEPLOY_CACHE/go, default ~/.cache/labdeploy/go), so a rerun on the
same machine only links (2-5 s each). Measured cold, on two cores shared with other builds and with the
dependencies shared with Kubernetes already cached: runsc 261 s (83 MB), the shim 59 s after it (30 MB),
Helm 341 s (62 MB), CoreDNS v1.14.6 416 s (75 MB), then v1.13.1 268 s, v1.14.2 153 s, v1.14.3 94 s.
Each binary is built once per session (module-scoped fixtures).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from deploy.bundle import recipes_tools as tools
from deploy.bundle.recipes import GoBuild
from tests.integration.bundle_fixtures import build_one, is_static

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed"),
]





@pytest.fixture(scope="module")
def gvisor(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[GoBuild, Path]]:
    built = {}
    for recipe in tools.gvisor():
        built[recipe.key.name] = (recipe, build_one(recipe, tmp_path_factory.mktemp(recipe.key.name))[0])
    return built


def test_runsc_reports_the_pinned_go_branch_version(gvisor: dict[str, tuple[GoBuild, Path]]) -> None:
    recipe, runsc = gvisor["runsc"]
    assert recipe.check(runsc).splitlines()[0] == f"runsc version {tools.GVISOR_VERSION}"
    assert is_static(runsc)


def test_runsc_shim_reports_gvisors_version_and_commit(gvisor: dict[str, tuple[GoBuild, Path]]) -> None:
    recipe, shim = gvisor["containerd-shim-runsc-v1"]
    lines = [line.split(":", 1) for line in recipe.check(shim).splitlines()]
    fields = {name.strip(): value.strip() for name, value in lines if value.strip()}
    assert lines[0][0] == "containerd-shim-runsc-v1"
    assert fields["Version"] == tools.GVISOR_VERSION
    assert fields["Revision"] == tools.GVISOR_COMMIT
    assert is_static(shim)


@pytest.fixture(scope="module", params=tools.COREDNS_VERSIONS)
def coredns(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[GoBuild, Path]:
    recipe = tools.coredns(request.param)
    return recipe, build_one(recipe, tmp_path_factory.mktemp(f"coredns-{request.param}"))[0]


def test_coredns_reports_its_release_and_stamped_commit(coredns: tuple[GoBuild, Path]) -> None:
    recipe, binary = coredns
    first, second = recipe.check(binary).splitlines()[:2]
    assert first == f"CoreDNS-{recipe.key.version.lstrip('v')}"
    assert second.startswith("linux/amd64, go1.")
    assert second.endswith(f", {tools.coredns_commit(recipe.key.version)}")
    assert is_static(binary)


def test_coredns_has_the_default_plugins_with_kubernetes(coredns: tuple[GoBuild, Path]) -> None:
    recipe, binary = coredns
    plugins = _with_args(recipe, ("-plugins",)).check(binary).split()
    assert {"kubernetes", "forward", "cache", "health", "ready", "prometheus", "loop", "reload"} <= set(plugins)


def _with_args(recipe: GoBuild, args: tuple[str, ...]) -> GoBuild:
    return replace(recipe, version_args=args)


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> tuple[GoBuild, Path]:
    recipe = tools.helm()
    return recipe, build_one(recipe, tmp_path_factory.mktemp("helm"))[0]


def test_helm_reports_the_pinned_release(helm: tuple[GoBuild, Path]) -> None:
    recipe, binary = helm
    assert recipe.check(binary) == "v3.22.0"
    full = _with_args(recipe, ("version",)).check(binary)
    assert 'Version:"v3.22.0"' in full
    assert 'GitTreeState:"clean"' in full
    assert is_static(binary)


def test_helm_assumes_the_kubernetes_minor_of_its_client_go(helm: tuple[GoBuild, Path], tmp_path: Path) -> None:
    recipe, binary = helm
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n"
        "data: {kube: {{ .Capabilities.KubeVersion.Minor | quote }}}\n"
    )
    out = _with_args(recipe, ("template", str(chart))).check(binary)
    assert f'kube: "{tools.HELM_KUBE_MINOR[recipe.key.version]}"' in out


def test_kube_network_policies_builds_static_with_its_flags(tmp_path: Path) -> None:
    recipe = tools.network_policies()
    binary = build_one(recipe, tmp_path)[0]
    usage = recipe.check(binary)  # -h: the flag package's usage, exit 0
    for flag in ("-nfqueue-id", "-hostname-override", "-disable-nri", "-metrics-bind-address"):
        assert flag in usage  # the flags the DaemonSet passes (deploy/cluster/netpol.py)
    assert is_static(binary)
