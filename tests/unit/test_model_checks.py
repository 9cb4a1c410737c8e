"""Semantic checks: each finds its mistake, says what is wrong, and points at the line."""

from __future__ import annotations

from pathlib import Path

from tests.unit.labfiles import only, problems_of, valid

HEAD = """name: lab1
providers:
  local: {kind: libvirt}
images:
  deb: {build: {}}
networks:
  mgmt: {provider: local, mode: user}
  labnet: {provider: local, mode: isolated, cidr: 10.20.0.0/24}
"""
# line numbers below count from this header: it has 8 lines.


def test_unknown_provider_reference(tmp_path: Path) -> None:
    problem = only(tmp_path, HEAD + "defaults: {image: deb}\ngroups:\n  g: {provider: locl}\n")
    assert problem.message == "node g-1: unknown provider 'locl'"
    assert "defined providers: local" in problem.hint
    assert problem.location.line == 11
    assert problem.location.path == "groups.g.provider"


def test_no_provider_when_several_exist(tmp_path: Path) -> None:
    text = HEAD.replace("  local: {kind: libvirt}\n", "  local: {kind: libvirt}\n  b: {kind: libvirt}\n")
    problems = problems_of(tmp_path, text + "defaults: {image: deb}\ngroups:\n  g: {}\n")
    assert any(p.message == "node g-1: no provider" for p in problems)


def test_unknown_image_reference(tmp_path: Path) -> None:
    problem = only(tmp_path, HEAD + "defaults:\n  image: debain\ngroups:\n  g: {count: 2}\n")
    assert problem.message == "node g-1: unknown image 'debain' (and 1 more node)"
    assert "defined images: deb" in problem.hint
    assert problem.location.line == 10
    assert problem.location.path == "defaults.image"


def test_unknown_network_reference(tmp_path: Path) -> None:
    problem = only(tmp_path, HEAD + "defaults: {image: deb}\nnodes:\n  n1:\n    networks: [mgmt, lbanet]\n")
    assert problem.message == "node n1: unknown network 'lbanet'"
    assert "labnet" in problem.hint
    assert "mgmt" in problem.hint
    assert problem.location.line == 12
    assert problem.location.path == "nodes.n1.networks"


def test_network_of_another_provider(tmp_path: Path) -> None:
    text = HEAD.replace("  local: {kind: libvirt}\n", "  local: {kind: libvirt}\n  other: {kind: libvirt}\n")
    problem = only(tmp_path, text + "defaults: {image: deb}\ngroups:\n  g: {provider: other, networks: [mgmt]}\n")
    assert problem.message == "node g-1 (provider other) is attached to network mgmt of provider local"
    assert problem.location.line == 12
    assert problem.location.path == "groups.g.networks"


def test_network_with_unknown_provider(tmp_path: Path) -> None:
    problem = only(tmp_path, HEAD + "  extra: {provider: elsewhere, mode: user}\n")
    assert problem.message == "network extra: unknown provider 'elsewhere'"
    assert problem.location.line == 9
    assert problem.location.path == "networks.extra.provider"


def test_group_override_beyond_count(tmp_path: Path) -> None:
    problem = only(tmp_path, HEAD + "defaults: {image: deb}\ngroups:\n  w: {count: 2}\nnodes:\n  w-3: {cpus: 4}\n")
    assert problem.message == "node w-3 overrides a node that group w does not have (count is 2)"
    assert problem.location.line == 13
    assert problem.location.path == "nodes.w-3"


def test_overlapping_cidrs_within_a_provider(tmp_path: Path) -> None:
    problem = only(tmp_path, HEAD + "  storage: {provider: local, mode: nat, cidr: 10.20.0.128/25}\n")
    assert problem.message == ("network storage (10.20.0.128/25) overlaps network labnet (10.20.0.0/24) "
                               "on provider local")
    assert problem.location.line == 9
    assert problem.location.path == "networks.storage.cidr"


