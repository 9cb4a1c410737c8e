"""The ``kubernetes:`` section at ``validate``: what kubeadm, etcd or the CNI would refuse later.

    check_kubernetes_version   the minor is one the catalog pins (the bundle and the kubeadm config know it)
    check_cluster_cidrs        pod and service CIDRs are networks, apart from each other and the lab's networks
    check_control_planes       an odd number of control-plane nodes (etcd needs a majority), not also workers
    check_cni                  workers need a CNI to reach each other's pods
    check_vip                  more than one control plane needs kubernetes.vip: a free address of the lab
                               network the control planes share (keepalived moves it between them)
    check_k3s_source           k3s comes from its install script or mirrors.files (no bundle artifact carries it)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from deploy.configure.catalog import K3S_FILE
from deploy.errors import Problem
from deploy.model.load import LoadedLab
from deploy.model.problems import problem
from deploy.model.resolve import ResolvedLab
from deploy.model.resolved import ResolvedNetwork, ResolvedNode
from deploy.model.schema_kubernetes import KubernetesSpec

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _minors() -> list[str]:
    from deploy.bundle.catalog import VERSIONS

    return sorted(VERSIONS)


def supported_minor(version: str) -> bool:
    return ".".join(version.split(".")[:2]) in _minors()


def check_kubernetes_version(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    k8s = resolved.lab.kubernetes
    if k8s is not None and not supported_minor(k8s.version):
        yield problem(loaded, ("kubernetes", "version"),
                      f"Kubernetes {k8s.version} is not supported; the supported minors are {', '.join(_minors())}",
                      f'set kubernetes.version: "{_minors()[-1]}" (or a patch release of a supported minor)')


def _cidr(loaded: LoadedLab, k8s: KubernetesSpec, key: str) -> tuple[Network | None, list[Problem]]:
    text = getattr(k8s, key)
    try:
        return ipaddress.ip_network(text, strict=True), []
    except ValueError as exc:
        return None, [problem(loaded, ("kubernetes", key), f"kubernetes.{key} {text!r} is not a network: {exc}",
                              "write it as an address with a prefix length and no host bits, e.g. 10.244.0.0/16")]


def check_cluster_cidrs(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    k8s = resolved.lab.kubernetes
    if k8s is None:
        return
    pods, bad_pods = _cidr(loaded, k8s, "pod_cidr")
    services, bad_services = _cidr(loaded, k8s, "service_cidr")
    yield from (*bad_pods, *bad_services)
    if pods is not None and services is not None and pods.overlaps(services):
        yield problem(loaded, ("kubernetes", "service_cidr"),
                      f"kubernetes.service_cidr {services} overlaps pod_cidr {pods}",
                      "give services and pods separate ranges, e.g. pod_cidr 10.244.0.0/16, service_cidr 10.96.0.0/12")
    for key, cluster in (("pod_cidr", pods), ("service_cidr", services)):
        for net in resolved.networks.values():
            lab_net = _network_of(net.cidr)
            if cluster is not None and lab_net is not None and cluster.overlaps(lab_net):
                yield problem(loaded, ("kubernetes", key),
                              f"kubernetes.{key} {cluster} overlaps network {net.name} ({lab_net})",
                              "pick a cluster range that no lab network uses; nodes would route pod or service "
                              "traffic onto the lab network")


def _network_of(cidr: str | None) -> Network | None:
    try:
        return ipaddress.ip_network(cidr, strict=False) if cidr else None
    except ValueError:
        return None  # check_networks reports a malformed cidr


def check_control_planes(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    k8s = resolved.lab.kubernetes
    if k8s is None or k8s.control_plane not in resolved.lab.groups:
        return
    count = sum(1 for node in resolved.nodes.values() if node.group == k8s.control_plane)
    if count and count % 2 == 0:
        yield problem(loaded, ("groups", k8s.control_plane, "count"),
                      f"group {k8s.control_plane} has {count} control-plane nodes; etcd needs a majority, so an "
                      f"even number tolerates no more failures than {count - 1}",
                      f"use {count - 1} or {count + 1} control-plane nodes")
    if k8s.control_plane in k8s.worker_groups:
        yield problem(loaded, ("kubernetes", "workers"),
                      f"group {k8s.control_plane} is both kubernetes.control_plane and a worker group",
                      "list only worker groups in kubernetes.workers; a single-node cluster leaves workers unset "
                      "(its control plane then takes workloads)")


def check_cni(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    k8s = resolved.lab.kubernetes
    if k8s is None or k8s.cni is not None or not k8s.worker_groups:
        return
    yield problem(loaded, ("kubernetes", "workers"),
                  f"kubernetes.workers ({', '.join(k8s.worker_groups)}) need a CNI to carry pod traffic between "
                  "nodes, and kubernetes.cni is not set",
                  "add kubernetes.cni: {bridge: {}} (routes between the nodes' pod CIDRs) or {cilium: {version: ...}}")


# providers whose nat/isolated networks give the host the first address (libvirt's bridge: the gateway, and
# dnsmasq's DHCP hands out the upper half of the range)
GATEWAY_PROVIDERS = frozenset({"libvirt", "vagrant"})


def _control_planes(resolved: ResolvedLab, k8s: KubernetesSpec) -> list[ResolvedNode]:
    return sorted((n for n in resolved.nodes.values() if n.group == k8s.control_plane), key=lambda n: n.name)


def _lab_network(resolved: ResolvedLab, node: ResolvedNode) -> ResolvedNetwork | None:
    """The network of the node's lab address (its first nat/isolated NIC with an address: what kubeadm
    advertises, see :func:`deploy.inputs.lab_address`)."""
    nic = next((nic for nic in node.nics if nic.ip and nic.mode in ("nat", "isolated")), None)
    return resolved.networks.get(nic.network) if nic else None


def check_vip(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    k8s = resolved.lab.kubernetes
    if k8s is None or k8s.control_plane not in resolved.lab.groups:
        return
    planes = _control_planes(resolved, k8s)
    if k8s.vip is None:
        if len(planes) > 1:
            yield problem(loaded, ("kubernetes", "control_plane"),
                          f"group {k8s.control_plane} has {len(planes)} control-plane nodes, and kubernetes.vip is "
                          "not set: nodes reach the API server at one address, which must move to a healthy "
                          "control plane", "add kubernetes.vip: a free address of the lab network the control "
                          "planes share (keepalived holds it on one of them)")
        return
    networks = {net.name: net for node in planes if (net := _lab_network(resolved, node))}
    if len(networks) != 1 or any(_lab_network(resolved, node) is None for node in planes):
        yield problem(loaded, ("kubernetes", "vip"),
                      f"kubernetes.vip {k8s.vip} needs the control planes on one lab network; they are on "
                      f"{', '.join(sorted(networks)) or 'none'}",
                      "give every control-plane node its first nat or isolated NIC on the same network")
        return
    yield from _vip_in(loaded, resolved, k8s.vip, next(iter(networks.values())))


def _vip_in(loaded: LoadedLab, resolved: ResolvedLab, vip: str, net: ResolvedNetwork) -> Iterator[Problem]:
    where = ("kubernetes", "vip")
    cidr = _network_of(net.cidr)
    if cidr is None:
        return
    address = ipaddress.ip_address(vip)
    if address not in cidr or address in (cidr.network_address, cidr.broadcast_address):
        yield problem(loaded, where, f"kubernetes.vip {vip} is not a host address of network {net.name} ({cidr}), "
                      "which the control planes share", f"pick a free address inside {cidr}")
        return
    owner = next((n.name for n in resolved.nodes.values() if vip in (n.address, *(nic.ip for nic in n.nics))), None)
    if owner is not None:
        yield problem(loaded, where, f"kubernetes.vip {vip} is also the address of node {owner}",
                      f"pick an address of {cidr} that no node has")
        return
    yield from _vip_clear_of_provider(loaded, resolved, address, net, cidr)


def _vip_clear_of_provider(loaded: LoadedLab, resolved: ResolvedLab, address: ipaddress.IPv4Address
                           | ipaddress.IPv6Address, net: ResolvedNetwork, cidr: Network) -> Iterator[Problem]:
    provider = resolved.providers.get(net.provider)
    if provider is None or provider.kind not in GATEWAY_PROVIDERS or (net.mode == "isolated" and not net.dhcp):
        return  # a bare isolated bridge: the host has no address on it, nobody hands addresses out
    hosts = cidr.num_addresses - 2
    gateway, dhcp_first = cidr.network_address + 1, cidr.network_address + 1 + hosts // 2
    if address == gateway:
        yield problem(loaded, ("kubernetes", "vip"),
                      f"kubernetes.vip {address} is the gateway of network {net.name}: the {provider.kind} host "
                      "has it", f"pick a free address between {gateway + 1} and {dhcp_first - 1}")
    elif int(address) >= int(dhcp_first):  # same family: the address lies inside cidr
        yield problem(loaded, ("kubernetes", "vip"),
                      f"kubernetes.vip {address} lies in the DHCP range of network {net.name} ({dhcp_first} "
                      "and up), where another machine may be given it",
                      f"pick a free address between {gateway + 1} and {dhcp_first - 1}")


def check_k3s_source(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    k8s = resolved.lab.kubernetes
    if k8s is None or k8s.distribution != "k3s":
        return
    mirrors = resolved.lab.mirrors
    if K3S_FILE in mirrors.checksums and not mirrors.files:
        yield problem(loaded, ("mirrors", "checksums", K3S_FILE), "mirrors.checksums.k3s pins a k3s binary, and "
                      "mirrors.files, where the nodes would fetch it, is not set",
                      "set mirrors: {files: http://your-file-mirror/} (serving the file k3s)")
    if resolved.lab.bundle.source != "offline" or (mirrors.files and K3S_FILE in mirrors.checksums):
        return
    yield problem(loaded, ("kubernetes", "distribution"),
                  "k3s comes from its upstream install script or mirrors.files, and bundle.source 'offline' never "
                  "touches upstream: no bundle artifact carries k3s (its module is not on this machine's Go module "
                  "proxy) and mirrors.checksums has no k3s",
                  "serve the k3s binary through mirrors: {files: URL, checksums: {k3s: <sha256>}}, set bundle: "
                  "{source: auto} (nodes fetch get.k3s.io), or distribution: kubeadm for an offline cluster "
                  "from the bundle")
