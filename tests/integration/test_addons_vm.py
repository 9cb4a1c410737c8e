"""A Helm add-on on the real kubeadm cluster: install, keep, upgrade with the versions in the plan, uninstall.

NOT RUN YET (written while the lead's VM runs held the CPU): marked ``vm`` and ``e2e``, so ``make test``
leaves it out and ``make e2e`` runs it. The test chart is the tests' own (a ConfigMap, no image to pull),
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
ENTRY = ("mirrors: {{charts: charts}}\naddons:\n  - {{name: web, chart: " + CHART + ", version: {version}, "
         "namespace: demo, timeout: 10m, values: {{message: {message}}}}}\n")


@pytest.fixture
def lab_text(cluster: Cluster, helm_binary: Path, tmp_path: Path) -> Iterator[str]:
    """The cluster's lab as it was (restored afterwards), with the test chart at 0.1.0 and 0.2.0 beside it."""
    original = cluster.file.read_text()
    for version in ("0.1.0", "0.2.0"):
        chart = write_test_chart(tmp_path / version, version, workload=False)
        package(helm_binary, chart, cluster.file.parent / "charts")
    try:
        yield original
    finally:
        cluster.file.write_text(original)


def _config(cluster: Cluster) -> dict[str, str] | None:
    api = client.CoreV1Api(kube.client_for(cluster.kubeconfig))
    try:
        return dict(api.read_namespaced_config_map("web-message", "demo").data)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _up(cluster: Cluster) -> str:
    done = cluster.deploy("up")
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return done.stdout


def test_a_helm_addon_installs_keeps_upgrades_and_uninstalls(cluster: Cluster, helm_binary: Path,
                                                             lab_text: str) -> None:
    cluster.file.write_text(lab_text + ENTRY.format(version="0.1.0", message="hi"))
    _up(cluster)
    assert _config(cluster) == {"message": "hi", "chart": "0.1.0"}
    kept = cluster.deploy("plan")
    assert "addon:web" not in kept.stdout, kept.stdout  # converged: the release is kept

    cluster.file.write_text(lab_text + ENTRY.format(version="0.2.0", message="hello"))
    planned = cluster.deploy("plan").stdout
    assert "~ addon:web" in planned
    assert "(upgrade 0.1.0 → 0.2.0)" in planned
    _up(cluster)
    assert _config(cluster) == {"message": "hello", "chart": "0.2.0"}
    history = Helm(helm_binary, cluster.state / "helm", cluster.kubeconfig).history("web", "demo")
    assert [line.split()[0] for line in history.splitlines()[1:]] == ["1", "2"], history

    cluster.file.write_text(lab_text)
    assert "helm uninstall web -n demo" in cluster.deploy("plan").stdout
    _up(cluster)
    assert _config(cluster) is None
