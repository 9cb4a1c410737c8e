"""Pure builders and readers of libvirt XML: domains, networks, volumes and lab metadata.

Nothing here talks to libvirt; every function maps plain values to XML text (or back), so the
shapes are unit-tested by parsing the result. Elements in foreign namespaces are written with
literal prefixes (``ld:lab``, ``qemu:arg``) and an ``xmlns:`` attribute on the element that
libvirt stores, exactly as libvirt itself prints them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime

from deploy.providers.base import Tags

NS = "https://labdeploy.dev/xmlns/1"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
META_KEY = "ld"
USER_NETDEV = "ldmgmt"
USER_NIC_SLOT = "0x1e"  # QEMU args come before libvirt's devices: pin a slot libvirt fills last


@dataclass(frozen=True)
class LabMeta:
    """What labdeploy writes into a resource's ``<metadata>``."""

    tags: Tags
    provider: str = ""
    node: str = ""
    ports: dict[int, int] = field(default_factory=dict)  # guest -> host
    volumes: tuple[str, ...] = ()
    ssh_user: str = "root"
    addresses: dict[str, str] = field(default_factory=dict)  # lab network -> fixed address
    cidr: str = ""  # networks: the lab's subnet (kept here too when the network has no <ip>)


@dataclass(frozen=True)
class Disk:
    pool: str
    volume: str
    target: str  # vda, vdb, hdc
    device: str = "disk"  # disk | cdrom
    fmt: str = "qcow2"

    @property
    def bus(self) -> str:
        return "ide" if self.device == "cdrom" else "virtio"


@dataclass(frozen=True)
class UserNic:
    """User-mode NIC: host loopback port forwards into the guest."""

    mac: str
    forwards: dict[int, int]  # guest -> host
    bind: str = "127.0.0.1"
    backend: str = "slirp"  # slirp (QEMU args) | passt (libvirt backend)


@dataclass(frozen=True)
class DomainSpec:
    name: str
    accel: str  # kvm | tcg
    cpus: int
    memory_mib: int
    disks: tuple[Disk, ...]
    networks: tuple[tuple[str, str], ...]  # (libvirt network, mac)
    meta: LabMeta
    serial_log: str
    user_nic: UserNic | None = None
    nested: bool = False
    gpus: tuple[str, ...] = ()  # PCI addresses 0000:3b:00.0


# ---------------------------------------------------------------- metadata


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def meta_element(meta: LabMeta) -> ET.Element:
    """``<ld:lab xmlns:ld=...>`` holding tags, node, ports and volumes."""
    root = ET.Element(f"{META_KEY}:lab", {f"xmlns:{META_KEY}": NS})
    for tag, text in (
        ("name", meta.tags.lab),
        ("run-id", meta.tags.run_id),
        ("created", _iso(meta.tags.created)),
        ("expires", _iso(meta.tags.expires)),
        ("state", meta.tags.state or ""),
        ("provider", meta.provider),
        ("node", meta.node),
        ("ssh-user", meta.ssh_user),
        ("cidr", meta.cidr),
    ):
        ET.SubElement(root, f"{META_KEY}:{tag}").text = text
    ports = ET.SubElement(root, f"{META_KEY}:ports")
    for guest, host in sorted(meta.ports.items()):
        ET.SubElement(ports, f"{META_KEY}:port", guest=str(guest), host=str(host))
    volumes = ET.SubElement(root, f"{META_KEY}:volumes")
    for name in meta.volumes:
        ET.SubElement(volumes, f"{META_KEY}:volume", name=name)
    addresses = ET.SubElement(root, f"{META_KEY}:addresses")
    for net, ip in sorted(meta.addresses.items()):
        ET.SubElement(addresses, f"{META_KEY}:address", network=net, ip=ip)
    return root


def meta_xml(meta: LabMeta) -> str:
    return ET.tostring(meta_element(meta), encoding="unicode")


def _text(node: ET.Element, tag: str) -> str:
    child = node.find(f"{{{NS}}}{tag}")
    return (child.text or "") if child is not None else ""


def _date(text: str) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def parse_meta(xml_text: str) -> LabMeta | None:
    """The labdeploy metadata of a domain or network XML document, or None."""
    root = ET.fromstring(xml_text)
    lab = root.find(f"metadata/{{{NS}}}lab")
    if lab is None:
        lab = root if root.tag == f"{{{NS}}}lab" else None
    if lab is None:
        return None
    created = _date(_text(lab, "created"))
    tags = Tags(_text(lab, "name"), _text(lab, "run-id"), created or datetime.min, _date(_text(lab, "expires")),
                _text(lab, "state") or None)
    ports = {int(p.get("guest", "0")): int(p.get("host", "0")) for p in lab.iterfind(f"{{{NS}}}ports/{{{NS}}}port")}
    volumes = tuple(v.get("name", "") for v in lab.iterfind(f"{{{NS}}}volumes/{{{NS}}}volume"))
    user = _text(lab, "ssh-user") or "root"
    addresses = {a.get("network", ""): a.get("ip", "") for a in lab.iterfind(f"{{{NS}}}addresses/{{{NS}}}address")}
    return LabMeta(
        tags, _text(lab, "provider"), _text(lab, "node"), ports, volumes, user, addresses, _text(lab, "cidr")
    )


