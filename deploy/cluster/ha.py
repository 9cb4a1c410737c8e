"""HA control planes: keepalived holds the cluster's VIP (``kubernetes.vip``) on a healthy control plane,
and further control planes join with the certificates kubeadm uploaded, encrypted with a certificate key.

    plan_of(resolved)                      HaPlan (VIP, prefix, VRRP router id, control planes in order) or None
    keepalived_conf(plan, name, iface)     /etc/keepalived/keepalived.conf of one control plane
    ensure_keepalived(shell, plan, name)   install (Debian's keepalived), write the conf, start; no restart
                                           when the conf is unchanged; optionally wait until it holds the VIP
    INIT_COMMAND                           ``kubeadm init --upload-certs`` (the key is in the init document)
    upload_certs(cp, cluster, node, prev)  a fresh upload when none was made or the last one is too old

How the cluster stage calls it (``plan = ha.plan_of(resolved)``; ``None``: no VIP, nothing changes).
``cluster_of`` returns ``kubeadm.with_vip(cluster, k8s.vip)`` when the lab has a VIP, so the init's
controlPlaneEndpoint, every join's discovery endpoint and the API server's certSANs use the VIP.

1. First control plane, on every run, before ``kubeadm init``: keepalived there answers for the VIP
   while kubeadm talks to its controlPlaneEndpoint; wait for the VIP only when the node is not yet
   initialised (on a later run the VIP may rightly be on another control plane)::

       ha.ensure_keepalived(cp, plan, first.node.name, log, hold_vip=not initialised)

2. ``kubeadm init`` as without a VIP (``INIT_COMMAND`` with a key in the init document is the one-shot
   form; the stage does not need it, since every control-plane join uploads afresh).
3. Each further control plane, in its own ``member`` step (:mod:`deploy.cluster.join`), on every run:
   keepalived first (it starts as BACKUP with a failed check, so it takes the VIP only once its own API
   server answers and the holder's does not); then, if it has not joined, one at a time (a lock: one
   upload's key per join, and etcd grows by one member at a time), a fresh upload and the join with
   ``controlPlane``::

       ha.ensure_keepalived(shell, plan, member.node.name, log)
       upload = ha.upload_certs(cp, cluster, first.kubeadm, None)
       join = dataclasses.replace(secrets, certificate_key=upload.key.value)
       shell.run("kubeadm join --config /dev/stdin", stdin=kubeadm.render_join(cluster, member.kubeadm, join), ...)

   On a converged re-run ``ensure_keepalived`` says ``unchanged`` and restarts nothing.

k3s (``distribution: k3s``, :mod:`deploy.cluster.k3s_stage`) does the same on its servers: keepalived
before the first server starts (holding the VIP) and on each further server before it joins through the
VIP; the plan's ``distribution`` picks the check (k3s has no anonymous /healthz).

Priorities follow member order (the first control plane highest); the vrrp_script that asks the local
API server for /healthz lowers a failing node's priority below every healthy one, so the VIP moves only
to a control plane whose API server answers (and before init the lone first node keeps it). VRRP adverts
go unicast to the other control planes' addresses. The certificate key, like the bootstrap token, only
lives in memory and in documents on kubeadm's stdin; kubeadm is told not to print it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deploy.cluster import kubeadm
from deploy.errors import StageError

if TYPE_CHECKING:
    from deploy.cluster.nodes import NodeShell
    from deploy.model.resolve import ResolvedLab

CONF = "/etc/keepalived/keepalived.conf"
API_PORT = 6443
TOP_PRIORITY = 200  # the first control plane; the next ones 199, 198, ...
CHECK_WEIGHT = -100  # a failing API server check drops a node below every healthy one
KEY_FRESH_SECONDS = 90 * 60  # kubeadm deletes the kubeadm-certs Secret 2 h after the upload
VIP_WAIT_SECONDS = 120
INIT_COMMAND = "kubeadm init --upload-certs --skip-certificate-key-print --skip-token-print --config /dev/stdin"
UPLOAD_COMMAND = "kubeadm init phase upload-certs --upload-certs --skip-certificate-key-print --config /dev/stdin"
# what the vrrp_script asks the local API server: kubeadm's allows anonymous /healthz; k3s turns anonymous
# auth off, so its check shows the admin client certificate k3s keeps on every server
KUBEADM_CHECK = "/usr/bin/curl --silent --fail --insecure --max-time 10 --output /dev/null https://127.0.0.1:{port}/healthz"
K3S_TLS = "/var/lib/rancher/k3s/server/tls"
K3S_CHECK = ("/usr/bin/curl --silent --fail --max-time 10 --output /dev/null --cacert {tls}/server-ca.crt "
             "--cert {tls}/client-admin.crt --key {tls}/client-admin.key https://127.0.0.1:{port}/readyz")
PACKAGES = ("keepalived",)  # curl, which the check runs, is in every image the builder makes


@dataclass(frozen=True)
class Peer:
    name: str
    address: str  # the node's lab address (kubeadm's advertise address)


@dataclass(frozen=True)
class HaPlan:
    """What every control plane's keepalived agrees on."""

    vip: str
    prefix: int  # of the lab network the control planes share
    router_id: int  # VRRP virtual_router_id, 1..255, from the lab name
    members: tuple[Peer, ...]  # control planes in member order (the first runs kubeadm init)
    port: int = API_PORT
    distribution: str = "kubeadm"  # or k3s: which API server the health check asks, and how

    @property
    def check(self) -> str:
        if self.distribution == "k3s":
            return K3S_CHECK.format(tls=K3S_TLS, port=self.port)
        return KUBEADM_CHECK.format(port=self.port)

    def member(self, name: str) -> tuple[int, Peer]:
        for index, peer in enumerate(self.members):
            if peer.name == name:
                return index, peer
        raise StageError("cluster", f"{name} is not a control plane of this cluster", host=name)


