"""``deploy up/status/destroy/reap`` of a small vSphere lab against the TLS vcsim, through the CLI.

vcsim runs no guest OS: our vcsim plays VMware Tools (a guest address from 192.0.2.0/24 after
power-on), and the lab's node is ``ssh: false``, so ``up`` waits for the guest through the
PropertyCollector and nothing connects to it (the traffic rule).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect

from deploy.providers.vsphere_tasks import wait_task
from tests.integration.test_vsphere_provider import TEMPLATE, inventory
from tests.integration.vcsim_fixtures import GUEST_NET, Vcsim

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LAB = """\
name: vslab-cli
providers:
  dc1: {{kind: vsphere, host: 127.0.0.1, port: {port}, user: administrator@vsphere.local,
        password: {{env: VSPHERE_PASSWORD}}, datacenter: DC0, cluster: DC0_C0, datastore: LocalDS_0,
        ca_bundle: "{ca}"}}
images:
  tmpl: {{template: {template}}}
networks:
  vmnet: {{provider: dc1, mode: bridge, bridge: "VM Network"}}
nodes:
  vm1: {{provider: dc1, image: tmpl, networks: [vmnet], ssh: false}}
"""


@pytest.fixture
def sim(vcsim_factory: Any) -> Iterator[tuple[Vcsim, Any]]:
    sim = vcsim_factory()
    si = SmartConnect(host=sim.host, port=sim.port, user="user", pwd="pass",
                      sslContext=ssl.create_default_context(cafile=str(sim.ca_file)))
    template = si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{TEMPLATE}")
    wait_task(si, template.CreateSnapshot_Task(name="base", memory=False, quiesce=False), what="snapshot")
    yield sim, si
    Disconnect(si)


def _deploy(lab: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VSPHERE_PASSWORD="vcsim-password-123")
    return subprocess.run([sys.executable, "-m", "deploy.cli", *args], env=env, cwd=lab.parent,
                          capture_output=True, text=True, timeout=240, check=False)


def _lab(tmp_path: Path, sim: Vcsim) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(LAB.format(port=sim.port, ca=sim.ca_file, template=TEMPLATE))
    return path


def test_up_status_destroy_leave_an_empty_inventory(sim: tuple[Vcsim, Any], tmp_path: Path) -> None:
    server, si = sim
    before = inventory(si)
    lab = _lab(tmp_path, server)
    assert _deploy(lab, "validate", str(lab)).returncode == 0
    up = _deploy(lab, "up", str(lab))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "ok machine:vm1" in up.stderr
    assert "vcsim-password-123" not in up.stdout + up.stderr
    assert "vim.Folder:vslab-cli" in inventory(si)
    assert "vim.VirtualMachine:vslab-cli-vm1" in inventory(si)
    status = _deploy(lab, "status", str(lab))
    assert status.returncode == 0, status.stderr
    assert "running" in status.stdout
    destroyed = _deploy(lab, "destroy", str(lab))
    assert destroyed.returncode == 0, destroyed.stderr
    assert inventory(si) == before
    reaped = _deploy(lab, "reap", str(lab))
    assert reaped.returncode == 0, reaped.stderr
    assert inventory(si) == before


def test_reap_removes_a_vm_whose_lab_state_is_gone(sim: tuple[Vcsim, Any], tmp_path: Path) -> None:
    server, si = sim
    before = inventory(si)
    lab = _lab(tmp_path, server)
    _deploy(lab, "up", str(lab))
    assert "vim.VirtualMachine:vslab-cli-vm1" in inventory(si)
    shutil.rmtree(tmp_path / ".labdeploy")
    dry = _deploy(lab, "reap", "--dry-run", str(lab))
    assert "would remove machine vslab-cli-vm1" in dry.stdout, dry.stdout + dry.stderr
    assert "vim.VirtualMachine:vslab-cli-vm1" in inventory(si)
    reaped = _deploy(lab, "reap", str(lab))
    assert reaped.returncode == 0, reaped.stderr
    assert inventory(si) == before  # the VM and its emptied lab folder


def test_up_waits_for_the_guest_then_a_second_up_changes_nothing(sim: tuple[Vcsim, Any], tmp_path: Path) -> None:
    server, si = sim
    lab = _lab(tmp_path, server)
    up = _deploy(lab, "up", str(lab))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "ok reachable:vm1" in up.stderr
    vm = si.content.searchIndex.FindByInventoryPath("DC0/vm/vslab-cli/vslab-cli-vm1")
    reported = vm.guest.ipAddress
    assert ip_address(reported) in ip_network(GUEST_NET)
    assert f"vm1: {reported} (ssh: false)" in up.stdout  # no ssh command line for a node nothing logs in to
    again = _deploy(lab, "up", str(lab))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout
    rows = json.loads(_deploy(lab, "status", "--output", "json", str(lab)).stdout)
    assert [(r["node"], r["state"]) for r in rows] == [("vm1", "running")]
    assert _deploy(lab, "destroy", str(lab)).returncode == 0


def test_a_powered_off_ssh_less_machine_fails_reachable_until_it_is_replaced(sim: tuple[Vcsim, Any],
                                                                             tmp_path: Path) -> None:
    server, si = sim
    lab = _lab(tmp_path, server)
    assert _deploy(lab, "up", str(lab)).returncode == 0
    vm = si.content.searchIndex.FindByInventoryPath("DC0/vm/vslab-cli/vslab-cli-vm1")
    wait_task(si, vm.PowerOffVM_Task(), what="power-off")
    again = _deploy(lab, "up", "--replace", "reachable:vm1", str(lab))
    assert again.returncode != 0
    assert "reports machine vm1 stopped" in again.stderr
    replaced = _deploy(lab, "up", "--replace", "machine:vm1", str(lab))
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    vm = si.content.searchIndex.FindByInventoryPath("DC0/vm/vslab-cli/vslab-cli-vm1")  # a new VM
    assert str(vm.runtime.powerState) == "poweredOn"
    assert _deploy(lab, "destroy", str(lab)).returncode == 0


ESXI_LAB = LAB.replace("  vm1: {{provider: dc1, image: tmpl, networks: [vmnet], ssh: false}}\n", """\
groups:
  esxi: {{provider: dc1, image: tmpl, networks: [vmnet], ssh: false, roles: [esxi-host], count: 2,
         join: {{cluster: DC0_C0, password: {{env: VSPHERE_PASSWORD}}}}}}
