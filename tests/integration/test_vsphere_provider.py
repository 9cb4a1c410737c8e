"""The vsphere provider against govmomi's simulator over TLS (tests/integration/vcsim_fixtures.py).

What vcsim does not model: it runs no guest OS (no SSH; the guest IP is what our vcsim's ``-guest-net``
reports as VMware Tools would), and a linked clone copies the disks; the tests check what the provider
sent (the clone's config read back from the VM).
"""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from deploy.errors import ProviderError
from deploy.model.resolved import Nic, ResolvedImage, ResolvedNetwork, ResolvedNode
from deploy.model.schema import VsphereProviderSpec
from deploy.providers.base import ProviderContext, Tags
from deploy.providers.vsphere import VsphereProvider
from deploy.providers.vsphere_tasks import wait_task
from tests.integration.vcsim_fixtures import GUEST_NET, Vcsim

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TEMPLATE = "DC0_C0_RP0_VM0"
PASSWORD = "not-a-real-password-7f3a"


def _spec(sim: Vcsim, **over: Any) -> VsphereProviderSpec:
    data = {"kind": "vsphere", "host": sim.host, "port": sim.port, "user": "administrator@vsphere.local",
            "password": {"env": "VCSIM_TEST_PASSWORD"}, "datacenter": "DC0", "cluster": "DC0_C0",
            "datastore": "LocalDS_0", "ca_bundle": str(sim.ca_file)}
    return VsphereProviderSpec.model_validate(data | over)


TMPL = ResolvedImage(name="tmpl", source="template", template=TEMPLATE)
VMNET = ResolvedNetwork(name="vmnet", provider="dc1", mode="bridge", bridge="VM Network")


def _provider(sim: Vcsim, tmp_path: Path, lab: str = "vslab", nodes: tuple[ResolvedNode, ...] = (),
              **over: Any) -> VsphereProvider:
    ctx = ProviderContext(lab=lab, state_dir=tmp_path, secret=lambda _ref: PASSWORD,
                          ssh_public_key="ssh-ed25519 AAAAC3Nza test@labdeploy",
                          ssh_private_key=tmp_path / "id_ed25519", networks={"vmnet": VMNET}, images={"tmpl": TMPL},
                          nodes={n.name: n for n in nodes})
    return VsphereProvider("dc1", _spec(sim, **over), ctx)


def _node(name: str = "vm1", *, nested: bool = True, network: str = "VM Network") -> ResolvedNode:
    return ResolvedNode(name=name, group=None, index=0, provider="dc1", image="tmpl", cpus=2, memory_mib=1024,
                        disk_gib=10, nics=(Nic(network=network, mode="bridge"),), nested_virtualization=nested,
                        ssh_user="debian", ssh_port=2222)


def _tags(lab: str = "vslab", expires: datetime | None = None) -> Tags:
    return Tags(lab=lab, run_id="run-1", created=datetime.now(UTC), expires=expires)


def inventory(si: Any) -> list[str]:
    """Every VM and folder in the simulator, as sorted 'Type:name' strings."""
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine, vim.Folder], True)
    try:
        return sorted(f"{type(o).__name__}:{o.name}" for o in view.view)
    finally:
        view.DestroyView()


@pytest.fixture(scope="module")
def admin(vcsim: Vcsim) -> Iterator[Any]:
    """A plain pyvmomi session for reading the simulator back; the template gets a snapshot."""
    si = SmartConnect(host=vcsim.host, port=vcsim.port, user="user", pwd="pass",
                      sslContext=ssl.create_default_context(cafile=str(vcsim.ca_file)))
    template = si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{TEMPLATE}")
    if template.snapshot is None or template.snapshot.currentSnapshot is None:  # vcsim: an empty SnapshotInfo
        wait_task(si, template.CreateSnapshot_Task(name="base", memory=False, quiesce=False), what="snapshot")
    yield si
    Disconnect(si)


@pytest.fixture
def provider(vcsim: Vcsim, tmp_path: Path, admin: Any) -> Iterator[VsphereProvider]:  # noqa: ARG001 (snapshot)
    p = _provider(vcsim, tmp_path)
    p.prepare_image(ResolvedImage(name="tmpl", source="template", template=TEMPLATE))
    yield p
    p.close()


def test_check_passes_with_the_ca_bundle(provider: VsphereProvider) -> None:
    provider.check()


def test_untrusted_certificate_is_refused_with_a_clear_error(vcsim: Vcsim, tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="TLS certificate is not trusted") as err:
        _provider(vcsim, tmp_path, ca_bundle=None).check()
    assert "ca_bundle" in err.value.hint


def test_thumbprint_pin_mismatch_is_refused(vcsim: Vcsim, tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="is not the pinned thumbprint"):
        _provider(vcsim, tmp_path, ca_bundle=None, thumbprint="AA:" * 31 + "AA").check()


