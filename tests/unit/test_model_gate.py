"""`validate` is the single gate: what a stage will need from the lab is checked before any side effect.

Each lab here used to validate and then fail (or silently do nothing) after machines were built;
each test asserts the message, the line and the fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.configure import catalog
from deploy.configure.deploys import ROLE_DEPLOYS, steps_for_roles
from deploy.configure.settings import validate_settings
from deploy.inputs import configure_settings
from deploy.model import open_lab
from tests.unit.labfiles import only, problems_of, valid

HEAD = """name: lab1
providers:
  local: {kind: libvirt}
images:
  deb: {build: {}}
networks:
  mgmt: {provider: local, mode: user}
  labnet: {provider: local, mode: isolated, cidr: 10.20.0.0/24}
defaults: {image: deb}
"""  # 9 lines: the first line of a test's own text is line 10
SHA = "ab" * 32


# --- roles ---------------------------------------------------------------------------------


def test_unknown_roles_name_the_nearest_known_one(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, HEAD + "groups:\n  x: {count: 2, roles: [containred, bsae]}\n")
    assert [(p.message, p.location.line, p.location.path) for p in problems] == [
        ("unknown role 'containred' at groups.x.roles (line 11): did you mean 'containerd'?", 11,
         "groups.x.roles[0]"),
        ("unknown role 'bsae' at groups.x.roles (line 11): did you mean 'base'?", 11, "groups.x.roles[1]"),
    ]
    assert problems[0].hint == ("known roles: base, containerd, esxi-host, k8s-control-plane, k8s-node, "
                                "k8s-worker, kvm-host, runtimes")


def test_unknown_role_in_block_style_points_at_its_own_line(tmp_path: Path) -> None:
    problem = only(tmp_path, HEAD + "nodes:\n  n1:\n    roles:\n      - base\n      - lab_baseline\n")
    assert problem.message == "unknown role 'lab_baseline' at nodes.n1.roles (line 14)"
    assert problem.location.line == 14


def test_roles_of_every_layer_are_checked(tmp_path: Path) -> None:
    problem = only(tmp_path, HEAD.replace("defaults: {image: deb}", "defaults: {image: deb, roles: [kvm-hots]}")
                   + "groups:\n  g: {roles: [base]}\nnodes:\n  solo: {}\n")
    assert problem.message == "unknown role 'kvm-hots' at defaults.roles (line 9): did you mean 'kvm-host'?"


def test_the_known_roles_are_one_table_the_deploys_read() -> None:
    assert ROLE_DEPLOYS is catalog.ROLE_DEPLOYS
    assert steps_for_roles is catalog.steps_for_roles
    assert {"base", "containerd", "k8s-node", "k8s-control-plane", "k8s-worker", "kvm-host", "esxi-host"} <= set(
        catalog.ROLES)
    assert catalog.known_roles(["lab_baseline"])[-1] == "runtimes"
    assert "lab_baseline" in catalog.known_roles(["lab_baseline"])  # the Ansible stage will add role paths


# --- the host reaches every libvirt machine ------------------------------------------------


def test_libvirt_node_on_isolated_networks_only_is_unreachable(tmp_path: Path) -> None:
    problem = only(tmp_path, HEAD + "groups:\n  w: {count: 2, networks: [labnet]}\n")
    assert problem.message == ("node w-1: the host cannot reach it over labnet (isolated): a libvirt machine is "
                               "reached through the SSH port forward of a user-mode NIC (and 1 more node)")
    assert problem.hint == "add a user-mode network, e.g. networks: [mgmt, labnet]"
    assert problem.location.line == 11
    assert problem.location.path == "groups.w.networks"


def test_unreachable_hint_defines_mgmt_when_the_lab_has_no_user_network(tmp_path: Path) -> None:
    text = HEAD.replace("  mgmt: {provider: local, mode: user}\n", "  out: {provider: local, mode: nat, "
                        "cidr: 10.30.0.0/24}\n")
    problem = only(tmp_path, text + "nodes:\n  n1:\n    networks: [out, labnet]\n")
    assert problem.message.startswith("node n1: the host cannot reach it over out (nat), labnet (isolated)")
    assert problem.hint == ("add a user-mode network, e.g. networks: [mgmt, out], with networks: "
                            "{mgmt: {provider: local, mode: user}}")
    assert problem.location.line == 12


def test_unreachable_hint_never_suggests_a_network_that_is_not_user_mode(tmp_path: Path) -> None:
    text = HEAD.replace("  mgmt: {provider: local, mode: user}\n", "  mgmt: {provider: local, mode: nat, "
                        "cidr: 10.30.0.0/24}\n")
    problem = only(tmp_path, text + "nodes:\n  n1: {networks: [mgmt]}\n")
    assert problem.hint == ("add a user-mode network, e.g. networks: [local-mgmt, mgmt], with networks: "
                            "{local-mgmt: {provider: local, mode: user}}")


def test_bridge_only_node_is_unreachable_too(tmp_path: Path) -> None:
    text = HEAD.replace("defaults: {image: deb}\n", "  br: {provider: local, mode: bridge, bridge: br0}\n")
    problem = only(tmp_path, text + "defaults: {image: deb, networks: [br]}\ngroups:\n  g: {}\n")
    assert problem.message.startswith("node g-1: the host cannot reach it over br (bridge): ")
    assert problem.location.line == 10
    assert problem.location.path == "defaults.networks"


def test_a_libvirt_node_naming_no_network_gets_the_user_mode_one(tmp_path: Path) -> None:
    lab = valid(tmp_path, HEAD + "groups:\n  g: {}\n  h: {networks: []}\n")
    assert [n.network for n in lab.nodes["g-1"].nics] == ["mgmt"]
    assert [n.network for n in lab.nodes["h-1"].nics] == ["mgmt"]
    assert lab.implied.networks == ()  # the lab's own mgmt, nothing implied


# --- kubernetes ----------------------------------------------------------------------------


def test_k8s_role_without_a_kubernetes_section(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, HEAD + "groups:\n  cp: {roles: [base, k8s-node]}\n  w: {roles: [k8s-worker]}\n")
    assert [(p.message, p.location.line) for p in problems] == [
        ("role 'k8s-node' at groups.cp.roles (line 11) needs a kubernetes: section", 11),
        ("role 'k8s-worker' at groups.w.roles (line 12) needs a kubernetes: section", 12),
    ]
    assert "kubernetes: {version: '1.36'" in problems[0].hint


K8S = HEAD + """groups:
  cp: {roles: [k8s-control-plane]}
