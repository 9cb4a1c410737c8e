"""kubeadm's configuration documents, rendered from typed inputs (no YAML templates).

    render_init(cluster, node, token[, key])   InitConfiguration + ClusterConfiguration +
                                               KubeletConfiguration (+ KubeProxyConfiguration); with a
                                               certificate key for ``kubeadm init --upload-certs``
    render_join(cluster, node, join)           JoinConfiguration (+ KubeletConfiguration); a further
                                               control plane's carries ``controlPlane``
    render_upload_certs(cluster, node, key)    the config of ``kubeadm init phase upload-certs``
    with_vip(cluster, vip)                     the cluster reached at a virtual IP (HA control planes)
    tcg_patches()                              kubeadm patches that widen the static pods' probes
    new_token() / BootstrapToken               a bootstrap token, registered for redaction at once
    new_certificate_key() / CertificateKey     the AES key of the kubeadm-certs Secret, likewise

The kubeadm API group version is the one each minor's kubeadm prints by default
(``kubeadm config print init-defaults``): ``kubeadm.k8s.io/v1beta4`` for 1.35, 1.36 and 1.37
(1.37 also reads ``v1``, but still prefers v1beta4). Tests validate every rendered document with
the bundle's own kubeadm (``kubeadm config validate``).

Secrets: the bootstrap token, CA hash and certificate key only ever live in memory; every value
is added to :data:`deploy.secrets.REDACTOR` when it is made, so a log line or error quoting a
rendered document is masked.
"""

from __future__ import annotations

import re
import secrets as random
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from deploy.errors import PlanError
from deploy.secrets import REDACTOR

KUBEADM_API = {"1.35": "kubeadm.k8s.io/v1beta4", "1.36": "kubeadm.k8s.io/v1beta4", "1.37": "kubeadm.k8s.io/v1beta4"}
KUBELET_API = "kubelet.config.k8s.io/v1beta1"
KUBE_PROXY_API = "kubeproxy.config.k8s.io/v1alpha1"
CONTAINERD_SOCKET = "unix:///run/containerd/containerd.sock"
PATCHES_DIR = "/etc/labdeploy/kubeadm-patches"
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane"
_TOKEN = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_CERTIFICATE_KEY = re.compile(r"^[0-9a-f]{64}$")  # kubeadm's: 32 random bytes (an AES-256 key), hex
# Under TCG (10-20x slower than hardware) kubeadm's own waits are too short: these replace them.
TCG_TIMEOUTS = {
    "controlPlaneComponentHealthCheck": "20m0s",
    "kubeletHealthCheck": "20m0s",
    "kubernetesAPICall": "15m0s",  # also kubeadm init's retry deadline for the admin ClusterRoleBinding
    "etcdAPICall": "5m0s",
    "tlsBootstrap": "20m0s",
    "discovery": "20m0s",
}

TCG_LEADER_ELECTION = {"leader-elect-lease-duration": "60s", "leader-elect-renew-deadline": "45s",
                       "leader-elect-retry-period": "10s"}


@dataclass(frozen=True)
class Taint:
    key: str
    effect: str = "NoSchedule"
    value: str = ""

    def as_json(self) -> dict[str, str]:
        return {"key": self.key, "effect": self.effect, **({"value": self.value} if self.value else {})}


@dataclass(frozen=True)
class Node:
    """One node as kubeadm registers it."""

    name: str
    address: str  # the node's address on the lab network: kubelet --node-ip, the API server's advertise address
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] | None = None  # None: kubeadm's default (control planes get the control-plane taint)


@dataclass(frozen=True)
class Cluster:
    """Cluster-wide settings from the lab's ``kubernetes:`` section."""

    name: str
    version: str  # v1.36.3
    endpoint: str  # host:port every node reaches the API server at (the first control plane, or a VIP)
    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    dns_domain: str = "cluster.local"
    cert_sans: tuple[str, ...] = ("127.0.0.1", "localhost")  # the host reaches 6443 through a loopback forward
    cri_socket: str = CONTAINERD_SOCKET
    cgroup_driver: str = "systemd"
    kube_proxy: bool = True  # False when the CNI replaces kube-proxy (Cilium)
    image_repository: str = "registry.k8s.io"
    tcg: bool = False  # accel resolved to TCG: widen kubeadm's waits and (through patches) the probes

    @property
    def minor(self) -> str:
        return ".".join(self.version.lstrip("v").split(".")[:2])

    @property
    def api(self) -> str:
        try:
            return KUBEADM_API[self.minor]
        except KeyError:
            raise PlanError(f"kubeadm {self.version} has no known configuration API version",
                            hint=f"use one of the minors {', '.join(KUBEADM_API)}") from None


@dataclass(frozen=True, repr=False)
class BootstrapToken:
    """``[a-z0-9]{6}.[a-z0-9]{16}``; its repr never shows the secret part."""

    value: str

    def __post_init__(self) -> None:
        if not _TOKEN.match(self.value):
            raise PlanError("a bootstrap token must look like abcdef.0123456789abcdef")
        REDACTOR.add(self.value)

    def __repr__(self) -> str:
        return f"BootstrapToken({self.value[:6]}.****)"


