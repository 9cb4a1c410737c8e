"""A real kubeadm cluster in two TCG VMs, brought up once by `deploy up labs/k8s/lab.yaml` (a copy under a
unique name) and shared by every test here: one control plane and one worker, because cross-node pod
traffic and a join are what a lab user needs proven, and two 3 GiB VMs fit this host.

Everything on the nodes comes from the bundle (kubeadm, kubelet, containerd 2, runc, crun-wasmedge,
gVisor, the CNI plugins and kubeadm's images); the host reaches the API server only through the
loopback forward of 6443. Faults are injected one at a time, each caught by the check that names it
and passing again once undone (the table is in the README). The fixture is module-scoped: every
cluster test is here, and an idle TCG control plane keeps a core busy, so it is gone before the
other modules boot their VMs.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import libvirt
import pytest

from deploy.providers.base import SshEndpoint
from deploy.providers.libvirt_net import all_network_cidrs, find_overlap
from deploy.ssh import run_command
from deploy.verify.checks.kubernetes import check_dns, check_nodes
from deploy.verify.checks.netpol import check_network_policy
from deploy.verify.checks.runtimes import check_handler
from deploy.verify.context import VerifyContext
from deploy.verify.retry import CheckFailure
from tests.integration.libvirt_fixtures import SYSTEM, libvirtd
from tests.integration.test_deploy_libvirt import tagged

__all__ = ["libvirtd"]
pytestmark = [pytest.mark.vm, pytest.mark.timeout(7200)]
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = [sys.executable, "-c", "import sys; from deploy.cli import main; sys.exit(main())"]
TIMINGS = Path(os.environ.get("LABDEPLOY_CLUSTER_TIMINGS", "/tmp/labdeploy-cluster-timings.json"))


@dataclass
class Cluster:
    name: str
    file: Path
    state: Path
    artifacts: Path
    up_seconds: float
    up_output: str

    def deploy(self, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
        command = [*DEPLOY, args[0], str(self.file), "--state-dir", str(self.state), *args[1:]]
        if args[0] in ("up", "verify"):
            command += ["--artifacts", str(self.artifacts)]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    def node(self, name: str, command: str, timeout: float = 300) -> tuple[int, str]:
        state = json.loads((self.state / "state.json").read_text())
        ssh = SshEndpoint.from_outputs(state["resources"][f"machine:{name}"]["outputs"]["ssh"])
        result = run_command(ssh, command, known_hosts=self.state / "known_hosts", alias=name, timeout=timeout)
        return result.rc, result.stdout + result.stderr


def _report(cluster: Cluster) -> dict[str, dict[str, str]]:
    """Check name (with its node) -> outcome and failure, from the newest verify report of the lab."""
    newest = max(cluster.artifacts.rglob("verify/report.json"), key=lambda p: p.stat().st_mtime)
    results = json.loads(newest.read_text())["results"]
    return {f"{r['name']} [{r['node']}]" if r["node"] else r["name"]: r for r in results}


def _outcomes(cluster: Cluster) -> dict[str, str]:
    return {name: r["outcome"] for name, r in _report(cluster).items()}


@pytest.fixture(scope="module")  # every cluster test is here; torn down before other modules' VMs boot:
def cluster(libvirtd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reuse = os.environ.get("LABDEPLOY_CLUSTER_STATE")  # a lab of yours that is up: its state dir (kept at the end)
    if reuse:
        yield _existing(Path(reuse))
        return
    folder = tmp_path_factory.mktemp("cluster")
    name = f"k8s{uuid.uuid4().hex[:5]}"
    lab = folder / "lab.yaml"
    text = (ROOT / "labs/k8s/lab.yaml").read_text().replace("name: k8s\n", f"name: {name}\nttl: 3h\n")
    lab.write_text(text.replace("10.31.0.", f"10.31.{_free_labnet_octet()}."))
    made = Cluster(name, lab, folder / "state", folder / "artifacts", 0.0, "")
    started = time.monotonic()
    proc = made.deploy("up")
    made.up_seconds, made.up_output = time.monotonic() - started, proc.stdout + proc.stderr
    TIMINGS.write_text(json.dumps({"deploy up (cluster, from no VMs)": round(made.up_seconds, 1)}))
    assert libvirtd  # started by its fixture before the first machine
    try:
        assert proc.returncode == 0, f"deploy up -> {proc.returncode}\n{made.up_output[-6000:]}"
        yield made
    finally:
        done = made.deploy("destroy", timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
        assert tagged(name) == {"domains": [], "networks": [], "volumes": []}


def _free_labnet_octet() -> int:
    """A third octet x with 10.31.x.0/24 unused by every libvirt network here, so a lab someone left up (or a
    second run on this host) does not fail the fixture at network:labnet."""
    conn = libvirt.open(SYSTEM)
    try:
        existing = all_network_cidrs(conn)
    finally:
        conn.close()
    for octet in range(0, 256):
        if find_overlap(f"10.31.{octet}.0/24", existing) is None:
            return octet
    raise AssertionError(f"every 10.31.x.0/24 is taken by a libvirt network here: {existing}")


def _existing(state: Path) -> Cluster:
    """LABDEPLOY_CLUSTER_STATE=DIR LABDEPLOY_CLUSTER_LAB=FILE [LABDEPLOY_CLUSTER_ARTIFACTS=DIR]: the tests run
    against a copy of labs/k8s you brought up (`deploy up FILE --state-dir DIR`); nothing destroys it."""
    lab = Path(os.environ["LABDEPLOY_CLUSTER_LAB"])
    artifacts = Path(os.environ.get("LABDEPLOY_CLUSTER_ARTIFACTS", state.parent / "artifacts"))
    name = json.loads((state / "state.json").read_text())["lab"]
    return Cluster(name, lab, state, artifacts, 0.0, "")


def test_deploy_up_ends_with_a_cluster_whose_every_check_passed(cluster: Cluster) -> None:
    """`deploy up` verifies at its end: every layer, RuntimeClasses for real runc, crun, gVisor and Wasm pods."""
    first_run = min((cluster.artifacts / cluster.name).iterdir())  # run folders are named by their start time
    assert "under TCG" in (first_run / "events.jsonl").read_text()  # the widened waits are said in the run's events
    outcomes = _outcomes(cluster)
    assert all(outcome == "passed" for outcome in outcomes.values()), outcomes
    for check in ("runc sandbox", "crun sandbox", "gvisor sandbox", "wasmedge sandbox", "nodes Ready with labels",
                  "DNS resolves a service", "pod-to-pod across nodes", "gvisor runs a container [workers-1]"):
        assert outcomes.get(check) == "passed", (check, sorted(outcomes))


def test_kubeconfig_is_private_and_kubectl_from_the_host_sees_both_nodes_ready(cluster: Cluster) -> None:
    path = Path(cluster.deploy("kubeconfig").stdout.strip())
    assert path == cluster.kubeconfig.resolve()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kubectl = shutil.which("kubectl") or _bundle_kubectl()
    out = subprocess.run([kubectl, "--kubeconfig", str(path), "get", "nodes", "-o", "json"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    nodes = {n["metadata"]["name"]: n for n in json.loads(out)["items"]}
    assert sorted(nodes) == ["control-1", "workers-1"]
    for node in nodes.values():
        ready = [c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready == ["True"], node["status"]["conditions"]
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")
    assert nodes["workers-1"]["metadata"]["labels"]["runtime.labdeploy.io/gvisor"] == "true"


def _bundle_kubectl() -> str:
    from deploy.bundle import ArtifactKey, BundleStore, catalog

    artifact = BundleStore().get(ArtifactKey("kubectl", catalog.VERSIONS["1.36"].kubernetes))
    assert artifact is not None, "the bundle has no kubectl: deploy up should have built it"
    return str(artifact.path)


def test_a_second_up_of_the_converged_cluster_changes_nothing(cluster: Cluster) -> None:
    proc = cluster.deploy("up", "--no-verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No changes" in proc.stdout


TYPED = """  mesh: {istio: {version: 1.24.0, mode: ambient, namespaces: [shop]}}
  gpu_operator: {version: v24.9.0, mig_strategy: mixed, mig_profiles: {1g.10gb: 7}, time_slicing: {replicas: 4},
                 nfd: false}