""").replace("nodes:\n", "")


def _hosts(si: Any) -> list[str]:
    cluster = si.content.searchIndex.FindByInventoryPath("DC0/host/DC0_C0")
    return sorted(h.name for h in cluster.host)


def test_nested_esxi_nodes_join_the_cluster_and_leave_it_on_destroy(sim: tuple[Vcsim, Any], tmp_path: Path) -> None:
    """Two esxi-host nodes (clones standing in for the OVA vcsim cannot import) join DC0_C0 at their guest IPs."""
    server, si = sim
    before, hosts_before = inventory(si), _hosts(si)
    lab = tmp_path / "lab.yaml"
    lab.write_text(ESXI_LAB.format(port=server.port, ca=server.ca_file, template=TEMPLATE))
    up = _deploy(lab, "up", str(lab))
    assert up.returncode == 0, up.stdout + up.stderr
    assert "ok join:esxi-1" in up.stderr
    guests = sorted(si.content.searchIndex.FindByInventoryPath(f"DC0/vm/vslab-cli/vslab-cli-esxi-{i}").guest.ipAddress
                    for i in (1, 2))
    assert sorted(set(_hosts(si)) - set(hosts_before)) == guests  # added at the address Tools reported
    assert "vcsim-password-123" not in up.stdout + up.stderr
    assert "vcsim-password-123" not in "".join(p.read_text() for p in tmp_path.rglob("*.json"))
    again = _deploy(lab, "up", str(lab))
    assert "No changes" in again.stdout, again.stdout + again.stderr
    destroyed = _deploy(lab, "destroy", str(lab))
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert _hosts(si) == hosts_before  # out of the cluster before their VMs went
    assert inventory(si) == before


def test_a_join_to_an_unknown_cluster_fails_naming_the_clusters_there_are(sim: tuple[Vcsim, Any],
                                                                          tmp_path: Path) -> None:
    server, si = sim
    hosts_before = _hosts(si)
    lab = tmp_path / "lab.yaml"
    lab.write_text(ESXI_LAB.replace("cluster: DC0_C0", "cluster: DC0_C9").format(
        port=server.port, ca=server.ca_file, template=TEMPLATE))
    up = _deploy(lab, "up", str(lab))
    assert up.returncode != 0
    assert "unknown cluster 'DC0_C9' in datacenter DC0; there are: DC0_C0" in up.stderr
    assert _hosts(si) == hosts_before
    assert _deploy(lab, "destroy", str(lab)).returncode == 0
