"""k3s, the second distribution: its config files, its token and its install, rendered from typed inputs.

    k3s_cluster(resolved, members)         K3sCluster from the lab's ``kubernetes:`` section (same fields
                                           as kubeadm: version, pod and service CIDRs, cni, workers)
    server_config(cluster, node, token)    /etc/rancher/k3s/config.yaml of the first server
    agent_config(cluster, node, token)     the same file on an agent (worker)
    render(config)                         YAML with the keys exactly as k3s spells its flags
    new_token() / Token                    a random cluster secret, registered for redaction at once
    fetch_binary_command(url, sha256)      the k3s binary from mirrors.files, checked against its sha256
    install_commands(...)                  the node's k3s binary started as systemd unit ``k3s`` or
                                           ``k3s-agent``, or the upstream install script on online labs
    systemd_unit(role, layout)             that unit's text as k3s's install.sh writes it

k3s reads /etc/rancher/k3s/config.yaml on start: every key is a flag without its leading ``--``. The
node's own containerd 2 (with the lab's runtime handlers) serves as the CRI
(``container-runtime-endpoint``); with a CNI of the lab's own (bridge, programmed by ``addon:cni``; or
Cilium) flannel and k3s's network-policy controller are off, and the packaged add-ons the lab does not
ask for (traefik, servicelb, local-storage, metrics-server) are disabled.

Secrets: the token lives in memory, in :data:`deploy.secrets.REDACTOR`, on SSH standard input and in
the config file on the node (written 0600 from stdin); never on a command line, in state or artifacts.

Not built here: k3s's module is not served by this machine's Go module proxy (``go list -m
github.com/k3s-io/k3s@v1.36.3+k3s1`` answers 403 "This module version is not available"), so the binary
comes from the bundle's files or ``mirrors.files`` (offline) or the install script (online).
"""

from __future__ import annotations

import secrets as random
import shlex
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from deploy.cluster.kubeadm import Node, url_host
from deploy.cluster.nodes import Member, kubernetes_version
from deploy.configure.catalog import K3S_FILE
from deploy.errors import PlanError, StageError
from deploy.model.resolve import ResolvedLab
from deploy.secrets import REDACTOR

Role = Literal["server", "agent"]
API_PORT = 6443
CONTAINERD_SOCKET = "unix:///run/containerd/containerd.sock"
INSTALL_URL = "https://get.k3s.io"
MIRROR_FILE = K3S_FILE  # the binary's name in mirrors.files and mirrors.checksums
DISABLED = ("traefik", "servicelb", "local-storage", "metrics-server")
CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane:NoSchedule"
KUBELET_ARGS = ("cgroup-driver=systemd",)  # as the node's containerd (SystemdCgroup) and the kubeadm path
TCG_LEADER_ELECTION = ("leader-elect-lease-duration=60s", "leader-elect-renew-deadline=45s",
                       "leader-elect-retry-period=10s")
_MIN_TOKEN = 32


@dataclass(frozen=True)
class Layout:
    """Where k3s keeps its files on a node (k3s's defaults; tests move them under a temporary folder)."""

    bin_dir: str = "/usr/local/bin"
    config_dir: str = "/etc/rancher/k3s"
    data_dir: str = "/var/lib/rancher/k3s"
    systemd_dir: str = "/etc/systemd/system"
    systemctl: str = "systemctl"

    @property
    def binary(self) -> str:
        return f"{self.bin_dir}/k3s"

    @property
    def config(self) -> str:
        return f"{self.config_dir}/config.yaml"

    @property
    def kubeconfig(self) -> str:
        """The admin kubeconfig a server writes (``write-kubeconfig``'s default)."""
        return f"{self.config_dir}/k3s.yaml"

    @property
    def node_token(self) -> str:
        return f"{self.data_dir}/server/node-token"

    @property
    def agent_kubeconfig(self) -> str:
        """Present once the node's kubelet has registered (servers and agents alike)."""
        return f"{self.data_dir}/agent/kubelet.kubeconfig"

    def extra_args(self) -> tuple[str, ...]:
        """Flags a non-default layout needs (none for k3s's own paths)."""
        default = Layout()
        out: tuple[str, ...] = ()
        if self.config != default.config:
            out += ("--config", self.config)
        if self.data_dir != default.data_dir:
            out += ("--data-dir", self.data_dir)
        return out


LAYOUT = Layout()


@dataclass(frozen=True, repr=False)
class Token:
    """k3s's cluster secret (``--token``); its repr never shows it."""

    value: str

    def __post_init__(self) -> None:
        if len(self.value) < _MIN_TOKEN or any(c.isspace() for c in self.value):
            raise PlanError(f"a k3s token must be at least {_MIN_TOKEN} characters without spaces")
        REDACTOR.add(self.value)

    def __repr__(self) -> str:
        return "Token(****)"