def router_id(lab: str) -> int:
    """A stable VRRP router id per lab (1..255), so two labs on one segment do not answer each other."""
    return int.from_bytes(hashlib.sha256(lab.encode()).digest()[:2], "big") % 255 + 1


def plan_of(resolved: ResolvedLab) -> HaPlan | None:
    """The lab's HA plan, or None without ``kubernetes.vip`` (validate has proven the VIP and network)."""
    k8s = resolved.lab.kubernetes
    if k8s is None or k8s.vip is None:
        return None
    planes = sorted((n for n in resolved.nodes.values() if n.group == k8s.control_plane), key=lambda n: n.name)
    peers, prefix = [], 32
    for node in planes:
        nic = next((nic for nic in node.nics if nic.ip and nic.mode in ("nat", "isolated")), None)
        network = resolved.networks.get(nic.network) if nic else None
        if nic is None or nic.ip is None or network is None or network.cidr is None:
            raise StageError("cluster", f"control plane {node.name} has no address on a lab network", host=node.name,
                             hint="give the control planes a nat or isolated network with a cidr")
        peers.append(Peer(node.name, nic.ip))
        prefix = ipaddress.ip_network(network.cidr).prefixlen
    return HaPlan(k8s.vip, prefix, router_id(resolved.name), tuple(peers), distribution=k8s.distribution)


