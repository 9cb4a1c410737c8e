"""`validate` refuses a cluster kubeadm, etcd or the CNI would refuse later, pointing at the line."""

from __future__ import annotations

from pathlib import Path

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
    problem = only(tmp_path, LAB.replace("control: {count: 1}", "control: {count: 2}"))
    assert problem.message.startswith("group control has 2 control-plane nodes; etcd needs a majority")
    assert problem.hint == "use 1 or 3 control-plane nodes"
    assert (problem.location.line, problem.location.path) == (9, "groups.control.count")
    valid(tmp_path, LAB.replace("control: {count: 1}", "control: {count: 3}"))


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
