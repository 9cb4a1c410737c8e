"""`validate` refuses a cluster kubeadm, etcd or the CNI would refuse later, pointing at the line."""

from __future__ import annotations

from pathlib import Path

from deploy.cluster import k3s
from deploy.cluster.nodes import members
from tests.unit.labfiles import only, problems_of, valid

LAB = """name: lab1
images:
  deb: {build: {}}
networks:
  mgmt: {mode: user}
  labnet: {mode: isolated, cidr: 10.20.0.0/24}
defaults: {image: deb, networks: [mgmt, labnet]}
groups:
  control: {count: 1}
  workers: {count: 2}
kubernetes:
  version: "1.36"
  control_plane: control
"""  # kubernetes: is line 11; its keys start on line 12


def test_a_minor_outside_the_catalog_lists_the_supported_ones(tmp_path: Path) -> None:
    problem = only(tmp_path, LAB.replace('"1.36"', '"1.31.2"'))
    assert problem.message == "Kubernetes 1.31.2 is not supported; the supported minors are 1.35, 1.36, 1.37"
    assert (problem.location.line, problem.location.path) == (12, "kubernetes.version")
    assert problem.hint.startswith('set kubernetes.version: "1.37"')


def test_a_minor_outside_the_catalog_is_said_once_with_a_bundle_too(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, LAB.replace('"1.36"', '"1.20"') + "bundle: {source: offline}\n")
    assert [p.location.path for p in problems] == ["kubernetes.version"]


def test_cluster_ranges_must_be_networks_apart_from_each_other_and_the_lab(tmp_path: Path) -> None:
    text = LAB + "  pod_cidr: 10.20.0.0/16\n  service_cidr: 10.20.128.0/17\n"
    problems = problems_of(tmp_path, text)
    assert [(p.message, p.location.line) for p in problems] == [
        ("kubernetes.pod_cidr 10.20.0.0/16 overlaps network labnet (10.20.0.0/24)", 14),
        ("kubernetes.service_cidr 10.20.128.0/17 overlaps pod_cidr 10.20.0.0/16", 15),
    ]  # sorted by line
    bad = only(tmp_path, LAB + "  pod_cidr: 10.244.0.1/16\n")
    assert bad.message.startswith("kubernetes.pod_cidr '10.244.0.1/16' is not a network: ")
    assert (bad.location.line, bad.location.path) == (14, "kubernetes.pod_cidr")


def test_an_even_number_of_control_planes_is_refused(tmp_path: Path) -> None:
    vip = "  vip: 10.20.0.5\n"  # more than one control plane needs it (test_more_than_one_control_plane_needs_a_vip)
    problem = only(tmp_path, LAB.replace("control: {count: 1}", "control: {count: 2}") + vip)
    assert problem.message.startswith("group control has 2 control-plane nodes; etcd needs a majority")
    assert problem.hint == "use 1 or 3 control-plane nodes"
    assert (problem.location.line, problem.location.path) == (9, "groups.control.count")
    valid(tmp_path, LAB.replace("control: {count: 1}", "control: {count: 3}") + vip)


def test_the_control_plane_group_is_not_also_a_worker_group(tmp_path: Path) -> None:
    problem = only(tmp_path, LAB + "  workers: [workers, control]\n  cni: {bridge: {}}\n")
    assert problem.message == "group control is both kubernetes.control_plane and a worker group"
    assert (problem.location.line, problem.location.path) == (14, "kubernetes.workers")


def test_workers_need_a_cni(tmp_path: Path) -> None:
    problem = only(tmp_path, LAB + "  workers: workers\n")
    assert problem.message.startswith("kubernetes.workers (workers) need a CNI to carry pod traffic between nodes")
    assert "kubernetes.cni: {bridge: {}}" in problem.hint
    assert (problem.location.line, problem.location.path) == (14, "kubernetes.workers")
    valid(tmp_path, LAB + "  workers: workers\n  cni: {bridge: {}}\n")
    valid(tmp_path, LAB)  # a single control plane without workers takes the workloads itself


HA = LAB.replace("control: {count: 1}", "control: {count: 3}")  # control-1..3 get 10.20.0.10..12 (host .1)


def test_more_than_one_control_plane_needs_a_vip(tmp_path: Path) -> None:
    problem = only(tmp_path, HA)
    assert problem.message.startswith("group control has 3 control-plane nodes, and kubernetes.vip is not set")
    assert problem.hint.startswith("add kubernetes.vip: a free address of the lab network")
    assert (problem.location.line, problem.location.path) == (13, "kubernetes.control_plane")
    resolved = valid(tmp_path, HA + "  vip: 10.20.0.5\n")
    assert resolved.lab.kubernetes is not None
    assert resolved.lab.kubernetes.vip == "10.20.0.5"


def test_a_vip_with_one_control_plane_is_allowed(tmp_path: Path) -> None:
    valid(tmp_path, LAB + "  vip: 10.20.0.5\n")  # the endpoint stays when control planes are added