@dataclass(frozen=True, repr=False)
class CertificateKey:
    """The key that encrypts the control-plane certificates in the kubeadm-certs Secret (64 hex digits);
    its repr never shows it. The Secret, and so the key, expires two hours after the upload."""

    value: str

    def __post_init__(self) -> None:
        if not _CERTIFICATE_KEY.match(self.value):
            raise PlanError("a certificate key is 64 lowercase hex digits (32 bytes, as `kubeadm certs "
                            "certificate-key` prints)")
        REDACTOR.add(self.value)

    def __repr__(self) -> str:
        return "CertificateKey(****)"


@dataclass(frozen=True, repr=False)
class JoinSecrets:
    """What a node needs to join: the token, the CA's public key hashes, and for a control plane the
    key that decrypts the uploaded certificates."""

    token: BootstrapToken
    ca_cert_hashes: tuple[str, ...]
    certificate_key: str | None = None  # set: join as a further control plane

    def __post_init__(self) -> None:
        for value in (*self.ca_cert_hashes, *((self.certificate_key,) if self.certificate_key else ())):
            REDACTOR.add(value)
        if not self.ca_cert_hashes or not all(h.startswith("sha256:") for h in self.ca_cert_hashes):
            raise PlanError("join needs the CA's sha256:<hex> public key hash",
                            hint="kubeadm's --discovery-token-ca-cert-hash, from the first control plane")
        if self.certificate_key is not None:
            CertificateKey(self.certificate_key)  # the same format check

    def __repr__(self) -> str:
        return f"JoinSecrets({self.token!r}, {len(self.ca_cert_hashes)} CA hash(es), control plane: " \
               f"{self.certificate_key is not None})"


def new_token() -> BootstrapToken:
    """A fresh random bootstrap token (registered for redaction)."""
    return BootstrapToken(f"{_pick(6)}.{_pick(16)}")


def _pick(count: int) -> str:
    return "".join(random.choice(_ALPHABET) for _ in range(count))


def new_certificate_key() -> CertificateKey:
    """A fresh certificate key as kubeadm makes one (32 random bytes, hex), registered for redaction."""
    return CertificateKey(random.token_hex(32))


def with_vip(cluster: Cluster, vip: str, port: int = 6443) -> Cluster:
    """``cluster`` reached at a virtual IP: every node (and kubeadm's controlPlaneEndpoint) uses
    ``vip:port``, and the API server's certificate names the VIP too."""
    return replace(cluster, endpoint=f"{url_host(vip)}:{port}", cert_sans=(*cluster.cert_sans, vip))


def url_host(address: str) -> str:
    """``address`` as the host part of a URL or ``host:port``: an IPv6 address in brackets."""
    return f"[{address}]" if ":" in address else address


def _node_registration(cluster: Cluster, node: Node) -> dict[str, Any]:
    registration: dict[str, Any] = {
        "name": node.name,
        "criSocket": cluster.cri_socket,
        "kubeletExtraArgs": [{"name": "node-ip", "value": node.address}],
    }
    if node.labels:
        labels = ",".join(f"{k}={v}" for k, v in sorted(node.labels.items()))
        registration["kubeletExtraArgs"].append({"name": "node-labels", "value": labels})
    if node.taints is not None:
        registration["taints"] = [t.as_json() for t in node.taints]
    return registration


def _timeouts(cluster: Cluster, keys: tuple[str, ...]) -> dict[str, Any]:
    return {"timeouts": {k: TCG_TIMEOUTS[k] for k in keys}} if cluster.tcg else {}


def _patches(cluster: Cluster) -> dict[str, Any]:
    return {"patches": {"directory": PATCHES_DIR}} if cluster.tcg else {}


def _local_api_endpoint(node: Node) -> dict[str, Any]:
    host, _, port = node.address.partition(":")
    return {"advertiseAddress": host, "bindPort": int(port or 6443)}


def init_configuration(cluster: Cluster, node: Node, token: BootstrapToken,
                       certificate_key: CertificateKey | None = None) -> dict[str, Any]:
    return {
        "apiVersion": cluster.api,
        "kind": "InitConfiguration",
        "bootstrapTokens": [{"token": token.value, "ttl": "2h0m0s", "usages": ["signing", "authentication"],
                             "groups": ["system:bootstrappers:kubeadm:default-node-token"]}],
        **({"certificateKey": certificate_key.value} if certificate_key else {}),
        "localAPIEndpoint": _local_api_endpoint(node),
        "nodeRegistration": _node_registration(cluster, node),
        "skipPhases": [] if cluster.kube_proxy else ["addon/kube-proxy"],
        **_timeouts(cluster, ("controlPlaneComponentHealthCheck", "kubeletHealthCheck", "kubernetesAPICall",
                              "etcdAPICall", "tlsBootstrap")),
        **_patches(cluster),
    }


