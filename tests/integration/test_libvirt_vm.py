"""Real VMs through the libvirt provider (TCG here): SSH over loopback forwards, guest-to-guest
ping on an isolated network, idempotent create, two labs with the same node names, and a
destroy that works from the hypervisor's metadata alone.

Boot timings are written to ``$LABDEPLOY_TIMINGS`` (default /tmp/labdeploy-libvirt-timings.json).
"""

from __future__ import annotations

import base64
import json
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from deploy.model.resolved import Nic, PortForward, ResolvedImage, ResolvedNetwork, ResolvedNode
from deploy.model.schema import LibvirtProviderSpec
from deploy.providers.base import MachineInfo, ProviderContext
from deploy.providers.libvirt import LibvirtProvider
from deploy.providers.libvirt_xml import NS
from deploy.ssh import generate_keypair, known_hosts_path, run_command
from tests.integration.libvirt_fixtures import SYSTEM, LabFactory, free_cidr, libvirtd, new_tags

__all__ = ["libvirtd"]
pytestmark = [pytest.mark.vm, pytest.mark.integration, pytest.mark.timeout(900)]

IMAGE = ResolvedImage(name="debian12", source="build", distro="debian", release="bookworm")
BOOT_DEADLINE = 300.0
TIMINGS: dict[str, object] = {}

# ICMP echo from inside a guest (the image has python3 but no ping binary); exits 0 on a reply.
PING = b"""
import socket, struct, sys
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); sock.settimeout(2)
got = 0
for seq in range(3):
    body = struct.pack("!BBHHH", 8, 0, 0, 0x4C44, seq) + b"labdeploy!"
    sock.sendto(struct.pack("!BBHHH", 8, 0, csum(body), 0x4C44, seq) + b"labdeploy!", (sys.argv[1], 0))
    try:
        while True:
            data, peer = sock.recvfrom(2048); ihl = (data[0] & 15) * 4
            if peer[0] == sys.argv[1] and data[ihl] == 0 and data[ihl + 4:ihl + 6] == b"\\x4c\\x44":
                got += 1; break
    except socket.timeout:
        pass
print(f"{got}/3 echo replies from {sys.argv[1]}"); sys.exit(0 if got else 1)
"""


@dataclass
class Lab:
    prov: LibvirtProvider
    cidr: str
    ips: dict[str, str]
    nodes: dict[str, ResolvedNode]
    infos: dict[str, MachineInfo]


def node(name: str, index: int, ip: str | None = None) -> ResolvedNode:
    nics = (Nic("mgmt", "user"), Nic("labnet", "isolated", ip=ip)) if ip else (Nic("mgmt", "user"),)
    return ResolvedNode(
        name,
        "all",
        index,
        "local",
        "debian12",
        cpus=1,
        memory_mib=1024,
        disk_gib=4,
        nics=nics,
        ports=(PortForward(8080),),
    )


def run(lab: Lab, name: str, command: str) -> str:
    info = lab.infos[name]
    assert info.ssh is not None
    store = known_hosts_path(lab.prov.ctx.state_dir)
    result = run_command(info.ssh, command, known_hosts=store, alias=name, timeout=60)
    assert result.ok, f"{name}: {command!r} -> rc {result.rc}: {result.stderr}"
    return result.stdout


def boot(prov: LibvirtProvider, nodes: list[ResolvedNode], tags_lab: str) -> tuple[dict[str, MachineInfo], float]:
    """Create ``nodes`` in parallel threads and wait for SSH on each; returns infos and wall time."""
    tags = new_tags(tags_lab)

    def one(n: ResolvedNode) -> MachineInfo:
        info = prov.create_machine(n, tags)
        prov.wait_reachable(info, known_hosts_path(prov.ctx.state_dir), BOOT_DEADLINE)
        return info

    start = time.monotonic()
    with ThreadPoolExecutor(len(nodes)) as pool:
        infos = list(pool.map(one, nodes))
    return {i.name: i for i in infos}, time.monotonic() - start


