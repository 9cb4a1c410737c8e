"""Nodes nothing logs in to (``ssh: false``): validate, plan, the steps, and the guest report they rely on."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploy.errors import StageError
from deploy.plan import build_resources
from deploy.providers.base import MachineInfo
from deploy.providers.vsphere_guest import guest_ready, guest_wanted, usable
from deploy.steps import _machine, _reachable
from tests.unit.labfiles import only, valid

LAB = """name: vs
providers:
  dc1: {kind: vsphere, host: vc.example, user: u, password: {env: P}, datacenter: DC0, datastore: ds}
images:
  esxi: {template: esxi8}
networks:
  vmnet: {provider: dc1, mode: bridge, bridge: VM Network}
groups:
  esxi: {provider: dc1, image: esxi, networks: [vmnet], roles: [esxi-host], ssh: false}
"""


def _nic(network: str, *ips: str) -> SimpleNamespace:
    return SimpleNamespace(network=network, ipAddress=list(ips))


def _guest(primary: str | None, *nics: SimpleNamespace, tools: str = "guestToolsRunning") -> dict[str, Any]:
    return {"guest.toolsRunningStatus": tools, "guest.ipAddress": primary, "guest.net": list(nics)}


@pytest.mark.parametrize(("address", "ok"), [
    ("10.0.0.5", True), ("169.254.10.1", False), ("127.0.0.1", False), ("fe80::1", False), ("2001:db8::5", False),
    ("0.0.0.0", False), (None, False), ("", False), ("not-an-ip", False),
])
def test_only_routable_ipv4_addresses_are_usable(address: str | None, ok: bool) -> None:
    assert usable(address) is ok


def test_the_guest_is_not_ready_until_tools_run_with_an_address() -> None:
    assert not guest_ready(_guest("10.0.0.5", tools="guestToolsNotRunning"))
    assert not guest_ready(_guest("fe80::1", _nic("VM Network", "fe80::1")))  # DHCP still running
    assert guest_ready(_guest(None, _nic("VM Network", "fe80::1", "10.0.0.5")))
    assert guest_wanted(_guest(None, _nic("VM Network", "169.254.1.1")), {"VM Network": "vmnet"}) is None


def test_the_first_nic_of_the_node_with_an_address_wins() -> None:
    values = _guest("10.9.0.7", _nic("Storage", "10.9.0.7"), _nic("VM Network", "fe80::1", "10.0.0.5"))
    assert guest_wanted(values, {"VM Network": "vmnet", "Storage": "storage"}) == ("10.0.0.5", "vmnet")
    assert guest_wanted(values, {"Storage": "storage", "VM Network": "vmnet"}) == ("10.9.0.7", "storage")
    # a primary address on no NIC Tools name: it counts for the node's first NIC
    assert guest_wanted(_guest("10.0.0.9"), {"VM Network": "vmnet"}) == ("10.0.0.9", "vmnet")


def test_an_ssh_less_node_has_no_configure_step_and_a_reachable_of_its_own(tmp_path: Path) -> None:
    resolved = valid(tmp_path, LAB)
    kinds = build_resources(resolved)
    assert "configure:esxi-1" not in kinds  # esxi-host is a role, but nothing logs in to apply it
    assert kinds["reachable:esxi-1"].inputs == {"ssh": False}
    assert "ssh" not in kinds["machine:esxi-1"].inputs  # the machine itself does not change with it


def test_a_node_with_ssh_keeps_the_inputs_it_always_had(tmp_path: Path) -> None:
    resolved = valid(tmp_path, LAB.replace(", ssh: false", ", ssh_user: root"))
    kinds = build_resources(resolved)
    assert kinds["reachable:esxi-1"].inputs == {"user": "root", "port": 22}  # converged labs stay converged
    assert "configure:esxi-1" in kinds


def test_ssh_false_with_a_role_applied_over_ssh_is_refused_at_its_line(tmp_path: Path) -> None:
    problem = only(tmp_path, LAB.replace("roles: [esxi-host]", "roles: [base]"))
    assert problem.message == "node esxi-1: ssh: false, but role 'base' is applied over SSH"
    assert problem.location.path == "groups.esxi.ssh"
    assert problem.location.line == 9
    assert "drop ssh: false, or drop the role base" in problem.hint


def test_a_libvirt_node_nothing_logs_in_to_needs_no_user_mode_nic(tmp_path: Path) -> None:
    text = """name: iso
providers:
  local: {kind: libvirt}
images:
  deb: {build: {}}
networks:
  labnet: {provider: local, mode: isolated, cidr: 10.20.0.0/24}
nodes:
  appliance: {provider: local, image: deb, networks: [labnet], ssh: false}