def test_overlapping_cidrs_on_different_providers_are_fine(tmp_path: Path) -> None:
    text = HEAD.replace("  local: {kind: libvirt}\n", "  local: {kind: libvirt}\n  far: {kind: libvirt}\n")
    valid(tmp_path, text + "  farnet: {provider: far, mode: isolated, cidr: 10.20.0.0/24}\n")


def test_duplicate_fixed_ips(tmp_path: Path) -> None:
    problem = only(tmp_path, HEAD + """defaults: {image: deb}
groups:
  a: {count: 1, networks: [mgmt, {network: labnet, ip: 10.20.0.50}]}
  b: {count: 1, networks: [mgmt, {network: labnet, ip: 10.20.0.50}]}
""")
    assert problem.message == "address 10.20.0.50 on network labnet is given to more than one node"
    assert problem.location.line == 12
    assert problem.location.path == "groups.b.networks"


def test_group_offset_running_into_a_fixed_ip(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, HEAD + """defaults: {image: deb}
groups:
  a: {count: 3, networks: [mgmt, {network: labnet, ip: 10.20.0.50}]}
nodes:
  solo: {networks: [mgmt, {network: labnet, ip: 10.20.0.52}]}
""")
    assert [p.message for p in problems] == ["address 10.20.0.52 on network labnet is given to more than one node"]


def test_ip_outside_cidr(tmp_path: Path) -> None:
    text = HEAD + "defaults: {image: deb}\nnodes:\n  n1: {networks: [mgmt, {network: labnet, ip: 10.30.0.5}]}\n"
    problem = only(tmp_path, text)
    assert problem.message == "node n1: address 10.30.0.5 is outside network labnet (10.20.0.0/24)"
    assert problem.location.line == 11
    assert problem.location.path == "nodes.n1.networks"


def test_address_pool_exhausted(tmp_path: Path) -> None:
    text = HEAD.replace("cidr: 10.20.0.0/24", "cidr: 10.20.0.0/28")
    text += "defaults: {image: deb, networks: [mgmt, labnet]}\ngroups:\n  g: {count: 8}\n"
    problems = problems_of(tmp_path, text)
    # a /28 has hosts .1-.14; automatic addresses start at .10: five fit, the other three do not
    assert [p.message for p in problems] == [
        "network labnet (10.20.0.0/28) has no free address left for g-6 (and 2 more nodes)"]
    assert problems[0].location.line == 8
    assert problems[0].location.path == "networks.labnet.cidr"


K8S = HEAD + """defaults: {image: deb}
groups:
  control: {count: 1}
  workers: {count: 2}
kubernetes:
  version: '1.36'
"""  # kubernetes: is line 13


def test_kubernetes_unknown_control_plane_and_workers(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, K8S + "  control_plane: cp\n  workers: [workers, wrk]\n  cni: {bridge: {}}\n")
    assert [(p.message, p.location.line, p.location.path) for p in problems] == [
        ("kubernetes.control_plane names unknown group 'cp'", 15, "kubernetes.control_plane"),
        ("kubernetes.workers names unknown group 'wrk'", 16, "kubernetes.workers"),
    ]
    assert "control, workers" in problems[0].hint


def test_mesh_without_cni(tmp_path: Path) -> None:
    problem = only(tmp_path, K8S + "  control_plane: control\n  mesh: {istio: {version: 1.24.0}}\n")
    assert problem.message == "a service mesh needs a CNI, and kubernetes.cni is not set"
    assert "cilium" in problem.hint
    assert "bridge" in problem.hint
    assert problem.location.line == 16
    assert problem.location.path == "kubernetes.mesh"


def test_gpu_operator_without_gpu_nodes(tmp_path: Path) -> None:
    problem = only(tmp_path, K8S + "  control_plane: control\n  gpu_operator: {version: v24.9.0}\n")
    assert problem.message == "the GPU operator needs at least one node with gpus:"
    assert problem.location.line == 16


