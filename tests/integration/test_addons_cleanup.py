"""A typed add-on the lab drops leaves nothing of what labdeploy applied around its releases, against
kmock's Kubernetes emulator over real HTTP on loopback (tests/integration/kmock_fixtures.py).

The cluster is seeded as the add-on step leaves it: the add-on's objects and labels server-side applied
by the same functions the step uses, and the step's record of them (``applied``) in its outputs. Then
the step's own teardown runs. Cilium, Istio and the GPU operator cannot be installed here (their charts
and images cannot be fetched), so the records hold no Helm release: the ``helm uninstall`` half of a
removal is the one tests/integration/test_addons_helm.py runs with the bundle's real helm.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploy.addons import applied, gpu, istio, step, typed
from deploy.cluster import kube
from deploy.errors import StageError
from tests.integration.kmock_fixtures import KubeServer
from tests.unit.labfiles import valid
from tests.unit.test_typed_addons import LAB as TYPED_LAB

pytestmark = pytest.mark.integration

LAB = TYPED_LAB + "  cni: {bridge: {}}\n"  # the typed add-on tests' cluster, with a CNI
MESH = "  mesh: {istio: {version: 1.24.0, mode: ambient, namespaces: [demo, shop]}}\n"
GPU = "  gpu_operator: {version: v24.9.0, nfd: false, time_slicing: {replicas: 2}}\n"
NODES = ("control-1", "workers-1", "workers-2")


@pytest.fixture
def server() -> Iterator[KubeServer]:
    srv = KubeServer()
    srv.declare_builtin()
    srv.call(lambda: srv.emulator.resources.__setitem__(  # istio-base's CRD
        "security.istio.io/v1/peerauthentications",
        srv.emulator.ResourceInfo(kind="PeerAuthentication", namespaced=True)))
    yield srv
    srv.close()


@pytest.fixture
def cluster(server: KubeServer) -> KubeServer:
    """The user's namespace demo (with a label of their own) and the lab's three nodes."""
    server.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo", "labels": {"team": "blue"}}},
                *({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}} for n in NODES))
    return server


def _installed(api: Any, addon: typed.TypedAddon, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
    """Apply the add-on's objects and labels as the step does (its releases aside); its ``applied`` record."""
    created = step.created_namespaces(api, addon, earlier or {})
    kube.apply(api, [*addon.before, *addon.after], stage="addons")
    kube.apply(api, step.node_label_patches(addon.node_labels), field_manager=step.LABEL_MANAGER, stage="addons")
    return applied.record(addon, created)


def _ctx(tmp_path: Path, kubeconfig: Path, lab: str, recorded: dict[str, Any], *,
         destroying: bool = False) -> SimpleNamespace:
    outputs = {"cluster:kubernetes": {"kubeconfig": str(kubeconfig)}, **recorded}
    events: list[dict[str, Any]] = []
    return SimpleNamespace(resolved=valid(tmp_path / "after", lab), lab_file=tmp_path / "after" / "lab.yaml",
                           state_dir=tmp_path / "state", destroying=destroying, outputs_of=lambda r: outputs.get(r, {}),
                           emit=events.append, events=events)


def _labels(server: KubeServer, kind: str, name: str) -> dict[str, str]:
    stored = server.stored(kind, name)
    assert stored is not None, f"{kind} {name} is gone"
    return dict(stored["metadata"].get("labels") or {})


def test_a_dropped_mesh_unlabels_the_users_namespaces_and_deletes_its_peer_authentication(
        cluster: KubeServer, tmp_path: Path) -> None:
    kubeconfig = cluster.kubeconfig(tmp_path)
    api = kube.client_for(kubeconfig)
    mesh = typed.typed_addons(valid(tmp_path / "before", LAB + MESH))["mesh"]
    recorded = {"addon:mesh": {"applied": _installed(api, mesh)}}
    assert _labels(cluster, "Namespace", "demo") == {"team": "blue", "istio.io/dataplane-mode": "ambient"}
    assert cluster.stored("PeerAuthentication", "default", istio.NAMESPACE) is not None

    ctx = _ctx(tmp_path, kubeconfig, LAB, recorded)
    step.teardown_addon(None, "mesh", ctx)
    assert _labels(cluster, "Namespace", "demo") == {"team": "blue"}  # still there, only the mesh's label went
    assert _labels(cluster, "Namespace", "shop") == {}  # labdeploy made it by labelling it: still the user's
    assert cluster.stored("PeerAuthentication", "default", istio.NAMESPACE) is None
    assert [e["message"] for e in ctx.events] == [
        "addons: mesh: deleted PeerAuthentication istio-system/default",
        "addons: mesh: removed istio.io/dataplane-mode from Namespace demo",
        "addons: mesh: removed istio.io/dataplane-mode from Namespace shop"]

    writes = len(cluster.requests("PATCH", "namespaces"))
    again = _ctx(tmp_path, kubeconfig, LAB, recorded)  # a second teardown (a retried run): already clean
    step.teardown_addon(None, "mesh", again)
    assert again.events == []
    assert len(cluster.requests("PATCH", "namespaces")) == writes  # nothing left to unlabel: no write
    assert _labels(cluster, "Namespace", "demo") == {"team": "blue"}


