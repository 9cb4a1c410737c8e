"""deploy up + verify on a real VM lab, then fault injection: each fault is caught by the right check.

One trixie TCG guest (user-mode NIC, loopback SSH forward) is deployed through the whole engine:
image -> machine -> reachable -> configure (base + containerd with runc, crun, wasmedge) -> verify.
Faults are injected over SSH, ``deploy verify`` must fail naming the check, and undoing the fault
must make it pass again. The table of faults below is the one in the README.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.errors import VerificationError
from deploy.providers.base import SshEndpoint
from deploy.session import LabSession
from deploy.ssh import run_command
from deploy.ssh.hostkeys import known_hosts_path

pytestmark = [pytest.mark.vm, pytest.mark.timeout(2400)]

LAB = """\
name: {name}
providers:
  local: {{kind: libvirt, uri: "qemu:///system", accel: tcg}}
images:
  trixie: {{build: {{distro: debian, release: trixie, packages: [containerd, crun, wasmedge, nftables]}}}}
networks:
  mgmt: {{provider: local, mode: user}}
defaults: {{provider: local, image: trixie, cpus: 1, memory: 1GiB, disk: 6GiB, networks: [mgmt]}}
groups:
  box: {{count: 1, roles: [base, containerd]}}
runtimes: [runc, crun, wasmedge]
verify:
  - {{name: kernel answers, hosts: all, run: "uname -s", expect: Linux}}
  - {{pytest: checks/test_user.py}}
