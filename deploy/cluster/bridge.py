"""The ``cni: {bridge: {}}`` network: the CNI plugins' bridge and host-local on every node, and
routes between the nodes' pod CIDRs over the lab network.

    conflist(pod_cidr)            /etc/cni/net.d/10-labdeploy.conflist for one node (its podCIDR)
    routes(me, nodes)             ``ip route replace`` commands: each other node's podCIDR via its address
    masquerade(node_cidr, cluster_cidr)   the one NAT rule: pods reaching outside the cluster's pod range
    service_guard(service_cidr)   traffic to a ClusterIP kube-proxy has not translated (yet) is refused

Each node's pod CIDR is the one the controller manager allocated (``node.spec.podCIDR``); the
cluster stage reads it through the Kubernetes API and hands it here. Pods reach pods on their own
node over the bridge ``cni0`` and pods elsewhere through the node's route to that node. Traffic
leaving the cluster's pod range is masqueraded by one rule of ours; traffic between pods keeps
its source address (the bridge plugin's own ``ipMasq`` would hide it behind the node's).
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections.abc import Mapping

from deploy.errors import PlanError

CNI_VERSION = "1.0.0"
NETWORK = "labdeploy"
BRIDGE = "cni0"
CONFLIST = "/etc/cni/net.d/10-labdeploy.conflist"
PLUGIN_DIR = "/opt/cni/bin"


def _subnet(cidr: str, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise PlanError(f"{what} {cidr!r} is not a network: {exc}") from None


def conflist(pod_cidr: str, *, data_dir: str | None = None) -> str:
    """The node's CNI configuration: bridge + host-local over ``pod_cidr``, then portmap."""
    subnet = _subnet(pod_cidr, "the node's pod CIDR")
    ipam: dict[str, object] = {
        "type": "host-local",
        "ranges": [[{"subnet": str(subnet)}]],
        "routes": [{"dst": "0.0.0.0/0" if subnet.version == 4 else "::/0"}],
    }
    if data_dir is not None:
        ipam["dataDir"] = data_dir
    bridge = {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
              "ipam": ipam}
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    return json.dumps({"cniVersion": CNI_VERSION, "name": NETWORK, "plugins": [bridge, portmap]}, indent=2) + "\n"


def routes(me: str, nodes: Mapping[str, tuple[str, str]]) -> list[str]:
    """Commands that route every other node's pod CIDR via that node's lab address (idempotent: replace).

    ``nodes`` maps node name -> (lab address, pod CIDR); ``me`` is the node the commands run on.
    """
    if me not in nodes:
        raise PlanError(f"node {me} has no pod CIDR yet", hint="the controller manager allocates one when it joins")
    commands = []
    seen: dict[str, str] = {}
    for name, (address, cidr) in sorted(nodes.items()):
        subnet = str(_subnet(cidr, f"node {name}'s pod CIDR"))
        if subnet in seen:
            raise PlanError(f"nodes {seen[subnet]} and {name} have the same pod CIDR {subnet}")
        seen[subnet] = name
        if name != me:
            via = ipaddress.ip_address(address)
            commands.append(f"ip route replace {shlex.quote(subnet)} via {via}")
    return commands


def masquerade(node_cidr: str, cluster_cidr: str) -> str:
    """One idempotent command: NAT for this node's pods when they leave the cluster's pod range."""
    node, cluster = _subnet(node_cidr, "the node's pod CIDR"), _subnet(cluster_cidr, "kubernetes.pod_cidr")
    if not node.subnet_of(cluster):  # type: ignore[arg-type]
        raise PlanError(f"the node's pod CIDR {node} is not inside kubernetes.pod_cidr {cluster}")
    rule = f"POSTROUTING -s {node} ! -d {cluster} -m comment --comment labdeploy-pods -j MASQUERADE"
    return f"iptables -t nat -C {rule} 2>/dev/null || iptables -t nat -A {rule}"


def service_guard(service_cidr: str) -> list[str]:
    """Idempotent commands refusing packets to the service range that kube-proxy did not translate.

    Until kube-proxy has synced its rules (minutes under TCG) a ClusterIP is just an address: the
    default route would carry it out of the node's user-mode NIC into the host's network, where
    whatever answers (seen here: a TLS server without IP SANs) is not the cluster. kube-proxy's DNAT
    runs before the filter table, so translated packets no longer match.
    """
    cidr = _subnet(service_cidr, "kubernetes.service_cidr")
    commands = []
    for chain in ("FORWARD", "OUTPUT"):
        rule = f"{chain} -d {cidr} -m comment --comment labdeploy-untranslated-service -j REJECT"
        commands.append(f"{{ iptables -C {rule} 2>/dev/null || iptables -I {rule}; }}")
    return commands