def test_a_dropped_gpu_operator_unlabels_the_nodes_and_deletes_its_config_map_and_namespace(
        cluster: KubeServer, tmp_path: Path) -> None:
    kubeconfig = cluster.kubeconfig(tmp_path)
    api = kube.client_for(kubeconfig)
    operator = typed.typed_addons(valid(tmp_path / "before", LAB + GPU))["gpu"]
    record = _installed(api, operator)
    assert record["created_namespaces"] == [gpu.NAMESPACE]
    assert _labels(cluster, "Node", "workers-2")[gpu.NFD_GPU_LABEL] == "true"

    step.teardown_addon(None, "gpu", _ctx(tmp_path, kubeconfig, LAB, {"addon:gpu": {"applied": record}}))
    for name in NODES:
        assert _labels(cluster, "Node", name) == {"kubernetes.io/hostname": name}  # no nvidia label left
    assert cluster.stored("ConfigMap", gpu.TIME_SLICING_CONFIG, gpu.NAMESPACE) is None
    assert cluster.stored("Namespace", gpu.NAMESPACE) is None  # labdeploy created it for the operator
    assert _labels(cluster, "Namespace", "demo") == {"team": "blue"}
    step.teardown_addon(None, "gpu", _ctx(tmp_path, kubeconfig, LAB, {"addon:gpu": {"applied": record}}))


def test_the_operators_namespace_stays_when_the_user_made_it_or_a_release_of_the_lab_lives_there(
        cluster: KubeServer, tmp_path: Path) -> None:
    kubeconfig = cluster.kubeconfig(tmp_path)
    api = kube.client_for(kubeconfig)
    cluster.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": gpu.NAMESPACE}})
    operator = typed.typed_addons(valid(tmp_path / "before", LAB + GPU))["gpu"]
    record = _installed(api, operator)
    assert record["created_namespaces"] == []  # there before labdeploy applied it: the user's
    step.teardown_addon(None, "gpu", _ctx(tmp_path, kubeconfig, LAB, {"addon:gpu": {"applied": record}}))
    assert cluster.stored("Namespace", gpu.NAMESPACE) is not None
    assert cluster.stored("ConfigMap", gpu.TIME_SLICING_CONFIG, gpu.NAMESPACE) is None

    made = {**record, "created_namespaces": [gpu.NAMESPACE]}
    exporter = LAB + ("addons: [{name: dcgm, chart: dcgm-exporter, version: 4.0.0, namespace: gpu-operator,"
                      " repo: 'https://nvidia.github.io/dcgm-exporter/helm-charts'}]\n")
    step.teardown_addon(None, "gpu", _ctx(tmp_path, kubeconfig, exporter, {"addon:gpu": {"applied": made}}))
    assert cluster.stored("Namespace", gpu.NAMESPACE) is not None  # the lab's dcgm release lives there


def test_what_an_update_no_longer_applies_is_removed_and_what_it_keeps_stays(
        cluster: KubeServer, tmp_path: Path) -> None:
    api = kube.client_for(cluster.kubeconfig(tmp_path))
    lab = LAB + MESH + GPU
    before = typed.typed_addons(valid(tmp_path / "a", lab))
    old = {name: _installed(api, before[name]) for name in ("mesh", "gpu")}
    fewer = lab.replace("[demo, shop]", "[demo]").replace(", time_slicing: {replicas: 2}", "").replace(
        "  workers-2: {gpus", "  workers-1: {gpus")  # shop leaves the mesh; the GPU moves to workers-1
    after = typed.typed_addons(valid(tmp_path / "b", fewer))
    new = {name: _installed(api, after[name], old[name]) for name in ("mesh", "gpu")}
    for name in ("mesh", "gpu"):
        applied.remove(api, applied.stale(old[name], new[name]), "addons")
    assert _labels(cluster, "Namespace", "shop") == {}
    assert _labels(cluster, "Namespace", "demo") == {"team": "blue", "istio.io/dataplane-mode": "ambient"}
    assert cluster.stored("PeerAuthentication", "default", istio.NAMESPACE) is not None
    assert cluster.stored("ConfigMap", gpu.TIME_SLICING_CONFIG, gpu.NAMESPACE) is None
    assert _labels(cluster, "Node", "workers-2") == {"kubernetes.io/hostname": "workers-2",
                                                     gpu.OPERANDS_LABEL: "false"}
    assert _labels(cluster, "Node", "workers-1")[gpu.NFD_GPU_LABEL] == "true"
    assert new["gpu"]["created_namespaces"] == [gpu.NAMESPACE]  # carried: it goes with the add-on
    assert cluster.stored("Namespace", gpu.NAMESPACE) is not None


def test_destroy_leaves_the_cluster_alone_and_a_missing_helm_changes_nothing(
        cluster: KubeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = cluster.kubeconfig(tmp_path)
    mesh = typed.typed_addons(valid(tmp_path / "before", LAB + MESH))["mesh"]
    record = _installed(kube.client_for(kubeconfig), mesh)
    step.teardown_addon(None, "mesh", _ctx(tmp_path, kubeconfig, LAB, {"addon:mesh": {"applied": record}},
                                           destroying=True))
    assert cluster.stored("PeerAuthentication", "default", istio.NAMESPACE) is not None  # goes with the cluster
    monkeypatch.setenv("LABDEPLOY_CACHE", str(tmp_path / "empty-cache"))  # a bundle store without helm
    releases = [{"release": r.name, "namespace": r.namespace} for r in mesh.releases]
    with pytest.raises(StageError, match=r"helm .* is not in the bundle store"):
        step.teardown_addon(None, "mesh", _ctx(tmp_path, kubeconfig, LAB,
                                               {"addon:mesh": {"releases": releases, "applied": record}}))
    assert _labels(cluster, "Namespace", "demo")["istio.io/dataplane-mode"] == "ambient"  # untouched: retried whole
    assert cluster.stored("PeerAuthentication", "default", istio.NAMESPACE) is not None
