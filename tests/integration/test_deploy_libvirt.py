"""The whole framework on real libvirt, driven through the `deploy` command line.

One 2-VM lab (user-mode mgmt NIC + an isolated network without DHCP) is brought up once and
shared: SSH through loopback forwards, guest-to-guest ping, an idempotent second `deploy up`,
a second lab with the same node names next to it, a `deploy up` killed with SIGKILL while
machines are being created, and `deploy destroy` leaving nothing tagged with the lab.
Bad input (no VM) must fail with a clear message and leave nothing half-created.

Timings go to ``$LABDEPLOY_DEPLOY_TIMINGS`` (default /tmp/labdeploy-deploy-timings.json).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from deploy.images.seed import hosts_file, networkd_file, user_data
from deploy.providers.accel import choose_accel
from deploy.providers.base import SshEndpoint, Tags
from deploy.providers.libvirt_xml import NS, LabMeta, network_xml, parse_meta, static_cidr
from deploy.ssh import known_hosts_path, run_command
from tests.integration.libvirt_fixtures import SYSTEM, free_cidr, libvirtd, new_tags
from tests.integration.test_libvirt_vm import PING

__all__ = ["libvirtd"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
ROOT = Path(__file__).resolve().parents[2]
TIMINGS: dict[str, float] = {}
DEPLOY = [sys.executable, "-c", "import sys; from deploy.cli import main; sys.exit(main())"]


@dataclass
class Lab:
    name: str
    file: Path
    state: Path
    artifacts: Path
    cidr: str = ""
    first_up: str = ""

    def args(self, command: str) -> list[str]:
        extra = ["--artifacts", str(self.artifacts)] if command == "up" else []
        return [command, str(self.file), "--state-dir", str(self.state), *extra]


def lab_yaml(name: str, *, count: int = 2, cidr: str | None = None, provider: str = "", image: str = "") -> str:
    provider = provider or f'{{kind: libvirt, uri: "{SYSTEM}", accel: tcg}}'
    image = image or "{build: {distro: debian, release: bookworm}}"
    nets = ["mgmt"]
    text = f"name: {name}\nttl: 2h\nproviders:\n  local: {provider}\nimages:\n  debian12: {image}\n"
    text += "networks:\n  mgmt: {provider: local, mode: user}\n"
    if cidr:
        text += f"  labnet: {{provider: local, mode: isolated, cidr: {cidr}, dhcp: false}}\n"
        nets.append("labnet")
    text += (
        "defaults: {provider: local, image: debian12, cpus: 1, memory: 1GiB, disk: 4GiB, "
        f"networks: [{', '.join(nets)}]}}\ngroups:\n  vm: {{count: {count}}}\n"
        'verify:\n  - {name: kernel answers, hosts: all, run: "uname -s", expect: Linux}\n'
    )
    return text


def make_lab(root: Path, name: str, **kwargs: str | int | None) -> Lab:
    folder = root / name
    folder.mkdir(parents=True)
    lab = Lab(name, folder / "lab.yaml", folder / "state", folder / "artifacts", str(kwargs.get("cidr") or ""))
    lab.file.write_text(lab_yaml(name, **kwargs))  # type: ignore[arg-type]
    return lab


def deploy(lab: Lab, command: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEPLOY, *lab.args(command)], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def deploy_ok(lab: Lab, command: str) -> str:
    started = time.monotonic()
    proc = deploy(lab, command)
    key = f"{lab.name}: deploy {command}"
    runs = sum(1 for k in TIMINGS if k.startswith(key))
    TIMINGS[f"{key} #{runs + 1}"] = round(time.monotonic() - started, 1)
    assert proc.returncode == 0, f"deploy {command} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


# ---------------------------------------------------------------- what the host holds for a lab


def _lab_of(xml: str) -> str | None:
    name = ET.fromstring(xml).find(f"metadata/{{{NS}}}lab/{{{NS}}}name")
    return name.text if name is not None else None


def tagged(lab: str) -> dict[str, list[str]]:
    """Domains and networks carrying the lab's metadata, and the lab's volumes in the pool."""
    conn = libvirt.open(SYSTEM)
    try:
        found = {
            "domains": sorted(d.name() for d in conn.listAllDomains(0) if _lab_of(d.XMLDesc(0)) == lab),
            "networks": sorted(n.name() for n in conn.listAllNetworks(0) if _lab_of(n.XMLDesc(0)) == lab),
            "volumes": [],
        }
        try:
            pool = conn.storagePoolLookupByName("labdeploy")
            pool.refresh(0)
            found["volumes"] = sorted(v.name() for v in pool.listAllVolumes(0) if v.name().startswith(f"{lab}__"))
        except libvirt.libvirtError:
            pass
        return found
    finally:
        conn.close()


NOTHING: dict[str, list[str]] = {"domains": [], "networks": [], "volumes": []}


def machine_outputs(lab: Lab) -> dict[str, dict[str, object]]:
    data = json.loads((lab.state / "state.json").read_text())
    return {
        rid.split(":", 1)[1]: rec["outputs"] for rid, rec in data["resources"].items() if rid.startswith("machine:")
    }


def ssh(lab: Lab, node: str, command: str) -> str:
    endpoint = SshEndpoint.from_outputs(machine_outputs(lab)[node]["ssh"])  # type: ignore[arg-type]
    result = run_command(endpoint, command, known_hosts=known_hosts_path(lab.state), alias=node, timeout=60)
    assert result.ok, f"{node}: {command!r} -> rc {result.rc}: {result.stderr}"
    return result.stdout


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:5]}"


def destroy_quietly(lab: Lab) -> None:
    if lab.file.exists():
        deploy(lab, "destroy", timeout=300)


# ---------------------------------------------------------------- the shared 2-VM lab


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("deploylabs")
    out = Path(os.environ.get("LABDEPLOY_DEPLOY_TIMINGS", "/tmp/labdeploy-deploy-timings.json"))
    out.write_text(json.dumps(TIMINGS, indent=1))


@pytest.fixture(scope="module")
def lab2(libvirtd: str, root: Path) -> Iterator[Lab]:
    assert libvirtd == SYSTEM
    lab = make_lab(root, unique("ldup"), cidr=free_cidr())
    try:
        lab.first_up = deploy_ok(lab, "up")
        yield lab
    finally:
        destroy_quietly(lab)


@pytest.mark.vm
def test_up_brings_both_machines_to_ssh_on_loopback(lab2: Lab) -> None:
    outputs = machine_outputs(lab2)
    assert sorted(outputs) == ["vm-1", "vm-2"]
    for node, out in outputs.items():
        assert out["ssh"]["host"] == "127.0.0.1"  # type: ignore[index]
        assert ssh(lab2, node, "hostname").strip() == node
    assert tagged(lab2.name)["domains"] == [f"{lab2.name}-vm-1", f"{lab2.name}-vm-2"]
    assert f"Lab {lab2.name} is up" in lab2.first_up


@pytest.mark.vm
def test_machines_reach_each_other_over_the_isolated_network(lab2: Lab) -> None:
    addresses = {node: out["addresses"]["labnet"] for node, out in machine_outputs(lab2).items()}  # type: ignore[index]
    conn = libvirt.open(SYSTEM)
    try:
        net_xml = conn.networkLookupByName(f"{lab2.name}-labnet").XMLDesc(0)
    finally:
        conn.close()
    assert ET.fromstring(net_xml).find("ip") is None  # no host address, no dnsmasq on the lab network
    script = base64.b64encode(PING).decode()
    for src, dst in (("vm-1", "vm-2"), ("vm-2", "vm-1")):
        out = ssh(lab2, src, f"echo {script} | base64 -d | python3 - {addresses[dst]}")
        assert "echo replies" in out, out
        assert not out.startswith("0/"), out
        assert ssh(lab2, src, f"getent ahostsv4 {dst}").split()[0] == addresses[dst]


@pytest.mark.vm
def test_second_up_reports_no_changes(lab2: Lab) -> None:
    out = deploy_ok(lab2, "up")
    assert "No changes" in out
    plan = deploy(lab2, "plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr  # exit 2 would mean pending changes
    assert len(tagged(lab2.name)["domains"]) == 2


@pytest.mark.vm
def test_killed_up_converges_next_to_a_lab_with_the_same_node_names(lab2: Lab, root: Path) -> None:
    """SIGKILL while machines are made; destroy cleans the wreck; kill again, re-run converges."""
    lab = make_lab(root, unique("ldkill"), count=1, cidr=lab2.cidr)  # same node names, same subnet
    try:
        kill_when(lab, lambda found: bool(found["volumes"]))
        destroy_out = deploy_ok(lab, "destroy")
        assert tagged(lab.name) == NOTHING, destroy_out
        kill_when(lab, lambda found: bool(found["domains"]))
        deploy_ok(lab, "up")
        assert tagged(lab.name)["domains"] == [f"{lab.name}-vm-1"]  # no duplicate
        assert ssh(lab, "vm-1", "hostname").strip() == "vm-1"
        assert ssh(lab2, "vm-1", "hostname").strip() == "vm-1"  # the other lab's vm-1 is untouched
        ports = {n: o["ports"]["22"] for n, o in machine_outputs(lab2).items()}  # type: ignore[index]
        assert machine_outputs(lab)["vm-1"]["ports"]["22"] not in ports.values()  # type: ignore[index]
        deploy_ok(lab, "destroy")
        assert tagged(lab.name) == NOTHING
        assert len(tagged(lab2.name)["domains"]) == 2
    finally:
        destroy_quietly(lab)


def kill_when(lab: Lab, ready: Callable[[dict[str, list[str]]], bool], timeout: float = 300) -> None:
    proc = subprocess.Popen([*DEPLOY, *lab.args("up")], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not ready(tagged(lab.name)):
            assert proc.poll() is None, f"deploy up ended ({proc.returncode}) before the kill point"
            assert time.monotonic() < deadline, "machines were never started being created"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.vm
def test_destroy_leaves_nothing_tagged(lab2: Lab) -> None:
    out = deploy_ok(lab2, "destroy")
    assert "Destroyed" in out
    assert tagged(lab2.name) == NOTHING
    again = deploy_ok(lab2, "destroy")
    assert "Nothing to destroy" in again


# ---------------------------------------------------------------- bad input: no VM boots


def failed_up(lab: Lab) -> tuple[int, str]:
    proc = deploy(lab, "up", timeout=600)
    assert proc.returncode != 0, proc.stdout
    return proc.returncode, proc.stderr


@pytest.mark.usefixtures("libvirtd")
def test_missing_base_image_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such.qcow2"
    lab = make_lab(tmp_path, unique("ldbad"), count=1, image=f'{{file: {missing}, sha256: "{"0" * 64}"}}')
    code, err = failed_up(lab)
    assert code in (3, 5, 6), err
    assert str(missing) in err, err
    assert tagged(lab.name) == NOTHING


@pytest.mark.usefixtures("libvirtd")
def test_wrong_sha256_of_a_base_image(tmp_path: Path) -> None:
    image = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    wrong = hashlib.sha256(b"not this image").hexdigest()
    lab = make_lab(tmp_path, unique("ldbad"), count=1, image=f'{{file: {image}, sha256: "{wrong}"}}')
    code, err = failed_up(lab)
    assert code in (3, 5, 6), err
    assert "sha256" in err.lower(), err
    assert wrong[:12] in err, err
    assert tagged(lab.name) == NOTHING


@pytest.mark.usefixtures("libvirtd")
def test_unreachable_libvirt_uri(tmp_path: Path) -> None:
    uri = "qemu:///system?socket=/nonexistent/libvirt-sock"
    lab = make_lab(tmp_path, unique("ldbad"), count=1, provider=f'{{kind: libvirt, uri: "{uri}", accel: tcg}}')
    code, err = failed_up(lab)
    assert code in (5, 6), err
    assert "cannot connect to libvirt" in err, err
    assert "/nonexistent/libvirt-sock" in err, err  # the cause as libvirt states it
    assert tagged(lab.name) == NOTHING


@pytest.fixture
def foreign_network(libvirtd: str) -> Iterator[tuple[str, str]]:
    """A libvirt network that is not labdeploy's, defined (not started: no host address)."""
    cidr = free_cidr()
    name = unique("ldforeign")
    gateway = cidr.rsplit(".", 1)[0] + ".1"
    xml = f"<network><name>{name}</name><bridge stp='on' delay='0'/><ip address='{gateway}' prefix='24'/></network>"
    conn = libvirt.open(libvirtd)
    net = conn.networkDefineXML(xml)
    try:
        yield name, cidr
    finally:
        net.undefine()
        conn.close()


