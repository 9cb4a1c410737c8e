"""The keepalived.conf the cluster stage writes, read by keepalived's own parser (``keepalived --config-test``).

keepalived comes from Debian (``apt-get install keepalived``, as the nodes get it); without it on the host
these tests are skipped and say so. The config names the interface that carries the node's lab address;
keepalived's test refuses interfaces that do not exist and loopback, so the host's first non-loopback
interface stands in for it.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.cluster import ha
from deploy.model import open_lab

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("keepalived") is None,
                                 reason="keepalived is not installed on this host (apt-get install keepalived)")]
ROOT = Path(__file__).resolve().parents[2]


def _interface() -> str:
    names = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo")
    if not names:
        pytest.skip("this host has no network interface but lo, which keepalived refuses for VRRP")
    return names[0]


def _config_test(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(text)
    return subprocess.run(["keepalived", "--config-test", "-f", str(conf)], capture_output=True, text=True,
                          timeout=60, check=False)


def _plan() -> ha.HaPlan:
    plan = ha.plan_of(open_lab(ROOT / "labs/k8s-ha/lab.yaml")[1])
    assert plan is not None
    return plan


@pytest.mark.parametrize("name", ["control-1", "control-2", "control-3"])
def test_every_control_planes_conf_passes_keepalived(name: str, tmp_path: Path) -> None:
    done = _config_test(ha.keepalived_conf(_plan(), name, _interface()), tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_lone_control_planes_conf_passes_keepalived(tmp_path: Path) -> None:
    plan = ha.HaPlan("10.31.0.5", 24, ha.router_id("k8s"), (ha.Peer("control-1", "10.31.0.10"),))
    done = _config_test(ha.keepalived_conf(plan, "control-1", _interface()), tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_k3s_control_planes_conf_passes_keepalived(tmp_path: Path) -> None:
    """k3s's check (readyz with the admin client certificate) is a script keepalived accepts as written."""
    plan = dataclasses.replace(_plan(), distribution="k3s")
    done = _config_test(ha.keepalived_conf(plan, "control-2", _interface()), tmp_path)
    assert done.returncode == 0, done.stderr


def test_keepalived_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    """The checks above can fail: a misspelt keyword or an out-of-range weight is an error."""
    text = ha.keepalived_conf(_plan(), "control-1", _interface())
    misspelt = _config_test(text.replace("interval 5", "intervall 5"), tmp_path)
    assert misspelt.returncode != 0
    assert "Unknown keyword 'intervall'" in misspelt.stderr
    weight = _config_test(text.replace(f"weight {ha.CHECK_WEIGHT}", "weight -300"), tmp_path)
    assert weight.returncode != 0
    missing = _config_test(text.replace(_interface(), "labdeploy-none"), tmp_path)
    assert missing.returncode != 0
