"""The ``kubernetes:`` section of a lab file (part of :mod:`deploy.model.schema`)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from deploy.model.strict import Strict

# --- kubernetes ----------------------------------------------------------------------------


class CiliumSpec(Strict):
    version: str
    kube_proxy_replacement: bool = False
    hubble: bool = False


class BridgeCniSpec(Strict):
    """The CNI plugins' bridge and host-local on each node, with routes between the nodes' pod CIDRs."""


class CniSpec(Strict):
    bridge: BridgeCniSpec | None = None
    cilium: CiliumSpec | None = None


class IstioSpec(Strict):
    version: str
    mode: Literal["ambient", "sidecar"] = "sidecar"
    mtls: Literal["STRICT", "PERMISSIVE"] = "STRICT"


class MeshSpec(Strict):
    istio: IstioSpec | None = None


class GpuOperatorSpec(Strict):
    version: str
    driver: Literal["preinstalled", "operator"] = "preinstalled"
    mig_strategy: Literal["none", "single", "mixed"] = "none"


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