@pytest.mark.parametrize("case", [
    ("datacenter", "DC9", "DC0"), ("cluster", "DC0_C9", "DC0_C0"), ("datastore", "LocalDS_9", "LocalDS_0"),
    ("folder", "nofolder", "none"), ("resource_pool", "RP9", "Resources"),
])
def test_unknown_names_list_what_exists(vcsim: Vcsim, tmp_path: Path, admin: Any, case: tuple[str, str, str]) -> None:
    field, value, listed = case
    before = inventory(admin)
    with pytest.raises(ProviderError, match=f"unknown .*{value!r}.*there are: .*{listed}"):
        _provider(vcsim, tmp_path, **{field: value}).check()
    assert inventory(admin) == before


def test_unknown_template_and_port_group_create_nothing(provider: VsphereProvider, admin: Any) -> None:
    before = inventory(admin)
    with pytest.raises(ProviderError, match=f"unknown template 'DC0_C0_RP0_VMX'.*there are: {TEMPLATE}"):
        provider.prepare_image(ResolvedImage(name="bad", source="template", template="DC0_C0_RP0_VMX"))
    with pytest.raises(ProviderError, match=r"unknown port group 'VM Netwrk'.*there are: VM Network"):
        provider.create_machine(_node(network="VM Netwrk"), _tags())
    assert inventory(admin) == before


def test_clone_reads_back_with_size_nested_hv_guestinfo_and_tags(provider: VsphereProvider, admin: Any) -> None:
    before = inventory(admin)
    assert provider.create_network(VMNET, _tags()) == {"portgroup": "VM Network"}
    info = provider.create_machine(_node(network="vmnet"), _tags())
    assert info.state == "running"
    vm = admin.content.searchIndex.FindByInventoryPath("DC0/vm/vslab/vslab-vm1")
    assert vm is not None, inventory(admin)
    assert (vm.config.hardware.numCPU, vm.config.hardware.memoryMB) == (2, 1024)
    assert vm.config.nestedHVEnabled is True
    extra = {o.key: o.value for o in vm.config.extraConfig}
    assert extra["labdeploy.lab"] == "vslab"
    assert extra["labdeploy.run_id"] == "run-1"
    assert json.loads(base64.b64decode(extra["guestinfo.metadata"]))["local-hostname"] == "vm1"
    assert "ssh-ed25519" in base64.b64decode(extra["guestinfo.userdata"]).decode()
    assert str(vm.runtime.powerState) == "poweredOn"
    nics = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    assert "VM Network" in [getattr(n.backing, "deviceName", None) for n in nics]  # the template has a DVS NIC
    assert provider.status("vm1").state == "running"
    assert [r.name for r in provider.find_resources("vslab")] == ["vm1"]
    assert provider.create_machine(_node(), _tags()).extra["moid"] == info.extra["moid"]  # idempotent

    provider.delete_machine("vm1")
    assert provider.status("vm1").state == "absent"
    assert inventory(admin) == before


def test_reap_finds_expired_tagged_vms_of_any_lab(provider: VsphereProvider, admin: Any) -> None:
    before = inventory(admin)
    provider.create_machine(_node("old"), _tags(expires=datetime.now(UTC) - timedelta(hours=1)))
    found = [r for r in provider.reap_candidates() if r.name == "vslab-old"]
    assert found
    assert found[0].tags.expires is not None
    assert found[0].tags.expires < datetime.now(UTC)
    provider.reap_remove(found[0])
    provider.delete_machine("old")  # the now-empty lab folder goes too
    assert inventory(admin) == before


def test_password_appears_in_no_error(vcsim: Vcsim, tmp_path: Path) -> None:
    with pytest.raises(ProviderError) as err:
        _provider(vcsim, tmp_path, datacenter="nope").check()
    assert PASSWORD not in str(err.value) + err.value.hint


def test_the_task_cap_bounds_clones_in_flight(vcsim_factory: Callable[..., Vcsim], tmp_path: Path) -> None:
    """Six clones in parallel threads under max_tasks: 2 against a 0.3 s CloneVM_Task: at most two at once."""
    sim = vcsim_factory(method_delay={"CloneVM_Task": 0.3})
    admin_si = SmartConnect(host=sim.host, port=sim.port, user="user", pwd="pass",
                            sslContext=ssl.create_default_context(cafile=str(sim.ca_file)))
    before = inventory(admin_si)
    p = _provider(sim, tmp_path, clone="full", max_tasks=2)
    p.prepare_image(ResolvedImage(name="tmpl", source="template", template=TEMPLATE))
    p.check()  # the session is open before the threads share it
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=6) as pool:
        infos = list(pool.map(lambda i: p.create_machine(_node(f"m{i}"), _tags()), range(6)))
    elapsed = time.monotonic() - started
    assert all(info.state == "running" for info in infos)
    assert p.tasks.peak == 2
    assert elapsed >= 3 * 0.3  # six 0.3 s clones, two at a time
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(p.delete_machine, [f"m{i}" for i in range(6)]))
    assert inventory(admin_si) == before
    p.close()
    Disconnect(admin_si)