def test_cidr_clash_with_an_existing_libvirt_network(foreign_network: tuple[str, str], tmp_path: Path) -> None:
    name, cidr = foreign_network
    lab = make_lab(tmp_path, unique("ldbad"), count=1, cidr=cidr)
    try:
        code, err = failed_up(lab)
        assert code in (5, 6), err
        assert "overlaps" in err, err
        assert name in err, err
        assert tagged(lab.name)["networks"] == []
        assert tagged(lab.name)["domains"] == []
    finally:
        destroy_quietly(lab)
    assert tagged(lab.name) == NOTHING


@pytest.mark.usefixtures("libvirtd")
def test_accel_kvm_without_kvm(tmp_path: Path) -> None:
    accel, _warning = choose_accel("auto")
    if accel == "kvm":
        pytest.skip("KVM works on this host: accel: kvm is not an error here")
    provider = f'{{kind: libvirt, uri: "{SYSTEM}", accel: kvm}}'
    lab = make_lab(tmp_path, unique("ldbad"), count=1, provider=provider, cidr=free_cidr())
    try:
        code, err = failed_up(lab)
        assert code in (3, 6), err
        assert "accel: kvm was requested but KVM cannot work" in err, err
        assert "vmx" in err, err  # says why
        assert tagged(lab.name)["domains"] == []
        left = tagged(lab.name)
        state = json.loads((lab.state / "state.json").read_text()) if (lab.state / "state.json").exists() else {}
        recorded = set(state.get("resources", {}))
        assert {f"network:{n.removeprefix(lab.name + '-')}" for n in left["networks"]} <= recorded  # tracked
        deploy_ok(lab, "destroy")  # destroy after a failed run removes everything
        assert tagged(lab.name) == NOTHING
    finally:
        destroy_quietly(lab)


