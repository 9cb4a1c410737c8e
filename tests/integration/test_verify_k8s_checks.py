"""Kubernetes, Cilium, Istio, RuntimeClass and GPU checks through the official client over real HTTP.

The API server is kmock's KubernetesEmulator on loopback, seeded with a healthy or a broken
cluster (tests/fixtures/k8s/). Pods the checks create are moved along by a fake kubelet whose
answers (phase, logs) are what a healthy or a broken cluster would give; the tests also check
every manifest the checks submit against the Kubernetes OpenAPI schemas.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from deploy.providers.base import SshEndpoint
from deploy.verify.checks import builtin_checks
from deploy.verify.checks.pods import PREFIX
from deploy.verify.context import Check, VerifyContext
from deploy.verify.model import ClusterExpect, VerifyTarget
from deploy.verify.retry import CheckFailure
from tests.integration.kmock_fixtures import FakeKubelet, KubeServer, PodFate

pytestmark = pytest.mark.integration

LAYERS = frozenset({"kubernetes", "cilium", "istio", "runtimeclass", "gpu"})
RUNTIMES = ("runc", "crun", "gvisor", "kata", "wasmedge")
CLUSTER = ClusterExpect(
    kube_proxy_replacement=True, istio_mode="sidecar", mtls_strict=True, mig_strategy="single", pod_timeout=20
)
K8S_VERSION = "1.31.0"


def targets() -> tuple[VerifyTarget, ...]:
    ssh = SshEndpoint("127.0.0.1", 1, "root", Path("/nonexistent"))
    group = {"lab.labdeploy.io/group": "workers"}
    return (
        VerifyTarget("cp-1", "control", ("k8s-control-plane",), ssh, "cp-1"),
        VerifyTarget("worker-1", "workers", ("k8s-worker",), ssh, "worker-1", labels=group),
        VerifyTarget("worker-2", "workers", ("k8s-worker",), ssh, "worker-2", labels=group, gpus=1),
    )


def make_ctx(kubeconfig: Path | None) -> VerifyContext:
    return VerifyContext(targets(), (), Path("/nonexistent"), kubeconfig, RUNTIMES, LAYERS, Path("."), CLUSTER)


CHECKS = [c.test_id for c in builtin_checks(make_ctx(None))]
# Kata probes its nodes over SSH for KVM before its pod, and these nodes are not reachable (port 1): its
# healthy path runs against a real sshd in test_verify_kata.py; its broken one (no RuntimeClass) stays here.
KATA = "runtimeclass: kata sandbox"
HEALTHY = [test_id for test_id in CHECKS if test_id != KATA]

# What a broken cluster's failure must name, per check.
BROKEN_NAMES = {
    "kubernetes: API /readyz": "etcd",
    "kubernetes: nodes Ready with labels": "node worker-2: not Ready",
    "kubernetes: kube-system pods healthy": "coredns-7c65d6cfc9-abcde",
    "kubernetes: DNS resolves a service": "10.96.0.1",
    "kubernetes: pod-to-pod across nodes": "rc=28",
    "cilium: agent and operator healthy": "Deployment kube-system/cilium-operator: 0/1",
    "cilium: cross-node connectivity": "rc=28",
    "cilium: ClusterIP routing with kube-proxy replacement": "kube-proxy-replacement='false'",
    "istio: control plane ready": "Deployment istio-system/istiod: 0/1",
    "istio: mTLS request between enrolled pods": "spiffe://",
    "istio: STRICT refuses plaintext from outside the mesh": "rc=0",
    "runtimeclass: runc sandbox": "pod phase Failed",
    "runtimeclass: crun sandbox": "pod phase Failed",
    "runtimeclass: gvisor sandbox": "handler runc",
    "runtimeclass: kata sandbox": "RuntimeClass kata",
    "runtimeclass: wasmedge sandbox": "no 'labdeploy-runtime-ok'",
    "gpu: nvidia.com/gpu allocatable": "node worker-2: nvidia.com/gpu allocatable 0",
    "gpu: CUDA vector-add pod": "CUDA driver version is insufficient",
    "gpu: MIG devices match strategy single": "nvidia.com/mig.strategy='mixed'",
}


def kind_of(pod: dict[str, Any]) -> str:
    """The experiment a check's pod belongs to, from its name: PREFIX-<kind>-<pid>-<hex>[-role]."""
    rest = pod["metadata"]["name"][len(PREFIX) + 1 :]
    parts = rest.split("-")
    digits = next(i for i, part in enumerate(parts) if part.isdigit())
    return "-".join(parts[:digits])


