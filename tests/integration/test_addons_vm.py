"""Helm add-ons on the real kubeadm cluster: two releases installed, a converged re-run that changes nothing,
one upgraded (the plan naming both versions) while the other is kept, the other uninstalled when the lab drops
it, and a release whose pods never become Ready failing with those pods and their events.

Marked ``vm`` and ``e2e``: ``make test`` leaves it out and ``make e2e`` runs it. The test charts are the tests'
own (a ConfigMap, no image to pull; the never-ready one adds a Deployment of an image no registry has),
packaged by the bundle's helm into a mirrors.charts folder beside the lab. Set LABDEPLOY_CLUSTER_STATE to
run it against a cluster that is up, as for tests/integration/test_cluster_vm.py (whose fixture this is).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from deploy.addons.helm import Helm
from deploy.cluster import kube
from tests.integration.helm_fixtures import CHART, package, write_test_chart
from tests.integration.test_cluster_vm import Cluster, cluster, libvirtd

__all__ = ["cluster", "libvirtd"]
pytestmark = [pytest.mark.vm, pytest.mark.e2e, pytest.mark.timeout(7200)]
MIRROR = "mirrors: {charts: charts}\naddons:\n"
ENTRY = ("  - {{name: {name}, chart: " + CHART + ", version: {version}, namespace: {name}-ns, timeout: 10m, "
         "values: {{message: {message}}}}}\n")
STUCK = "labdeploy-test-stuck"  # the test chart with its Deployment: its image is on no registry


def _entries(**releases: tuple[str, str]) -> str:
    return MIRROR + "".join(ENTRY.format(name=n, version=v, message=m) for n, (v, m) in releases.items())


@pytest.fixture
def lab_text(cluster: Cluster, helm_binary: Path, tmp_path: Path) -> Iterator[str]:
    """The cluster's lab as it was (restored afterwards), with the test chart at 0.1.0 and 0.2.0 beside it."""
    original = cluster.file.read_text()
    for version in ("0.1.0", "0.2.0"):
        chart = write_test_chart(tmp_path / version, version, workload=False)
        package(helm_binary, chart, cluster.file.parent / "charts")
    package(helm_binary, write_test_chart(tmp_path / "stuck", "0.1.0", STUCK), cluster.file.parent / "charts")
    try:
        yield original
    finally:
        cluster.file.write_text(original)


def _config(cluster: Cluster, release: str) -> dict[str, str] | None:
    api = client.CoreV1Api(kube.client_for(cluster.kubeconfig))
    try:
        return dict(api.read_namespaced_config_map(f"{release}-message", f"{release}-ns").data)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _up(cluster: Cluster, *, verify: bool = False) -> str:
    """deploy up; verify (8 min of checks under TCG) only where the test is about it: the first install."""
    done = cluster.deploy("up", *(() if verify else ("--no-verify",)))
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return done.stdout


def test_helm_addons_install_keep_upgrade_one_and_uninstall_the_other(cluster: Cluster, helm_binary: Path,
                                                                      lab_text: str) -> None:
    cluster.file.write_text(lab_text + _entries(web=("0.1.0", "hi"), api=("0.1.0", "there")))
    _up(cluster, verify=True)
    assert _config(cluster, "web") == {"message": "hi", "chart": "0.1.0"}
    assert _config(cluster, "api") == {"message": "there", "chart": "0.1.0"}
    again = cluster.deploy("up", "--no-verify")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout  # converged: helm is not even called

    cluster.file.write_text(lab_text + _entries(web=("0.2.0", "hello"), api=("0.1.0", "there")))
    planned = cluster.deploy("plan").stdout
    assert "~ addon:web" in planned
    assert "(upgrade 0.1.0 → 0.2.0)" in planned
    assert "addon:api" not in planned  # kept
    _up(cluster)
    assert _config(cluster, "web") == {"message": "hello", "chart": "0.2.0"}
    history = Helm(helm_binary, cluster.state / "helm", cluster.kubeconfig).history("web", "web-ns")
    assert [line.split()[0] for line in history.splitlines()[1:]] == ["1", "2"], history
    api_history = Helm(helm_binary, cluster.state / "helm", cluster.kubeconfig).history("api", "api-ns")
    assert len(api_history.splitlines()) == 2, api_history  # one revision: the upgrade of web left it alone

    cluster.file.write_text(lab_text + _entries(web=("0.2.0", "hello")))
    assert "helm uninstall api -n api-ns" in cluster.deploy("plan").stdout
    _up(cluster)
    assert _config(cluster, "api") is None
    assert _config(cluster, "web") == {"message": "hello", "chart": "0.2.0"}
    cluster.file.write_text(lab_text)
    _up(cluster)
    assert _config(cluster, "web") is None


def test_a_release_whose_pods_never_become_ready_names_them_and_their_events(cluster: Cluster,
                                                                              lab_text: str) -> None:
    entry = f"  - {{name: stuck, chart: {STUCK}, version: 0.1.0, namespace: stuck-ns, timeout: 90s}}\n"
    cluster.file.write_text(lab_text + MIRROR + entry)
    try:
        done = cluster.deploy("up", "--no-verify")
        said = done.stdout + done.stderr
        assert done.returncode != 0, said
        assert "installing add-on stuck: helm upgrade exited 1" in said
        assert "not ready in namespace stuck-ns after 90 s: stuck-" in said  # the Deployment's pod, by name
        assert "registry.invalid/web:1.0" in said  # its events: the image that cannot be pulled
        assert "helm history stuck -n stuck-ns" in said
    finally:
        cluster.file.write_text(lab_text)
        _up(cluster)  # the failed release is uninstalled through the lab