def test_the_vip_must_be_a_host_address_of_the_control_planes_network(tmp_path: Path) -> None:
    for vip in ("10.21.0.5", "10.20.0.0", "10.20.0.255"):
        problem = only(tmp_path, HA + f"  vip: {vip}\n")
        assert problem.message == (f"kubernetes.vip {vip} is not a host address of network labnet (10.20.0.0/24), "
                                   "which the control planes share")
        assert problem.hint == "pick a free address inside 10.20.0.0/24"
        assert (problem.location.line, problem.location.path) == (14, "kubernetes.vip")


def test_the_vip_is_no_nodes_address(tmp_path: Path) -> None:
    problem = only(tmp_path, HA + "  vip: 10.20.0.13\n")  # workers-1 (names sort control-*, workers-*)
    assert problem.message == "kubernetes.vip 10.20.0.13 is also the address of node workers-1"
    assert problem.location.path == "kubernetes.vip"


def test_the_vip_is_not_libvirts_gateway_nor_in_its_dhcp_range(tmp_path: Path) -> None:
    gateway = only(tmp_path, HA + "  vip: 10.20.0.1\n")
    assert gateway.message == "kubernetes.vip 10.20.0.1 is the gateway of network labnet: the libvirt host has it"
    assert gateway.hint == "pick a free address between 10.20.0.2 and 10.20.0.127"
    dhcp = only(tmp_path, HA + "  vip: 10.20.0.200\n")
    assert dhcp.message.startswith("kubernetes.vip 10.20.0.200 lies in the DHCP range of network labnet "
                                   "(10.20.0.128 and up)")
    bare = HA.replace("cidr: 10.20.0.0/24}", "cidr: 10.20.0.0/24, dhcp: false}")
    valid(tmp_path, bare + "  vip: 10.20.0.1\n")  # a bare bridge: the host has no address there
    valid(tmp_path, bare + "  vip: 10.20.0.200\n")


def test_the_control_planes_must_share_the_vips_network(tmp_path: Path) -> None:
    text = HA.replace("  labnet: {mode: isolated, cidr: 10.20.0.0/24}\n",
                      "  labnet: {mode: isolated, cidr: 10.20.0.0/24}\n  other: {mode: isolated, cidr: 10.22.0.0/24}\n")
    text += "  vip: 10.20.0.5\n"
    text += "nodes:\n  control-3: {networks: [mgmt, other]}\n"
    problem = only(tmp_path, text)
    assert problem.message == ("kubernetes.vip 10.20.0.5 needs the control planes on one lab network; they are on "
                               "labnet, other")
    assert problem.location.path == "kubernetes.vip"


def test_a_vip_that_is_no_address_is_refused_by_the_schema(tmp_path: Path) -> None:
    problem = only(tmp_path, HA + "  vip: 10.20.0.5/24\n")
    assert "'10.20.0.5/24' is not an IP address" in problem.message
    assert problem.location.path == "kubernetes.vip"


def test_the_vip_is_not_an_existing_hosts_address(tmp_path: Path) -> None:
    text = HA + "  vip: 10.20.0.7\n"
    text = text.replace("defaults: {image: deb, networks: [mgmt, labnet]}\n",
                        "providers:\n  local: {kind: libvirt}\n  hosts: {kind: existing}\n"
                        "defaults: {image: deb, networks: [mgmt, labnet]}\n")
    text += "nodes:\n  old: {provider: hosts, address: 10.20.0.7, networks: []}\n"
    problems = [p for p in problems_of(tmp_path, text) if p.location.path == "kubernetes.vip"]
    assert [p.message for p in problems] == ["kubernetes.vip 10.20.0.7 is also the address of node old"]


def test_k3s_needs_an_online_lab(tmp_path: Path) -> None:
    problem = only(tmp_path, LAB + "  distribution: k3s\nbundle: {source: offline}\n")
    assert problem.location.path == "kubernetes.distribution"
    assert problem.location.line == 14  # the distribution line, right after control_plane
    assert "no bundle artifact carries k3s" in problem.message
    assert "bundle: {source: auto}" in problem.hint
    valid(tmp_path, LAB + "  distribution: k3s\nbundle: {source: upstream}\n")


def test_an_offline_k3s_lab_takes_its_binary_from_mirrors_files_pinned_by_sha256(tmp_path: Path) -> None:
    pinned = "mirrors: {files: http://files.internal/, checksums: {k3s: " + "ab" * 32 + "}}\n"
    lab = valid(tmp_path, LAB + "  distribution: k3s\nbundle: {source: offline}\n" + pinned)
    cluster = k3s.k3s_cluster(lab, members(lab))
    assert (cluster.binary_url, cluster.binary_sha256) == ("http://files.internal/k3s", "ab" * 32)
    problem = only(tmp_path, LAB + "  distribution: k3s\nmirrors: {checksums: {k3s: " + "ab" * 32 + "}}\n")
    assert problem.location.path == "mirrors.checksums.k3s"
    assert "mirrors.files" in problem.message