def make_provider(
    root: Path, lab: str, factory: LabFactory, nodes: dict[str, ResolvedNode] | None = None
) -> LibvirtProvider:
    state = root / lab
    state.mkdir(parents=True)
    key, public = generate_keypair(state)
    ctx = ProviderContext(lab, state, ssh_private_key=key, ssh_public_key=public, nodes=dict(nodes or {}))
    prov = LibvirtProvider("local", LibvirtProviderSpec(kind="libvirt", uri=SYSTEM, accel="auto"), ctx)
    factory.providers.append(prov)
    prov.prepare_image(IMAGE)
    return prov


@pytest.fixture(scope="module")
def factory(libvirtd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFactory]:
    made = LabFactory(tmp_path_factory.mktemp("vmlabs"), libvirtd, [])
    yield made
    made.cleanup()
    out = Path(os.environ.get("LABDEPLOY_TIMINGS", "/tmp/labdeploy-libvirt-timings.json"))
    out.write_text(json.dumps(TIMINGS, indent=1))


@pytest.fixture(scope="module")
def lab_a(factory: LabFactory) -> Lab:
    """Two VMs booted in parallel: user-mode mgmt NIC + an isolated network without DHCP.

    The isolated network is a bare bridge (no host address, no dnsmasq); each guest gets its
    fixed address and the peers' names from its NoCloud seed.
    """
    lab = f"ldvm{os.getpid() % 10000}a"
    cidr = free_cidr()
    prefix = cidr.rsplit(".", 1)[0]
    ips = {"n1": f"{prefix}.10", "n2": f"{prefix}.11"}
    nodes = {name: node(name, i, ip) for i, (name, ip) in enumerate(ips.items())}
    prov = make_provider(factory.root, lab, factory, nodes)
    tags = new_tags(lab)
    prov.create_network(ResolvedNetwork("mgmt", "local", "user"), tags)
    labnet = prov.create_network(ResolvedNetwork("labnet", "local", "isolated", cidr=cidr, dhcp=False), tags)
    net_xml = prov.conn.networkLookupByName(labnet["libvirt_name"]).XMLDesc(0)
    assert ET.fromstring(net_xml).find("ip") is None, f"isolated dhcp:false network has a host address: {net_xml}"
    infos, seconds = boot(prov, list(nodes.values()), lab)
    TIMINGS["two_vms_parallel_boot_to_ssh_s"] = round(seconds, 1)
    return Lab(prov, cidr, ips, nodes, infos)


def test_both_machines_answer_ssh_on_loopback_forwards(lab_a: Lab) -> None:
    for name, info in lab_a.infos.items():
        assert info.ssh is not None
        assert info.ssh.host == "127.0.0.1"
        assert info.ports[22] == info.ssh.port
        assert run(lab_a, name, "hostname").strip() == name
    assert lab_a.infos["n1"].ports[22] != lab_a.infos["n2"].ports[22]
    assert lab_a.infos["n1"].extra["accel"] == "tcg"
    assert lab_a.infos["n2"].addresses == {"labnet": lab_a.ips["n2"]}


def test_guests_ping_each_other_over_the_isolated_network(lab_a: Lab) -> None:
    script = base64.b64encode(PING).decode()
    for src, dst in (("n1", "n2"), ("n2", "n1")):
        addresses = run(lab_a, dst, "ip -4 -o addr show")
        assert f"{lab_a.ips[dst]}/" in addresses, f"{dst} did not get its static address: {addresses}"
        out = run(lab_a, src, f"echo {script} | base64 -d | python3 - {lab_a.ips[dst]}")
        assert "echo replies" in out
        assert not out.startswith("0/")


def test_lab_node_names_resolve_without_any_host_service(lab_a: Lab) -> None:
    """Peers' names come from the seed's /etc/hosts: no dnsmasq, no host address on the bridge."""
    for src, dst in (("n1", "n2"), ("n2", "n1")):
        assert run(lab_a, src, f"getent ahostsv4 {dst}").split()[0] == lab_a.ips[dst]
    assert run(lab_a, "n1", "getent ahostsv4 n1").split()[0].startswith("127.")
    bridge_ips = run(lab_a, "n1", "ip -4 -o addr show")
    assert f"{lab_a.ips['n1']}/24" in bridge_ips


