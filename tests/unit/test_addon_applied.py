"""What a typed add-on records of the objects and labels labdeploy applies around its releases, what a
later run finds stale in that record, and how the plan words their removal (deploy/addons/applied.py).
The removal itself against an API server: tests/integration/test_addons_cleanup.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deploy.addons import applied, gpu, typed
from deploy.addons.plan import delete_reason
from deploy.model import open_lab
from tests.unit.labfiles import valid
from tests.unit.test_typed_addons import LAB, SANDBOX

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "addons" / "k8s-sandbox"
MESH = "  cni: {bridge: {}}\n  mesh: {istio: {version: 1.24.0, mode: ambient, namespaces: [demo, shop]}}\n"
GPU = "  cni: {bridge: {}}\n  gpu_operator: {version: v24.9.0, nfd: false, time_slicing: {replicas: 2}}\n"


def _record(tmp_path: Path, lab: str, name: str, created: tuple[str, ...] = ()) -> dict[str, Any]:
    return applied.record(typed.typed_addons(valid(tmp_path, LAB + lab))[name], list(created))


def test_the_sandbox_records_references_and_label_keys_as_its_fixture() -> None:
    addons = typed.typed_addons(open_lab(SANDBOX)[1])
    wanted = yaml.safe_load((FIXTURES / "applied.yaml").read_text())
    assert {name: applied.record(addons[name], []) for name in ("mesh", "gpu")} == wanted
    assert applied.record(addons["cni"], []) == {"objects": [], "namespace_labels": {}, "node_labels": {},
                                                 "created_namespaces": []}


def test_a_config_map_is_named_not_copied_and_only_the_releases_namespace_is_the_add_ons(tmp_path: Path) -> None:
    addon = typed.typed_addons(valid(tmp_path, LAB + GPU))["gpu"]
    got = applied.record(addon, ["gpu-operator"])
    assert got["objects"] == [{"apiVersion": "v1", "kind": "ConfigMap", "namespace": "gpu-operator",
                               "name": gpu.TIME_SLICING_CONFIG}]
    assert "data" not in yaml.safe_dump(got)  # what the object holds never reaches the state
    assert got["created_namespaces"] == ["gpu-operator"]
    assert got["node_labels"]["workers-2"] == [gpu.NFD_GPU_LABEL, gpu.OPERANDS_LABEL]
    assert applied.own_namespaces(addon) == ["gpu-operator"]
    mesh = typed.typed_addons(valid(tmp_path / "m", LAB + MESH))["mesh"]
    assert applied.own_namespaces(mesh) == []  # demo and shop are the user's: labelled, never deleted


def test_what_a_later_run_no_longer_applies_is_stale(tmp_path: Path) -> None:
    before = _record(tmp_path / "a", MESH, "mesh")
    fewer = _record(tmp_path / "b", MESH.replace("[demo, shop]", "[demo]"), "mesh")
    assert applied.stale(before, fewer) == {"objects": [], "namespace_labels": {"shop": ["istio.io/dataplane-mode"]},
                                            "node_labels": {}, "created_namespaces": []}
    sidecar = _record(tmp_path / "c", MESH.replace("ambient", "sidecar"), "mesh")
    assert applied.stale(before, sidecar)["namespace_labels"] == {"demo": ["istio.io/dataplane-mode"],
                                                                   "shop": ["istio.io/dataplane-mode"]}
    assert sidecar["namespace_labels"] == {"demo": ["istio-injection"], "shop": ["istio-injection"]}
    assert applied.stale(before, before) == {"objects": [], "namespace_labels": {}, "node_labels": {},
                                             "created_namespaces": []}


def test_a_node_that_loses_its_gpus_and_a_dropped_time_slicing_config_are_stale(tmp_path: Path) -> None:
    before = _record(tmp_path / "a", GPU, "gpu", ("gpu-operator",))
    moved = (LAB + GPU).replace("  workers-2: {gpus", "  workers-1: {gpus")  # the GPU moved to workers-1
    plain = moved.replace(", time_slicing: {replicas: 2}", "")
    after = applied.record(typed.typed_addons(valid(tmp_path / "b", plain))["gpu"], [])
    found = applied.stale(before, after)
    assert found["objects"] == before["objects"]  # the ConfigMap
    assert found["node_labels"] == {"workers-2": [gpu.NFD_GPU_LABEL]}  # operands=true -> false is the same key
    assert found["created_namespaces"] == []  # the release still lives there


def test_another_api_version_of_the_same_object_is_not_stale_and_union_keeps_the_newer() -> None:
    old = {"objects": [{"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
                        "namespace": "istio-system", "name": "default"}], "node_labels": {"n1": ["a"]}}
    new = {"objects": [{**old["objects"][0], "apiVersion": "security.istio.io/v1"}], "node_labels": {"n1": ["b"]},
           "created_namespaces": ["x"]}
    assert applied.stale(old, new)["objects"] == []
    both = applied.union(old, new)
    assert both["objects"] == new["objects"]
    assert both["node_labels"] == {"n1": ["a", "b"]}
    assert both["created_namespaces"] == ["x"]


def test_the_plan_names_the_cleanup_before_the_uninstall(tmp_path: Path) -> None:
    resolved = valid(tmp_path, LAB + MESH)
    from deploy.plan import build_resources

    recorded = {**typed.outputs(build_resources(resolved)["addon:mesh"].inputs),
                "applied": applied.record(typed.typed_addons(resolved)["mesh"], [])}
    assert delete_reason(recorded) == (
        "no longer in the lab: delete PeerAuthentication istio-system/default, "
        "unlabel namespace demo (istio.io/dataplane-mode), unlabel namespace shop (istio.io/dataplane-mode); "
        "helm uninstall ztunnel -n istio-system, istio-cni -n istio-system, istiod -n istio-system, "
        "istio-base -n istio-system")
    gpu_recorded = {"releases": [{"release": "gpu-operator", "namespace": "gpu-operator"}],
                    "applied": _record(tmp_path / "g", GPU, "gpu", ("gpu-operator",))}
    assert delete_reason(gpu_recorded) == (
        "no longer in the lab: delete ConfigMap gpu-operator/labdeploy-time-slicing, "
        "unlabel node control-1 (nvidia.com/gpu.deploy.operands), "
        "unlabel node workers-1 (nvidia.com/gpu.deploy.operands), "
        "unlabel node workers-2 (feature.node.kubernetes.io/pci-10de.present, nvidia.com/gpu.deploy.operands); "
        "helm uninstall gpu-operator -n gpu-operator; "
        "delete Namespace gpu-operator (unless a release of the lab is left there)")
    legacy = {"releases": gpu_recorded["releases"]}  # recorded before labdeploy recorded what it applied
    assert delete_reason(legacy) == "no longer in the lab: helm uninstall gpu-operator -n gpu-operator"
