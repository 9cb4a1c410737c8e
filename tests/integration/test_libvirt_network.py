"""libvirt provider against the real libvirtd: networks, metadata, errors, remote URIs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import libvirt
import pytest

from deploy.errors import ConfigError, ProviderError
from deploy.model.resolved import Nic, ResolvedNetwork, ResolvedNode
from deploy.providers.accel import cpu_virt_flag
from deploy.providers.libvirt import LibvirtProvider
from deploy.providers.libvirt_xml import NS
from deploy.reaper import reap
from tests.integration.libvirt_fixtures import LabFactory, free_cidr, labs, libvirtd, new_tags, ssh_uri

__all__ = ["labs", "libvirtd", "ssh_uri"]
pytestmark = pytest.mark.integration


def isolated(name: str, cidr: str) -> ResolvedNetwork:
    return ResolvedNetwork(
        name, "local", "isolated", cidr=cidr, reservations=(("n1", "52:54:00:00:00:01", cidr.replace("0/24", "10")),)
    )


def lab_network_names(uri: str, lab: str) -> list[str]:
    conn = libvirt.open(uri)
    try:
        names = []
        for net in conn.listAllNetworks(0):
            meta = ET.fromstring(net.XMLDesc(0)).find(f"metadata/{{{NS}}}lab/{{{NS}}}name")
            if meta is not None and meta.text == lab:
                names.append(net.name())
        return names
    finally:
        conn.close()


def test_isolated_network_is_created_tagged_found_and_deleted(labs: LabFactory) -> None:
    prov = labs.provider()
    lab = prov.ctx.lab
    cidr = free_cidr()
    tags = new_tags(lab)
    out = prov.create_network(isolated("labnet", cidr), tags)
    assert out["libvirt_name"] == f"{lab}-labnet"
    assert out["bridge"].startswith("virbr")
    net = prov.conn.networkLookupByName(f"{lab}-labnet")
    assert net.isActive()
    root = ET.fromstring(net.XMLDesc(0))
    assert root.find("forward") is None
    assert root.find(f"metadata/{{{NS}}}lab/{{{NS}}}run-id").text == tags.run_id  # type: ignore[union-attr]
    assert root.find("ip/dhcp/host").get("name") == "n1"  # type: ignore[union-attr]

    assert prov.create_network(isolated("labnet", cidr), tags) == out  # idempotent
    found = prov.find_resources(lab)
    assert [(r.kind, r.name, r.tags.run_id) for r in found] == [("network", "labnet", tags.run_id)]

    prov.delete_network("labnet")
    assert lab_network_names(labs.uri, lab) == []
    assert prov.find_resources(lab) == []
    prov.delete_network("labnet")  # already gone: fine


def test_user_mode_network_creates_nothing(labs: LabFactory) -> None:
    prov = labs.provider()
    assert prov.create_network(ResolvedNetwork("mgmt", "local", "user"), new_tags(prov.ctx.lab)) == {"mode": "user"}
    assert lab_network_names(labs.uri, prov.ctx.lab) == []


def test_overlapping_cidr_names_the_existing_network(labs: LabFactory) -> None:
    first, second = labs.provider(), labs.provider()
    cidr = free_cidr()
    first.create_network(isolated("labnet", cidr), new_tags(first.ctx.lab))
    inner = cidr.replace(".0/24", ".128/25")
    with pytest.raises(ProviderError, match=f"overlaps the existing libvirt network {first.ctx.lab}-labnet") as err:
        second.create_network(isolated("other", inner), new_tags(second.ctx.lab))
    assert "choose a cidr" in err.value.hint
    assert lab_network_names(labs.uri, second.ctx.lab) == []


def test_network_of_another_lab_with_the_same_libvirt_name_is_refused(labs: LabFactory) -> None:
    owner = labs.provider()
    owner.create_network(isolated("x-labnet", free_cidr()), new_tags(owner.ctx.lab))
    name = f"{owner.ctx.lab}-x-labnet"
    intruder = labs.provider(f"{owner.ctx.lab}-x")  # lab "L-x" + net "labnet" -> same libvirt name
    with pytest.raises(ProviderError, match=f"{name} already exists and belongs to lab '{owner.ctx.lab}'"):
        intruder.create_network(isolated("labnet", free_cidr()), new_tags(intruder.ctx.lab))
    intruder.delete_network("labnet")  # not its own: left alone
    assert lab_network_names(labs.uri, owner.ctx.lab) == [name]


@pytest.mark.parametrize(
    "uri",
    ["qemu+unix:///system?socket=/nonexistent/libvirt-sock", "qemu+tcp://127.0.0.1:1/system"],
)
def test_unreachable_uri_names_the_uri_and_the_fix(labs: LabFactory, uri: str) -> None:
    prov = labs.provider(uri=uri)
    with pytest.raises(ProviderError) as err:
        prov.check()
    assert uri in err.value.message
    assert "start libvirtd" in err.value.hint
    assert "ssh" in err.value.hint


def test_accel_kvm_on_a_host_without_vmx_svm_is_a_config_error(labs: LabFactory) -> None:
    with open("/proc/cpuinfo") as fh:
        if cpu_virt_flag(fh.read()):
            pytest.skip("this host's CPU has vmx/svm; cannot show the no-KVM error here")
    prov = labs.provider(accel="kvm")
    with pytest.raises(ConfigError, match="KVM cannot work on this host"):
        prov.check()
    assert labs.provider(accel="auto").accel() == "tcg"


def test_reap_removes_only_expired_resources(labs: LabFactory) -> None:
    prov = labs.provider()
    lab = prov.ctx.lab
    past = datetime.now(UTC) - timedelta(minutes=5)
    prov.create_network(isolated("old", free_cidr()), new_tags(lab, expires=past))
    prov.create_network(isolated("fresh", free_cidr()), new_tags(lab))
    listed = reap([prov], older_than=None, dry_run=True, lab=lab)
    assert [(r.resource.kind, r.resource.name) for r in listed] == [("network", f"{lab}-old")]
    assert listed[0].reason.startswith("expired ")
    assert len(lab_network_names(labs.uri, lab)) == 2
    reap([prov], older_than=None, dry_run=False, lab=lab)
    assert lab_network_names(labs.uri, lab) == [f"{lab}-fresh"]


def test_reap_takes_orphans_whose_lab_state_is_gone_and_age_only_when_asked(labs: LabFactory, tmp_path: Path) -> None:
    prov = labs.provider()
    lab = prov.ctx.lab
    live, gone = tmp_path / "live", tmp_path / "gone"
    live.mkdir()
    (live / "state.json").write_text("{}")
    old = datetime.now(UTC) - timedelta(days=3)
    prov.create_network(isolated("kept", free_cidr()), replace(new_tags(lab, created=old), state=str(live)))
    prov.create_network(isolated("orphan", free_cidr()), replace(new_tags(lab), state=str(gone)))
    listed = reap([prov], older_than=None, dry_run=True, lab=lab)
    assert [(r.resource.name, r.reason.split(":")[0]) for r in listed] == [(f"{lab}-orphan", "orphan")]
    aged = reap([prov], older_than=timedelta(days=1), dry_run=True, lab=lab)
    assert sorted(r.resource.name for r in aged) == [f"{lab}-kept", f"{lab}-orphan"]
    assert len(lab_network_names(labs.uri, lab)) == 2  # dry runs removed nothing


def test_remote_qemu_ssh_uri_lists_creates_and_deletes_a_network(labs: LabFactory, ssh_uri: str) -> None:
    prov = labs.provider(uri=ssh_uri)
    prov.check()
    lab = prov.ctx.lab
    out = prov.create_network(isolated("remote", free_cidr()), new_tags(lab))
    assert out["libvirt_name"] == f"{lab}-remote"
    assert [r.name for r in prov.find_resources(lab)] == ["remote"]
    assert lab_network_names(labs.uri, lab) == [f"{lab}-remote"]  # seen through the local socket too
    prov.delete_network("remote")
    assert prov.find_resources(lab) == []
    assert isinstance(prov, LibvirtProvider)


def test_reap_dry_run_over_every_lab_lists_only_unused_base_images_and_stale_resources(labs: LabFactory) -> None:
    prov = labs.provider()
    conn = prov.conn
    listed = [r.resource for r in reap([prov], older_than=timedelta(0), dry_run=True)]  # nothing is removed
    bases = [r.name for r in listed if r.name.startswith("base-")]
    pool = conn.storagePoolLookupByName("labdeploy") if "labdeploy" in conn.listStoragePools() else None
    if pool is None:
        assert bases == []
        return
    backing = {ET.fromstring(v.XMLDesc(0)).findtext("backingStore/path") for v in pool.listAllVolumes(0)}
    for name in bases:
        assert pool.storageVolLookupByName(name).path() not in backing  # still there: dry run
    assert all(r.tags.lab or r.name.startswith("base-") for r in listed)


def test_domain_of_the_same_name_not_owned_by_the_lab_is_refused(labs: LabFactory) -> None:
    prov = labs.provider()
    name = f"{prov.ctx.lab}-n1"
    foreign = (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"
    )
    dom = prov.conn.defineXML(foreign)
    try:
        node = ResolvedNode("n1", None, 0, "local", "debian12", 1, 256, 4, (Nic("mgmt", "user"),))
        with pytest.raises(ProviderError, match=f"domain {name} already exists and belongs to something other"):
            prov.create_machine(node, new_tags(prov.ctx.lab))
        prov.delete_machine("n1")  # not the lab's: left alone
        assert prov.conn.lookupByName(name).name() == name
        assert prov.status("n1").state == "absent"
    finally:
        dom.undefine()
