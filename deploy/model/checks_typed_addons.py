"""The typed add-ons at ``validate``: what Cilium, Istio or the GPU operator would refuse, or never reach.

    check_typed_versions     each chart version is a SemVer version (Helm pins charts by it)
    check_cilium_endpoint    kube-proxy replacement needs an API address pods reach without kube-proxy:
                             kubernetes.vip or the first control plane's lab address
    check_mesh_cni           a mesh needs a CNI; Istio ambient chains istio-cni onto it, which Cilium
                             allows only with cni.exclusive false
    check_gpu_operator       GPU nodes exist; MIG mixed has profiles, profiles have a MIG strategy;
                             precompiled drivers name their branch
    check_typed_release_names  an addons: entry does not take a typed add-on's release name and namespace
    check_typed_charts       with mirrors.charts a folder, each typed release's archive is in it
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from deploy.errors import Problem
from deploy.model.load import LoadedLab
from deploy.model.problems import problem
from deploy.model.resolve import ResolvedLab
from deploy.model.schema_addons import SEMVER

CILIUM = ("kubernetes", "cni", "cilium")
ISTIO = ("kubernetes", "mesh", "istio")
GPU = ("kubernetes", "gpu_operator")


def _typed_specs(resolved: ResolvedLab) -> list[tuple[tuple[str, ...], Any]]:
    k8s = resolved.lab.kubernetes
    if k8s is None:
        return []
    specs = [(CILIUM, k8s.cni.cilium if k8s.cni else None), (ISTIO, k8s.mesh.istio if k8s.mesh else None),
             (GPU, k8s.gpu_operator)]
    return [(where, spec) for where, spec in specs if spec is not None]


def _versions_ok(resolved: ResolvedLab) -> bool:
    """Whether the typed add-ons' releases can be built (each version a chart version)."""
    return all(SEMVER.match(spec.version) for _where, spec in _typed_specs(resolved))


def check_typed_versions(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    for where, spec in _typed_specs(resolved):
        if not SEMVER.match(spec.version):
            yield problem(loaded, (*where, "version"), f"{'.'.join(where[1:])}.version {spec.version!r} is not a "
                          "chart version", "write the chart's exact SemVer version, e.g. 1.17.0 (or v24.9.0)")


def check_cilium_endpoint(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    from deploy.addons.typed import api_endpoint, first_control_plane

    k8s = resolved.lab.kubernetes
    cilium = k8s.cni.cilium if k8s and k8s.cni else None
    if cilium is None or not cilium.kube_proxy_replacement or api_endpoint(resolved) is not None:
        return
    yield problem(loaded, (*CILIUM, "kube_proxy_replacement"),
                  "Cilium's kube-proxy replacement needs an API server address its agents reach without kube-proxy, "
                  f"and {first_control_plane(resolved) or 'the control plane'} has no address on a lab network "
                  "(nat or isolated) and kubernetes.vip is not set",
                  "give the control plane a fixed ip: on a lab network, set kubernetes.vip, or turn "
                  "kube_proxy_replacement off")


def check_mesh_cni(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    k8s = resolved.lab.kubernetes
    istio = k8s.mesh.istio if k8s and k8s.mesh else None
    if k8s is None or istio is None:
        return
    if k8s.cni is None:
        yield problem(loaded, ("kubernetes", "mesh"), "a service mesh needs a CNI, and kubernetes.cni is not set",
                      "add kubernetes.cni: {bridge: {}} or {cilium: {version: ...}}")
        return
    cilium = k8s.cni.cilium
    exclusive = (cilium.values.get("cni") or {}).get("exclusive") if cilium else None
    if istio.mode == "ambient" and exclusive is True:
        yield problem(loaded, (*CILIUM, "values"),
                      "Istio ambient chains its istio-cni plugin onto the cluster's CNI, and cni.exclusive: true "
                      "makes Cilium remove every other CNI configuration",
                      "drop cni.exclusive from kubernetes.cni.cilium.values (labdeploy sets it false for ambient), "
                      "or use mesh.istio.mode: sidecar")


def check_gpu_operator(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    k8s = resolved.lab.kubernetes
    gpu = k8s.gpu_operator if k8s else None
    if gpu is None:
        return
    if gpu.mig_strategy == "mixed" and not gpu.mig_profiles:
        yield problem(loaded, (*GPU, "mig_strategy"), "mig_strategy: mixed needs the MIG devices to create, and "
                      "mig_profiles is not set", "add mig_profiles: {3g.40gb: 1, 4g.40gb: 1} (profiles of your GPU "
                      "model; nvidia-smi mig -lgip lists them)")
    if gpu.mig_profiles and gpu.mig_strategy == "none":
        yield problem(loaded, (*GPU, "mig_profiles"), "mig_profiles split GPUs into MIG devices, and mig_strategy is "
                      "none, so the device plugin would not show them", "set mig_strategy: single or mixed")
    for profile, count in gpu.mig_profiles.items():
        if count < 1:
            yield problem(loaded, (*GPU, "mig_profiles", profile), f"MIG profile {profile} asks for {count} devices",
                          "give each profile 1 or more devices, or remove it")
    if gpu.driver == "precompiled" and not gpu.driver_version:
        yield problem(loaded, (*GPU, "driver"), "precompiled driver containers are chosen by driver branch, and "
                      "driver_version is not set", "add driver_version: the branch, e.g. \"550\"")


def check_typed_release_names(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    from deploy.addons.typed import typed_addons

    if not _versions_ok(resolved):
        return
    taken = {(spec.name, spec.namespace): name for name, addon in typed_addons(resolved).items()
             for spec in addon.releases}
    for index, entry in enumerate(resolved.lab.addons):
        owner = taken.get((entry.name, entry.namespace))
        if owner is not None:
            yield problem(loaded, ("addons", index, "name"), f"add-on {entry.name} in namespace {entry.namespace} is "
                          f"the release the typed add-on {owner} installs", "pick another release name or namespace")


def check_typed_charts(loaded: LoadedLab, resolved: ResolvedLab) -> Iterator[Problem]:
    from deploy.addons.typed import typed_addons
    from deploy.model.checks_addons import chart_folder

    charts = resolved.lab.mirrors.charts
    folder = chart_folder(loaded.file.parent, charts) if charts else None
    if folder is None or not folder.is_dir() or not _versions_ok(resolved):
        return  # a URL, or a folder check_addon_sources already refused
    where = {"cni": CILIUM, "mesh": ISTIO, "gpu": GPU}
    for name, addon in typed_addons(resolved).items():
        for spec in addon.releases:
            archive = f"{spec.chart}-{spec.version}.tgz"
            if not (folder / archive).is_file():
                yield problem(loaded, (*where[name], "version"), f"{name}: chart archive {archive} (release "
                              f"{spec.name}) is not in mirrors.charts {folder}",
                              f"`helm pull {spec.repo} {spec.chart} --version {spec.version}` into that folder")


TYPED_ADDON_CHECKS = [check_typed_versions, check_cilium_endpoint, check_mesh_cni, check_gpu_operator,
                      check_typed_release_names, check_typed_charts]