kubernetes:
  version: '1.36'
  control_plane: cp
"""  # kubernetes: is line 12


def test_k8s_roles_need_the_kubernetes_apt_repository(tmp_path: Path) -> None:
    problem = only(tmp_path, K8S)
    assert problem.message == ("nodes with a k8s-* role (cp-1) install kubeadm, kubelet and kubectl from an apt "
                               "repository, but kubernetes.apt.repo is not set")
    assert "apt: {repo: 'https://pkgs.k8s.io/core:/stable:/v{version}/deb/ /'" in problem.hint
    assert problem.location.line == 12
    valid(tmp_path, K8S + "  apt: {repo: 'http://m/v{version}/deb/ /'}\n")


def test_kubernetes_apt_fields_reach_configure(tmp_path: Path) -> None:
    lab = valid(tmp_path, K8S.replace("'1.36'", "'1.36.3'") + "  apt: {repo: 'http://m/v{version}/deb/ /', "
                "key: 'http://m/v{version}/deb/Release.key'}\n")
    settings = configure_settings(lab)
    assert settings.kubernetes_apt_repo == "http://m/v{version}/deb/ /"  # the deploy fills in the minor
    assert settings.kubernetes_apt_key == "http://m/v1.36/deb/Release.key"
    assert validate_settings(settings, {n.name: n.roles for n in lab.nodes.values()}) == []


# --- runtime files and their checksums -----------------------------------------------------

RUNTIMES = HEAD + """groups:
  box: {roles: [containerd]}
runtimes: [runc, gvisor, kata]
mirrors:
  files: http://files.internal/