def cluster_configuration(cluster: Cluster) -> dict[str, Any]:
    return {
        "apiVersion": cluster.api,
        "kind": "ClusterConfiguration",
        "clusterName": cluster.name,
        "kubernetesVersion": cluster.version,
        "controlPlaneEndpoint": cluster.endpoint,
        "imageRepository": cluster.image_repository,
        "networking": {"podSubnet": cluster.pod_cidr, "serviceSubnet": cluster.service_cidr,
                       "dnsDomain": cluster.dns_domain},
        "apiServer": {"certSANs": list(dict.fromkeys(cluster.cert_sans))},
        # each node's pod CIDR comes from this range (the bridge CNI routes between them)
        "controllerManager": {"extraArgs": [{"name": "allocate-node-cidrs", "value": "true"},
                                            *_leader_election(cluster)]},
        **({"scheduler": {"extraArgs": _leader_election(cluster)}} if cluster.tcg else {}),
    }


def _leader_election(cluster: Cluster) -> list[dict[str, str]]:
    """Under TCG a lease renewal can take longer than the default 10 s deadline; the controller manager
    then loses its lease and restarts (seen here every ~2 minutes). Widened only there."""
    if not cluster.tcg:
        return []
    return [{"name": name, "value": value} for name, value in TCG_LEADER_ELECTION.items()]


def kubelet_configuration(cluster: Cluster) -> dict[str, Any]:
    return {
        "apiVersion": KUBELET_API,
        "kind": "KubeletConfiguration",
        "cgroupDriver": cluster.cgroup_driver,
        "containerRuntimeEndpoint": cluster.cri_socket,
        "clusterDomain": cluster.dns_domain,
        # the bundle's images are imported and pinned; nothing is ever pulled for them
        "serializeImagePulls": False,
        **({"runtimeRequestTimeout": "15m0s", "nodeStatusReportFrequency": "1m0s"} if cluster.tcg else {}),
    }


def kube_proxy_configuration(cluster: Cluster) -> dict[str, Any]:
    return {"apiVersion": KUBE_PROXY_API, "kind": "KubeProxyConfiguration", "mode": "iptables",
            "clusterCIDR": cluster.pod_cidr}


def join_configuration(cluster: Cluster, node: Node, join: JoinSecrets) -> dict[str, Any]:
    document: dict[str, Any] = {
        "apiVersion": cluster.api,
        "kind": "JoinConfiguration",
        "discovery": {"bootstrapToken": {"apiServerEndpoint": cluster.endpoint, "token": join.token.value,
                                         "caCertHashes": list(join.ca_cert_hashes)}},
        "nodeRegistration": _node_registration(cluster, node),
        **_timeouts(cluster, ("controlPlaneComponentHealthCheck", "kubeletHealthCheck", "kubernetesAPICall",
                              "etcdAPICall", "tlsBootstrap", "discovery")),
        **_patches(cluster),
    }
    if join.certificate_key is not None:
        document["controlPlane"] = {"localAPIEndpoint": _local_api_endpoint(node),
                                    "certificateKey": join.certificate_key}
    return document


def _dump(documents: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)


def render_init(cluster: Cluster, node: Node, token: BootstrapToken,
                certificate_key: CertificateKey | None = None) -> str:
    """The ``kubeadm init --config`` file of the first control plane; with ``certificate_key`` for
    ``kubeadm init --upload-certs`` (kubeadm refuses ``--certificate-key`` next to ``--config``: the key
    travels in the document, which travels on stdin)."""
    documents = [init_configuration(cluster, node, token, certificate_key), cluster_configuration(cluster),
                 kubelet_configuration(cluster)]
    if cluster.kube_proxy:
        documents.append(kube_proxy_configuration(cluster))
    return _dump(documents)


def render_join(cluster: Cluster, node: Node, join: JoinSecrets) -> str:
    """The ``kubeadm join --config`` file of a worker (or, with a certificate key, a further control plane)."""
    return _dump([join_configuration(cluster, node, join)])


def render_upload_certs(cluster: Cluster, node: Node, certificate_key: CertificateKey) -> str:
    """The config of ``kubeadm init phase upload-certs --upload-certs`` on an initialised control plane
    (``node``): it re-encrypts the shared certificates with a fresh key for a later control plane's join."""
    init = {"apiVersion": cluster.api, "kind": "InitConfiguration", "certificateKey": certificate_key.value,
            "localAPIEndpoint": _local_api_endpoint(node), "nodeRegistration": _node_registration(cluster, node)}
    return _dump([init, cluster_configuration(cluster)])


def tcg_patches() -> dict[str, str]:
    """File name -> strategic merge patch for kubeadm's ``patches.directory``: under TCG the static pods'
    probes start later and tolerate slow answers (kubeadm's defaults restart a healthy, slow API server)."""
    probe = {"initialDelaySeconds": 120, "timeoutSeconds": 60, "periodSeconds": 20, "failureThreshold": 30}
    files = {}
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        patch = {"spec": {"containers": [{"name": component, "livenessProbe": probe,
                                          "startupProbe": {**probe, "failureThreshold": 60}}]}}
        files[f"{component}+strategic.yaml"] = yaml.safe_dump(patch, sort_keys=False)
    return files