def _expired_once(monkeypatch: pytest.MonkeyPatch, times: int) -> list[Any]:
    """The inventory read answers vim.fault.NotAuthenticated ``times`` times, then reads for real; the
    sessions it was called with. (vcsim v0.18 answers a logged-out session with a fault pyvmomi cannot
    read, not with NotAuthenticated as vCenter does, so the expiry is injected where the provider reads.)"""
    from deploy.providers import vsphere_inventory

    real, seen = vsphere_inventory.tagged_vms, []

    def tagged_vms(si: Any) -> list[tuple[Any, dict[str, str]]]:
        seen.append(si)
        if len(seen) <= times:
            raise vim.fault.NotAuthenticated()
        return real(si)

    monkeypatch.setattr(vsphere_inventory, "tagged_vms", tagged_vms)
    return seen


def test_a_session_that_ends_mid_run_is_renewed_once(provider: VsphereProvider,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first = provider.si
    seen = _expired_once(monkeypatch, times=1)
    assert provider.status("nothing-here").state == "absent"  # answered through a new login
    assert seen[0] is first
    assert seen[1] is provider.si
    assert provider.si is not first
    assert provider.si.content.sessionManager.currentSession is not None  # a real, logged-in session


def test_a_session_refused_again_after_a_new_login_is_a_clear_error(provider: VsphereProvider,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _expired_once(monkeypatch, times=2)
    with pytest.raises(ProviderError, match="reading box: the session was refused again right after a new login"):
        provider.status("box")
    assert len(seen) == 2  # renewed once, not in a loop


def test_the_machine_waits_for_tools_and_takes_the_guests_address(vcsim: Vcsim, tmp_path: Path, admin: Any) -> None:
    """The address comes from the PropertyCollector wait; it is the SSH endpoint and the lab network's address."""
    before = inventory(admin)
    node = _node("g1", network="vmnet")
    p = _provider(vcsim, tmp_path, nodes=(node,))
    p.prepare_image(ResolvedImage(name="tmpl", source="template", template=TEMPLATE))
    info = p.create_machine(node, _tags())
    vm = admin.content.searchIndex.FindByInventoryPath("DC0/vm/vslab/vslab-g1")
    reported = vm.guest.ipAddress
    assert ip_address(reported) in ip_network(GUEST_NET)
    assert vm.guest.toolsRunningStatus == "guestToolsRunning"
    assert info.ssh is not None
    assert (info.ssh.host, info.ssh.port, info.ssh.user) == (reported, 2222, "debian")
    assert info.addresses == {"vmnet": reported}
    assert p.status("g1").ssh == info.ssh  # read back later from the VM alone

    wait_task(admin, vm.PowerOffVM_Task(), what="power-off")  # someone powered it off: up starts it again
    assert p.status("g1").ssh is None
    again = p.create_machine(node, _tags())
    assert str(vm.runtime.powerState) == "poweredOn"
    assert again.ssh == info.ssh  # the same guest, the same address
    p.delete_machine("g1")
    p.close()
    assert inventory(admin) == before


def test_a_guest_that_never_reports_an_address_times_out_naming_tools(vcsim_factory: Callable[..., Vcsim],
                                                                        tmp_path: Path) -> None:
    sim = vcsim_factory(guest_net=None)  # the simulator's own VMs: tools never run
    node = _node("silent")
    p = _provider(sim, tmp_path, nodes=(node,), guest_timeout=2)
    p.prepare_image(ResolvedImage(name="tmpl", source="template", template=TEMPLATE))
    admin_si = SmartConnect(host=sim.host, port=sim.port, user="user", pwd="pass",
                            sslContext=ssl.create_default_context(cafile=str(sim.ca_file)))
    template = admin_si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{TEMPLATE}")
    wait_task(admin_si, template.CreateSnapshot_Task(name="base", memory=False, quiesce=False), what="snapshot")
    with pytest.raises(ProviderError, match="VMware Tools in vslab-silent to report the guest running with an IPv4"):
        p.create_machine(node, _tags())
    assert [r.name for r in p.find_resources("vslab")] == ["silent"]  # tagged: destroy and reap find it
    p.delete_machine("silent")
    assert p.find_resources("vslab") == []
    p.close()
    Disconnect(admin_si)


def test_a_wrong_password_is_refused_naming_the_user_and_creating_nothing(vcsim_factory: Callable[..., Vcsim],
                                                                        tmp_path: Path) -> None:
    sim = vcsim_factory(password="the-right-one-31c9")  # our vcsim checks it; v0.18 alone accepts any
    with pytest.raises(ProviderError, match=r"login refused for user administrator@vsphere\.local") as err:
        _provider(sim, tmp_path).check()  # logs in with PASSWORD
    assert PASSWORD not in str(err.value) + err.value.hint
    assert "the secret the password refers to" in err.value.hint
    admin_si = SmartConnect(host=sim.host, port=sim.port, user="user", pwd="the-right-one-31c9",
                            sslContext=ssl.create_default_context(cafile=str(sim.ca_file)))
    assert not [n for n in inventory(admin_si) if "vslab" in n]
    Disconnect(admin_si)
