"""deploy.cluster.kube against kmock's Kubernetes emulator over real HTTP on loopback.

These tests stand in for nothing real: the emulator runs no controllers, and its server-side
apply, discovery and eviction are the small stand-ins described in kmock_fixtures.py. What they
prove is the helpers' side -- the requests they make (paths, plurals, scope, apply's content type,
fieldManager and force), how they read what the API server answers, and the messages they give
when a wait runs out. The lead runs the same helpers against a real kubeadm cluster in lab VMs;
that run, not this one, shows they work with a real API server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from deploy.cluster import kube, runtimeclasses
from deploy.errors import StageError
from tests.integration.kmock_fixtures import KubeServer

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[KubeServer]:
    srv = KubeServer()
    srv.declare_builtin()
    yield srv
    srv.close()


@pytest.fixture
def api(server: KubeServer, tmp_path: Path) -> client.ApiClient:
    return kube.client_for(server.kubeconfig(tmp_path))


def node(name: str, ready: str = "True", *, reason: str = "KubeletReady", message: str = "kubelet posts ready",
         cidr: str | None = None, ip: str = "10.20.0.11") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]} if cidr else {},
        "status": {
            "conditions": [{"type": "Ready", "status": ready, "reason": reason, "message": message}],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": _node_info(),
        },
    }


def _node_info() -> dict[str, str]:
    keys = ("architecture", "bootID", "containerRuntimeVersion", "kernelVersion", "kubeProxyVersion",
            "kubeletVersion", "machineID", "operatingSystem", "osImage", "systemUUID")
    return dict.fromkeys(keys, "x") | {"kubeletVersion": "v1.36.0"}


def pod(name: str, ns: str = "demo", *, node_name: str = "worker-1", labels: dict[str, str] | None = None,
        ready: bool = True, owner: str = "ReplicaSet", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{name}", "labels": labels or {},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner, "name": "owner",
                                                 "uid": "u1", "controller": True}]}
    meta.update(extra.pop("metadata", {}))
    status: dict[str, Any] = {"phase": "Running" if ready else "Pending",
                              "conditions": [{"type": "Ready", "status": str(ready)}]}
    status.update(extra.pop("status", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node_name, "containers": [{"name": "web", "image": "web:1"}]}, "status": status}


def event(name: str, pod_name: str, reason: str, message: str, at: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "demo"},
            "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": "demo"},
            "reason": reason, "message": message, "lastTimestamp": at, "type": "Warning"}


# --- apply --------------------------------------------------------------------------------


def lab_objects(greeting: str = "hello") -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "demo"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "demo"},
         "data": {"greeting": greeting}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "reader"},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
        *runtimeclasses.manifests(["runc", "gvisor", "kata"]),
    ]


def test_apply_creates_then_a_second_apply_changes_nothing(server: KubeServer, api: client.ApiClient) -> None:
    first = kube.apply(api, lab_objects())
    assert first == ["ServiceAccount/demo/app", "ConfigMap/demo/settings", "ClusterRole/reader",
                     "RuntimeClass/runc", "RuntimeClass/gvisor", "RuntimeClass/kata"]
    gvisor = server.stored("RuntimeClass", "gvisor")
    assert gvisor is not None
    assert gvisor["handler"] == "runsc"
    assert gvisor["scheduling"]["nodeSelector"] == {"runtime.labdeploy.io/gvisor": "true"}
    assert server.stored("ConfigMap", "settings", "demo")["data"] == {"greeting": "hello"}  # type: ignore[index]

    assert kube.apply(api, lab_objects()) == []
    assert kube.apply(api, lab_objects("bonjour")) == ["ConfigMap/demo/settings"]
    assert server.stored("ConfigMap", "settings", "demo")["data"] == {"greeting": "bonjour"}  # type: ignore[index]


def test_apply_sends_server_side_apply_at_the_discovered_paths(server: KubeServer, api: client.ApiClient) -> None:
    kube.apply(api, lab_objects(), field_manager="labdeploy-test")
    patches = [r for r in server.call(lambda: list(server.emulator)) if r.method == "PATCH"]
    assert [r.url.path for r in patches] == [
        "/api/v1/namespaces/demo/serviceaccounts/app",
        "/api/v1/namespaces/demo/configmaps/settings",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/reader",
        "/apis/node.k8s.io/v1/runtimeclasses/runc",
        "/apis/node.k8s.io/v1/runtimeclasses/gvisor",
        "/apis/node.k8s.io/v1/runtimeclasses/kata",
    ]
    for r in patches:
        assert r.headers["Content-Type"] == "application/apply-patch+yaml"
        assert r.params == {"fieldManager": "labdeploy-test", "force": "true"}
    assert patches[-1].data["overhead"] == {"podFixed": {"memory": "160Mi", "cpu": "250m"}}


def test_paths_of_cluster_scoped_and_defaulted_namespaced_objects() -> None:
    assert kube.Resource("v1", "Namespace", "namespaces", False).path("demo") == "/api/v1/namespaces/demo"
    assert kube.Resource("v1", "Pod", "pods", True).path("p") == "/api/v1/namespaces/default/pods/p"
    assert kube.Resource("apps/v1", "Deployment", "deployments", True).path(None, "x") == (
        "/apis/apps/v1/namespaces/x/deployments")


def test_apply_of_an_unserved_kind_names_it(api: client.ApiClient) -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(StageError, match=r"^cluster: the API server serves no kind Widget in example.com/v1"):
        kube.apply(api, [widget])


def test_namespace_objects_are_applied_read_unlabelled_and_deleted_by_name(server: KubeServer,
                                                                          api: client.ApiClient) -> None:
    server.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo", "labels": {"team": "x"}}})
    enrol = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo", "labels": {"istio-injection": "on"}}}
    assert kube.apply(api, [enrol]) == ["Namespace/demo"]
    assert server.stored("Namespace", "demo")["metadata"]["labels"] == {"team": "x", "istio-injection": "on"}  # type: ignore[index]
    assert kube.exists(api, "v1", "Namespace", "demo")
    assert not kube.exists(api, "v1", "Namespace", "elsewhere")
    assert kube.remove_labels(api, "v1", "Namespace", "demo", ["istio-injection", "never-set"]) == ["istio-injection"]
    assert server.stored("Namespace", "demo")["metadata"]["labels"] == {"team": "x"}  # type: ignore[index]
    assert kube.remove_labels(api, "v1", "Namespace", "demo", ["istio-injection"]) == []  # already clean: no write
    assert kube.remove_labels(api, "v1", "Namespace", "elsewhere", ["istio-injection"]) == []  # gone: nothing to do
    patches = [r for r in server.requests("PATCH", "namespaces") if r.headers["Content-Type"] != kube.APPLY]
    unset = {"metadata": {"labels": {"istio-injection": None}}}
    assert [(r.url.path, r.headers["Content-Type"], r.data) for r in patches] == [
        ("/api/v1/namespaces/demo", "application/merge-patch+json", unset)]
    assert kube.delete_object(api, "v1", "Namespace", "demo")
    assert server.stored("Namespace", "demo") is None
    assert not kube.delete_object(api, "v1", "Namespace", "demo")


def test_deleting_an_object_of_a_kind_no_longer_served_finds_it_gone(api: client.ApiClient) -> None:
    # a CRD uninstalled with its chart takes its objects along: there is nothing left to delete
    assert not kube.delete_object(api, "security.istio.io/v1", "PeerAuthentication", "default", "istio-system")
    assert not kube.exists(api, "security.istio.io/v1", "PeerAuthentication", "default", "istio-system")


def test_delete_and_list_managed_objects(server: KubeServer, api: client.ApiClient) -> None:
    kube.apply(api, runtimeclasses.manifests(["runc", "gvisor"]))
    names = kube.list_names(api, "node.k8s.io/v1", "RuntimeClass")
    assert names == ["gvisor", "runc"]
    for name in runtimeclasses.stale(names, ["runc"]):
        assert kube.delete_object(api, "node.k8s.io/v1", "RuntimeClass", name)
    assert server.stored("RuntimeClass", "gvisor") is None
    assert not kube.delete_object(api, "node.k8s.io/v1", "RuntimeClass", "gvisor")


# --- nodes --------------------------------------------------------------------------------


def test_wait_nodes_ready_returns_summaries(server: KubeServer, api: client.ApiClient) -> None:
    server.seed(node("control-1", cidr="10.244.0.0/24", ip="10.20.0.11"),
                node("workers-1", cidr="10.244.1.0/24", ip="10.20.0.12"))
    got = kube.wait_nodes_ready(api, ["control-1", "workers-1"], timeout=5, interval=0.1)
    assert got["workers-1"]["podCIDR"] == "10.244.1.0/24"
    assert got["workers-1"]["internalIP"] == "10.20.0.12"
    assert got["control-1"]["kubeletVersion"] == "v1.36.0"
    assert kube.node_pod_cidrs(api) == {"control-1": "10.244.0.0/24", "workers-1": "10.244.1.0/24"}


def test_wait_nodes_ready_waits_for_a_node_that_turns_ready(server: KubeServer, api: client.ApiClient) -> None:
    server.seed(node("control-1", "False", reason="KubeletNotReady", message="container runtime network not ready"))
    timer = threading.Timer(0.5, lambda: server.seed(node("control-1")))
    timer.start()
    try:
        assert kube.wait_nodes_ready(api, ["control-1"], timeout=10, interval=0.1)["control-1"]["ready"]
    finally:
        timer.cancel()


def test_wait_nodes_ready_timeout_names_each_node_and_why(server: KubeServer, api: client.ApiClient) -> None:
    server.seed(node("control-1", "False", reason="KubeletNotReady",
                     message="container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady"),
                node("workers-2"))
    with pytest.raises(StageError) as failure:
        kube.wait_nodes_ready(api, ["control-1", "workers-1", "workers-2"], timeout=0.6, interval=0.1)
    text = str(failure.value)
    assert text.startswith("cluster: nodes not Ready after 0.6s: ")
    assert "control-1 (Ready=False: KubeletNotReady: container runtime network not ready: NetworkReady=false" in text
    assert "workers-1 (not registered)" in text
    assert "workers-2" not in text
    assert failure.value.stage == "cluster"
    assert "journalctl -u kubelet" in failure.value.hint


def test_wait_pod_cidrs_names_the_node_without_one(server: KubeServer, api: client.ApiClient) -> None:
    server.seed(node("control-1", cidr="10.244.0.0/24"), node("workers-1"))
    with pytest.raises(StageError, match=r"workers-1 \(no spec.podCIDR\)"):
        kube.wait_pod_cidrs(api, ["control-1", "workers-1"], timeout=0.4, interval=0.1)


# --- rollouts -----------------------------------------------------------------------------


def deployment(**status: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "demo", "generation": 2},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "web:1"}]}}},
            "status": {"observedGeneration": 2} | status}


def test_wait_rollout_timeout_names_counts_pods_and_events(server: KubeServer, api: client.ApiClient) -> None:
    backoff = {"reason": "ImagePullBackOff", "message": "Back-off pulling image web:1"}
    waiting = {"containerStatuses": [{"name": "web", "ready": False, "restartCount": 0, "image": "web:1",
                                      "imageID": "", "state": {"waiting": backoff}}]}
    server.seed(
        deployment(replicas=2, updatedReplicas=2, readyReplicas=1, availableReplicas=1),
        pod("web-a", labels={"app": "web"}),
        pod("web-b", labels={"app": "web"}, ready=False, status=waiting),
        pod("other", labels={"app": "other"}, ready=False),
        event("e1", "web-b", "Pulling", "Pulling image web:1", "2026-12-02T04:00:00Z"),
        event("e3", "web-b", "BackOff", "Back-off pulling image web:1", "2026-12-02T04:00:09Z"),
        event("e2", "web-b", "Failed", "Failed to pull image web:1: not found", "2026-12-02T04:00:05Z"),
        event("e4", "other", "Failed", "not this pod", "2026-12-02T04:00:05Z"),
    )
    with pytest.raises(StageError) as failure:
        kube.wait_rollout(api, "Deployment", "demo", "web", timeout=0.5, interval=0.1)
    text = str(failure.value)
    assert text.startswith("cluster: Deployment demo/web not rolled out after 0.5s: desired 2, updated 2, ready 1, "
                           "available 1")
    assert "not ready: web-b (Pending; container web waiting: ImagePullBackOff: Back-off pulling image web:1; " in text
    assert ("events: Pulling: Pulling image web:1 | Failed: Failed to pull image web:1: not found | "
            "BackOff: Back-off pulling image web:1)") in text
    assert "web-a" not in text
    assert "not this pod" not in text


def test_wait_rollout_waits_for_the_controller_to_observe_the_spec(server: KubeServer, api: client.ApiClient) -> None:
    stale = deployment(replicas=2, updatedReplicas=2, readyReplicas=2, availableReplicas=2)
    stale["status"]["observedGeneration"] = 1
    server.seed(stale)
    with pytest.raises(StageError, match=r"observedGeneration 1 of 2; no pods match app=web"):
        kube.wait_rollout(api, "Deployment", "demo", "web", timeout=0.4, interval=0.1)
    server.seed(deployment(replicas=2, updatedReplicas=2, readyReplicas=2, availableReplicas=2))
    assert kube.wait_rollout(api, "Deployment", "demo", "web", timeout=2, interval=0.1).available == 2


def test_wait_rollout_daemonset_ready_and_missing(server: KubeServer, api: client.ApiClient) -> None:
    server.seed({"apiVersion": "apps/v1", "kind": "DaemonSet",
                 "metadata": {"name": "cni", "namespace": "kube-system", "generation": 1},
                 "spec": {"selector": {"matchLabels": {"app": "cni"}}, "template": {
                     "metadata": {"labels": {"app": "cni"}}, "spec": {"containers": [{"name": "c", "image": "c"}]}}},
                 "status": {"observedGeneration": 1, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                            "updatedNumberScheduled": 2, "numberReady": 2, "numberAvailable": 2,
                            "numberMisscheduled": 0}})
    assert kube.wait_rollout(api, "DaemonSet", "kube-system", "cni", timeout=2, interval=0.1).ready == 2
    with pytest.raises(StageError, match=r"DaemonSet kube-system/absent not rolled out after 0.3s: not found"):
        kube.wait_rollout(api, "DaemonSet", "kube-system", "absent", timeout=0.3, interval=0.1)


# --- drain and delete ---------------------------------------------------------------------


def drain_cluster(server: KubeServer) -> None:
    server.seed(
        node("worker-1"),
        pod("app-1"),
        pod("cni-abcde", ns="kube-system", owner="DaemonSet"),
        pod("etcd-worker-1", ns="kube-system", owner="Node",
            metadata={"annotations": {"kubernetes.io/config.mirror": "abc"}}),
        pod("app-2", node_name="worker-2"),
    )


def test_drain_cordons_and_evicts_only_what_kubectl_would(server: KubeServer, api: client.ApiClient) -> None:
    drain_cluster(server)
    assert kube.drain(api, "worker-1", timeout=5, interval=0.1) == ["demo/app-1"]
    assert server.stored("Node", "worker-1")["spec"]["unschedulable"] is True  # type: ignore[index]
    assert server.stored("Pod", "app-1", "demo") is None
    for name, ns in (("cni-abcde", "kube-system"), ("etcd-worker-1", "kube-system"), ("app-2", "demo")):
        assert server.stored("Pod", name, ns) is not None
    evictions = [r for r in server.call(lambda: list(server.emulator)) if r.url.path.endswith("/eviction")]
    assert [r.url.path for r in evictions] == ["/api/v1/namespaces/demo/pods/app-1/eviction"]
    assert evictions[0].data["kind"] == "Eviction"


def test_drain_refused_by_a_disruption_budget_names_the_pod(server: KubeServer, api: client.ApiClient) -> None:
    drain_cluster(server)
    server.refuse_eviction.add(("demo", "app-1"))
    with pytest.raises(StageError) as failure:
        kube.drain(api, "worker-1", timeout=0.5, interval=0.1)
    assert failure.value.host == "worker-1"
    text = str(failure.value)
    assert "drain of worker-1 not finished after 0.5s: pods left: demo/app-1 (eviction refused: 429" in text
    assert "disruption budget" in text


def test_delete_node_is_idempotent(server: KubeServer, api: client.ApiClient) -> None:
    server.seed(node("worker-1"))
    assert kube.delete_node(api, "worker-1")
    assert server.stored("Node", "worker-1") is None
    assert not kube.delete_node(api, "worker-1")
    assert kube.drain(api, "worker-1", timeout=1) == []


# --- the client ---------------------------------------------------------------------------


def test_client_for_leaves_the_global_configuration_alone(server: KubeServer, tmp_path: Path) -> None:
    before = client.Configuration.get_default_copy().host
    api = kube.client_for(server.kubeconfig(tmp_path))
    assert api.configuration.host == server.url
    assert client.Configuration.get_default_copy().host == before


def test_a_wait_on_an_unreachable_api_server_says_so(tmp_path: Path) -> None:
    dead = KubeServer()
    path = dead.kubeconfig(tmp_path)
    dead.close()  # nothing listens on its port any more
    api = kube.client_for(path)
    with pytest.raises(StageError, match=r"nodes not Ready after 0.3s: the API server did not answer: "):
        kube.wait_nodes_ready(api, ["control-1"], timeout=0.3, interval=0.1)
