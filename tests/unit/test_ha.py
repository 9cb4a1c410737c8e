"""What deploy.cluster.ha renders and runs for HA control planes (keepalived's own parser checks the
configs in tests/integration/test_keepalived_config.py; kubeadm checks the commands in test_kubeadm_config.py)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from deploy.cluster import ha
from deploy.cluster import kubeadm as k
from deploy.cluster.nodes import NodeShell
from deploy.errors import StageError
from deploy.model import open_lab
from deploy.ssh.endpoint import SshEndpoint

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "ha"


def _plan(lab: str = "k8s-ha") -> ha.HaPlan | None:
    return ha.plan_of(open_lab(ROOT / "labs" / lab / "lab.yaml")[1])


def _ha_plan() -> ha.HaPlan:
    plan = _plan()
    assert plan is not None
    return plan


def test_the_plan_has_the_vip_and_the_control_planes_in_member_order() -> None:
    plan = _ha_plan()
    assert (plan.vip, plan.prefix, plan.port) == ("10.32.0.5", 24, 6443)
    assert [(p.name, p.address) for p in plan.members] == [
        ("control-1", "10.32.0.11"), ("control-2", "10.32.0.12"), ("control-3", "10.32.0.13")]
    assert plan.router_id == ha.router_id("k8s-ha")
    assert _plan("k8s") is None  # no kubernetes.vip: nothing of this runs


@pytest.mark.parametrize("name", ["control-1", "control-2"])
def test_keepalived_conf_of_each_control_plane(name: str) -> None:
    expected = (FIXTURES / f"k8s-ha.{name}.keepalived.conf").read_text()
    assert ha.keepalived_conf(_ha_plan(), name, "enp2s0") == expected


def test_a_lone_control_plane_has_no_unicast_peers() -> None:
    plan = ha.HaPlan("10.31.0.5", 24, ha.router_id("k8s"), (ha.Peer("control-1", "10.31.0.10"),))
    text = ha.keepalived_conf(plan, "control-1", "enp2s0")
    assert text == (FIXTURES / "single.control-1.keepalived.conf").read_text()
    assert "unicast" not in text  # keepalived refuses unicast without peers


def test_a_failing_check_drops_any_node_below_every_healthy_one() -> None:
    count = 9
    priorities = [ha.TOP_PRIORITY - i for i in range(count)]
    assert all(1 <= p <= 254 for p in priorities)
    for i, failing in enumerate(priorities):
        assert all(failing + ha.CHECK_WEIGHT < healthy for j, healthy in enumerate(priorities) if j != i)
        assert failing + ha.CHECK_WEIGHT >= 1  # still above 0: before init the lone first node keeps the VIP


def test_router_ids_are_stable_and_in_vrrps_range() -> None:
    ids = {ha.router_id(f"lab{i}") for i in range(300)}
    assert ha.router_id("k8s-ha") == ha.router_id("k8s-ha")
    assert min(ids) >= 1
    assert max(ids) <= 255
    assert len(ids) > 150


def test_only_a_control_plane_gets_a_conf() -> None:
    with pytest.raises(StageError, match="workers-1 is not a control plane"):
        ha.keepalived_conf(_ha_plan(), "workers-1", "enp2s0")


def _sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2's ip is not installed")
def test_the_interface_is_read_from_ips_own_output() -> None:
    out = _sh(ha.interface_command("127.0.0.1")).stdout
    assert ha.interface_of(out, "127.0.0.1", "here") == "lo"
    assert ha.interface_of("3: eth1@if7    inet 10.32.0.11/24 brd 10.32.0.255 scope global eth1", "x", "n") == "eth1"
    none = _sh(ha.interface_command("192.0.2.251")).stdout  # TEST-NET-1: no interface has it
    with pytest.raises(StageError, match=r"no interface of control-2 carries its lab address 192\.0\.2\.251"):
        ha.interface_of(none, "192.0.2.251", "control-2")


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2's ip is not installed")
def test_waiting_for_the_vip_ends_when_the_node_has_it_or_after_the_deadline() -> None:
    assert _sh(ha.wait_vip_command("127.0.0.1", 5)).returncode == 0
    late = _sh(ha.wait_vip_command("192.0.2.251", 1))
    assert late.returncode == 1
    assert "keepalived did not take 192.0.2.251 within 1 s" in late.stderr


def test_the_install_script_is_valid_shell_and_restarts_only_on_change() -> None:
    script = ha.install_script()
    assert _sh(f"bash -n <<'EOF'\n{script}EOF").returncode == 0
    assert "apt-get install -y -q --no-install-recommends keepalived" in script
    assert 'keepalived --config-test -f "$new"' in script
    lines = script.splitlines()
    restart = next(i for i, line in enumerate(lines) if "systemctl restart keepalived" in line)
    assert lines[restart - 2].startswith("else")  # only in the branch where cmp found a difference
    assert "restart" not in "".join(lines[: restart - 2])


def test_an_upload_is_fresh_for_90_minutes_of_kubeadms_two_hours() -> None:
    upload = ha.Upload(k.new_certificate_key(), 1000.0)
    assert upload.fresh(1000.0 + 89 * 60)
    assert not upload.fresh(1000.0 + 90 * 60)
    assert upload.key.value not in repr(upload)
    assert ha.Upload.now(upload.key).fresh()


def test_a_fresh_upload_is_reused_without_touching_the_node(tmp_path: Path) -> None:
    # port 9 (discard) on loopback: any command on this shell would fail with a StageError
    shell = NodeShell("control-1", SshEndpoint("127.0.0.1", 9, "root", tmp_path / "key"), tmp_path / "known_hosts")
    last = ha.Upload.now(k.new_certificate_key())
    cluster = k.Cluster("lab", "v1.36.3", "10.32.0.5:6443")
    assert ha.upload_certs(shell, cluster, k.Node("control-1", "10.32.0.11"), last) is last
    # older than the freshness window whatever the host's uptime (time.monotonic() starts near boot)
    stale = ha.Upload(last.key, time.monotonic() - ha.KEY_FRESH_SECONDS - 1)
    with pytest.raises(StageError, match="uploading the control-plane certificates"):
        ha.upload_certs(shell, cluster, k.Node("control-1", "10.32.0.11"), stale)


def test_a_k3s_plan_checks_readyz_with_k3s_admin_certificate(tmp_path: Path) -> None:
    """k3s runs its API server with anonymous auth off: an anonymous /healthz would fail on every healthy
    server, so its check shows the client-admin certificate k3s writes on each server."""
    lab = tmp_path / "lab.yaml"
    text = (ROOT / "labs/k8s-ha/lab.yaml").read_text()
    lab.write_text(text.replace("kubernetes:\n", "kubernetes:\n  distribution: k3s\n", 1))
    plan = ha.plan_of(open_lab(lab)[1])
    assert plan is not None
    assert plan.distribution == "k3s"
    text = ha.keepalived_conf(plan, "control-2", "enp2s0")
    assert f"--cert {ha.K3S_TLS}/client-admin.crt --key {ha.K3S_TLS}/client-admin.key" in text
    assert "https://127.0.0.1:6443/readyz" in text
    assert "--insecure" not in text
    assert "/healthz" in ha.keepalived_conf(_ha_plan(), "control-2", "enp2s0")  # kubeadm's stays anonymous
