"""`validate` refuses typed add-ons that Cilium, Istio or the GPU operator would refuse or never reach,
each at the line of the key to change."""

from __future__ import annotations

from pathlib import Path

from tests.unit.labfiles import only, problems_of, valid
from tests.unit.test_typed_addons import LAB

# kubernetes: is line 13 of LAB; the lines the tests append start at 17


def test_kube_proxy_replacement_needs_an_api_address_pods_reach(tmp_path: Path) -> None:
    lab = LAB.replace("networks: [mgmt, {network: labnet, ip: 10.20.0.10}]", "networks: [mgmt]") + \
        "  cni: {cilium: {version: 1.17.0, kube_proxy_replacement: true}}\n"
    problem = only(tmp_path, lab)
    assert problem.location.path == "kubernetes.cni.cilium.kube_proxy_replacement"
    assert problem.location.line == 17
    assert "control-1 has no address on a lab network" in problem.message
    assert "kubernetes.vip" in problem.hint
    valid(tmp_path, lab.replace("kube_proxy_replacement: true", "kube_proxy_replacement: false"))


def test_istio_ambient_refuses_an_exclusive_cilium_and_a_mesh_needs_a_cni(tmp_path: Path) -> None:
    lab = LAB + ("  cni: {cilium: {version: 1.17.0, values: {cni: {exclusive: true}}}}\n"
                 "  mesh: {istio: {version: 1.24.0, mode: ambient}}\n")
    problem = only(tmp_path, lab)
    assert (problem.location.path, problem.location.line) == ("kubernetes.cni.cilium.values", 17)
    assert "cni.exclusive: true makes Cilium remove every other CNI configuration" in problem.message
    valid(tmp_path, lab.replace("mode: ambient", "mode: sidecar"))
    valid(tmp_path, lab.replace("exclusive: true", "exclusive: false"))
    bare = LAB.replace("  workers: workers\n", "") + "  mesh: {istio: {version: 1.24.0}}\n"
    problem = only(tmp_path, bare)
    assert problem.message == "a service mesh needs a CNI, and kubernetes.cni is not set"
    valid(tmp_path, bare + "  cni: {bridge: {}}\n")  # istio-cni chains onto the bridge CNI as onto any other


def test_gpu_operator_mistakes_are_named_at_their_keys(tmp_path: Path) -> None:
    lab = LAB + "  cni: {bridge: {}}\n  gpu_operator:\n    version: v24.9.0\n"
    mixed = only(tmp_path, lab + "    mig_strategy: mixed\n")
    assert (mixed.location.path, mixed.location.line) == ("kubernetes.gpu_operator.mig_strategy", 20)
    assert "mig_profiles is not set" in mixed.message
    idle = only(tmp_path, lab + "    mig_profiles: {1g.10gb: 7}\n")
    assert idle.location.path == "kubernetes.gpu_operator.mig_profiles"
    assert "mig_strategy is none" in idle.message
    zero = only(tmp_path, lab + "    mig_strategy: single\n    mig_profiles: {1g.10gb: 0}\n")
    assert zero.location.path == "kubernetes.gpu_operator.mig_profiles.1g.10gb"
    precompiled = only(tmp_path, lab + "    driver: precompiled\n")
    assert precompiled.location.path == "kubernetes.gpu_operator.driver"
    assert "driver_version" in precompiled.hint
    slicing = only(tmp_path, lab + "    time_slicing: {replicas: 0}\n")
    assert slicing.location.line == 20
    assert "at least 1 pod" in slicing.message
    no_gpus = only(tmp_path, lab.replace('  workers-2: {gpus: [{pci: "0000:3b:00.0"}]}\n', "  workers-2: {}\n"))
    assert no_gpus.message == "the GPU operator needs at least one node with gpus:"


def test_typed_versions_must_be_chart_versions(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, LAB + "  cni: {cilium: {version: '1.17'}}\n"
                           "  gpu_operator: {version: latest}\n")
    assert [(p.location.path, p.message) for p in problems] == [
        ("kubernetes.cni.cilium.version", "cni.cilium.version '1.17' is not a chart version"),
        ("kubernetes.gpu_operator.version", "gpu_operator.version 'latest' is not a chart version")]


def test_an_addons_entry_cannot_take_a_typed_release_and_a_mirror_must_hold_each_typed_chart(tmp_path: Path) -> None:
    lab = LAB + ("  cni: {cilium: {version: 1.17.0}}\naddons:\n"
                 "  - {name: cilium, chart: cilium, version: 1.0.0, namespace: kube-system, repo: https://x.example}\n")
    taken = only(tmp_path, lab)
    assert (taken.location.path, taken.location.line) == ("addons[0].name", 19)
    assert "the release the typed add-on cni installs" in taken.message
    valid(tmp_path, lab.replace("namespace: kube-system", "namespace: other"))
    (tmp_path / "charts").mkdir()
    missing = only(tmp_path, LAB + "  cni: {cilium: {version: 1.17.0}}\nmirrors: {charts: charts}\n")
    assert missing.location.path == "kubernetes.cni.cilium.version"
    assert missing.message.startswith("cni: chart archive cilium-1.17.0.tgz (release cilium) is not in mirrors.charts")
    assert missing.hint == "`helm pull https://helm.cilium.io/ cilium --version 1.17.0` into that folder"
