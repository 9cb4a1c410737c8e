"""Resolution: node -> group -> defaults -> builtin, addresses, MACs, selectors."""

from __future__ import annotations

import re
from pathlib import Path

from deploy.model import ResolvedLab, open_lab
from deploy.model.resolve import mac_for
from deploy.model.resolved import Nic

HEAD = """name: lab1
providers:
  local: {kind: libvirt}
images:
  deb: {build: {}}
  other: {build: {release: trixie}}
networks:
  mgmt: {provider: local, mode: user}
  labnet: {provider: local, mode: isolated, cidr: 10.20.0.0/24}
"""


def resolve_text(tmp_path: Path, text: str) -> ResolvedLab:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return open_lab(path)[1]


def ip_on(lab: ResolvedLab, node: str, network: str = "labnet") -> str | None:
    return next(n.ip for n in lab.nodes[node].nics if n.network == network)


def test_node_over_group_over_defaults(tmp_path: Path) -> None:
    lab = resolve_text(tmp_path, HEAD + """defaults: {provider: local, image: deb, cpus: 2, memory: 2GiB, disk: 20GiB}
groups:
  workers: {count: 2, memory: 4GiB, roles: [containerd]}
nodes:
  workers-2: {cpus: 8, image: other}
""")
    w1, w2 = lab.nodes["workers-1"], lab.nodes["workers-2"]
    assert (w1.cpus, w1.memory_mib, w1.disk_gib, w1.image) == (2, 4096, 20, "deb")
    assert (w2.cpus, w2.memory_mib, w2.disk_gib, w2.image) == (8, 4096, 20, "other")
    assert w1.roles == w2.roles == ("containerd",)
    assert (w1.group, w1.index, w2.index) == ("workers", 1, 2)


def test_builtin_defaults_fill_what_nobody_set(tmp_path: Path) -> None:
    lab = resolve_text(tmp_path, HEAD + "defaults: {image: deb}\ngroups:\n  g: {}\n")
    node = lab.nodes["g-1"]
    assert (node.cpus, node.memory_mib, node.disk_gib) == (1, 1024, 10)
    assert node.provider == "local"  # the only provider
    assert node.nics == (Nic("mgmt", "user", None, mac_for("lab1", "g-1", "mgmt")),)  # its user-mode network
    assert node.roles == ()
    assert node.gpus == ()
    assert node.ports == ()
    assert node.ssh_user == "root"
    assert node.ssh_port == 22
    assert not node.nested_virtualization


def test_image_user_becomes_ssh_user(tmp_path: Path) -> None:
    text = HEAD.replace("deb: {build: {}}", "deb: {build: {}, user: debian}")
    lab = resolve_text(tmp_path, text + "defaults: {image: deb}\ngroups:\n  g: {}\n  h: {ssh_user: admin}\n")
    assert lab.nodes["g-1"].ssh_user == "debian"
    assert lab.nodes["h-1"].ssh_user == "admin"


def test_group_fixed_ip_is_first_node_then_plus_one(tmp_path: Path) -> None:
    lab = resolve_text(tmp_path, HEAD + """defaults: {image: deb}
groups:
  workers: {count: 3, networks: [mgmt, {network: labnet, ip: 10.20.0.21}]}
""")
    assert [ip_on(lab, f"workers-{i}") for i in (1, 2, 3)] == ["10.20.0.21", "10.20.0.22", "10.20.0.23"]
    assert ip_on(lab, "workers-1", "mgmt") is None  # user-mode networks get no address


def test_node_level_literal_ip_is_taken_as_written(tmp_path: Path) -> None:
    lab = resolve_text(tmp_path, HEAD + """defaults: {image: deb}
groups:
  workers: {count: 3, networks: [mgmt, {network: labnet, ip: 10.20.0.21}]}
nodes:
  workers-3: {networks: [mgmt, {network: labnet, ip: 10.20.0.99}]}
  workers-2: {cpus: 2}
""")
    assert ip_on(lab, "workers-2") == "10.20.0.22"  # override without networks keeps the offset
    assert ip_on(lab, "workers-3") == "10.20.0.99"