def test_create_machine_twice_returns_the_same_domain(lab_a: Lab) -> None:
    again = lab_a.prov.create_machine(lab_a.nodes["n1"], new_tags(lab_a.prov.ctx.lab))
    first = lab_a.infos["n1"]
    assert again.extra["domain"] == first.extra["domain"]
    assert again.ports == first.ports
    assert again.state == "running"
    assert set(again.ports) == {22, 8080}
    doms = [d for d in lab_a.prov.conn.listAllDomains(0) if d.name().startswith(f"{lab_a.prov.ctx.lab}-")]
    assert len(doms) == 2


def test_second_lab_with_the_same_node_name_does_not_collide(lab_a: Lab, factory: LabFactory) -> None:
    prov_b = make_provider(factory.root, lab_a.prov.ctx.lab[:-1] + "b", factory)
    infos, seconds = boot(prov_b, [node("n1", 0)], prov_b.ctx.lab)
    TIMINGS["one_vm_boot_to_ssh_s"] = round(seconds, 1)
    b1, a1 = infos["n1"], lab_a.infos["n1"]
    assert b1.extra["domain"] != a1.extra["domain"]
    ports_a = set(lab_a.infos["n1"].ports.values()) | set(lab_a.infos["n2"].ports.values())
    assert not set(b1.ports.values()) & ports_a
    lab_b = Lab(prov_b, "", {}, {}, infos)
    assert run(lab_b, "n1", "hostname").strip() == "n1"
    assert run(lab_a, "n1", "hostname").strip() == "n1"  # lab A's n1 is untouched
    # a stopped machine is started again by create_machine, with the same forwards
    prov_b.conn.lookupByName(b1.extra["domain"]).destroy()
    assert prov_b.status("n1").state == "stopped"
    again = prov_b.create_machine(node("n1", 0), new_tags(prov_b.ctx.lab))
    assert again.state == "running"
    assert again.ports == b1.ports
    prov_b.delete_machine("n1")
    assert prov_b.find_resources(prov_b.ctx.lab) == []
    assert lab_a.prov.status("n1").state == "running"


def test_destroy_from_metadata_alone_leaves_nothing(lab_a: Lab, tmp_path: Path) -> None:
    lab = lab_a.prov.ctx.lab
    # a new provider with an empty state dir: everything is found on the hypervisor
    fresh = LibvirtProvider("local", LibvirtProviderSpec(kind="libvirt", uri=SYSTEM), ProviderContext(lab, tmp_path))
    found = fresh.find_resources(lab)
    kinds = sorted((r.kind, r.name) for r in found if r.kind != "volume")
    assert kinds == [("machine", "n1"), ("machine", "n2"), ("network", "labnet")]
    assert len([r for r in found if r.kind == "volume"]) == 4  # root + seed per machine
    for res in found:
        fresh.delete_resource(res)
    assert fresh.find_resources(lab) == []
    assert _tagged_on_host(lab) == []
    fresh.close()


def _tagged_on_host(lab: str) -> list[str]:
    conn = libvirt.open(SYSTEM)
    try:
        left = [d.name() for d in conn.listAllDomains(0) if _lab_of(d.XMLDesc(0)) == lab]
        left += [n.name() for n in conn.listAllNetworks(0) if _lab_of(n.XMLDesc(0)) == lab]
        pool = conn.storagePoolLookupByName("labdeploy")
        left += [v.name() for v in pool.listAllVolumes(0) if v.name().startswith(f"{lab}__")]
        return left
    finally:
        conn.close()


def _lab_of(xml: str) -> str | None:
    name = ET.fromstring(xml).find(f"metadata/{{{NS}}}lab/{{{NS}}}name")
    return name.text if name is not None else None