def test_gpu_operator_with_a_gpu_node(tmp_path: Path) -> None:
    gpu_node = "workers: {count: 2}\nnodes:\n  workers-2: {gpus: [{pci: '0000:3b:00.0'}]}"
    text = K8S.replace("workers: {count: 2}", gpu_node)
    valid(tmp_path, text + "  control_plane: control\n  gpu_operator: {version: v24.9.0}\n")


def test_gvisor_and_kata_need_a_files_mirror(tmp_path: Path) -> None:
    problem = only(tmp_path, K8S + "  control_plane: control\n  runtimes: [runc, gvisor, kata]\n")
    assert problem.message == ("runtimes gvisor, kata have no Debian package: their files (runsc, containerd-shim-"
                               "runsc-v1, kata-static.tar.xz) come from mirrors.files, which is not set")
    assert "mirrors: {files: " in problem.hint
    assert "checksums: {runsc: <sha256>" in problem.hint
    assert problem.location.line == 16
    assert problem.location.path == "kubernetes.runtimes"


def test_verify_and_ansible_hosts_naming_nothing(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, HEAD + """defaults: {image: deb}
groups:
  web: {count: 1, roles: [kvm-host]}
verify:
  - {name: ok, hosts: kvm-host, run: 'true'}
  - {name: bad, hosts: webs, run: 'true'}
ansible:
  - {hosts: dbs, roles: [x]}
""")
    assert [(p.message, p.location.line, p.location.path) for p in problems] == [
        ("verify[1].hosts names 'webs', which is no group, node or role", 14, "verify[1].hosts"),
        ("ansible[0].hosts names 'dbs', which is no group, node or role", 16, "ansible[0].hosts"),
    ]


def test_missing_verify_pytest_file(tmp_path: Path) -> None:
    text = HEAD + "defaults: {image: deb}\ngroups:\n  web: {}\nverify:\n  - {pytest: checks/extra.py}\n"
    problem = only(tmp_path, text)
    assert problem.message == "test file checks/extra.py does not exist"
    assert problem.location.line == 13
    assert problem.location.path == "verify[0].pytest"
    (tmp_path / "checks").mkdir()
    (tmp_path / "checks" / "extra.py").write_text("def test_x(): pass\n")
    valid(tmp_path, text)


def test_duplicate_host_port(tmp_path: Path) -> None:
    problem = only(tmp_path, HEAD + """defaults: {image: deb}
groups:
  a: {ports: [{guest: 22, host: 2222}]}
  b: {ports: [{guest: 22, host: 2222}]}
""")
    assert problem.message == "host port 2222 is forwarded for both a-1 and b-1"
    assert problem.location.line == 12
    assert problem.location.path == "groups.b.ports"


def test_existing_host_without_address(tmp_path: Path) -> None:
    problem = only(tmp_path, "name: lab1\nproviders:\n  racks: {kind: existing}\ngroups:\n  hv: {count: 2, "
                   "addresses: [192.0.2.10]}\n")
    assert problem.message == "node hv-2: an existing host needs address:"
    assert problem.location.line == 5
    assert problem.location.path == "groups.hv"


def test_vsphere_provider_with_a_build_image(tmp_path: Path) -> None:
    problem = only(tmp_path, """name: lab1
providers:
  dc1: {kind: vsphere, host: vc, user: u, password: {env: P}, datacenter: d, datastore: s}
images:
  deb: {build: {}}
groups:
  esxi: {image: deb}
""")
    assert problem.message == "node esxi-1: a vsphere provider cannot use a build: image"
    assert problem.hint == "use an image with one of: ova, template"
    assert problem.location.line == 7
    assert problem.location.path == "groups.esxi.image"


def test_all_semantic_problems_reported_together(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, HEAD + """defaults: {image: nope}
groups:
  a: {networks: [mgmt, {network: labnet, ip: 10.99.0.1}]}
  b: {provider: gone}
verify:
  - {name: x, hosts: nobody, run: 'true'}
""")
    assert len(problems) == 4
    assert [p.location.line for p in problems] == sorted(p.location.line or 0 for p in problems)