"""
    assert not valid(tmp_path, text).nodes["appliance"].ssh
    problem = only(tmp_path, text.replace(", ssh: false", ""))
    assert "the host cannot reach it over labnet (isolated)" in problem.message


class _Provider:
    name = "dc1"

    def __init__(self, info: MachineInfo) -> None:
        self.info = info

    def create_machine(self, _node: Any, _tags: Any) -> MachineInfo:
        return self.info

    def status(self, _name: str) -> MachineInfo:
        return self.info

    def wait_reachable(self, *_args: Any) -> float:
        raise AssertionError("nothing may log in to a node with ssh: false")


def _ctx(tmp_path: Path, info: MachineInfo, text: str = LAB) -> Any:
    resolved = valid(tmp_path, text)
    return SimpleNamespace(resolved=resolved, providers=SimpleNamespace(get=lambda _name: _Provider(info)),
                           tags=None)


def test_the_steps_record_an_ssh_less_machine_and_never_log_in(tmp_path: Path) -> None:
    resource = SimpleNamespace(name="esxi-1", provider="dc1")
    up = MachineInfo("esxi-1", "running", addresses={"vmnet": "10.0.0.5"})
    ctx = _ctx(tmp_path, up)
    assert _machine(resource, ctx) == {"state": "running", "ports": {}, "addresses": {"vmnet": "10.0.0.5"}}
    assert _reachable(resource, ctx) == {"state": "running", "addresses": {"vmnet": "10.0.0.5"}}
    with pytest.raises(StageError, match="reports machine esxi-1 stopped"):
        _reachable(resource, _ctx(tmp_path, MachineInfo("esxi-1", "stopped")))


def test_a_node_that_needs_ssh_still_fails_without_an_endpoint(tmp_path: Path) -> None:
    resource = SimpleNamespace(name="esxi-1", provider="dc1")
    ctx = _ctx(tmp_path, MachineInfo("esxi-1", "running"), LAB.replace(", ssh: false", ""))
    with pytest.raises(StageError, match="no SSH endpoint") as err:
        _machine(resource, ctx)
    assert "ssh: false" in (err.value.hint or "")


def test_the_plan_of_a_mixed_lab_names_the_provider_each_machine_lands_on() -> None:
    from deploy.model import open_lab
    from deploy.plan import make_plan
    from deploy.render import plan_text
    from deploy.state import LabState

    root = Path(__file__).resolve().parents[2]
    for lab, where in (("nested-esxi", True), ("quickstart", False)):
        resolved = open_lab(root / "labs" / lab / "lab.yaml")[1]
        text = plan_text(make_plan(resolved, LabState(lab=resolved.name)))
        rows = {line.split()[1]: line for line in text.splitlines()[1:-1]}
        if where:
            assert rows["machine:esxi-1"].endswith("create on dc1")
            assert rows["machine:kvm-1"].endswith("create on local")
            assert rows["image:dc1/esxi8"].endswith("create on dc1")
            assert rows["reachable:esxi-1"].endswith("create")  # only what lands somewhere says where
        else:
            assert all(" on " not in row for row in rows.values())


JOIN = LAB.replace("roles: [esxi-host], ssh: false}", "roles: [esxi-host], ssh: false,\n"
                   "         join: {cluster: C0, password: {env: ESXI_PASSWORD}}}")


def test_a_joining_esxi_node_gets_a_join_step_after_it_is_reachable(tmp_path: Path) -> None:
    resources = build_resources(valid(tmp_path, JOIN))
    join = resources["join:esxi-1"]
    assert join.deps == ("reachable:esxi-1",)
    assert join.provider == "dc1"
    assert join.inputs["cluster"] == "C0"
    assert join.inputs["password"] == {"env": "ESXI_PASSWORD", "file": None, "cmd": None}  # the reference only
    assert "join" not in resources["machine:esxi-1"].inputs


def test_join_without_the_esxi_host_role_is_refused_at_its_line(tmp_path: Path) -> None:
    problem = only(tmp_path, JOIN.replace("roles: [esxi-host], ", ""))
    assert problem.message == "node esxi-1: join: adds an ESXi host to a cluster, but the node has no esxi-host role"
    assert problem.location.path == "groups.esxi.join"
    assert problem.location.line == 10


def test_join_through_a_provider_that_is_not_vsphere_is_refused(tmp_path: Path) -> None:
    text = JOIN.replace("providers:\n", "providers:\n  local: {kind: libvirt}\n").replace(
        "join: {cluster: C0,", "join: {provider: local, cluster: C0,")
    problem = only(tmp_path, text)
    assert problem.message == "node esxi-1: join: provider 'local' is not a vsphere provider"
    assert "dc1" in problem.hint
