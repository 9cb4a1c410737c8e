"""NetworkPolicy for the bridge CNI: the enforcer's objects, what the bundle builds for it, the plan's
inputs, and the verify check a lab with it gets (the enforcement itself: tests/integration/test_cluster_vm.py)."""

from __future__ import annotations

from pathlib import Path

from deploy.bundle.build import lab_wanted
from deploy.cluster import netpol
from deploy.inputs import cluster_expect
from deploy.plan import build_resources
from deploy.verify.checks.netpol import policy
from tests.unit import openapi
from tests.unit.labfiles import valid
from tests.unit.test_typed_addons import LAB

NODES = LAB.replace("control: {count: 1}", "control: {count: 1, roles: [base]}")
BRIDGE = NODES + "  cni: {bridge: {}}\n"
ENFORCED = NODES + "  cni: {bridge: {network_policy: true}}\n"


def test_the_enforcer_objects_fit_the_openapi_types_and_run_the_bundles_image() -> None:
    objects = netpol.manifests(*netpol.image(bundled=True))
    assert [o["kind"] for o in objects] == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"]
    assert [e for o in objects for e in openapi.errors(o)] == []
    pod = objects[3]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert (container["image"], container["imagePullPolicy"]) == (
        "localhost/labdeploy/kube-network-policies:v0.8.0", "Never")  # imported and pinned on each node
    assert pod["hostNetwork"] is True
    assert container["securityContext"]["capabilities"] == {"add": ["NET_ADMIN"]}
    assert "--nfqueue-id=98" in container["args"]
    assert "--disable-nri" in container["args"]
    assert {(o["apiVersion"], o["kind"], o["metadata"]["name"], o["metadata"].get("namespace")) for o in objects} \
        == set(netpol.OBJECTS)  # what turning network_policy off removes is what was applied
    assert netpol.image(bundled=False) == ("registry.k8s.io/networking/kube-network-policies:v0.8.0",
                                           "IfNotPresent")


def test_the_checks_policies_fit_the_openapi_types() -> None:
    deny, allow = policy("p", {"app": "s"}, None), policy("p", {"app": "s"}, {"app": "c"})
    assert openapi.errors(deny) == []
    assert openapi.errors(allow) == []
    assert deny["spec"]["ingress"] == []  # no rule: nothing may connect
    assert allow["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"app": "c"}}}]}]


def test_only_a_lab_with_network_policy_builds_the_enforcer_and_its_image(tmp_path: Path) -> None:
    plain = {str(k) for k in lab_wanted(valid(tmp_path / "a", BRIDGE + "bundle: {source: build}\n")).keys}
    with_policy = {str(k) for k in lab_wanted(valid(tmp_path / "b", ENFORCED + "bundle: {source: build}\n")).keys}
    assert with_policy - plain == {"kube-network-policies@v0.8.0/linux/amd64",
                                   "image:labdeploy.kube-network-policies@v0.8.0/linux/amd64"}


def test_the_setting_is_in_the_cni_checkpoint_and_its_default_changes_no_hash(tmp_path: Path) -> None:
    bridge = build_resources(valid(tmp_path / "a", BRIDGE))
    off = build_resources(valid(tmp_path / "b", BRIDGE.replace("{bridge: {}}", "{bridge: {network_policy: false}}")))
    on = build_resources(valid(tmp_path / "c", ENFORCED))
    assert bridge["addon:cni"].input_hash == off["addon:cni"].input_hash
    assert bridge["configure:control-1"].input_hash == off["configure:control-1"].input_hash
    assert on["addon:cni"].input_hash != bridge["addon:cni"].input_hash
    assert on["configure:control-1"].input_hash != bridge["configure:control-1"].input_hash  # imports the image


def test_verify_runs_the_policy_check_where_policy_is_enforced(tmp_path: Path) -> None:
    assert cluster_expect(valid(tmp_path / "a", ENFORCED)).network_policy is True
    assert cluster_expect(valid(tmp_path / "b", BRIDGE)).network_policy is False
    cilium = LAB + "  cni: {cilium: {version: 1.17.0}}\n"
    assert cluster_expect(valid(tmp_path / "c", cilium)).network_policy is True  # Cilium enforces it itself


def test_a_chart_mirror_is_the_hosts_and_reconfigures_no_node(tmp_path: Path) -> None:
    (tmp_path / "b" / "charts").mkdir(parents=True)
    before = build_resources(valid(tmp_path / "a", BRIDGE))
    after = build_resources(valid(tmp_path / "b", BRIDGE + "mirrors: {charts: charts}\n"))
    assert before["configure:control-1"].input_hash == after["configure:control-1"].input_hash