def test_auto_addresses_start_at_ten_and_skip_fixed_ones(tmp_path: Path) -> None:
    lab = resolve_text(tmp_path, HEAD + """defaults: {image: deb, networks: [mgmt, labnet]}
groups:
  a: {count: 2}
  b: {count: 1, networks: [mgmt, {network: labnet, ip: 10.20.0.11}]}
""")
    assert ip_on(lab, "b-1") == "10.20.0.11"
    assert ip_on(lab, "a-1") == "10.20.0.10"
    assert ip_on(lab, "a-2") == "10.20.0.12"
    reservations = {(node, ip) for node, _mac, ip in lab.networks["labnet"].reservations}
    assert reservations == {("a-1", "10.20.0.10"), ("a-2", "10.20.0.12"), ("b-1", "10.20.0.11")}


def test_addresses_are_deterministic(tmp_path: Path) -> None:
    text = HEAD + "defaults: {image: deb, networks: [mgmt, labnet]}\ngroups:\n  z: {count: 3}\n  a: {count: 3}\n"
    first = resolve_text(tmp_path, text)
    second = resolve_text(tmp_path, text)
    assert first.nodes == second.nodes


def test_macs_are_stable_local_and_distinct(tmp_path: Path) -> None:
    lab = resolve_text(tmp_path, HEAD + "defaults: {image: deb, networks: [mgmt, labnet]}\ngroups:\n  g: {count: 3}\n")
    macs = [nic.mac for node in lab.nodes.values() for nic in node.nics]
    assert len(set(macs)) == 6
    assert all(mac and re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac) for mac in macs)
    assert lab.nodes["g-2"].nics[1].mac == mac_for("lab1", "g-2", "labnet")
    assert mac_for("lab1", "g-2", "labnet") != mac_for("lab2", "g-2", "labnet")


def test_standalone_nodes(tmp_path: Path) -> None:
    lab = resolve_text(tmp_path, HEAD + """defaults: {image: deb, cpus: 2}
groups:
  web: {count: 1}
nodes:
  jumphost: {cpus: 1, roles: [kvm-host]}
""")
    assert set(lab.nodes) == {"web-1", "jumphost"}
    jump = lab.nodes["jumphost"]
    assert (jump.group, jump.index, jump.cpus, jump.image, jump.roles) == (None, 1, 1, "deb", ("kvm-host",))
    assert lab.sources["jumphost"] == ("nodes", "jumphost")
    assert lab.sources["web-1"] == ("groups", "web")


def test_group_addresses_for_existing_hosts(tmp_path: Path) -> None:
    lab = resolve_text(tmp_path, """name: lab1
providers:
  racks: {kind: existing}
groups:
  hv: {count: 2, addresses: [192.0.2.10, 192.0.2.11]}
nodes:
  hv-2: {address: 192.0.2.99}
""")
    assert lab.nodes["hv-1"].address == "192.0.2.10"
    assert lab.nodes["hv-2"].address == "192.0.2.99"


def test_nodes_of_selectors(tmp_path: Path) -> None:
    lab = resolve_text(tmp_path, HEAD + """defaults: {image: deb}
groups:
  control: {count: 1, roles: [base]}
  workers: {count: 2, roles: [base, containerd]}
nodes:
  jumphost: {}
""")
    names = lambda sel: sorted(n.name for n in lab.nodes_of(sel))  # noqa: E731
    assert names("all") == ["control-1", "jumphost", "workers-1", "workers-2"]
    assert names("workers") == ["workers-1", "workers-2"]
    assert names("containerd") == ["workers-1", "workers-2"]
    assert names("base") == ["control-1", "workers-1", "workers-2"]
    assert names("jumphost") == ["jumphost"]
    assert names("workers-2") == ["workers-2"]
    assert names("nothing") == []


def test_network_provider_defaults(tmp_path: Path) -> None:
    lab = resolve_text(tmp_path, """name: lab1
providers:
  local: {kind: libvirt}
images:
  deb: {build: {}}
networks:
  n: {mode: isolated, cidr: 10.1.0.0/24}
""")
    net = lab.networks["n"]
    assert (net.provider, net.mode, net.cidr, net.dhcp, net.domain) == ("local", "isolated", "10.1.0.0/24",
                                                                         True, "lab1")
