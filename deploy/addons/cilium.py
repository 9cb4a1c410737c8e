"""Cilium as the lab's CNI: the ``cilium`` chart of https://helm.cilium.io in kube-system.

The values follow the chart's documented values (Cilium 1.17 "Helm Reference"):

    ipam.mode                                 kubernetes (the controller manager's pod CIDRs) or cluster-pool
    ipam.operator.clusterPoolIPv4PodCIDRList  [kubernetes.pod_cidr] with cluster-pool
    kubeProxyReplacement                      true/false; with true kubeadm skips addon/kube-proxy and
    k8sServiceHost / k8sServicePort           the agents reach the API server at the VIP or first control plane
    operator.replicas                         1 on a one-node cluster (two replicas repel each other)
    hubble.enabled / .relay.enabled / .ui.enabled
    cni.exclusive: false                      with Istio ambient, so istio-cni's chained plugin stays
    socketLB.hostNamespaceOnly: true          with Istio and kube-proxy replacement (Cilium's Istio guide:
                                              socket load balancing would bypass the mesh's redirection)

The lab's ``cni.cilium.values`` go over these.
"""

from __future__ import annotations

from typing import Any

from deploy.addons.typed import TypedAddon, api_endpoint, cluster_nodes
from deploy.addons.values import merge
from deploy.model.resolve import ResolvedLab
from deploy.model.schema_addons import AddonSpec
from deploy.model.schema_kubernetes import CiliumSpec

REPO = "https://helm.cilium.io/"
NAMESPACE = "kube-system"
RELEASE = "cilium"
API_PORT = 6443
TIMEOUT = 900  # agents on every node, then the operator, under TCG


def values(resolved: ResolvedLab, spec: CiliumSpec) -> dict[str, Any]:
    k8s = resolved.lab.kubernetes
    assert k8s is not None
    ambient = bool(k8s.mesh and k8s.mesh.istio and k8s.mesh.istio.mode == "ambient")
    out: dict[str, Any] = {"ipam": {"mode": spec.ipam}, "kubeProxyReplacement": spec.kube_proxy_replacement,
                           "operator": {"replicas": 1 if len(cluster_nodes(resolved)) < 2 else 2}}
    if spec.ipam == "cluster-pool":
        out["ipam"]["operator"] = {"clusterPoolIPv4PodCIDRList": [k8s.pod_cidr]}
    if spec.kube_proxy_replacement:
        out |= {"k8sServiceHost": api_endpoint(resolved), "k8sServicePort": API_PORT}
    hubble = spec.hubble_spec
    out["hubble"] = {"enabled": hubble is not None, "relay": {"enabled": bool(hubble and hubble.relay)},
                     "ui": {"enabled": bool(hubble and hubble.ui)}}
    if ambient:
        out["cni"] = {"exclusive": False}
    if k8s.mesh and k8s.mesh.istio and spec.kube_proxy_replacement:
        out["socketLB"] = {"hostNamespaceOnly": True}
    return merge(out, spec.values)


def addon(resolved: ResolvedLab, spec: CiliumSpec) -> TypedAddon:
    release = AddonSpec(name=RELEASE, chart="cilium", version=spec.version, repo=REPO, namespace=NAMESPACE,
                        values=values(resolved, spec), timeout=TIMEOUT)
    return TypedAddon("cni", (release,))