"""


def test_the_objects_around_typed_addons_pass_the_real_api_servers_validation(cluster: Cluster,
                                                                               tmp_path: Path) -> None:
    """Cilium, Istio and the GPU operator cannot be installed here; the built-in objects labdeploy creates
    around their releases are server-side applied with dryRun=All to this cluster's API server (its
    OpenAPI schema and admission, stored nowhere), with the GPU node labels on the real nodes."""
    from deploy.addons import typed
    from deploy.addons.step import node_label_patches
    from deploy.cluster import kube
    from deploy.model import open_lab

    text = cluster.file.read_text().replace("  runtimes:", TYPED + "  runtimes:", 1)
    text += 'nodes:\n  workers-1: {gpus: [{pci: "0000:3b:00.0"}]}\n'
    (tmp_path / "lab.yaml").write_text(text)
    addons = typed.typed_addons(open_lab(tmp_path / "lab.yaml")[1])
    objects = [o for a in addons.values() for o in a.objects if o["apiVersion"] == "v1"]
    for obj in objects:  # the namespaces they live in exist only once the charts are installed
        if obj["kind"] != "Namespace":
            obj["metadata"]["namespace"] = "default"
    labels = node_label_patches(addons["gpu"].node_labels)
    assert sorted(o["kind"] for o in objects) == ["ConfigMap", "ConfigMap", "Namespace", "Namespace"]
    assert [o["metadata"]["name"] for o in labels] == ["control-1", "workers-1"]
    api = kube.client_for(cluster.kubeconfig)
    try:
        kube.apply(api, objects, stage="addons", dry_run=True)
        kube.apply(api, labels, field_manager="labdeploy-addons", stage="addons", dry_run=True)
        assert _api_nodes(cluster) == ["control-1", "workers-1"]
        from kubernetes import client

        core = client.CoreV1Api(api)
        assert "gpu-operator" not in [n.metadata.name for n in core.list_namespace().items]  # stored nowhere
        assert "nvidia.com/gpu.deploy.operands" not in (core.read_node("workers-1").metadata.labels or {})
    finally:
        api.close()


# --- faults, each caught by its check called on the real cluster (a whole `deploy verify` layer would wait
# out every other check's deadline too) ---


def _context(cluster: Cluster) -> VerifyContext:
    from deploy import inputs
    from deploy.model.load import load_lab
    from deploy.model.resolve import resolve

    resolved = resolve(load_lab(cluster.file).lab)
    recorded = json.loads((cluster.state / "state.json").read_text())["resources"]
    targets = inputs.verify_targets(resolved, lambda rid: recorded[rid]["outputs"])
    known = inputs.export_known_hosts(cluster.state, list(resolved.nodes.values()),
                                      lambda rid: recorded[rid]["outputs"])
    return VerifyContext(tuple(targets), (), known, cluster.kubeconfig, resolved.runtimes,
                         frozenset({"kubernetes"}), cluster.file.parent, inputs.cluster_expect(resolved))


def _until(check: Callable[[], None], *, fails: bool, timeout: float) -> str:
    """Call ``check`` until it fails (``fails``) or passes; the last failure's text."""
    deadline, last = time.monotonic() + timeout, ""
    while True:
        try:
            check()
            if not fails:
                return last
        except CheckFailure as exc:
            last = str(exc)
            if fails:
                return last
        assert time.monotonic() < deadline, f"still {'passing' if fails else 'failing'} after {timeout:g}s: {last}"
        time.sleep(10)