def keepalived_conf(plan: HaPlan, name: str, interface: str) -> str:
    """keepalived.conf of control plane ``name`` whose lab address is on ``interface``."""
    index, me = plan.member(name)
    others = [p.address for p in plan.members if p.name != name]
    unicast = [f"    unicast_src_ip {me.address}", "    unicast_peer {",
               *(f"        {address}" for address in others), "    }"] if others else []
    lines = [
        f"# labdeploy: the API server's VIP {plan.vip} (kubernetes.vip) among {len(plan.members)} control "
        f"plane{'s' * (len(plan.members) > 1)}; this is {name}",
        "global_defs {",
        f"    router_id {name}",
        "    script_user root",
        "    enable_script_security",
        "}",
        "",
        "vrrp_script apiserver {",
        f'    script "{plan.check}"',
        "    interval 5",
        "    timeout 15",
        "    rise 2",
        "    fall 3",
        f"    weight {CHECK_WEIGHT}",
        "    init_fail",  # a starting node counts as unhealthy until its API server answers twice
        "}",
        "",
        "vrrp_instance apiserver {",
        "    state BACKUP",
        f"    interface {interface}",
        f"    virtual_router_id {plan.router_id}",
        f"    priority {TOP_PRIORITY - index}",
        "    advert_int 1",
        *unicast,
        "    virtual_ipaddress {",
        f"        {plan.vip}/{plan.prefix} dev {interface}",
        "    }",
        "    track_script {",
        "        apiserver",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def interface_command(address: str) -> str:
    """Prints the interface that carries ``address`` (``ip -o addr show to``)."""
    return f"ip -o addr show to {shlex.quote(address)}"


def interface_of(output: str, address: str, node: str) -> str:
    """The interface name in ``ip -o addr show to ADDRESS`` output (``3: eth1    inet ...``)."""
    fields = output.split()
    if len(fields) < 2 or not fields[0].endswith(":"):
        raise StageError("cluster", f"no interface of {node} carries its lab address {address}", host=node,
                         hint="`ip -o addr` on the node shows its addresses; the lab network's NIC may be down")
    return fields[1].split("@")[0]


def install_script(packages: tuple[str, ...] = PACKAGES, conf: str = CONF) -> str:
    """Install keepalived if missing, put the conf on stdin in place if it differs (checked by
    ``keepalived --config-test`` first), restart only then; prints changed | started | unchanged."""
    names = " ".join(shlex.quote(p) for p in packages)
    install = f"apt-get install -y -q --no-install-recommends {names}"
    target = shlex.quote(conf)
    return "\n".join([
        "set -eu",
        "export DEBIAN_FRONTEND=noninteractive",
        f"command -v keepalived >/dev/null 2>&1 || {install} >/dev/null 2>&1 || "
        f"{{ apt-get update -q >/dev/null && {install} >/dev/null; }}",
        f"dir=$(dirname {target}); mkdir -p \"$dir\"",
        'new=$(mktemp "$dir/.keepalived.conf.XXXXXX"); trap \'rm -f "$new"\' EXIT',
        'cat > "$new"',
        'keepalived --config-test -f "$new"',
        f'if cmp -s "$new" {target}; then',
        "  if systemctl is-active --quiet keepalived; then echo unchanged; else systemctl enable --now --quiet "
        "keepalived; echo started; fi",
        "else",
        f'  chmod 0644 "$new"; mv "$new" {target}',
        "  systemctl enable --quiet keepalived; systemctl restart keepalived; echo changed",
        "fi",
    ]) + "\n"


def wait_vip_command(vip: str, seconds: int = VIP_WAIT_SECONDS) -> str:
    """Exits 0 once this node holds ``vip``, 1 after ``seconds``."""
    quoted = shlex.quote(vip)
    return (f"for _ in $(seq {seconds}); do ip -o addr show to {quoted} | grep -q . && exit 0; sleep 1; done; "
            f"echo 'keepalived did not take {vip} within {seconds} s' >&2; exit 1")


def ensure_keepalived(shell: NodeShell, plan: HaPlan, name: str, log: Callable[[str], None] = lambda _m: None,
                      *, hold_vip: bool = False) -> str:
    """keepalived on control plane ``name`` as the plan says; with ``hold_vip`` wait until this node has
    the VIP (the first control plane before kubeadm init). Returns changed | started | unchanged."""
    index, me = plan.member(name)
    found = shell.run(interface_command(me.address), what=f"finding the interface of {me.address}")
    interface = interface_of(found.stdout, me.address, name)
    conf = keepalived_conf(plan, name, interface)
    done = shell.run(f"bash -c {shlex.quote(install_script())}", stdin=conf, timeout=600,
                     what=f"keepalived on {name}", hint="`journalctl -u keepalived -n 50` on the node")
    outcome = (done.stdout.strip().splitlines() or ["changed"])[-1]
    log(f"cluster: keepalived on {name} ({interface}, priority {TOP_PRIORITY - index}): {outcome}")
    if hold_vip:
        shell.run(wait_vip_command(plan.vip), timeout=VIP_WAIT_SECONDS + 30, what=f"waiting for {plan.vip} on {name}",
                  hint="`journalctl -u keepalived -n 50` on the node shows its VRRP state")
    return outcome


@dataclass(frozen=True, repr=False)
class Upload:
    """The certificate key of the last upload of the control-plane certificates and when it was made."""

    key: kubeadm.CertificateKey
    at: float  # time.monotonic()

    @classmethod
    def now(cls, key: kubeadm.CertificateKey) -> Upload:
        """The upload made just now (by ``kubeadm init --upload-certs`` or :func:`upload_certs`)."""
        return cls(key, time.monotonic())

    def fresh(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) - self.at < KEY_FRESH_SECONDS

    def __repr__(self) -> str:
        return f"Upload({self.key!r}, at={self.at:.0f})"


def upload_certs(cp: NodeShell, cluster: kubeadm.Cluster, node: kubeadm.Node, last: Upload | None) -> Upload:
    """``last`` while it is fresh; otherwise the certificates uploaded again on the initialised control
    plane ``node`` under a fresh key (a later run, or a join more than 90 minutes after the upload)."""
    if last is not None and last.fresh():
        return last
    key = kubeadm.new_certificate_key()
    cp.run(UPLOAD_COMMAND, stdin=kubeadm.render_upload_certs(cluster, node, key), timeout=600,
           what="uploading the control-plane certificates")
    return Upload.now(key)