def new_token() -> Token:
    """A fresh random token (registered for redaction)."""
    return Token(random.token_hex(32))


@dataclass(frozen=True)
class K3sCluster:
    name: str
    version: str  # v1.36.3+k3s1: the install script's INSTALL_K3S_VERSION
    server_url: str  # https://<kubernetes.vip, else the first server's lab address>:6443
    pod_cidr: str
    service_cidr: str
    cert_sans: tuple[str, ...]
    servers: int = 1
    own_cni: bool = True  # the lab's CNI (bridge or Cilium) replaces flannel and k3s's policy controller
    kube_proxy: bool = True
    tcg: bool = False
    binary_url: str | None = None  # <mirrors.files>/k3s when the lab gives its sha256 (mirrors.checksums.k3s)
    binary_sha256: str | None = None


def k3s_version(kubernetes: str) -> str:
    """k3s's release of a Kubernetes patch release (``v1.36.3`` -> ``v1.36.3+k3s1``)."""
    return kubernetes if "+k3s" in kubernetes else f"{kubernetes}+k3s1"


def k3s_cluster(resolved: ResolvedLab, members: list[Member], *, tcg: bool = False) -> K3sCluster:
    """From the lab and :func:`deploy.cluster.nodes.members` (control planes first)."""
    k8s = resolved.lab.kubernetes
    assert k8s is not None
    first = members[0].kubeadm
    cilium = k8s.cni.cilium if k8s.cni else None
    endpoint = k8s.vip or first.address  # with a VIP (keepalived, as for kubeadm) every join goes through it
    return K3sCluster(
        name=resolved.name, version=k3s_version(kubernetes_version(k8s.version)),
        server_url=f"https://{url_host(endpoint)}:{API_PORT}", pod_cidr=k8s.pod_cidr, service_cidr=k8s.service_cidr,
        cert_sans=tuple(dict.fromkeys(("127.0.0.1", "localhost", first.name, first.address, endpoint))),
        servers=sum(1 for m in members if m.control_plane), own_cni=k8s.cni is not None,
        kube_proxy=not (cilium and cilium.kube_proxy_replacement), tcg=tcg, **_mirror(resolved))


def _mirror(resolved: ResolvedLab) -> dict[str, str]:
    """The k3s binary from ``mirrors.files`` when ``mirrors.checksums`` pins it (validate asks for both)."""
    mirrors = resolved.lab.mirrors
    digest = mirrors.checksums.get(MIRROR_FILE)
    if not mirrors.files or digest is None:
        return {}
    return {"binary_url": f"{mirrors.files.rstrip('/')}/{MIRROR_FILE}", "binary_sha256": digest}


def fetch_binary_command(url: str, sha256: str, layout: Layout = LAYOUT) -> str:
    """Puts the mirror's k3s at ``layout.binary`` unless a binary with that sha256 is there (prints kept |
    fetched); a download whose sha256 differs is removed and fails, leaving any earlier binary as it was."""
    binary, sum_line = shlex.quote(layout.binary), shlex.quote(f"{sha256}  -")
    return (f"set -e; if [ -x {binary} ] && sha256sum < {binary} | grep -qx {sum_line}; then echo kept; exit 0; fi; "
            f"mkdir -p {shlex.quote(layout.bin_dir)}; part=$(mktemp {binary}.XXXXXX); trap 'rm -f \"$part\"' EXIT; "
            f"curl -sfL --retry 3 -o \"$part\" {shlex.quote(url)}; "
            f"if ! sha256sum < \"$part\" | grep -qx {sum_line}; then "
            f"echo \"{MIRROR_FILE} from {url} does not have sha256 {sha256}\" >&2; exit 1; fi; "
            f"chmod 0755 \"$part\"; mv -f \"$part\" {binary}; echo fetched")


def _node(node: Node, token: Token, control_plane: bool) -> dict[str, Any]:
    """The keys servers and agents share (kubeadm's Node: name, lab address, labels, taints)."""
    config: dict[str, Any] = {"token": token.value, "node-name": node.name, "node-ip": node.address,
                              "container-runtime-endpoint": CONTAINERD_SOCKET, "kubelet-arg": list(KUBELET_ARGS)}
    if node.labels:
        config["node-label"] = [f"{k}={v}" for k, v in sorted(node.labels.items())]
    taints = _taints(node, control_plane)
    if taints:
        config["node-taint"] = taints
    return config


def _taints(node: Node, control_plane: bool) -> list[str]:
    """``None`` is kubeadm's default (control planes tainted); k3s taints nothing by itself."""
    if node.taints is None:
        return [CONTROL_PLANE_TAINT] if control_plane else []
    return [f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}" for t in node.taints]