# ---------------------------------------------------------------- isolated networks, no VM


def _meta(cidr: str = "") -> LabMeta:
    tags: Tags = new_tags("unit")
    return LabMeta(tags, "local", cidr=cidr)


def test_isolated_network_without_dhcp_is_a_bare_bridge() -> None:
    xml = network_xml("lab-net", "isolated", _meta("10.9.8.0/24"), cidr="10.9.8.0/24", dhcp=False)
    root = ET.fromstring(xml)
    assert root.find("ip") is None
    assert root.find("dns") is None
    assert root.find("forward") is None
    assert root.find("bridge") is not None
    assert static_cidr(xml) == "10.9.8.0/24"
    assert parse_meta(xml) is not None


def test_isolated_network_with_dhcp_keeps_dnsmasq_reservations_and_names() -> None:
    reservations = (("n1", "52:54:00:aa:bb:cc", "10.9.8.10"),)
    xml = network_xml("lab-net", "isolated", _meta("10.9.8.0/24"), cidr="10.9.8.0/24", reservations=reservations)
    root = ET.fromstring(xml)
    assert root.find("ip/dhcp/host[@mac='52:54:00:aa:bb:cc']") is not None
    assert root.find("dns/host[@ip='10.9.8.10']/hostname") is not None
    assert static_cidr(xml) is None