def role_of(pod: dict[str, Any]) -> str:
    return pod["metadata"]["name"].rsplit("-", 1)[-1]


def healthy_fate(pod: dict[str, Any]) -> PodFate:
    kind, role = kind_of(pod), role_of(pod)
    if role == "server":
        return PodFate("Running")
    logs = {
        "dns": "Server:\t\t10.96.0.10\nName:\tkubernetes.default.svc.cluster.local\nAddress: 10.96.0.1\nrc=0\n",
        "mtls": "labdeploy-pod-ok xfcc=By=spiffe://cluster.local/ns/default/sa/default;Hash=ab;"
        "URI=spiffe://cluster.local/ns/default/sa/default\nrc=0\n",
        "plaintext": "curl: (56) Recv failure: Connection reset by peer\nrc=56\n",
        "rc-gvisor": "[    0.000000] Starting gVisor...\nLinux 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016 x86_64\n"
        "labdeploy-runtime-ok\n",
        "rc-kata": "kernel=6.1.62-kata\nlabdeploy-runtime-ok\n",
        "cuda": "[Vector addition of 50000 elements]\nCopy input data from the host memory to the CUDA device\n"
        "Test PASSED\nDone\n",
    }
    default = "labdeploy-runtime-ok\n" if kind.startswith("rc-") else "labdeploy-pod-ok\nrc=0\n"
    return PodFate("Succeeded", logs.get(kind, default))


def broken_fate(pod: dict[str, Any]) -> PodFate:
    kind, role = kind_of(pod), role_of(pod)
    if role == "server":
        return PodFate("Running")
    fates = {
        "dns": PodFate("Succeeded", ";; connection timed out; no servers could be reached\nrc=1\n"),
        "mtls": PodFate("Succeeded", "labdeploy-pod-ok xfcc=\nrc=0\n"),
        "plaintext": PodFate("Succeeded", "labdeploy-pod-ok xfcc=\nrc=0\n"),
        "rc-runc": PodFate("Failed", 'exec: "sh": executable file not found\n'),
        "rc-crun": PodFate("Failed", "crun: executable file `sh` not found\n"),
        "rc-wasmedge": PodFate("Succeeded", ""),
        "cuda": PodFate(
            "Failed",
            "[Vector addition of 50000 elements]\nFailed to allocate device vector A "
            "(error code CUDA driver version is insufficient for CUDA runtime version)!\n",
        ),
    }
    return fates.get(kind, PodFate("Succeeded", "curl: (28) Connection timed out after 5001 ms\nrc=28\n"))


class Cluster:
    def __init__(self, tmp: Path, state: str) -> None:
        self.server = KubeServer()
        self.server.seed_file(f"{state}.yaml")
        if state == "broken":
            self.server.readyz = (500, b"[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n")
        self.kubeconfig = self.server.kubeconfig(tmp)
        self.ctx = make_ctx(self.kubeconfig)
        self.kubelet = FakeKubelet(
            self.server,
            self.server.api_client(tmp),
            healthy_fate if state == "healthy" else broken_fate,
            nodes=("cp-1", "worker-1", "worker-2"),
        )

    def check(self, test_id: str) -> Check:
        return next(c for c in builtin_checks(self.ctx) if c.test_id == test_id)

    def close(self) -> None:
        self.kubelet.stop()
        self.ctx.close()
        self.server.close()


@pytest.fixture
def healthy(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, "healthy")
    yield cluster
    cluster.close()


@pytest.fixture
def broken(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path, "broken")
    yield cluster
    cluster.close()


def test_every_check_has_a_broken_expectation() -> None:
    assert sorted(CHECKS) == sorted(BROKEN_NAMES)


@pytest.mark.parametrize("test_id", HEALTHY)
def test_check_passes_on_healthy_cluster(healthy: Cluster, test_id: str) -> None:
    healthy.check(test_id).run()