# ---------------------------------------------------------------- networks


def dhcp_range(cidr: str) -> tuple[str, str, str, str]:
    """(gateway, netmask, first, last): gateway is the first host, DHCP the upper half."""
    net = ipaddress.ip_network(cidr, strict=False)
    hosts = list(net.hosts()) if net.num_addresses <= 65536 else None
    if hosts is None:
        first, last = net.network_address + net.num_addresses // 2, net.broadcast_address - 1
        return str(net.network_address + 1), str(net.netmask), str(first), str(last)
    if len(hosts) < 4:
        raise ValueError(f"network {cidr} is too small for a gateway and DHCP range (need /29 or larger)")
    return str(hosts[0]), str(net.netmask), str(hosts[len(hosts) // 2]), str(hosts[-1])


def network_xml(
    name: str,
    mode: str,
    meta: LabMeta,
    *,
    cidr: str | None = None,
    bridge: str | None = None,
    domain: str | None = None,
    reservations: tuple[tuple[str, str, str], ...] = (),
    dhcp: bool = True,
) -> str:
    """A libvirt network for ``mode`` isolated | nat | bridge with DHCP reservations and DNS.

    An isolated network without ``dhcp`` is a bare bridge: no ``<ip>`` (so no host address and
    no dnsmasq), guests carry static addresses from their seed and the host cannot talk to them.
    """
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "metadata").append(meta_element(meta))
    if mode == "bridge":
        ET.SubElement(root, "forward", mode="bridge")
        ET.SubElement(root, "bridge", name=bridge or "")
        return ET.tostring(root, encoding="unicode")
    if mode == "nat":
        ET.SubElement(root, "forward", mode="nat")
    ET.SubElement(root, "bridge", stp="on", delay="0")
    if mode == "isolated" and not dhcp:
        return ET.tostring(root, encoding="unicode")
    if domain:
        ET.SubElement(root, "domain", name=domain, localOnly="yes")
    if cidr:
        _add_ip(root, cidr, reservations)
    return ET.tostring(root, encoding="unicode")


def _add_ip(root: ET.Element, cidr: str, reservations: tuple[tuple[str, str, str], ...]) -> None:
    gateway, netmask, first, last = dhcp_range(cidr)
    dns = ET.SubElement(root, "dns")
    for node, _mac, ip in reservations:
        ET.SubElement(ET.SubElement(dns, "host", ip=ip), "hostname").text = node
    ip_el = ET.SubElement(root, "ip", address=gateway, netmask=netmask)
    dhcp = ET.SubElement(ip_el, "dhcp")
    ET.SubElement(dhcp, "range", start=first, end=last)
    for node, mac, ip in reservations:
        ET.SubElement(dhcp, "host", mac=mac, name=node, ip=ip)


def network_cidrs(xml_text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every subnet a libvirt network XML declares in its ``<ip>`` elements."""
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for ip in ET.fromstring(xml_text).iterfind("ip"):
        address = ip.get("address")
        if not address:
            continue
        mask = ip.get("prefix") or ip.get("netmask") or ("64" if ":" in address else "24")
        nets.append(ipaddress.ip_network(f"{address}/{mask}", strict=False))
    return nets


def static_cidr(xml_text: str) -> str | None:
    """The lab subnet of a labdeploy network without ``<ip>`` (guests set their own addresses)."""
    if ET.fromstring(xml_text).find("ip") is not None:
        return None
    meta = parse_meta(xml_text)
    return meta.cidr if meta is not None and meta.cidr else None


def network_bridge(xml_text: str) -> str:
    bridge = ET.fromstring(xml_text).find("bridge")
    return bridge.get("name", "") if bridge is not None else ""


# ---------------------------------------------------------------- volumes


def volume_xml(name: str, capacity_bytes: int, fmt: str, *, backing: str | None = None, mode: str = "0600") -> str:
    """A storage volume; ``backing`` (a path) makes it a copy-on-write overlay."""
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(capacity_bytes)
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "format", type=fmt)
    ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = mode
    if backing:
        store = ET.SubElement(root, "backingStore")
        ET.SubElement(store, "path").text = backing
        ET.SubElement(store, "format", type="qcow2")
    return ET.tostring(root, encoding="unicode")


def pool_xml(name: str, path: str) -> str:
    root = ET.Element("pool", type="dir")
    ET.SubElement(root, "name").text = name
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "path").text = path
    ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = "0711"
    return ET.tostring(root, encoding="unicode")


# ---------------------------------------------------------------- domains


def mac_for(*parts: str) -> str:
    """A stable locally administered MAC (QEMU's 52:54:00 prefix) derived from ``parts``."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def domain_xml(spec: DomainSpec) -> str:
    """The whole domain: machine, CPU, disks, NICs, serial log, GPUs, metadata, user-mode NIC."""
    root = ET.Element("domain", type="kvm" if spec.accel == "kvm" else "qemu")
    if spec.user_nic and spec.user_nic.backend == "slirp":
        root.set("xmlns:qemu", QEMU_NS)
    ET.SubElement(root, "name").text = spec.name
    ET.SubElement(root, "metadata").append(meta_element(spec.meta))
    ET.SubElement(root, "memory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(root, "vcpu").text = str(spec.cpus)
    os_el = ET.SubElement(root, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    ET.SubElement(os_el, "boot", dev="hd")
    features = ET.SubElement(root, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    _add_cpu(root, spec)
    ET.SubElement(root, "clock", offset="utc")
    ET.SubElement(root, "on_crash").text = "destroy"
    _add_devices(ET.SubElement(root, "devices"), spec)
    if spec.user_nic and spec.user_nic.backend == "slirp":
        _add_slirp(root, spec.user_nic)
    return ET.tostring(root, encoding="unicode")


def _add_cpu(root: ET.Element, spec: DomainSpec) -> None:
    if spec.accel != "kvm":
        return  # TCG: QEMU's default model; host-passthrough needs KVM
    cpu = ET.SubElement(root, "cpu", mode="host-passthrough", check="none")
    if spec.nested:
        ET.SubElement(cpu, "feature", policy="optional", name="vmx")
        ET.SubElement(cpu, "feature", policy="optional", name="svm")


def _add_devices(devices: ET.Element, spec: DomainSpec) -> None:
    for disk in spec.disks:
        _add_disk(devices, disk)
    if spec.user_nic and spec.user_nic.backend == "passt":
        _add_passt(devices, spec.user_nic)
    for network, mac in spec.networks:
        iface = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(iface, "source", network=network)
        ET.SubElement(iface, "mac", address=mac)
        ET.SubElement(iface, "model", type="virtio")
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "log", file=spec.serial_log, append="off")
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(ET.SubElement(devices, "console", type="pty"), "target", type="serial", port="0")
    rng = ET.SubElement(devices, "rng", model="virtio")
    ET.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    for pci in spec.gpus:
        _add_hostdev(devices, pci)


def _add_disk(devices: ET.Element, disk: Disk) -> None:
    el = ET.SubElement(devices, "disk", type="volume", device=disk.device)
    ET.SubElement(el, "driver", name="qemu", type=disk.fmt)
    ET.SubElement(el, "source", pool=disk.pool, volume=disk.volume)
    ET.SubElement(el, "target", dev=disk.target, bus=disk.bus)
    if disk.device == "cdrom":
        ET.SubElement(el, "readonly")


def _add_hostdev(devices: ET.Element, pci: str) -> None:
    domain, bus, rest = pci.split(":")
    slot, function = rest.split(".")
    host = ET.SubElement(devices, "hostdev", mode="subsystem", type="pci", managed="yes")
    ET.SubElement(
        ET.SubElement(host, "source"),
        "address",
        domain=f"0x{domain}",
        bus=f"0x{bus}",
        slot=f"0x{slot}",
        function=f"0x{function}",
    )


def _add_passt(devices: ET.Element, nic: UserNic) -> None:
    iface = ET.SubElement(devices, "interface", type="user")
    ET.SubElement(iface, "mac", address=nic.mac)
    ET.SubElement(iface, "backend", type="passt")
    ET.SubElement(iface, "model", type="virtio")
    for guest, host in sorted(nic.forwards.items()):
        forward = ET.SubElement(iface, "portForward", proto="tcp", address=nic.bind)
        ET.SubElement(forward, "range", start=str(host), to=str(guest))


def slirp_netdev(nic: UserNic) -> str:
    fwd = "".join(f",hostfwd=tcp:{nic.bind}:{h}-:{g}" for g, h in sorted(nic.forwards.items()))
    return f"user,id={USER_NETDEV}{fwd}"


def _add_slirp(root: ET.Element, nic: UserNic) -> None:
    cmd = ET.SubElement(root, "qemu:commandline")
    for value in (
        "-netdev",
        slirp_netdev(nic),
        "-device",
        f"virtio-net-pci,netdev={USER_NETDEV},mac={nic.mac},bus=pci.0,addr={USER_NIC_SLOT}",
    ):
        ET.SubElement(cmd, "qemu:arg", value=value)


def forwarded_host_ports(xml_text: str) -> set[int]:
    """Host ports a domain XML claims: SLIRP ``hostfwd`` args, passt ``portForward``, metadata."""
    root = ET.fromstring(xml_text)
    ports: set[int] = set()
    for arg in root.iterfind(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg"):
        for part in arg.get("value", "").split(","):
            if part.startswith("hostfwd="):
                ports.add(int(part.split(":")[2].split("-")[0]))
    for rng in root.iterfind("devices/interface/portForward/range"):
        ports.add(int(rng.get("start", "0")))
    meta = parse_meta(xml_text)
    if meta:
        ports.update(meta.ports.values())
    return ports
