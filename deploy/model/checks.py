"""Semantic checks, before any side effect: every problem of the lab at once, each with its line.

Each check is a small generator of :class:`Problem`; :func:`check_lab` runs them all and
raises one ConfigError when any found something.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from deploy.errors import ConfigError, Problem
from deploy.model.checks_addons import ADDON_CHECKS
from deploy.model.checks_configure import (
    check_esxi_join,
    check_kubernetes_apt,
    check_mirrors,
    check_roles,
    check_runtime_files,
    check_ssh_less,
    check_system,
)
from deploy.model.checks_kubernetes import (
    check_cluster_cidrs,
    check_cni,
    check_control_planes,
    check_k3s_source,
    check_kubernetes_version,
    check_vip,
)
from deploy.model.checks_typed_addons import TYPED_ADDON_CHECKS
from deploy.model.implied import MGMT, USER_NETWORKS
from deploy.model.load import LoadedLab
from deploy.model.problems import field_path, names, problem
from deploy.model.resolve import NODE_NAME, ResolvedLab

Check = Callable[[LoadedLab, ResolvedLab], Iterator[Problem]]
_NODE_IN_MESSAGE = re.compile(r"^node \S+?(?=[: ])|(?<=left for )\S+$")
IMAGE_SOURCES = {"libvirt": {"build", "file", "url"}, "vagrant": {"build", "file", "url"},
                 "vsphere": {"template", "ova"}, "existing": set()}


def check_lab(loaded: LoadedLab, resolved: ResolvedLab) -> None:
    problems = _merge_per_node([p for check in CHECKS for p in check(loaded, resolved)])
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.location.line or 0, p.location.column or 0)))


def _merge_per_node(problems: list[Problem]) -> list[Problem]:
    """One mistake in a group or the defaults is one problem, not one per node of the group."""
    same: dict[tuple[object, ...], list[Problem]] = {}
    for found in problems:
        key = (found.location, found.hint, _NODE_IN_MESSAGE.sub("*", found.message))
        same.setdefault(key, []).append(found)
    merged = []
    for group in same.values():
        extra = len(group) - 1
        first = group[0]
        merged.append(replace(first, message=f"{first.message} (and {extra} more node{'s' * (extra > 1)})")
                      if extra else first)
    return merged


def check_node_references(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    lab = resolved.lab
    for node in resolved.nodes.values():
        if node.provider not in lab.providers:
            path = field_path(loaded, resolved, node.name, "provider")
            what = f"unknown provider {node.provider!r}" if node.provider else "no provider"
            yield problem(loaded, path, f"node {node.name}: {what}",
                           f"set provider: in defaults or the group; defined providers: {names(lab.providers)}")
            continue
        yield from _image_reference(loaded, resolved, node.name)
        for nic in node.nics:
            if nic.network not in lab.networks:
                yield problem(loaded, field_path(loaded, resolved, node.name, "networks"),
                               f"node {node.name}: unknown network {nic.network!r}",
                               f"defined networks: {names(lab.networks)}")
            elif resolved.networks[nic.network].provider != node.provider:
                net_provider = resolved.networks[nic.network].provider
                yield problem(loaded, field_path(loaded, resolved, node.name, "networks"),
                               f"node {node.name} (provider {node.provider}) is attached to network "
                               f"{nic.network} of provider {net_provider}",
                               "a node's networks must belong to the node's own provider")


def _image_reference(loaded: LoadedLab, resolved: ResolvedLab, name: str) -> Iterator[Problem]:
    node = resolved.nodes[name]
    kind = resolved.providers[node.provider].kind
    if kind == "existing":
        if not node.address:
            yield problem(loaded, resolved.sources[name], f"node {name}: an existing host needs address:",
                           "set address: on the node, or addresses: [..] on its group")
        return
    path = field_path(loaded, resolved, name, "image")
    if node.image not in resolved.images:
        what = f"unknown image {node.image!r}" if node.image else "no image"
        yield problem(loaded, path, f"node {name}: {what}",
                      f"set image: in defaults or the group; defined images: {names(resolved.images)}")
    elif kind in IMAGE_SOURCES and resolved.images[node.image].source not in IMAGE_SOURCES[kind]:
        source = resolved.images[node.image].source
        yield problem(loaded, path, f"node {name}: a {kind} provider cannot use a {source}: image",
                       f"use an image with one of: {', '.join(sorted(IMAGE_SOURCES[kind]))}")


def check_group_overrides(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    for name in resolved.lab.nodes:
        match = NODE_NAME.match(name)
        if match and match.group("group") in resolved.lab.groups and name not in resolved.nodes:
            count = resolved.lab.groups[match.group("group")].count
            yield problem(loaded, ("nodes", name),
                           f"node {name} overrides a node that group {match.group('group')} does not have "
                           f"(count is {count})", "raise the group's count or rename the node")


def check_networks(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    for name, net in resolved.networks.items():
        if net.provider not in resolved.providers:
            yield problem(loaded, ("networks", name, "provider") if ("networks", name, "provider")
                           in loaded.positions.at else ("networks", name),
                           f"network {name}: unknown provider {net.provider!r}",
                           f"defined providers: {names(resolved.providers)}")
    by_provider = sorted((n for n in resolved.networks.values() if n.cidr), key=lambda n: n.provider)
    for provider, nets in itertools.groupby(by_provider, key=lambda n: n.provider):
        for a, b in itertools.combinations(list(nets), 2):
            if ipaddress.ip_network(a.cidr or "").overlaps(ipaddress.ip_network(b.cidr or "")):
                yield problem(loaded, ("networks", b.name, "cidr"),
                               f"network {b.name} ({b.cidr}) overlaps network {a.name} ({a.cidr}) "
                               f"on provider {provider}", "give each network of a provider its own range")


def check_addresses(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    seen: Counter[tuple[str, str]] = Counter()
    cidrs = {n.name: ipaddress.ip_network(n.cidr) for n in resolved.networks.values() if n.cidr}
    for node in resolved.nodes.values():
        for nic in node.nics:
            net = resolved.networks.get(nic.network)
            if not (net and net.cidr):
                continue
            if nic.ip is None:
                yield problem(loaded, ("networks", net.name, "cidr"),
                               f"network {net.name} ({net.cidr}) has no free address left for {node.name}",
                               "use a larger cidr")
            elif ipaddress.ip_address(nic.ip) not in cidrs[net.name]:
                yield problem(loaded, field_path(loaded, resolved, node.name, "networks"),
                               f"node {node.name}: address {nic.ip} is outside network {net.name} ({net.cidr})",
                               "pick an address inside the network's cidr")
            else:
                seen[(net.name, nic.ip)] += 1
                if seen[(net.name, nic.ip)] == 2:
                    yield problem(loaded, field_path(loaded, resolved, node.name, "networks"),
                                   f"address {nic.ip} on network {net.name} is given to more than one node",
                                   "give each node its own fixed address")


def check_kubernetes(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    k8s = resolved.lab.kubernetes
    if k8s is None:
        return
    for key, groups in (("control_plane", [k8s.control_plane]), ("workers", k8s.worker_groups)):
        for group in groups:
            if group not in resolved.lab.groups:
                yield problem(loaded, ("kubernetes", key), f"kubernetes.{key} names unknown group {group!r}",
                               f"defined groups: {names(resolved.lab.groups)}")
    if k8s.gpu_operator and not any(n.gpus for n in resolved.nodes.values()):
        yield problem(loaded, ("kubernetes", "gpu_operator"), "the GPU operator needs at least one node with gpus:",
                       "add gpus: [{pci: '0000:3b:00.0'}] to a node, or remove gpu_operator")


def check_reachable(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    """A libvirt machine needs a user-mode NIC: its SSH port forward is the host's only way in."""
    for node in resolved.nodes.values():
        spec = resolved.providers.get(node.provider)
        if spec is None or spec.kind not in USER_NETWORKS or not node.ssh \
                or any(n.mode in ("user", "unknown") for n in node.nics):
            continue
        nets = ", ".join(f"{n.network} ({n.mode})" for n in node.nics)
        mgmt = _user_network(resolved, node.provider)
        define = "" if mgmt in resolved.networks else f", with networks: {{{mgmt}: {{provider: {node.provider}, " \
            "mode: user}}"
        yield problem(loaded, field_path(loaded, resolved, node.name, "networks"),
                      f"node {node.name}: the host cannot reach it over {nets}: a libvirt machine is reached "
                      "through the SSH port forward of a user-mode NIC",
                      f"add a user-mode network, e.g. networks: [{mgmt}, {node.nics[0].network}]{define}")