def test_seed_sets_static_address_by_mac_and_peer_names_before_sshd() -> None:
    doc = json.loads(
        user_data(
            "n1",
            "ssh-ed25519 AAAA k",
            static_addresses=[("52:54:00:aa:bb:cc", "10.9.8.10/24")],
            hosts=[("10.9.8.10", "n1"), ("10.9.8.11", "n2")],
        ).removeprefix("#cloud-config\n")
    )
    script = doc["bootcmd"][0][2]
    assert "MACAddress=52:54:00:aa:bb:cc" in script
    assert "Address=10.9.8.10/24" in script
    assert "/etc/systemd/network/10-labdeploy-525400aabbcc.network" in script
    assert "networkctl reload" in script
    assert "Gateway" not in script
    assert "\nDNS=" not in script
    assert doc["manage_etc_hosts"] is False  # /etc/hosts is ours, cloud-init must not rewrite it
    assert "10.9.8.11 n2" in hosts_file("n1", [("10.9.8.11", "n2")])
    assert "DHCP=no" in networkd_file("52:54:00:aa:bb:cc", "10.9.8.10/24")
    plain = json.loads(user_data("n1", "ssh-ed25519 AAAA k").removeprefix("#cloud-config\n"))
    assert "bootcmd" not in plain
    assert plain["manage_etc_hosts"] is True