@pytest.mark.parametrize("test_id", CHECKS)
def test_check_fails_on_broken_cluster_naming_the_object(broken: Cluster, test_id: str) -> None:
    with pytest.raises(CheckFailure) as failure:
        broken.check(test_id).run()
    text = str(failure.value)
    assert BROKEN_NAMES[test_id] in text
    assert "expected:" in text
    assert "seen:" in text
    assert "reproduce:" in text


def test_submitted_manifests_are_valid_and_cleaned_up(healthy: Cluster) -> None:
    for check in builtin_checks(healthy.ctx):
        if check.test_id != KATA:
            check.run()
    created = healthy.server.created("Pod") + healthy.server.created("Service")
    assert len(created) >= 12
    for manifest in created:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    from kubernetes import client

    core = client.CoreV1Api(healthy.ctx.api())
    left = [p.metadata.name for p in core.list_namespaced_pod("default").items]
    left += [
        s.metadata.name for s in core.list_namespaced_service("default").items if s.metadata.name.startswith(PREFIX)
    ]
    assert left == []


def _created_by(cluster: Cluster, test_id: str) -> list[dict[str, Any]]:
    before = len(cluster.server.created("Pod"))
    cluster.check(test_id).run()
    return cluster.server.created("Pod")[before:]


def test_pod_to_pod_pins_server_and_client_to_two_nodes(healthy: Cluster) -> None:
    server, client_pod = _created_by(healthy, "kubernetes: pod-to-pod across nodes")
    assert server["spec"]["nodeName"] != client_pod["spec"]["nodeName"]
    assert {server["spec"]["nodeName"], client_pod["spec"]["nodeName"]} <= {"worker-1", "worker-2", "cp-1"}
    assert server["spec"]["containers"][0]["image"] == CLUSTER.images.shell
    url = client_pod["spec"]["containers"][0]["command"][-1]
    assert "curl -sS -m 5 http://10.0." in url
    assert "echo rc=$?" in url


@pytest.mark.parametrize(
    ("runtime", "runtime_class", "handler_proof"),
    [
        ("gvisor", "gvisor", "dmesg"),
        ("wasmedge", "wasmedge", "/wasi-demo-app.wasm"),
        ("crun", "crun", "labdeploy-runtime-ok"),
    ],
)
def test_runtimeclass_pod_spec(healthy: Cluster, runtime: str, runtime_class: str, handler_proof: str) -> None:
    (pod,) = _created_by(healthy, f"runtimeclass: {runtime} sandbox")
    assert pod["spec"]["runtimeClassName"] == runtime_class
    assert pod["spec"]["restartPolicy"] == "Never"
    assert handler_proof in " ".join(pod["spec"]["containers"][0]["command"])


def test_cuda_pod_requests_a_gpu(healthy: Cluster) -> None:
    (pod,) = _created_by(healthy, "gpu: CUDA vector-add pod")
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert pod["spec"]["containers"][0]["image"] == CLUSTER.images.cuda


def test_istio_pods_are_enrolled_or_kept_outside(healthy: Cluster) -> None:
    server, client_pod = _created_by(healthy, "istio: mTLS request between enrolled pods")
    assert server["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert client_pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert "quitquitquit" in client_pod["spec"]["containers"][0]["command"][-1]
    _, outsider = _created_by(healthy, "istio: STRICT refuses plaintext from outside the mesh")
    assert outsider["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"


def test_kube_system_check_reports_crashloop_reason(broken: Cluster) -> None:
    with pytest.raises(CheckFailure, match=r"coredns CrashLoopBackOff \(restarts 12\)"):
        broken.check("kubernetes: kube-system pods healthy").run()


def test_run_verify_on_healthy_cluster_through_the_plugin(healthy: Cluster, tmp_path: Path) -> None:
    from deploy.verify import run_verify

    report = run_verify(
        targets(),
        [],
        known_hosts=tmp_path / "known_hosts",
        kubeconfig=healthy.kubeconfig,
        runtimes=tuple(r for r in RUNTIMES if r != "kata"),
        layers=set(LAYERS),
        out_dir=tmp_path / "verify",
        lab_file_dir=tmp_path,
        cluster=CLUSTER,
    )
    assert [r.failure for r in report.results if r.outcome != "passed"] == []
    assert sorted(f"{r.layer}: {r.name}" for r in report.results) == sorted(HEALTHY)
    assert report.junit is not None
    assert report.junit.read_text().count("<testcase") == len(HEALTHY)