def server_config(cluster: K3sCluster, node: Node, token: Token, *, join: bool = False) -> dict[str, Any]:
    """A server's config.yaml: the first one starts embedded etcd (``cluster-init``) only when more servers
    follow; a further server (``join``) joins the first one's etcd through ``server``."""
    start = {"server": cluster.server_url} if join else {"cluster-init": True} if cluster.servers > 1 else {}
    config: dict[str, Any] = {**start,
                              **_node(node, token, control_plane=True),
                              "cluster-cidr": cluster.pod_cidr, "service-cidr": cluster.service_cidr,
                              "tls-san": list(cluster.cert_sans), "write-kubeconfig-mode": "0600",
                              "disable": list(DISABLED)}
    if cluster.own_cni:
        config.update({"flannel-backend": "none", "disable-network-policy": True})
    if not cluster.kube_proxy:
        config["disable-kube-proxy"] = True
    if cluster.tcg:  # as the kubeadm path: slow lease renewals under TCG must not cost the lease
        config["kube-controller-manager-arg"] = list(TCG_LEADER_ELECTION)
        config["kube-scheduler-arg"] = list(TCG_LEADER_ELECTION)
    return config


def agent_config(cluster: K3sCluster, node: Node, token: Token) -> dict[str, Any]:
    return {"server": cluster.server_url, **_node(node, token, control_plane=False)}


def render(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def write_config_command(layout: Layout = LAYOUT) -> str:
    """Writes config.yaml from standard input, 0600 from its first byte (the token is in it)."""
    new = f"{layout.config_dir}/.config.yaml.new"
    return (f"umask 077 && mkdir -p {shlex.quote(layout.config_dir)} && rm -f {shlex.quote(new)} && "
            f"cat > {shlex.quote(new)} && mv -f {shlex.quote(new)} {shlex.quote(layout.config)}")


def unit_name(role: Role) -> str:
    return "k3s" if role == "server" else "k3s-agent"


def systemd_unit(role: Role, layout: Layout = LAYOUT) -> str:
    """The unit install.sh writes for ``INSTALL_K3S_EXEC=<role>`` (Type=notify: started means ready)."""
    args = "".join(f" \\\n\t{shlex.quote(a)}" for a in layout.extra_args())
    env = f"{layout.systemd_dir}/{unit_name(role)}.service.env"
    return f"""[Unit]
Description=Lightweight Kubernetes
Documentation=https://k3s.io
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
Type=notify
EnvironmentFile=-/etc/default/%N
EnvironmentFile=-/etc/sysconfig/%N
EnvironmentFile=-{env}
KillMode=process
Delegate=yes
User=root
# Having non-zero Limit*s causes performance problems due to accounting overhead
# in the kernel. We recommend using cgroups to do container-local accounting.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart={layout.binary} \\
    {role}{args}

"""


def install_commands(role: Role, version: str, *, binary_present: bool, online: bool,
                     layout: Layout = LAYOUT) -> list[str]:
    """Commands that install and start k3s as ``role`` (config.yaml is written before them).

    Online labs run the upstream install script (it keeps a binary already on the node with
    INSTALL_K3S_SKIP_DOWNLOAD, else downloads ``version``); offline labs start the node's own binary
    with the unit the script would write, so a node without the script works the same.
    """
    if online:
        fetch = "INSTALL_K3S_SKIP_DOWNLOAD=true" if binary_present else f"INSTALL_K3S_VERSION={shlex.quote(version)}"
        # to a file first: `curl | sh` would run an empty script, and succeed, when the download fails
        return [f'script=$(mktemp) && curl -sfL {INSTALL_URL} -o "$script" && {fetch} INSTALL_K3S_EXEC={role} '
                f'sh "$script"; rc=$?; rm -f "$script"; exit $rc']
    if not binary_present:
        raise StageError("cluster", f"no k3s binary at {layout.binary} and the lab is offline (k3s cannot be "
                                    "built here: its module is not on the Go module proxy)",
                         hint="serve k3s through mirrors.files or the bundle, or use bundle: {source: upstream}")
    name, unit_dir = unit_name(role), shlex.quote(layout.systemd_dir)
    unit, env = f"{unit_dir}/{name}.service", f"{unit_dir}/{name}.service.env"
    return [f"mkdir -p {unit_dir} && printf %s {shlex.quote(systemd_unit(role, layout))} > {unit}",
            f"umask 077 && touch {env}",
            f"{layout.systemctl} daemon-reload && {layout.systemctl} enable {name} && "
            f"{layout.systemctl} restart {name}"]


def wait_file_command(path: str, seconds: int) -> str:
    """Succeeds once ``path`` is a non-empty file, fails after ``seconds``."""
    quoted = shlex.quote(path)
    return (f"i=0; while [ ! -s {quoted} ] && [ $i -lt {seconds} ]; do sleep 1; i=$((i+1)); done; "
            f"test -s {quoted}")
