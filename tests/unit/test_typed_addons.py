"""Cilium, Istio and the GPU operator as Helm releases: values against fixtures written from the charts'
documented values (each fixture names its chart version), the objects labdeploy creates around them
against the Kubernetes OpenAPI types, and how the plan orders, keeps, upgrades and uninstalls them.

Right by construction: their charts and images cannot be fetched on this machine, so none of these
releases is installed here (the Helm mechanism itself runs for real, tests/integration/test_addons_vm.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.addons import cilium, gpu, typed, values
from deploy.model import open_lab
from deploy.plan import build_resources, make_plan
from deploy.state import LabState, ResourceRecord
from tests.unit import openapi
from tests.unit.labfiles import valid

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "addons" / "k8s-sandbox"
SANDBOX = ROOT / "labs" / "k8s-sandbox" / "lab.yaml"

LAB = """name: lab1
images:
  deb: {build: {}}
networks:
  mgmt: {mode: user}
  labnet: {mode: isolated, cidr: 10.20.0.0/24}
defaults: {image: deb, networks: [mgmt, {network: labnet, ip: 10.20.0.10}]}
groups:
  control: {count: 1}
  workers: {count: 2, networks: [mgmt, {network: labnet, ip: 10.20.0.21}]}
nodes:
  workers-2: {gpus: [{pci: "0000:3b:00.0"}]}
kubernetes:
  version: "1.36"
  control_plane: control
  workers: workers
