"""Kata's verify checks on a lab without working KVM: failed at once with "this host cannot run VM
sandboxes: ...", never skipped and never waiting out their deadline.

The nodes are this host, reached through the real loopback sshd (tests/integration/sshd_fixtures.py),
so the probe reads this host's real /dev/kvm and /proc/cpuinfo. CI's host has a paravirtual KVM: a
/dev/kvm that opens but no vmx/svm flag, so the probe must say no and name the missing flags. Which
outcome is expected is decided here from the host itself (opening /dev/kvm and reading
/proc/cpuinfo in Python, independently of the probe's shell script): on a host that could run VM
sandboxes the tests assert the opposite (no such failure; the Kata pod runs), they do not skip.

The Kubernetes half runs against kmock's API server (tests/integration/kmock_fixtures.py): Kata
pods cannot start here, and no real cluster here has a Kata handler.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from deploy.cluster import runtimeclasses
from deploy.providers.base import SshEndpoint
from deploy.verify import run_verify
from deploy.verify.checks import runtimeclass
from deploy.verify.context import VerifyContext
from deploy.verify.model import CheckResult, ClusterExpect, VerifyTarget
from deploy.verify.retry import CheckFailure
from deploy.verify.vmsandbox import PREFIX
from tests.integration.kmock_fixtures import FakeKubelet, KubeServer, PodFate
from tests.integration.sshd_fixtures import SshServer
from tests.integration.test_verify_nodes_ssh import record_host_key

pytestmark = pytest.mark.integration

CLUSTER = ClusterExpect(pod_timeout=20)  # the Kata check may retry for 2 x 20 s: failing fast is well under it
FAST = 10.0
KATA_LABEL = {"runtime.labdeploy.io/kata": "true"}


def host_reasons() -> list[str]:
    """Why this host cannot run VM sandboxes, found without the probe under test; empty when it can."""
    reasons = []
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except FileNotFoundError:
        reasons.append("no /dev/kvm")
    except OSError as exc:
        reasons.append(f"/dev/kvm does not open read-write ({exc.strerror})")
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    if platform.machine() == "x86_64" and not {"vmx", "svm"} & set(flags):
        reasons.append("/proc/cpuinfo has neither vmx nor svm (nested virtualization is off)")
    return reasons


HOST_REASONS = host_reasons()


def node(server: SshServer, name: str, roles: tuple[str, ...] = ("k8s-worker",)) -> VerifyTarget:
    return VerifyTarget(name, "workers", roles, server.endpoint(), name)


def only(results: list[CheckResult]) -> CheckResult:
    assert len(results) == 1, [r.name for r in results]
    return results[0]


def assert_cannot(result: CheckResult, node_name: str) -> None:
    assert result.outcome == "failed", result  # failed, not skipped
    what = result.failure.splitlines()[0]
    assert what.startswith(PREFIX + f"{node_name}: "), result.failure
    for reason in HOST_REASONS:  # this host: "/proc/cpuinfo has neither vmx nor svm (nested ...)"
        assert reason.split(" (")[0] in what
    assert "expected: kata needs /dev/kvm that root opens read-write and a CPU with vmx or svm" in result.failure
    assert "(after 1 attempt(s)" in result.failure  # final: no retry
    assert result.seconds < FAST


def test_node_level_kata_check_says_this_host_cannot_run_vm_sandboxes(sshd: SshServer, tmp_path: Path) -> None:
    known = record_host_key(sshd, tmp_path / "known_hosts")
    report = run_verify([node(sshd, "worker-1")], [], known_hosts=known, kubeconfig=None, runtimes=("kata",),
                        layers={"runtimes"}, out_dir=tmp_path / "out", lab_file_dir=tmp_path)
    result = only(report.results)
    assert (result.layer, result.name, result.node) == ("runtimes", "kata runs a container", "worker-1")
    if HOST_REASONS:
        assert_cannot(result, "worker-1")
        assert "reproduce: ssh " in result.failure
    else:  # a host with KVM and vmx/svm: whatever the handler check says, it is not this
        assert PREFIX not in result.failure


# --- the Kubernetes RuntimeClass check against kmock ------------------------------------------------


def node_object(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        "status": {"nodeInfo": {
            "architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "containerd://2.4.2",
            "kernelVersion": platform.release(), "kubeProxyVersion": "", "kubeletVersion": "v1.36.0",
            "machineID": "m", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 13 (trixie)", "systemUUID": "u",
        }},
    }


def kata_fate(_pod: dict[str, Any]) -> PodFate:
    return PodFate("Succeeded", "kernel=6.12.20-kata\nlabdeploy-runtime-ok\n", node="worker-1")


class Kata:
    """kmock's API with cp-1 (no Kata label) and worker-1 (labelled), the lab's real kata RuntimeClass,
    and both nodes reachable over the loopback sshd."""

    def __init__(self, tmp: Path, sshd: SshServer, runtime_class: dict[str, Any]) -> None:
        self.server = KubeServer()
        self.server.seed(node_object("cp-1", {}), node_object("worker-1", KATA_LABEL), runtime_class)
        self.kubeconfig = self.server.kubeconfig(tmp)
        self.known_hosts = record_host_key(sshd, tmp / "known_hosts")
        self.targets = (node(sshd, "cp-1", ("k8s-control-plane",)), node(sshd, "worker-1"))
        self.kubelet = FakeKubelet(self.server, self.server.api_client(tmp), kata_fate, nodes=("cp-1", "worker-1"))

    def verify(self, tmp: Path) -> CheckResult:
        report = run_verify(self.targets, [], known_hosts=self.known_hosts, kubeconfig=self.kubeconfig,
                            runtimes=("kata",), layers={"runtimeclass"}, out_dir=tmp / "out", lab_file_dir=tmp,
                            cluster=CLUSTER)
        return only(report.results)

    def context(self, tmp: Path) -> VerifyContext:
        return VerifyContext(self.targets, (), self.known_hosts, self.kubeconfig, ("kata",),
                             frozenset({"runtimeclass"}), tmp, CLUSTER)

    def close(self) -> None:
        self.kubelet.stop()
        self.server.close()


@pytest.fixture
def kata(tmp_path: Path, sshd: SshServer) -> Iterator[Kata]:
    cluster = Kata(tmp_path, sshd, runtimeclasses.manifest("kata"))
    yield cluster
    cluster.close()


def test_runtimeclass_check_fails_fast_before_any_pod_on_nodes_without_kvm(kata: Kata, tmp_path: Path) -> None:
    started = time.monotonic()
    result = kata.verify(tmp_path)
    assert (result.layer, result.name) == ("runtimeclass", "kata sandbox")
    if HOST_REASONS:
        assert_cannot(result, "worker-1")
        assert "cp-1" not in result.failure  # the RuntimeClass's nodeSelector leaves cp-1 out: not probed
        assert kata.server.created("Pod") == []  # failed before submitting a pod that could never start
        assert time.monotonic() - started < FAST
    else:  # this host could run Kata: the probe lets the check go on to its pod, which the kubelet runs
        assert result.outcome == "passed", result.failure
        (pod,) = kata.server.created("Pod")
        assert pod["spec"]["runtimeClassName"] == "kata"


def test_runtimeclass_whose_selector_matches_no_lab_node_names_the_label(tmp_path: Path, sshd: SshServer) -> None:
    manifest = runtimeclasses.manifest("kata")
    manifest["scheduling"]["nodeSelector"] = {"runtime.labdeploy.io/kata": "elsewhere"}
    cluster = Kata(tmp_path, sshd, manifest)
    try:
        with pytest.raises(CheckFailure) as failure:
            runtimeclass.check_runtime(cluster.context(tmp_path), "kata")
    finally:
        cluster.close()
    assert failure.value.what == "nodes for RuntimeClass kata"
    assert "a lab node labelled runtime.labdeploy.io/kata=elsewhere" in str(failure.value)
    assert "labelled: none; lab nodes: cp-1, worker-1" in str(failure.value)


def test_kata_proof_pod_is_a_valid_pod_asking_for_the_guest_kernel() -> None:
    ssh = SshEndpoint("127.0.0.1", 1, "root", Path("/nonexistent"))
    ctx = VerifyContext((VerifyTarget("w", "g", ("k8s-worker",), ssh, "w"),), (), Path("/nonexistent"), None,
                        ("kata",), frozenset({"runtimeclass"}), Path("."), CLUSTER)
    pod = runtimeclass.proof_pod(ctx, "kata", None)
    kubernetes_validate.validate(pod, "1.36.0", strict=True)
    assert pod["spec"]["runtimeClassName"] == "kata"
    assert "uname -r" in " ".join(pod["spec"]["containers"][0]["command"])