"""  # mirrors: is line 13


def test_runtime_files_need_their_sha256_in_the_lab(tmp_path: Path) -> None:
    problem = only(tmp_path, RUNTIMES + f"  checksums: {{runsc: {SHA}}}\n")
    assert problem.message == ("mirrors.checksums has no sha256 for containerd-shim-runsc-v1, kata-static.tar.xz "
                               "(needed by runtimes gvisor, kata)")
    assert problem.hint.startswith("add mirrors: {checksums: {containerd-shim-runsc-v1: <sha256>, "
                                   "kata-static.tar.xz: <sha256>}}")
    assert problem.location.line == 15
    assert problem.location.path == "mirrors.checksums"


def test_runtime_files_without_any_checksum_point_at_mirrors(tmp_path: Path) -> None:
    problem = only(tmp_path, RUNTIMES)
    assert problem.message.startswith("mirrors.checksums has no sha256 for runsc, containerd-shim-runsc-v1, ")
    assert problem.location.line == 13


def test_with_the_bundle_as_source_gvisor_files_need_no_mirror_but_kata_still_does(tmp_path: Path) -> None:
    text = HEAD + "groups:\n  box: {roles: [containerd]}\nruntimes: [runc, gvisor, kata]\nbundle: {source: build}\n"
    problem = only(tmp_path, text)
    assert problem.message == ("runtimes kata have no Debian package: their files (kata-static.tar.xz) come from "
                               "mirrors.files, which is not set")
    assert problem.location.path == "runtimes"
    lab = valid(tmp_path, text.replace(", kata]", "]"))
    assert configure_settings(lab).bundle_provides == {"runsc", "containerd-shim-runsc-v1", "runc"}  # runc: static
    auto = problems_of(tmp_path, text.replace(", kata]", "]").replace("source: build", "source: auto"))
    assert [p.message.split(":")[0] for p in auto] == ["runtimes gvisor have no Debian package"]


def test_checksums_given_reach_configure_and_satisfy_its_guard(tmp_path: Path) -> None:
    text = RUNTIMES + f"  checksums:\n    runsc: {SHA}\n    containerd-shim-runsc-v1: {SHA.upper()}\n" \
        f"    kata-static.tar.xz: {SHA}\n"
    lab = valid(tmp_path, text)
    settings = configure_settings(lab)
    assert settings.file_checksums == {"runsc": SHA, "containerd-shim-runsc-v1": SHA, "kata-static.tar.xz": SHA}
    assert validate_settings(settings, {"box-1": ("containerd",)}) == []


def test_unknown_checksum_file_name(tmp_path: Path) -> None:
    text = RUNTIMES.replace("[runc, gvisor, kata]", "[runc]") + f"  checksums: {{runcs: {SHA}}}\n"
    problem = only(tmp_path, text)
    assert problem.message == "unknown mirror file 'runcs' at mirrors.checksums (line 15): did you mean 'runsc'?"
    assert "kata-static.tar.xz" in problem.hint


def test_spin_needs_its_shim_and_wasmedge_does_not(tmp_path: Path) -> None:
    problem = only(tmp_path, RUNTIMES.replace("[runc, gvisor, kata]", "[wasmedge, spin]"))
    assert problem.message == "mirrors.checksums has no sha256 for containerd-shim-spin-v2 (needed by runtimes spin)"


def test_mirror_urls_have_their_form(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, HEAD + "mirrors:\n  apt: ftp://m/debian\n  registry: http://r:5000/v2\n")
    assert [(p.message, p.location.line) for p in problems] == [
        ("mirrors.apt must be an http(s) URL, got 'ftp://m/debian'", 11),
        ("mirrors.registry must be host[:port], got 'http://r:5000/v2'", 12),
    ]


# --- system settings -----------------------------------------------------------------------

SYSTEM = HEAD + """groups:
  g: {roles: [base]}
system:
  timezone: Europe/Berlin
  ntp: [ntp.internal, 192.0.2.1]
  domain: lab.internal
"""  # system: is line 12


def test_system_settings_reach_configure(tmp_path: Path) -> None:
    lab = valid(tmp_path, SYSTEM.replace("roles: [base]", "roles: [containerd, base]") + "  packages: [jq, curl]\n")
    settings = configure_settings(lab)
    assert (settings.timezone, settings.ntp_servers, settings.extra_packages, settings.domain) == (
        "Europe/Berlin", ("ntp.internal", "192.0.2.1"), ("jq", "curl"), "lab.internal")
    assert lab.networks["labnet"].domain == "lab.internal"  # one domain for /etc/hosts and the lab DNS


def test_unknown_time_zone(tmp_path: Path) -> None:
    problem = only(tmp_path, SYSTEM.replace("Europe/Berlin", "Europe/Berlni"))
    assert problem.message == "unknown time zone 'Europe/Berlni': did you mean 'Europe/Berlin'?"
    assert problem.location.line == 13
    assert problem.location.path == "system.timezone"


def test_system_settings_no_node_applies(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, SYSTEM.replace("{roles: [base]}", "{}") + "  packages: [jq]\n")
    assert [(p.message, p.location.line) for p in problems] == [
        ("system.timezone is set, but no node has a role that applies it", 13),
        ("system.ntp is set, but no node has a role that applies it", 14),
        ("system.packages is set, but no node has a role that applies it", 16),
    ]
    assert problems[0].hint == ("give the nodes one of the roles base, kvm-host or k8s-* "
                                "(e.g. defaults: {roles: [base]})")
    assert "containerd, runtimes or k8s-*" in problems[2].hint


def test_malformed_system_values(tmp_path: Path) -> None:
    text = SYSTEM.replace("ntp.internal", "'ntp internal'").replace("lab.internal", "Lab_1")
    problems = problems_of(tmp_path, text)
    assert [(p.message, p.location.line, p.location.path) for p in problems] == [
        ("system.ntp[0] 'ntp internal' has the wrong form", 14, "system.ntp[0]"),
        ("'Lab_1' is not a DNS domain", 15, "system.domain"),
    ]


# --- what validates, configure accepts -----------------------------------------------------

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "labs").glob("*/lab.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_configure_accepts_what_validate_accepted(path: Path) -> None:
    _, lab = open_lab(path)
    assert validate_settings(configure_settings(lab), {n.name: n.roles for n in lab.nodes.values()}) == []