def _gvisor_on_worker(ctx: VerifyContext) -> None:
    check_handler(ctx, next(t for t in ctx.targets if t.name == "workers-1"), "gvisor")


def _reapply_enforcer() -> str:
    """The shell (on control-1) that applies the NetworkPolicy enforcer's objects again, as addon:cni did."""
    from deploy.cluster import netpol

    manifests = {"apiVersion": "v1", "kind": "List", "items": netpol.manifests(*netpol.image(bundled=True))}
    # server-side, as labdeploy applies: no client-side OpenAPI download (32 s and out under load here)
    return (f"printf %s {shlex.quote(json.dumps(manifests))} | {ADMIN_KUBECTL} apply --server-side "
            "--force-conflicts --field-manager=labdeploy -f -")


ADMIN_KUBECTL = "kubectl --kubeconfig /etc/kubernetes/admin.conf"
CLUSTER_FAULTS = {
    # name: (node, break it, check, what its failure says, undo it)
    "gVisor handler removed": (
        "workers-1", "cp /etc/containerd/config.toml /root/config.toml.bak && sed -i 's/runsc/nosuchrunsc/g' "
        "/etc/containerd/config.toml && systemctl restart containerd", _gvisor_on_worker,
        "containerd runtime handler 'runsc'",
        "cp /root/config.toml.bak /etc/containerd/config.toml && systemctl restart containerd"),
    "kubelet stopped": ("workers-1", "systemctl stop kubelet", check_nodes, "node workers-1: not Ready",
                        "systemctl start kubelet"),
    "CoreDNS deleted": ("control-1", "kubectl --kubeconfig /etc/kubernetes/admin.conf -n kube-system delete "
                        "deployment coredns", check_dns, "DNS",
                        "kubeadm init phase addon coredns --kubernetes-version v1.36.3 --service-cidr 10.96.0.0/12 "
                        "--kubeconfig /etc/kubernetes/super-admin.conf"),  # admin.conf's RBAC bootstrap times out
    "NetworkPolicy enforcer deleted": (  # its pods remove their nftables table as they stop: policies go unenforced
        "control-1", f"{ADMIN_KUBECTL} -n kube-system delete daemonset kube-network-policies --wait=true && "
        f"{ADMIN_KUBECTL} -n kube-system wait --for=delete pod -l app=kube-network-policies --timeout=120s",
        check_network_policy, "denying all ingress", _reapply_enforcer()),
}


