"""The ``kubernetes:`` section of a lab file (part of :mod:`deploy.model.schema`)."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, field_validator

from deploy.model.strict import Strict

# --- kubernetes ----------------------------------------------------------------------------


class HubbleSpec(Strict):
    relay: bool = Field(True, description="hubble-relay: the cluster-wide flow API the hubble CLI reads")
    ui: bool = Field(False, description="hubble-ui, the flow graph in a browser")


class CiliumSpec(Strict):
    version: str = Field(description="the cilium chart version (the chart and its images share it), e.g. 1.17.0")
    kube_proxy_replacement: bool = Field(
        False, description="Cilium's eBPF replaces kube-proxy (kubeadm skips its kube-proxy add-on); Cilium then "
        "reaches the API server at kubernetes.vip or the first control plane's lab address")
    hubble: bool | HubbleSpec = Field(False, description="true (relay on) or {relay: ..., ui: ...}")
    ipam: Literal["kubernetes", "cluster-pool"] = Field(
        "kubernetes", description="kubernetes: the pod CIDRs the controller manager gives the nodes; "
        "cluster-pool: Cilium's operator splits kubernetes.pod_cidr itself")
    values: dict[str, Any] = Field(default_factory=dict, description="chart values over those labdeploy renders")

    @property
    def hubble_spec(self) -> HubbleSpec | None:
        if self.hubble is False:
            return None
        return HubbleSpec() if self.hubble is True else self.hubble


class BridgeCniSpec(Strict):
    """The CNI plugins' bridge and host-local on each node, with routes between the nodes' pod CIDRs."""

    network_policy: bool = Field(
        False, description="enforce NetworkPolicy (the bridge CNI does not): kube-network-policies as a DaemonSet, "
        "from the bundle's image (bundle: build/offline) or registry.k8s.io")


class CniSpec(Strict):
    bridge: BridgeCniSpec | None = None
    cilium: CiliumSpec | None = None


class IstioSpec(Strict):
    version: str = Field(description="the Istio chart version (base, istiod, cni, ztunnel share it), e.g. 1.24.0")
    mode: Literal["ambient", "sidecar"] = "sidecar"
    mtls: Literal["STRICT", "PERMISSIVE"] = Field(
        "STRICT", description="the mesh-wide PeerAuthentication's mode (istio-system/default)")
    namespaces: list[str] = Field(
        default_factory=list, description="namespaces enrolled in the mesh: labelled istio.io/dataplane-mode=ambient "
        "(ambient) or istio-injection=enabled (sidecar); created when missing")
    ingress_gateway: bool = Field(False, description="an ingress gateway (the gateway chart) in istio-ingress")
    values: dict[str, Any] = Field(default_factory=dict, description="istiod chart values over labdeploy's")


class MeshSpec(Strict):
    istio: IstioSpec | None = None


class TimeSlicingSpec(Strict):
    replicas: int = Field(description="how many pods share each GPU (at least 1)")

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"time_slicing.replicas is {value}; each GPU is shared by at least 1 pod, write 1 or more")
        return value


class GpuOperatorSpec(Strict):
    version: str = Field(description="the gpu-operator chart version, e.g. v24.9.0")
    driver: Literal["preinstalled", "operator", "precompiled"] = Field(
        "preinstalled", description="preinstalled: the node image has the NVIDIA driver; operator: the operator "
        "builds it on each node; precompiled: the operator's precompiled driver images (driver_version: the branch)")
    driver_version: str | None = Field(None, description="driver version (operator) or branch, e.g. 550 (precompiled)")
    mig_strategy: Literal["none", "single", "mixed"] = "none"
    mig_profiles: dict[str, int] = Field(
        default_factory=dict, description="MIG devices per GPU, e.g. {1g.10gb: 7} or {3g.40gb: 1, 4g.40gb: 1}; "
        "required by mig_strategy: mixed")
    time_slicing: TimeSlicingSpec | None = Field(None, description="share each GPU between pods: {replicas: N}")
    toolkit: bool = Field(True, description="the operator's container toolkit configures containerd's nvidia handler")
    nfd: bool = Field(True, description="Node Feature Discovery finds the GPU nodes; off: labdeploy labels "
                      "the nodes with gpus: itself")
    values: dict[str, Any] = Field(default_factory=dict, description="chart values over those labdeploy renders")


Runtime = Literal["runc", "crun", "gvisor", "kata", "wasmedge", "spin"]


class KubernetesAptSpec(Strict):
    """The apt repository of the Kubernetes packages (pkgs.k8s.io or a mirror of it)."""

    repo: str | None = Field(
        None, description="URI and suite of the deb line; {version} becomes the Kubernetes minor, e.g. "
        "'https://pkgs.k8s.io/core:/stable:/v{version}/deb/ /'. Required by the k8s-* roles")
    key: str | None = Field(
        None, description="URL of the repository's ASCII-armoured signing key ({version} as in repo), e.g. "
        "'https://pkgs.k8s.io/core:/stable:/v{version}/deb/Release.key'")


class KubernetesSpec(Strict):
    distribution: Literal["kubeadm", "k3s"] = "kubeadm"
    version: str = Field(pattern=r"^\d+\.\d+(\.\d+)?$")
    control_plane: str
    workers: list[str] | str | None = None
    vip: str | None = Field(
        None, description="virtual IP of the API server on the lab network the control planes share "
        "(keepalived moves it to a healthy control plane): the cluster's endpoint <vip>:6443. Required with "
        "more than one control plane; with one it keeps the endpoint stable for adding more later")
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    apt: KubernetesAptSpec = Field(
        default_factory=KubernetesAptSpec,
        description="where nodes with a k8s-* role install kubeadm, kubelet and kubectl from")
    cni: CniSpec | None = None
    mesh: MeshSpec | None = None
    runtimes: list[Runtime] = Field(default_factory=lambda: list[Runtime](["runc"]))
    gpu_operator: GpuOperatorSpec | None = None

    @field_validator("vip")
    @classmethod
    def _vip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address (write the bare address, e.g. 10.20.0.5)") from None

    @property
    def worker_groups(self) -> list[str]:
        if self.workers is None:
            return []
        return [self.workers] if isinstance(self.workers, str) else list(self.workers)
