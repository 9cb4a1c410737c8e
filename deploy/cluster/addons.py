"""The ``addons`` stage on this machine: the bridge CNI and the RuntimeClasses.

``addon:cni`` (bridge): once every node has the pod CIDR the controller manager allocated, each
node gets its conflist, the routes to the other nodes' pod CIDRs over the lab network and the one
NAT rule for traffic leaving the pod range (:mod:`deploy.cluster.bridge`); then the nodes must turn
Ready and CoreDNS must roll out; with ``network_policy`` the enforcer's DaemonSet too
(:mod:`deploy.cluster.netpol`). ``addon:runtimes``: one RuntimeClass per runtime of the lab,
server-side applied, scheduled onto nodes labelled for the handler. The entries of ``addons:`` are
Helm releases (:mod:`deploy.addons.step`), and so are the typed add-ons Cilium, Istio and the GPU
operator (their charts and images cannot be fetched on this machine: right by construction here).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from deploy.cluster import bridge
from deploy.cluster.nodes import Member, members, shell_for
from deploy.cluster.stage import cluster_api, progress
from deploy.errors import StageError
from deploy.resources import Outputs, Resource

NODES_TIMEOUT = 900.0  # node registration and Ready under TCG
ROLLOUT_TIMEOUT = 900.0


def run_addon(resource: Resource, ctx: Any) -> Outputs:
    from deploy.addons import step

    if step.is_release(resource):
        return step.install(resource, ctx)
    if step.is_typed(resource):
        return step.install_typed(resource, ctx)
    if resource.name == "cni":
        return _bridge(ctx)
    if resource.name == "runtimes":
        return _runtime_classes(ctx)
    raise StageError("addons", f"add-on {resource.name} cannot be installed by this version",
                     hint="remove it from the lab (Helm add-ons come with the add-ons issue)")


def _bridge(ctx: Any) -> Outputs:
    from deploy.cluster import kube

    log = progress(ctx)
    nodes = members(ctx.resolved)
    api = cluster_api(ctx)
    names = [m.node.name for m in nodes]
    cidrs = kube.wait_pod_cidrs(api, names, NODES_TIMEOUT, stage="addons")
    table = {m.node.name: (m.kubeadm.address, cidrs[m.node.name]) for m in nodes}
    changed = [m.node.name for m in nodes if _program_node(ctx, m, table, log)]
    kube.wait_nodes_ready(api, names, NODES_TIMEOUT, stage="addons")
    kube.wait_rollout(api, "Deployment", "kube-system", "coredns", ROLLOUT_TIMEOUT, stage="addons")
    return {"pod_cidrs": cidrs, "changed": changed, "network_policy": _network_policy(ctx, api, log)}


def _network_policy(ctx: Any, api: Any, log: Callable[[str], None]) -> bool:
    """kube-network-policies where the lab asks for it (rolled out on every node); removed where it no
    longer does (nothing to remove on a cluster that never had it)."""
    from deploy.cluster import kube, netpol

    k8s = ctx.resolved.lab.kubernetes
    if not k8s.cni.bridge.network_policy:
        for api_version, kind, name, namespace in netpol.OBJECTS:
            if kube.delete_object(api, api_version, kind, name, namespace, stage="addons"):
                log(f"addons: removed {kind} {name} (network_policy is off)")
        return False
    ref, pull = netpol.image(ctx.resolved.lab.bundle.source in ("build", "offline"))
    log(f"addons: NetworkPolicy enforcer {ref} on every node")
    kube.apply(api, netpol.manifests(ref, pull), stage="addons")
    kube.wait_rollout(api, "DaemonSet", netpol.NAMESPACE, netpol.NAME, ROLLOUT_TIMEOUT, stage="addons")
    return True


def _program_node(ctx: Any, member: Member, table: dict[str, tuple[str, str]], log: Callable[[str], None]) -> bool:
    """Conflist, routes and NAT rule on one node; whether its conflist changed."""
    shell = shell_for(member, ctx.outputs_of, ctx.known_hosts, log)
    name = member.node.name
    text = bridge.conflist(table[name][1])
    current = shell.run(f"cat {bridge.CONFLIST} 2>/dev/null || true", what="reading the CNI conflist").stdout
    k8s = ctx.resolved.lab.kubernetes
    commands = [*bridge.service_guard(k8s.service_cidr), *bridge.routes(name, table),
                bridge.masquerade(table[name][1], k8s.pod_cidr)]
    if k8s.cni.bridge.network_policy:
        from deploy.cluster import netpol

        commands.append(netpol.modprobe())
    if current != text:
        log(f"addons: bridge CNI on {name} ({table[name][1]})")
        commands.insert(0, f"mkdir -p /etc/cni/net.d && printf %s {shlex.quote(text)} > {bridge.CONFLIST}")
    shell.run(" && ".join(commands), what=f"programming the bridge CNI on {name}")
    return current != text


def _runtime_classes(ctx: Any) -> Outputs:
    """Apply a RuntimeClass per handled runtime; delete the managed ones no runtime asks for any more."""
    from deploy.cluster import kube, runtimeclasses
    from deploy.cluster.nodes import handled_runtimes

    api = cluster_api(ctx)
    wanted = handled_runtimes(ctx.resolved)
    changed = kube.apply(api, runtimeclasses.manifests(wanted), stage="addons")
    existing = kube.list_names(api, runtimeclasses.API_VERSION, "RuntimeClass", runtimeclasses.MANAGED_SELECTOR,
                               stage="addons")
    removed = runtimeclasses.stale(existing, wanted)
    for name in removed:
        kube.delete_object(api, runtimeclasses.API_VERSION, "RuntimeClass", name, stage="addons")
    return {"runtime_classes": list(wanted), "changed": changed, "removed": removed}


def _executor() -> Any:
    from deploy.steps import per_resource

    return per_resource(run_addon)


run_addon_step = _executor()
