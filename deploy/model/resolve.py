"""Resolution: expand groups into nodes and give every field a value (node -> group -> defaults).

One generic function, :func:`layered`, merges the three layers field by field; only fields
the user actually wrote count, so a group's ``memory`` wins over the defaults' and a node's
over its group's. Addresses on nat/isolated networks are fixed here (explicit ones first,
then the next free host address) so /etc/hosts, DHCP reservations and checks agree.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.model.implied import Implied, fill_nodes
from deploy.model.resolved import GpuDevice, Nic, PortForward, ResolvedImage, ResolvedNetwork, ResolvedNode
from deploy.model.schema import AnyProvider, GroupSpec, ImageSpec, Lab, NetworkSpec, NodeSpec

BUILTIN = NodeSpec.model_validate({"cpus": 1, "memory": "1GiB", "disk": "10GiB", "networks": [], "roles": [],
                                   "nested_virtualization": False, "gpus": [], "ports": [], "extra_disks": [],
                                   "labels": {}, "ssh": True})
NODE_NAME = re.compile(r"^(?P<group>.+)-(?P<index>\d+)$")


@dataclass
class ResolvedLab:
    name: str
    lab: Lab
    providers: dict[str, AnyProvider]
    images: dict[str, ResolvedImage]
    networks: dict[str, ResolvedNetwork]
    nodes: dict[str, ResolvedNode]
    ttl_seconds: int
    sources: dict[str, tuple[str | int, ...]] = field(default_factory=dict)  # node -> YAML path
    implied: Implied = field(default_factory=Implied)  # what the file left out and resolution added
    written: Lab | None = None  # the lab as the file wrote it (``lab`` has the implied entries)
    lab_dir: Path | None = None  # the lab file's folder: relative paths of the file (values files, charts) start here

    def nodes_of(self, selector: str) -> list[ResolvedNode]:
        """Nodes named by a group, a node name, a role, or ``all``."""
        if selector == "all":
            return list(self.nodes.values())
        return [n for n in self.nodes.values() if selector in (n.name, n.group) or selector in n.roles]

    @property
    def runtimes(self) -> tuple[str, ...]:
        """The lab's container runtimes: ``runtimes:``, else ``kubernetes.runtimes``, else runc."""
        if self.lab.runtimes is not None:
            return tuple(self.lab.runtimes)
        return tuple(self.lab.kubernetes.runtimes) if self.lab.kubernetes else ("runc",)


def layered(*layers: NodeSpec) -> dict[str, Any]:
    """Field values from the most specific layer that set them (first layer wins)."""
    merged: dict[str, Any] = {}
    for name in NodeSpec.model_fields:
        for layer in layers:
            if name in layer.model_fields_set and getattr(layer, name) is not None:
                merged[name] = getattr(layer, name)
                break
        else:
            merged[name] = getattr(BUILTIN, name)
    return merged


def node_specs(lab: Lab) -> dict[str, tuple[str | None, int, list[NodeSpec], tuple[str | int, ...]]]:
    """Every node name -> (group, index, layers most specific first, YAML path)."""
    out: dict[str, tuple[str | None, int, list[NodeSpec], tuple[str | int, ...]]] = {}
    for gname, group in lab.groups.items():
        for index in range(1, group.count + 1):
            name = f"{gname}-{index}"
            override = lab.nodes.get(name)
            layers = [override, group, lab.defaults] if override else [group, lab.defaults]
            out[name] = (gname, index, layers, ("groups", gname))
    for name, spec in lab.nodes.items():
        if name not in out and not _is_group_member(name, lab):
            out[name] = (None, 1, [spec, lab.defaults], ("nodes", name))
    return out


def _is_group_member(name: str, lab: Lab) -> bool:
    match = NODE_NAME.match(name)
    return bool(match and match.group("group") in lab.groups)


def resolve(written: Lab) -> ResolvedLab:
    specs = node_specs(written)
    fields = {name: layered(*layers) for name, (_, _, layers, _) in specs.items()}
    lab, implied = fill_nodes(written, fields)
    nodes: dict[str, ResolvedNode] = {}
    for name, (group, index, _, _) in specs.items():
        own = lab.nodes.get(name)
        literal = own is not None and "networks" in own.model_fields_set  # the node's own fixed IPs
        nodes[name] = _node(lab, name, (group, index), 0 if literal else index - 1, fields[name])
    nodes = assign_addresses(lab, nodes)
    return ResolvedLab(
        name=lab.name,
        lab=lab,
        providers=dict(lab.providers),
        images={k: resolve_image(k, v) for k, v in lab.images.items()},
        networks={k: _network(lab, k, v, nodes) for k, v in lab.networks.items()},
        nodes=nodes,
        ttl_seconds=lab.ttl,
        sources={name: path for name, (_, _, _, path) in specs.items()},
        implied=implied,
        written=written,
    )