# the policy fault runs the NetworkPolicy check twice more (a client pod per try under TCG: ~7 min), past
# make test's hour; make e2e runs it. verify in deploy up proves the enforcer in make test.
IN_E2E = {"NetworkPolicy enforcer deleted"}


@pytest.mark.parametrize("fault", [pytest.param(name, marks=[pytest.mark.e2e] if name in IN_E2E else [])
                                   for name in sorted(CLUSTER_FAULTS)])
def test_a_cluster_fault_is_caught_by_its_check_and_passes_once_undone(cluster: Cluster, fault: str) -> None:
    node, cause, check, says, undo = CLUSTER_FAULTS[fault]
    ctx = _context(cluster)
    try:
        rc, out = cluster.node(node, cause)
        assert rc == 0, out
        try:
            failure = _until(partial(check, ctx), fails=True, timeout=300)
            assert says in failure, failure
        finally:
            rc, out = cluster.node(node, undo)
            assert rc == 0, out
        _until(partial(check, ctx), fails=False, timeout=600)
    finally:
        ctx.close()


# --- growing and shrinking the cluster (make e2e: a third TCG VM does not fit make test's hour) ---------


def _state(cluster: Cluster) -> dict[str, dict[str, object]]:
    return json.loads((cluster.state / "state.json").read_text())["resources"]  # type: ignore[no-any-return]


def _api_nodes(cluster: Cluster) -> list[str]:
    from kubernetes import client

    from deploy.cluster import kube

    return sorted(n.metadata.name for n in client.CoreV1Api(kube.client_for(cluster.kubeconfig)).list_node().items)


@pytest.mark.e2e
def test_a_new_worker_joins_alone_and_a_removed_one_is_drained_deleted_and_destroyed(cluster: Cluster) -> None:
    original = cluster.file.read_text()
    assert "workers: {count: 1," in original
    cluster.file.write_text(original.replace("workers: {count: 1,", "workers: {count: 2,"))
    try:
        proc = cluster.deploy("up", "--no-verify")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        recorded = _state(cluster)
        assert recorded["member:workers-2"]["outputs"] == {"joined": True, "control_plane": False}
        assert recorded["member:workers-1"]["outputs"] == {"joined": False, "control_plane": False}
        assert recorded["cluster:kubernetes"]["outputs"]["initialised"] is False  # type: ignore[index]
        assert _api_nodes(cluster) == ["control-1", "workers-1", "workers-2"]  # addon:cni waited for Ready
    finally:
        cluster.file.write_text(original)
    proc = cluster.deploy("up", "--no-verify")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert _api_nodes(cluster) == ["control-1", "workers-1"]
    assert not any(rid.endswith(":workers-2") for rid in _state(cluster))
    assert [d for d in tagged(cluster.name)["domains"] if "workers-2" in d] == []
    newest = max((cluster.artifacts / cluster.name).iterdir())
    assert "workers-2 drained" in (newest / "events.jsonl").read_text()