"""


def _sandbox() -> dict[str, typed.TypedAddon]:
    return typed.typed_addons(open_lab(SANDBOX)[1])


def _values(spec: Any) -> dict[str, Any]:
    return dict(yaml.safe_load(values.render(spec, FIXTURES)))


def _fixture(name: str) -> Any:
    return yaml.safe_load((FIXTURES / name).read_text())


def test_the_sandbox_cilium_release_matches_its_fixture() -> None:
    (release,) = _sandbox()["cni"].releases
    assert (release.name, release.chart, release.version, release.namespace, release.repo) == (
        "cilium", "cilium", "1.17.0", "kube-system", cilium.REPO)
    assert _values(release) == _fixture("cilium.values.yaml")


def test_the_sandbox_mesh_is_istios_ambient_charts_in_order() -> None:
    mesh = _sandbox()["mesh"]
    got = [{"release": r.name, "chart": r.chart, "namespace": r.namespace, "values": _values(r)}
           for r in mesh.releases]
    assert got == _fixture("istio.releases.yaml")
    assert {r.version for r in mesh.releases} == {"1.24.0"}
    assert mesh.before == ({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": "demo", "labels": {"istio.io/dataplane-mode": "ambient"}}},)
    assert mesh.after == ({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                           "metadata": {"name": "default", "namespace": "istio-system"},
                           "spec": {"mtls": {"mode": "STRICT"}}},)


def test_the_sandbox_gpu_operator_matches_its_fixture_and_labels_only_the_gpu_node() -> None:
    addon = _sandbox()["gpu"]
    (release,) = addon.releases
    assert (release.name, release.namespace, release.version) == ("gpu-operator", "gpu-operator", "v24.9.0")
    assert _values(release) == _fixture("gpu-operator.values.yaml")
    assert addon.node_labels == {"control-1": {gpu.OPERANDS_LABEL: "false"}, "workers-1": {gpu.OPERANDS_LABEL: "false"},
                                 "workers-2": {gpu.OPERANDS_LABEL: "true"}}
    assert addon.before == ()  # no time-slicing or MIG layout: nothing to write before the chart


def test_sidecar_istio_has_base_and_istiod_injection_labels_and_an_optional_gateway(tmp_path: Path) -> None:
    lab = LAB + ("  cni: {bridge: {}}\n  mesh: {istio: {version: 1.24.0, mode: sidecar, mtls: PERMISSIVE, "
                 "namespaces: [shop, shop], ingress_gateway: true, values: {pilot: {resources: {}}}}}\n")
    mesh = typed.typed_addons(valid(tmp_path, lab))["mesh"]
    assert [(r.name, r.chart, r.namespace) for r in mesh.releases] == [
        ("istio-base", "base", "istio-system"), ("istiod", "istiod", "istio-system"),
        ("istio-ingress", "gateway", "istio-ingress")]
    assert mesh.releases[1].values == {"pilot": {"resources": {}}}  # the lab's values over labdeploy's (none)
    assert mesh.releases[2].values == {"service": {"type": "NodePort"}}  # no load balancer in a lab
    assert [ns["metadata"]["labels"] for ns in mesh.before] == [{"istio-injection": "enabled"}]  # once
    assert mesh.after[0]["spec"] == {"mtls": {"mode": "PERMISSIVE"}}


def test_cilium_cluster_pool_without_kpr_or_hubble_and_the_labs_values_win(tmp_path: Path) -> None:
    lab = LAB + ("  cni: {cilium: {version: 1.17.0, ipam: cluster-pool, "
                 "values: {operator: {replicas: 3}, hubble: {enabled: true}}}}\n")
    (release,) = typed.typed_addons(valid(tmp_path, lab))["cni"].releases
    assert release.values == {
        "ipam": {"mode": "cluster-pool", "operator": {"clusterPoolIPv4PodCIDRList": ["10.244.0.0/16"]}},
        "kubeProxyReplacement": False, "operator": {"replicas": 3},
        "hubble": {"enabled": True, "relay": {"enabled": False}, "ui": {"enabled": False}}}


def test_kpr_takes_the_vip_when_the_lab_has_one(tmp_path: Path) -> None:
    lab = LAB.replace("count: 1}", "count: 3}").replace(
        "{network: labnet, ip: 10.20.0.10}", "labnet") + "  vip: 10.20.0.5\n  cni: {cilium: {version: 1.17.0, " \
        "kube_proxy_replacement: true}}\n"
    (release,) = typed.typed_addons(valid(tmp_path, lab))["cni"].releases
    assert (release.values["k8sServiceHost"], release.values["k8sServicePort"]) == ("10.20.0.5", 6443)


def test_gpu_time_slicing_mig_profiles_precompiled_drivers_and_nfd_off(tmp_path: Path) -> None:
    lab = LAB + ("  cni: {bridge: {}}\n  gpu_operator: {version: v24.9.0, driver: precompiled, driver_version: '550',"
                 " mig_strategy: mixed, mig_profiles: {3g.40gb: 1, 4g.40gb: 1}, time_slicing: {replicas: 4},"
                 " nfd: false, toolkit: false}\n")
    addon = typed.typed_addons(valid(tmp_path, lab))["gpu"]
    (release,) = addon.releases
    assert release.values == {
        "driver": {"enabled": True, "usePrecompiled": True, "version": "550"}, "mig": {"strategy": "mixed"},
        "nfd": {"enabled": False}, "toolkit": {"enabled": False},
        "devicePlugin": {"config": {"name": gpu.TIME_SLICING_CONFIG, "default": "any"}},
        "migManager": {"config": {"name": gpu.MIG_CONFIG, "default": "all-disabled"}}}
    namespace, slicing, layouts = addon.before
    assert namespace["metadata"] == {"name": "gpu-operator"}
    assert yaml.safe_load(slicing["data"]["any"]) == {
        "version": "v1", "flags": {"migStrategy": "mixed"},
        "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}}}
    assert yaml.safe_load(layouts["data"]["config.yaml"])["mig-configs"][gpu.MIG_LAYOUT] == [
        {"devices": "all", "mig-enabled": True, "mig-devices": {"3g.40gb": 1, "4g.40gb": 1}}]
    assert addon.node_labels["workers-2"] == {gpu.OPERANDS_LABEL: "true", gpu.NFD_GPU_LABEL: "true",
                                              gpu.MIG_LABEL: gpu.MIG_LAYOUT}
    assert addon.node_labels["workers-1"] == {gpu.OPERANDS_LABEL: "false"}  # no gpus: no GPU labels


def test_every_built_in_object_labdeploy_creates_fits_the_kubernetes_openapi_types(tmp_path: Path) -> None:
    from deploy.addons.step import node_label_patches
    from deploy.cluster import runtimeclasses

    lab = LAB + ("  cni: {bridge: {}}\n  mesh: {istio: {version: 1.24.0, namespaces: [a]}}\n"
                 "  gpu_operator: {version: v24.9.0, mig_strategy: mixed, mig_profiles: {1g.10gb: 7},"
                 " time_slicing: {replicas: 2}}\n")
    addons = typed.typed_addons(valid(tmp_path, lab))
    objects = [o for a in addons.values() for o in a.objects if o["kind"] != "PeerAuthentication"]
    objects += node_label_patches(addons["gpu"].node_labels)
    objects += runtimeclasses.manifests(["runc", "gvisor", "kata"])
    assert {o["kind"] for o in objects} == {"Namespace", "ConfigMap", "Node", "RuntimeClass"}
    assert [e for o in objects for e in openapi.errors(o)] == []
    # the check itself: a misspelt field and a wrong type are caught
    assert openapi.errors({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "lables": {}},
                           "data": {"n": 1}}) == ["ConfigMap.metadata.lables: no such field in V1ObjectMeta",
                                                  "ConfigMap.data.n: 1 is not str"]


def _plan_after(resolved_before: Any, resolved_after: Any) -> Any:
    """The plan of ``resolved_after`` once everything of ``resolved_before`` was done."""
    state = LabState(resolved_before.name)
    for rid, res in build_resources(resolved_before).items():
        state.resources[rid] = ResourceRecord(rid, res.kind, res.input_hash, "ok", res.provider, outputs=_outputs(res))
    return make_plan(resolved_after, state)


def _outputs(resource: Any) -> dict[str, Any]:
    if "releases" in resource.inputs:
        return typed.outputs(resource.inputs)
    return {}


def _changes(plan: Any) -> dict[str, tuple[str, str]]:
    return {c.resource_id: (c.action, c.reason) for c in plan.changes if c.action != "keep"}


def test_the_plan_puts_the_cni_first_and_keeps_a_converged_lab() -> None:
    resolved = open_lab(SANDBOX)[1]
    resources = build_resources(resolved)
    for name in ("mesh", "gpu", "runtimes"):
        assert "addon:cni" in resources[f"addon:{name}"].deps
    assert not any(d.startswith("addon:") for d in resources["addon:cni"].deps)
    assert _changes(_plan_after(resolved, resolved)) == {}


def test_a_version_change_plans_the_upgrade_by_release_and_a_dropped_mesh_its_uninstall(tmp_path: Path) -> None:
    base = LAB + "  cni: {cilium: {version: 1.17.0}}\n  mesh: {istio: {version: 1.24.0, mode: ambient}}\n"
    before = valid(tmp_path / "a", base)
    upgraded = valid(tmp_path / "b", base.replace("1.17.0", "1.17.1"))
    assert _changes(_plan_after(before, upgraded)) == {"addon:cni": ("update", "cilium: upgrade 1.17.0 → 1.17.1")}
    sidecar = valid(tmp_path / "c", base.replace("mode: ambient", "mode: sidecar"))
    assert _changes(_plan_after(before, sidecar))["addon:mesh"] == ("update", "istiod: values changed")
    assert _changes(_plan_after(before, sidecar))["addon:cni"] == ("update", "cilium: values changed")  # exclusive
    gone = typed.gone(build_resources(sidecar)["addon:mesh"].inputs,
                      typed.outputs(build_resources(before)["addon:mesh"].inputs))
    assert [r["release"] for r in gone] == ["ztunnel", "istio-cni"]  # uninstalled last installed first
    dropped = valid(tmp_path / "d", base.replace("  mesh: {istio: {version: 1.24.0, mode: ambient}}\n", ""))
    assert _changes(_plan_after(before, dropped))["addon:mesh"] == (
        "delete", "no longer in the lab: helm uninstall ztunnel -n istio-system, istio-cni -n istio-system, "
        "istiod -n istio-system, istio-base -n istio-system")


def test_node_label_changes_and_objects_are_part_of_the_checkpoint(tmp_path: Path) -> None:
    base = LAB + "  cni: {bridge: {}}\n  gpu_operator: {version: v24.9.0}\n"
    before = valid(tmp_path / "a", base)
    nfd_off = valid(tmp_path / "b", base.replace("v24.9.0}", "v24.9.0, nfd: false}"))
    assert _changes(_plan_after(before, nfd_off)) == {"addon:gpu": ("update", "gpu-operator: values changed")}
    sliced = valid(tmp_path / "c", base.replace("v24.9.0}", "v24.9.0, time_slicing: {replicas: 2}}"))
    assert _changes(_plan_after(before, sliced))["addon:gpu"][0] == "update"


@pytest.mark.parametrize("spec", ["cilium", "istio", "gpu"])
def test_a_mirror_folder_supplies_every_typed_chart(tmp_path: Path, spec: str) -> None:
    from deploy.addons import charts

    lab = LAB + "  cni: {cilium: {version: 1.17.0}}\n  mesh: {istio: {version: 1.24.0, mode: ambient}}\n" \
        "  gpu_operator: {version: v24.9.0}\nmirrors: {charts: charts}\n"
    folder = tmp_path / "charts"
    folder.mkdir()
    wanted = {"cilium": ["cilium-1.17.0.tgz"], "gpu": ["gpu-operator-v24.9.0.tgz"],
              "istio": [f"{c}-1.24.0.tgz" for c in ("base", "istiod", "cni", "ztunnel")]}
    for names in wanted.values():
        for name in names:
            (folder / name).write_bytes(name.encode())
    resolved = valid(tmp_path, lab)
    addon = typed.typed_addons(resolved)[{"cilium": "cni", "istio": "mesh", "gpu": "gpu"}[spec]]
    sources = [charts.source(r, "charts", tmp_path) for r in addon.releases]
    assert [Path(s.ref).name for s in sources] == wanted[spec]
    assert all(s.local and s.digest for s in sources)