def _user_network(resolved: ResolvedLab, provider: str) -> str:
    """The provider's user-mode network, or a free name for one (as the implied network is named)."""
    own = (n.name for n in resolved.networks.values() if n.mode == "user" and n.provider == provider)
    return next(own, MGMT if MGMT not in resolved.networks else f"{provider}-{MGMT}")


def _selectors(resolved: ResolvedLab) -> set[str]:
    lab = resolved.lab
    roles = {r for n in resolved.nodes.values() for r in n.roles}
    return {"all", *lab.groups, *resolved.nodes, *roles}


def check_host_selectors(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    valid = _selectors(resolved)
    entries = [("verify", i, v.hosts) for i, v in enumerate(resolved.lab.verify)]
    entries += [("ansible", i, a.hosts) for i, a in enumerate(resolved.lab.ansible)]
    for section, index, hosts in entries:
        if hosts not in valid:
            yield problem(loaded, (section, index, "hosts"),
                           f"{section}[{index}].hosts names {hosts!r}, which is no group, node or role",
                           f"use all, a group ({names(resolved.lab.groups)}) or a node name")


def check_verify_files(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    base = Path(loaded.file).parent
    for index, entry in enumerate(resolved.lab.verify):
        if entry.pytest and not (base / entry.pytest).is_file():
            yield problem(loaded, ("verify", index, "pytest"), f"test file {entry.pytest} does not exist",
                           f"paths are relative to the lab file's folder ({base})")


def check_host_ports(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    seen: dict[tuple[str, int], str] = {}
    for node in resolved.nodes.values():
        for port in node.ports:
            if port.host is None:
                continue
            key = (node.provider, port.host)
            if key in seen:
                yield problem(loaded, field_path(loaded, resolved, node.name, "ports"),
                               f"host port {port.host} is forwarded for both {seen[key]} and {node.name}",
                               "leave host: out to let the provider pick a free port")
            seen[key] = node.name


from deploy.model.checks_bundle import check_bundle_catalog  # noqa: E402
from deploy.model.provider_checks import check_provider_capabilities, check_provider_kinds  # noqa: E402

CHECKS: list[Check] = [check_provider_kinds, check_provider_capabilities,
                       check_node_references, check_group_overrides, check_networks, check_addresses,
                       check_reachable, check_kubernetes, check_host_selectors, check_verify_files,
                       check_host_ports, check_roles, check_ssh_less, check_esxi_join, check_kubernetes_apt,
                       check_runtime_files, check_mirrors, check_system, check_bundle_catalog,
                       check_kubernetes_version, check_cluster_cidrs, check_control_planes, check_cni, check_vip,
                       check_k3s_source, *ADDON_CHECKS,
                       *TYPED_ADDON_CHECKS]
