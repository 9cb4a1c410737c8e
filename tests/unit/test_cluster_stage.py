"""The cluster stage's pure parts: who is what in labs/k8s, the CA hash kubeadm checks, the plan's
runnable add-ons, and what the bundle puts on a Kubernetes node (the real run is tests/integration/
test_cluster_vm.py)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from deploy.cluster import stage
from deploy.cluster.nodes import cluster_of, kubernetes_version, members
from deploy.cluster.stage import ca_cert_hash
from deploy.configure.catalog import KUBE_BUNDLE, bundle_node_files, handlers_for
from deploy.errors import StageError
from deploy.model.load import load_lab
from deploy.model.resolve import resolve
from deploy.plan import make_plan
from deploy.state import LabState
from tests.unit.labfiles import valid

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "labs" / "k8s" / "lab.yaml"


def _k8s():  # type: ignore[no-untyped-def]
    return resolve(load_lab(K8S).lab)


def test_labs_k8s_has_one_control_plane_first_and_a_worker_with_runtime_labels() -> None:
    found = members(_k8s(), ("runc", "gvisor"))
    assert [(m.node.name, m.control_plane, m.kubeadm.address) for m in found] == [
        ("control-1", True, "10.31.0.10"), ("workers-1", False, "10.31.0.21")]
    assert found[0].kubeadm.taints is None  # kubeadm's own control-plane taint: the worker takes the pods
    assert found[1].kubeadm.labels == {"runtime.labdeploy.io/runc": "true", "runtime.labdeploy.io/gvisor": "true"}


def test_a_lone_control_plane_takes_workloads(tmp_path: Path) -> None:
    lab = valid(tmp_path, "name: one\ngroups:\n  cp: {roles: [k8s-node, k8s-control-plane], ports: [6443],"
                " networks: [mgmt, {network: n, ip: 10.32.0.10}]}\n"
                "networks:\n  mgmt: {mode: user}\n  n: {mode: isolated, cidr: 10.32.0.0/24}\n"
                "kubernetes: {version: '1.36', control_plane: cp}\nbundle: {source: build}\n")
    (only,) = members(lab)
    assert only.kubeadm.taints == ()


def test_cluster_of_pins_the_catalogs_patch_release_and_puts_loopback_in_the_sans() -> None:
    cluster = cluster_of(_k8s(), tcg=True)
    assert cluster.version == "v1.36.3"
    assert cluster.endpoint == "10.31.0.10:6443"
    assert {"127.0.0.1", "control-1", "10.31.0.10"} <= set(cluster.cert_sans)
    assert (cluster.kube_proxy, cluster.tcg) == (True, True)
    with pytest.raises(StageError, match=r"no Kubernetes release is pinned for 1\.20"):
        kubernetes_version("1.20")


def _ca() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    conf = {"apiVersion": "v1", "kind": "Config", "clusters": [{"name": "kubernetes", "cluster": {
        "server": "https://10.31.0.10:6443", "certificate-authority-data": base64.b64encode(pem).decode()}}]}
    return yaml.safe_dump(conf), pem


def test_ca_cert_hash_is_the_sha256_of_the_public_key_info_as_kubeadm_documents(tmp_path: Path) -> None:
    conf, pem = _ca()
    (tmp_path / "ca.crt").write_bytes(pem)
    # kubeadm's documented recipe: openssl x509 -pubkey | openssl rsa -pubin -outform der | sha256sum
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(tmp_path / "ca.crt")],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True,
                         check=True).stdout
    assert ca_cert_hash(conf) == "sha256:" + hashlib.sha256(der).hexdigest()
    with pytest.raises(StageError, match="no readable cluster CA"):
        ca_cert_hash("kind: Config\nclusters: []\n")


def test_the_plan_runs_the_bridge_cni_runtime_classes_and_the_helm_addons() -> None:
    plan = make_plan(_k8s(), LabState("k8s"))
    kinds = {c.resource_id: c.supported for c in plan.changes if c.kind in ("cluster", "addon")}
    assert kinds == {"cluster:kubernetes": True, "addon:cni": True, "addon:runtimes": True}
    sandbox = resolve(load_lab(ROOT / "labs" / "k8s-sandbox" / "lab.yaml").lab)
    marked = {c.resource_id for c in make_plan(sandbox, LabState("k8s-sandbox")).unsupported}
    assert marked == {"ansible:0"}  # Cilium, Istio and the GPU operator are Helm releases like any other


def test_the_bundle_supplies_containerd_kubernetes_and_the_wasm_crun_to_k8s_nodes() -> None:
    names = {f.name for f in bundle_node_files(("gvisor", "wasmedge"), containerd=True, kubernetes=True)}
    assert names == {"runc", "crun-wasmedge", "containerd", "containerd-shim-runc-v2",
                     *(f.name for f in KUBE_BUNDLE)}
    plain = handlers_for(("wasmedge",), {})
    assert [h.name for h in plain] == ["runc"]  # no shim, no bundle: no Wasm handler
    (_, wasm) = handlers_for(("wasmedge",), {"crun-wasmedge": "0" * 64})
    assert (wasm.runtime_type, wasm.binary_name, wasm.pod_annotations) == (
        "io.containerd.runc.v2", "/usr/local/bin/crun-wasmedge", ("module.wasm.image/*",))


KUBECTL = "#!/bin/sh\n{body}\n"


@pytest.mark.parametrize(("kubectl", "marked", "state"), [
    ("echo configmap/kubeadm-config", True, "done"),  # initialised before the marker existed: kept
    ('echo \'Error from server (NotFound): configmaps "kubeadm-config" not found\' >&2; exit 1', False, "partial"),
    ('echo \'Error from server (Forbidden): configmaps "kubeadm-config" is forbidden: User "kubernetes-admin" '
     'cannot get resource\' >&2; exit 1', False, "partial"),  # the admin's ClusterRoleBinding never made
    ("echo 'The connection to the server 10.31.0.10:6443 was refused' >&2; exit 1", False, "unreachable"),
])
def test_the_init_probe_tells_a_finished_init_from_one_that_failed_after_admin_conf(
        tmp_path: Path, kubectl: str, marked: bool, state: str) -> None:
    """The probe the cluster stage runs on the first control plane, with kubectl a script answering as the
    API server would: only a partial init is reset; an unreachable API server is never taken for one."""
    bin_dir, admin, done = tmp_path / "bin", tmp_path / "admin.conf", tmp_path / "init.done"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(KUBECTL.format(body=kubectl))
    (bin_dir / "kubectl").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def probe() -> str:
        done_ = subprocess.run(["sh", "-c", stage.init_state_command(str(admin), str(done), 1)], env=env,
                               capture_output=True, text=True, check=True, timeout=60)
        return done_.stdout.strip()

    assert probe() == "fresh"  # no admin.conf: kubeadm init never got that far
    admin.write_text("kind: Config\n")
    assert probe() == state
    assert done.exists() is marked
    if marked:
        (bin_dir / "kubectl").write_text(KUBECTL.format(body="exit 99"))  # the marker alone answers now
        assert probe() == "done"