"""

USER_TEST = '''\
def test_release_is_trixie(host):
    assert host.file("/etc/os-release").contains("trixie")
'''


@dataclass
class Deployed:
    session: LabSession
    endpoint: SshEndpoint

    def ssh(self, command: str) -> str:
        result = run_command(self.endpoint, command, known_hosts=known_hosts_path(self.session.state_dir),
                             alias="box-1", timeout=120)
        assert result.rc == 0, f"{command}: rc {result.rc}: {result.stderr}"
        return result.stdout

    def failing(self, layer: str) -> list[str]:
        with pytest.raises(VerificationError) as caught:
            self.session.verify(layers={layer}, max_wait=8)
        return caught.value.failed

    def passes(self, layer: str) -> None:
        report = self.session.verify(layers={layer}, max_wait=60)
        assert report.failed == 0
        assert report.passed > 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("verify-lab")
    name = f"ldverify{root.name[-6:].replace('_', '')}"[:20]
    (root / "checks").mkdir()
    (root / "checks" / "test_user.py").write_text(USER_TEST)
    (root / "lab.yaml").write_text(LAB.format(name=name))
    session = LabSession(root / "lab.yaml", artifacts_root=root / "artifacts")
    try:
        result = session.up()
        assert result.verify is not None
        outputs = session.store.load().resources["machine:box-1"].outputs
        yield Deployed(session, SshEndpoint.from_outputs(outputs["ssh"]))
    finally:
        session.destroy()


def test_up_configures_and_verifies_every_layer(lab: Deployed) -> None:
    state = lab.session.store.load()
    assert state.resources["configure:box-1"].status == "ok"
    report = lab.session.verify(max_wait=60)
    names = {(r.layer, r.name) for r in report.results}
    assert report.failed == 0
    assert {("nodes", "hostname"), ("nodes", "ssh with recorded host key"), ("nodes", "clock in sync")} <= names
    assert ("nodes", "/etc/hosts") not in names  # a user-mode-only lab has no lab addresses to list
    assert any(layer == "runtimes" and "crun" in check for layer, check in names)
    assert any(layer == "runtimes" and "wasmedge" in check for layer, check in names)
    assert any(layer == "user" and "kernel answers" in check for layer, check in names)
    assert any(layer == "user" and "test_release_is_trixie" in check for layer, check in names)


@dataclass(frozen=True)
class Fault:
    name: str
    layer: str
    caught_by: str  # a substring of the failing check's name
    inject: Callable[[Deployed], None]
    undo: Callable[[Deployed], None]


def _corrupt_host_key(lab: Deployed) -> None:
    path = known_hosts_path(lab.session.state_dir)
    saved = path.with_suffix(".saved")
    saved.write_text(path.read_text())
    other = "AAAAC3NzaC1lZDI1NTE5AAAAIOOe75u27lHQq6YCh6lAfZUtJXacXwktzkwkkYL4jgOo"
    path.write_text("".join(f"{line.split()[0]} ssh-ed25519 {other}\n" for line in saved.read_text().splitlines()))


def _restore_host_key(lab: Deployed) -> None:
    path = known_hosts_path(lab.session.state_dir)
    path.write_text(path.with_suffix(".saved").read_text())


# New SSH connections are dropped; the guest lifts the block by itself after 45 s.
BLOCK_SSH = textwrap.dedent("""\
    systemd-run --on-active=45 --unit=ld-unblock nft delete table inet ldfault
    nft add table inet ldfault
    nft add chain inet ldfault input '{ type filter hook input priority -10; }'
    nft add rule inet ldfault input tcp dport 22 ct state new drop
    """)

# Drops every [..runtimes.crun..] table (and its sub-tables) from containerd's config.
DROP_CRUN = textwrap.dedent("""\
    cp /etc/containerd/config.toml /root/config.toml.saved
    python3 - <<'EOF'
    p = "/etc/containerd/config.toml"
    out, skip = [], False
    for line in open(p).read().splitlines(keepends=True):
        head = line.strip()
        if head.startswith("["):
            skip = "runtimes.crun" in head.replace('"', "").replace("'", "")
        if not skip:
            out.append(line)
    open(p, "w").write("".join(out))
    EOF
    systemctl restart containerd
    """)

FAULTS = [
    Fault("containerd stopped", "runtimes", "runc runs a container",
          lambda lab: lab.ssh("systemctl stop containerd"), lambda lab: lab.ssh("systemctl start containerd")),
    Fault("crun handler removed from config.toml", "runtimes", "crun runs a container",
          lambda lab: lab.ssh(DROP_CRUN),
          lambda lab: lab.ssh("cp /root/config.toml.saved /etc/containerd/config.toml; systemctl restart containerd")),
    Fault("hostname changed", "nodes", "hostname",
          lambda lab: lab.ssh("hostname intruder"), lambda lab: lab.ssh("hostname box-1")),
    Fault("port 22 blocked with nftables", "nodes", "ssh with recorded host key",
          lambda lab: lab.ssh(BLOCK_SSH), lambda _lab: time.sleep(50)),
    Fault("recorded host key corrupted", "nodes", "ssh with recorded host key",
          _corrupt_host_key, _restore_host_key),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault_is_caught_by_the_right_check_and_undoing_it_passes(lab: Deployed, fault: Fault) -> None:
    fault.inject(lab)
    try:
        failed = lab.failing(fault.layer)
    finally:
        fault.undo(lab)
    assert any(fault.caught_by in name for name in failed), failed
    lab.passes(fault.layer)


def test_results_land_in_junit_and_html(lab: Deployed, tmp_path: Path) -> None:
    junit, html = tmp_path / "out.xml", tmp_path / "out.html"
    lab.session.verify(layers={"nodes"}, junit=junit, html=html, max_wait=30)
    assert "hostname" in junit.read_text()
    assert "box-1" in html.read_text()


def test_reconfigure_repairs_drift_that_a_plain_rerun_keeps(lab: Deployed) -> None:
    """A converged configure step is kept whatever happened on the host; --reconfigure re-runs it."""
    from deploy.plan import Request

    lab.ssh("systemctl stop containerd")
    plain = lab.session.plan()
    assert not plain.has_changes  # the state cannot know the host drifted
    asked = lab.session.plan(request=Request(reconfigure=frozenset()))
    assert [(c.resource_id, c.reason) for c in asked.changes if c.action != "keep"] == [
        ("configure:box-1", "reconfigure requested")]
    result = lab.session.up(request=Request(reconfigure=frozenset({"box-1"})))
    assert result.verify is not None
    assert result.verify.failed == 0
    drifted = result.drift["box-1"]
    assert any("containerd" in op.lower() for op in drifted), drifted
    assert lab.ssh("systemctl is-active containerd").strip() == "active"
