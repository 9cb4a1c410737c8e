"""The pure readers behind the built-in checks, on real-looking output."""

from __future__ import annotations

from types import SimpleNamespace as NS
from typing import Any

import pytest

from deploy.verify.checks.gpu import mig_problem
from deploy.verify.checks.kubernetes import node_problems, pod_problem
from deploy.verify.checks.nodes import missing_hosts_entries, parse_hosts
from deploy.verify.checks.pods import exit_code, http_client_command
from deploy.verify.checks.runtimeclass import proof_problem
from deploy.verify.checks.runtimes import handler_configured_command, smoke_command

HOSTS = """127.0.0.1\tlocalhost
::1 localhost ip6-localhost
10.20.0.10 cp-1 cp-1.lab.internal   # control plane
10.20.0.11 worker-1
"""


def test_hosts_file_parsing() -> None:
    assert parse_hosts(HOSTS)["cp-1.lab.internal"] == {"10.20.0.10"}
    assert missing_hosts_entries(HOSTS, (("10.20.0.10", "cp-1"), ("10.20.0.11", "worker-1"))) == []
    assert missing_hosts_entries(HOSTS, (("10.20.0.12", "worker-1"), ("10.20.0.13", "worker-2"))) == [
        "10.20.0.12 worker-1",
        "10.20.0.13 worker-2",
    ]


def test_client_exit_code_is_read_from_the_last_rc_line() -> None:
    assert exit_code("labdeploy-pod-ok\nrc=0\n") == 0
    assert exit_code("curl: (56) Recv failure: Connection reset by peer\nrc=56\n") == 56
    assert exit_code("Error: ImagePullBackOff") is None
    assert http_client_command("http://10.0.0.5:8080/")[-1].startswith("wget -q -T 5 -O- http://10.0.0.5:8080/")


def _node(name: str, ready: str, labels: dict[str, str], alloc: dict[str, str] | None = None) -> Any:
    cond = NS(type="Ready", status=ready, reason="KubeletNotReady", message="PLEG is not healthy")
    return NS(metadata=NS(name=name, labels=labels), status=NS(conditions=[cond], allocatable=alloc or {}))


def test_node_problems_name_each_node() -> None:
    nodes = [_node("cp-1", "True", {}), _node("worker-1", "False", {"role": "w"})]
    problems = node_problems(nodes, {"cp-1": {"role": "cp"}, "worker-1": {"role": "w"}, "worker-2": {}})
    assert problems == [
        "node worker-2: not registered",
        "node cp-1: label role=cp expected, has None",
        "node worker-1: not Ready (Ready=False: KubeletNotReady PLEG is not healthy)",
    ]


def test_pod_problem() -> None:
    waiting = NS(
        name="coredns", ready=False, restart_count=4, state=NS(waiting=NS(reason="CrashLoopBackOff"), terminated=None)
    )
    bad = NS(
        metadata=NS(namespace="kube-system", name="coredns-1"), status=NS(phase="Running", container_statuses=[waiting])
    )
    assert pod_problem(bad) == "pod kube-system/coredns-1: phase Running; coredns CrashLoopBackOff (restarts 4)"
    done = NS(metadata=NS(namespace="kube-system", name="job"), status=NS(phase="Succeeded", container_statuses=[]))
    assert pod_problem(done) is None


@pytest.mark.parametrize(
    ("strategy", "labels", "alloc", "problem"),
    [
        ("single", {"nvidia.com/mig.strategy": "single"}, {"nvidia.com/gpu": "7"}, None),
        (
            "single",
            {"nvidia.com/mig.strategy": "single"},
            {"nvidia.com/mig-1g.5gb": "7"},
            "advertised under the single",
        ),
        ("mixed", {"nvidia.com/mig.strategy": "mixed"}, {"nvidia.com/mig-1g.5gb": "7"}, None),
        ("mixed", {"nvidia.com/mig.strategy": "mixed"}, {"nvidia.com/gpu": "1"}, "no nvidia.com/mig-*"),
        ("mixed", {"nvidia.com/mig.strategy": "single"}, {"nvidia.com/mig-1g.5gb": "7"}, "expected 'mixed'"),
        ("none", {}, {"nvidia.com/gpu": "1"}, None),
    ],
)
def test_mig_problem(strategy: str, labels: dict[str, str], alloc: dict[str, str], problem: str | None) -> None:
    found = mig_problem(_node("gpu-1", "True", labels, alloc), strategy)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_sandbox_proofs() -> None:
    gvisor = "[    0.000000] Starting gVisor...\n[    0.4] Creating cloned children...\nlabdeploy-runtime-ok\n"
    assert proof_problem("gvisor", gvisor, "6.1.0-28-amd64") is None
    host = "[    0.000000] Linux version 6.1.0-28-amd64\nlabdeploy-runtime-ok\n"
    assert "not gVisor" in (proof_problem("gvisor", host, "6.1.0-28-amd64") or "")
    assert proof_problem("kata", "kernel=6.1.62\nlabdeploy-runtime-ok\n", "6.1.0-28-amd64") is None
    same = proof_problem("kata", "kernel=6.1.0-28-amd64\nlabdeploy-runtime-ok\n", "6.1.0-28-amd64")
    assert "not in a VM" in (same or "")
    assert "no 'labdeploy-runtime-ok'" in (proof_problem("wasmedge", "", None) or "")


def test_runtime_commands() -> None:
    assert smoke_command("crun", "c1") == (
        "ctr -n k8s.io run --rm --runtime io.containerd.runc.v2 --runc-binary "
        "/usr/bin/crun localhost/labdeploy/smoke:latest c1 /bin/echo "
        "labdeploy-smoke-ok"
    )
    assert "runtimes" in handler_configured_command("gvisor")
    assert "runsc" in handler_configured_command("gvisor")
