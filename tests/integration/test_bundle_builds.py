"""Real builds through the recipes: crictl and kubeadm from the Go module proxy, with the shared caches.

The caches are the real ones ($LABDEPLOY_CACHE/go, default ~/.cache/labdeploy/go), so a rerun on the
same machine only links. A cold first build of kubeadm takes minutes on two cores; each binary is
built once per session (module-scoped fixtures).
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from deploy.bundle import BundleStore, catalog
from tests.integration.bundle_fixtures import build_one, is_static

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed"),
]



@pytest.fixture(scope="module")
def crictl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_one(catalog.crictl(), tmp_path_factory.mktemp("crictl"))[0]


@pytest.fixture(scope="module")
def kubeadm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_one(catalog.kube("kubeadm", catalog.VERSIONS["1.36"]), tmp_path_factory.mktemp("kubeadm"))[0]



def test_crictl_reports_its_upstream_version(crictl: Path) -> None:
    assert catalog.crictl().check(crictl) == "crictl version v1.37.0"
    assert is_static(crictl)


def test_kubeadm_reports_the_pinned_version(kubeadm: Path) -> None:
    recipe = catalog.kube("kubeadm", catalog.VERSIONS["1.36"])
    assert recipe.check(kubeadm) == "v1.36.3"
    assert is_static(kubeadm)


def test_kubeadm_stamps_commit_and_tree_state(kubeadm: Path) -> None:
    recipe = catalog.kube("kubeadm", catalog.VERSIONS["1.36"])
    full = replace(recipe, version_args=("version", "-o", "json")).check(kubeadm)
    assert f'"gitCommit": "{catalog.git_commit("v1.36.3")}"' in full
    assert '"gitTreeState": "clean"' in full
    assert '"buildDate": "1970-01-01T00:00:00Z"' in full


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_one(catalog.etcd("v3.6.8"), tmp_path_factory.mktemp("etcd"))[0]


def test_etcd_reports_its_version_and_stamped_sha(etcd: Path) -> None:
    recipe = catalog.etcd("v3.6.8")
    output = recipe.check(etcd)
    assert "etcd Version: 3.6.8" in output
    assert f"Git SHA: {recipe.ldflags[0].rpartition('=')[2]}" in output
    assert is_static(etcd)


CLAIMED = [(minor, name) for minor, pins in catalog.VERSIONS.items() for name in pins.built]


@pytest.fixture(scope="module")
def store() -> BundleStore:
    """The machine's real store ($LABDEPLOY_CACHE/bundle): built once per machine, then a cached lookup."""
    return BundleStore()


@pytest.mark.parametrize(("minor", "name"), CLAIMED)
def test_every_binary_the_catalog_claims_builds_and_reports_its_version(
    minor: str, name: str, store: BundleStore
) -> None:
    pins = catalog.VERSIONS[minor]
    recipe = catalog.kube(name, pins)
    artifact, _ = store.ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())
    assert hashlib.sha256(artifact.path.read_bytes()).hexdigest() == artifact.sha256
    expected = {"kubeadm": pins.kubernetes, "kubectl": f"Client Version: {pins.kubernetes}"}
    first = recipe.check(artifact.path).splitlines()[0]
    assert first == expected.get(name, f"Kubernetes {pins.kubernetes}")  # kubelet and the control plane
    assert is_static(artifact.path)


@pytest.mark.parametrize("minor", sorted(catalog.VERSIONS))
def test_each_minor_has_an_etcd_of_kubeadms_line(minor: str, store: BundleStore) -> None:
    pins = catalog.VERSIONS[minor]
    recipe = catalog.etcd(pins.etcd)
    artifact, _ = store.ensure(recipe.key, recipe.produce, recipe_hash=recipe.recipe_hash())
    assert f"etcd Version: {pins.etcd.lstrip('v')}" in recipe.check(artifact.path)
    assert pins.etcd.lstrip("v").split(".")[:2] == pins.kubeadm_etcd.split(".")[:2]  # same minor as kubeadm's
