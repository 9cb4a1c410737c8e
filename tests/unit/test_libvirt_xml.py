"""The libvirt XML builders: parse what they write and check the elements."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from deploy.providers.base import Tags
from deploy.providers.libvirt_xml import (
    NS,
    QEMU_NS,
    Disk,
    DomainSpec,
    LabMeta,
    UserNic,
    dhcp_range,
    domain_xml,
    forwarded_host_ports,
    mac_for,
    meta_xml,
    network_cidrs,
    network_xml,
    parse_meta,
    volume_xml,
)

CREATED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
TAGS = Tags("k8s", "run-7", CREATED, CREATED + timedelta(days=1))
META = LabMeta(
    TAGS, "local", "cp-1", {22: 40022, 6443: 40023}, ("k8s__cp-1__root.qcow2",), "debian", {"labnet": "10.20.0.10"}
)


def spec(**changes: object) -> DomainSpec:
    base = DomainSpec(
        name="k8s-cp-1",
        accel="tcg",
        cpus=2,
        memory_mib=2048,
        disks=(
            Disk("labdeploy", "k8s__cp-1__root.qcow2", "vda"),
            Disk("labdeploy", "k8s__cp-1__seed.iso", "hdc", device="cdrom", fmt="raw"),
        ),
        networks=(("k8s-labnet", "52:54:00:aa:bb:cc"),),
        meta=META,
        serial_log="/tmp/art/consoles/k8s-cp-1.log",
        user_nic=UserNic("52:54:00:11:22:33", {22: 40022, 6443: 40023}),
    )
    return DomainSpec(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_metadata_round_trips_with_its_own_namespace() -> None:
    text = meta_xml(META)
    root = ET.fromstring(text)
    assert root.tag == f"{{{NS}}}lab"
    assert root.findtext(f"{{{NS}}}run-id") == "run-7"
    assert parse_meta(text) == META


def test_metadata_of_a_document_without_it_is_none() -> None:
    assert parse_meta("<domain><name>x</name></domain>") is None


def test_tcg_domain_has_qemu_type_no_host_cpu_and_slirp_forwards() -> None:
    root = ET.fromstring(domain_xml(spec()))
    assert root.get("type") == "qemu"
    assert root.find("cpu") is None
    assert root.findtext("name") == "k8s-cp-1"
    assert root.findtext("vcpu") == "2"
    assert root.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    args = [a.get("value") for a in root.iterfind(f"{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    assert args[0] == "-netdev"
    assert args[1] == "user,id=ldmgmt,hostfwd=tcp:127.0.0.1:40022-:22,hostfwd=tcp:127.0.0.1:40023-:6443"
    assert args[2:] == ["-device", "virtio-net-pci,netdev=ldmgmt,mac=52:54:00:11:22:33,bus=pci.0,addr=0x1e"]
    assert parse_meta(ET.tostring(root, encoding="unicode")) == META


def test_disks_nics_serial_log_and_cdrom() -> None:
    root = ET.fromstring(domain_xml(spec()))
    disks = root.findall("devices/disk")
    assert [(d.get("device"), d.find("target").get("dev"), d.find("target").get("bus")) for d in disks] == [  # type: ignore[union-attr]
        ("disk", "vda", "virtio"),
        ("cdrom", "hdc", "ide"),
    ]
    assert disks[0].find("source").attrib == {"pool": "labdeploy", "volume": "k8s__cp-1__root.qcow2"}  # type: ignore[union-attr]
    assert disks[1].find("readonly") is not None
    iface = root.find("devices/interface")
    assert iface is not None
    assert iface.get("type") == "network"
    assert iface.find("source").get("network") == "k8s-labnet"  # type: ignore[union-attr]
    assert iface.find("mac").get("address") == "52:54:00:aa:bb:cc"  # type: ignore[union-attr]
    assert root.find("devices/serial/log").get("file") == "/tmp/art/consoles/k8s-cp-1.log"  # type: ignore[union-attr]


def test_kvm_nested_uses_host_passthrough_with_vmx_and_gpu_hostdev() -> None:
    root = ET.fromstring(domain_xml(spec(accel="kvm", nested=True, gpus=("0000:3b:00.0",))))
    assert root.get("type") == "kvm"
    cpu = root.find("cpu")
    assert cpu is not None
    assert cpu.get("mode") == "host-passthrough"
    assert {f.get("name") for f in cpu.iterfind("feature")} == {"vmx", "svm"}
    address = root.find("devices/hostdev/source/address")
    assert address is not None
    assert address.attrib == {"domain": "0x0000", "bus": "0x3b", "slot": "0x00", "function": "0x0"}


def test_passt_backend_uses_libvirt_user_interface_not_qemu_args() -> None:
    nic = UserNic("52:54:00:11:22:33", {22: 40022}, backend="passt")
    root = ET.fromstring(domain_xml(spec(user_nic=nic)))
    assert root.find(f"{{{QEMU_NS}}}commandline") is None
    iface = root.find("devices/interface[@type='user']")
    assert iface is not None
    assert iface.find("backend").get("type") == "passt"  # type: ignore[union-attr]
    forward = iface.find("portForward")
    assert forward is not None
    assert forward.get("address") == "127.0.0.1"
    assert forward.find("range").attrib == {"start": "40022", "to": "22"}  # type: ignore[union-attr]
    assert forwarded_host_ports(ET.tostring(root, encoding="unicode")) >= {40022}


def test_forwarded_ports_read_back_from_qemu_args_of_foreign_domains() -> None:
    foreign = (
        f"<domain xmlns:qemu='{QEMU_NS}'><name>other</name><qemu:commandline>"
        "<qemu:arg value='-netdev'/><qemu:arg value='user,id=n0,hostfwd=tcp::2222-:22,hostfwd=tcp:0.0.0.0:8080-:80'/>"
        "</qemu:commandline></domain>"
    )
    assert forwarded_host_ports(foreign) == {2222, 8080}
    assert forwarded_host_ports(domain_xml(spec())) == {40022, 40023}


def test_isolated_network_has_no_forward_dhcp_reservations_and_dns() -> None:
    xml = network_xml(
        "k8s-labnet",
        "isolated",
        LabMeta(TAGS, "local"),
        cidr="10.20.0.0/24",
        domain="k8s.lab",
        reservations=(("cp-1", "52:54:00:aa:bb:cc", "10.20.0.10"),),
    )
    root = ET.fromstring(xml)
    assert root.find("forward") is None
    ip = root.find("ip")
    assert ip is not None
    assert ip.attrib == {"address": "10.20.0.1", "netmask": "255.255.255.0"}
    assert ip.find("dhcp/range").attrib == {"start": "10.20.0.128", "end": "10.20.0.254"}  # type: ignore[union-attr]
    assert ip.find("dhcp/host").attrib == {"mac": "52:54:00:aa:bb:cc", "name": "cp-1", "ip": "10.20.0.10"}  # type: ignore[union-attr]
    assert root.find("dns/host").get("ip") == "10.20.0.10"  # type: ignore[union-attr]
    assert root.findtext("dns/host/hostname") == "cp-1"
    assert root.find("domain").get("name") == "k8s.lab"  # type: ignore[union-attr]
    assert parse_meta(xml) == LabMeta(TAGS, "local")
    assert [str(n) for n in network_cidrs(xml)] == ["10.20.0.0/24"]


def test_nat_and_bridge_networks() -> None:
    nat = ET.fromstring(network_xml("l-n", "nat", LabMeta(TAGS), cidr="10.30.0.0/16"))
    assert nat.find("forward").get("mode") == "nat"  # type: ignore[union-attr]
    bridge = ET.fromstring(network_xml("l-b", "bridge", LabMeta(TAGS), bridge="br0"))
    assert bridge.find("forward").get("mode") == "bridge"  # type: ignore[union-attr]
    assert bridge.find("bridge").get("name") == "br0"  # type: ignore[union-attr]
    assert bridge.find("ip") is None


def test_dhcp_range_refuses_tiny_networks() -> None:
    assert dhcp_range("192.168.5.0/29") == ("192.168.5.1", "255.255.255.248", "192.168.5.4", "192.168.5.6")
    with pytest.raises(ValueError, match="too small"):
        dhcp_range("10.0.0.0/30")


def test_network_cidrs_reads_prefix_and_netmask_forms() -> None:
    xml = (
        "<network><ip address='192.168.122.1' netmask='255.255.255.0'/>"
        "<ip family='ipv6' address='fd00::1' prefix='64'/></network>"
    )
    assert [str(n) for n in network_cidrs(xml)] == ["192.168.122.0/24", "fd00::/64"]


def test_overlay_volume_names_its_backing_file() -> None:
    root = ET.fromstring(volume_xml("a.qcow2", 5 * 1024**3, "qcow2", backing="/p/base.qcow2"))
    assert root.findtext("capacity") == str(5 * 1024**3)
    assert root.find("target/format").get("type") == "qcow2"  # type: ignore[union-attr]
    assert root.findtext("backingStore/path") == "/p/base.qcow2"
    assert root.find("backingStore/format").get("type") == "qcow2"  # type: ignore[union-attr]


def test_macs_are_stable_distinct_and_local() -> None:
    first = mac_for("lab", "node-1", "mgmt")
    assert first == mac_for("lab", "node-1", "mgmt")
    assert first != mac_for("lab", "node-2", "mgmt")
    assert first.startswith("52:54:00:")
    assert len(first.split(":")) == 6