def _node(lab: Lab, name: str, place: tuple[str | None, int], ip_offset: int,
          fields: dict[str, Any]) -> ResolvedNode:
    """``ip_offset`` moves group-level fixed IPs along the group (first node's address, then +1)."""
    group, index = place
    image = fields["image"] or ""
    return ResolvedNode(
        name=name,
        group=group,
        index=index,
        provider=fields["provider"],
        image=image,
        cpus=fields["cpus"],
        memory_mib=fields["memory"] // 2**20,
        disk_gib=max(1, fields["disk"] // 2**30),
        nics=tuple(_nics(lab, name, ip_offset, fields["networks"])),
        roles=tuple(fields["roles"]),
        nested_virtualization=fields["nested_virtualization"],
        gpus=tuple(GpuDevice(g.pci.lower()) for g in fields["gpus"]),
        ports=tuple(PortForward(p.guest, p.host) for p in fields["ports"]),
        ssh=fields["ssh"],
        ssh_user=fields["ssh_user"] or _image_user(lab, image),
        address=fields["address"] or _group_address(lab, group, index),
        ssh_port=fields["ssh_port"] or 22,
        ssh_key=fields["ssh_key"],
        extra_disks_gib=tuple(max(1, d // 2**30) for d in fields["extra_disks"]),
        labels=dict(fields["labels"]),
        join=fields["join"],
    )


def _only(mapping: dict[str, Any]) -> str:
    return next(iter(mapping)) if len(mapping) == 1 else ""


def _image_user(lab: Lab, image: str) -> str:
    spec = lab.images.get(image)
    return (spec.user if spec else None) or "root"


def _group_address(lab: Lab, group: str | None, index: int) -> str | None:
    spec: GroupSpec | None = lab.groups.get(group) if group else None
    if spec and spec.addresses and index <= len(spec.addresses):
        return spec.addresses[index - 1]
    return None


def _nics(lab: Lab, name: str, ip_offset: int, specs: list[Any]) -> list[Nic]:
    nics = []
    for spec in specs:
        net = lab.networks.get(spec.network)
        ip = str(ipaddress.ip_address(spec.ip) + ip_offset) if spec.ip else None
        nics.append(Nic(spec.network, net.mode if net else "unknown", ip, mac_for(lab.name, name, spec.network)))
    return nics


def mac_for(lab: str, node: str, network: str) -> str:
    """A stable, locally administered MAC (QEMU's 52:54:00 prefix) per lab, node and network."""
    digest = hashlib.sha256(f"{lab}/{node}/{network}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def assign_addresses(lab: Lab, nodes: dict[str, ResolvedNode]) -> dict[str, ResolvedNode]:
    """Give every NIC on a nat/isolated network an address: its fixed one, or the next free."""
    from dataclasses import replace

    for net_name, net in lab.networks.items():
        if net.mode not in ("nat", "isolated") or not net.cidr:
            continue
        network = ipaddress.ip_network(net.cidr)
        taken = {n.ip for node in nodes.values() for n in node.nics if n.network == net_name and n.ip}
        free = (str(h) for h in itertools.islice(network.hosts(), 9, None) if str(h) not in taken)
        for name, node in sorted(nodes.items()):
            nics = tuple(replace(n, ip=n.ip or next(free, None)) if n.network == net_name else n
                         for n in node.nics)
            nodes[name] = replace(node, nics=nics)
    return nodes


def resolve_image(name: str, spec: ImageSpec) -> ResolvedImage:
    build = spec.build
    return ResolvedImage(
        name=name,
        source=spec.source,
        distro=build.distro if build else None,
        release=build.release if build else None,
        packages=tuple(build.packages) if build else (),
        path=spec.file or spec.ova,
        url=spec.url,
        sha256=spec.sha256.lower() if spec.sha256 else None,
        template=spec.template,
    )


def _network(lab: Lab, name: str, spec: NetworkSpec, nodes: dict[str, ResolvedNode]) -> ResolvedNetwork:
    reservations = tuple(
        (node.name, nic.mac or "", nic.ip)
        for node in nodes.values() for nic in node.nics if nic.network == name and nic.ip
    )
    return ResolvedNetwork(
        name=name,
        provider=spec.provider or lab.defaults.provider or _only(lab.providers),
        mode=spec.mode,
        cidr=spec.cidr,
        dhcp=spec.dhcp,
        bridge=spec.bridge,
        reservations=reservations,
        domain=spec.domain or lab.system.domain or lab.name,
    )
