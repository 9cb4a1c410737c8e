"""keepalived with the configs the cluster stage writes, for real: two control planes in network namespaces
this test creates (a veth pair between them, nothing reaches the host's own network), each with Debian's
keepalived and, when the test says so, a TLS server on 127.0.0.1:6443 standing in for its API server
(``openssl s_server -www`` answers the /healthz check's GET with 200).

What it shows: before any API server runs, the first control plane holds the VIP (kubeadm init needs it
there); the VIP moves to a control plane whose API server answers, back to the first once its own answers
(priority by member order), and away from it when its API server stops.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploy.cluster import ha

TOOLS = ("keepalived", "openssl", "curl", "ip")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                       reason=f"needs {', '.join(TOOLS)} (apt-get install keepalived openssl curl iproute2)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]
VIP = "10.32.0.5"
MOVE_TIMEOUT = 60.0  # rise 2 / fall 3 checks every 5 s, plus VRRP's 3 s master-down interval


@dataclass
class Plane:
    netns: str
    interface: str
    address: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def holds_vip(self) -> bool:
        out = subprocess.run(["ip", "-n", self.netns, "-o", "addr", "show", "to", VIP], capture_output=True,
                             text=True, check=True).stdout
        return bool(out.strip())

    def start(self, name: str, argv: list[str], log: Path) -> None:
        with log.open("wb") as sink:
            self.processes[name] = subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], stdout=sink,
                                                    stderr=subprocess.STDOUT)

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.terminate()
        process.wait(timeout=20)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def planes(tmp_path: Path) -> Iterator[tuple[Plane, Plane]]:
    tag = f"ldha{os.getpid() % 100000}"
    first, second = (Plane(f"{tag}-{s}", f"{tag}{s}", f"10.32.0.1{i}") for i, s in ((1, "a"), (2, "b")))
    _run("ip", "netns", "add", first.netns)
    _run("ip", "netns", "add", second.netns)
    try:
        _run("ip", "link", "add", first.interface, "netns", first.netns, "type", "veth", "peer", "name",
             second.interface, "netns", second.netns)
        for plane in (first, second):
            _run("ip", "-n", plane.netns, "addr", "add", f"{plane.address}/24", "dev", plane.interface)
            _run("ip", "-n", plane.netns, "link", "set", plane.interface, "up")
            _run("ip", "-n", plane.netns, "link", "set", "lo", "up")
        _keepalived(first, second, tmp_path)
        yield first, second
    finally:
        for plane in (first, second):
            for name in list(plane.processes):
                plane.stop(name)
            subprocess.run(["ip", "netns", "del", plane.netns], capture_output=True, check=False)


def _keepalived(first: Plane, second: Plane, tmp_path: Path) -> None:
    plan = ha.HaPlan(VIP, 24, ha.router_id("k8s-ha"), (ha.Peer("control-1", first.address),
                                                        ha.Peer("control-2", second.address)))
    for name, plane in (("control-1", first), ("control-2", second)):
        conf = tmp_path / f"{name}.conf"
        conf.write_text(ha.keepalived_conf(plan, name, plane.interface))
        plane.start("keepalived", ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp",
                                   "-f", str(conf), "-p", str(tmp_path / f"{name}.pid"),
                                   "-r", str(tmp_path / f"{name}.vrrp.pid")], tmp_path / f"{name}.log")


def _api_server(plane: Plane, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    if not cert.exists():
        _run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", "/CN=apiserver", "-days", "1", "-keyout", str(key), "-out", str(cert))
    plane.start("apiserver", ["openssl", "s_server", "-quiet", "-www", "-accept", "6443", "-cert", str(cert),
                              "-key", str(key)], tmp_path / f"{plane.netns}.apiserver.log")


def _await_holder(holder: Plane, other: Plane, what: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + MOVE_TIMEOUT
    while time.monotonic() < deadline:
        if holder.holds_vip() and not other.holds_vip():
            return
        time.sleep(0.5)
    logs = "\n".join(p.read_text()[-1500:] for p in sorted(tmp_path.glob("control-*.log")))
    pytest.fail(f"{what}: {holder.netns} did not hold {VIP} alone within {MOVE_TIMEOUT:.0f} s\n{logs}")


def test_the_vip_follows_the_api_servers_that_answer(planes: tuple[Plane, Plane], tmp_path: Path) -> None:
    first, second = planes
    _await_holder(first, second, "no API server anywhere (before kubeadm init)", tmp_path)
    _api_server(second, tmp_path)
    _await_holder(second, first, "only the second control plane's API server answers", tmp_path)
    _api_server(first, tmp_path)
    _await_holder(first, second, "both answer: the first has the higher priority", tmp_path)
    first.stop("apiserver")
    _await_holder(second, first, "the first control plane's API server stopped", tmp_path)
