"""The typed add-ons of ``kubernetes:`` as sets of Helm releases (Cilium, Istio, the GPU operator).

    typed_addons(resolved) -> dict[str, TypedAddon]    cni / mesh / gpu -> what installs it
    inputs(addon, mirror, lab_dir)                      the checkpoint inputs of ``addon:<name>``

A typed add-on is one or more Helm releases (the same :class:`AddonSpec` an ``addons:`` entry is,
so chart sources, values files and ``mirrors.charts`` work alike), installed in order, plus the
objects labdeploy creates itself around them: ``before`` the releases (a ConfigMap a chart's pods read
at their first start), ``after`` them (objects of the CRDs a chart installs), and labels on nodes.
The values each chart gets are rendered by :mod:`deploy.addons.cilium`, :mod:`deploy.addons.istio`
and :mod:`deploy.addons.gpu`; the lab's ``values:`` of each go over them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.addons import releases
from deploy.model.resolve import ResolvedLab
from deploy.model.schema_addons import AddonSpec


@dataclass(frozen=True)
class TypedAddon:
    name: str  # the resource name: cni | mesh | gpu
    releases: tuple[AddonSpec, ...]
    before: tuple[dict[str, Any], ...] = ()  # applied before the first release
    after: tuple[dict[str, Any], ...] = ()  # applied once every release is installed
    node_labels: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> labels labdeploy sets

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [*self.before, *self.after]


def typed_addons(resolved: ResolvedLab) -> dict[str, TypedAddon]:
    """The Helm-installed typed add-ons of the lab (the bridge CNI and the RuntimeClasses are not Helm's)."""
    from deploy.addons import cilium, gpu, istio

    k8s = resolved.lab.kubernetes
    if k8s is None:
        return {}
    found: dict[str, TypedAddon] = {}
    if k8s.cni and k8s.cni.cilium:
        found["cni"] = cilium.addon(resolved, k8s.cni.cilium)
    if k8s.mesh and k8s.mesh.istio:
        found["mesh"] = istio.addon(resolved, k8s.mesh.istio)
    if k8s.gpu_operator:
        found["gpu"] = gpu.addon(resolved, k8s.gpu_operator)
    return found


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def inputs(addon: TypedAddon, mirror: str | None, lab_dir: Path) -> dict[str, Any]:
    """Each release's inputs (as an ``addons:`` entry's), the objects' digest and the node labels."""
    return {"releases": [releases.inputs(spec, mirror, lab_dir) for spec in addon.releases],
            "objects": digest(addon.objects), "node_labels": addon.node_labels}


def outputs(wanted: dict[str, Any]) -> dict[str, Any]:
    """What the step records: each installed release (as :func:`releases.outputs`), objects and labels
    (the step adds ``applied``, :func:`deploy.addons.applied.record`: what a removal deletes and unlabels)."""
    return {"releases": [releases.outputs(r) for r in wanted["releases"]], "objects": wanted["objects"],
            "node_labels": wanted["node_labels"]}


def gone(wanted: dict[str, Any], recorded: dict[str, Any]) -> list[dict[str, Any]]:
    """Recorded releases the add-on no longer has (or has in another namespace), last installed first."""
    keep = {(r["release"], r["namespace"]) for r in wanted.get("releases", [])}
    return [r for r in reversed(recorded.get("releases", [])) if (r["release"], r["namespace"]) not in keep]


def update_reason(wanted: dict[str, Any], recorded: dict[str, Any]) -> str:
    """The first difference, named by release: ``cilium: upgrade 1.16.5 → 1.17.0``, ``+ ztunnel``, ..."""
    before = {r["release"]: r for r in recorded.get("releases", [])}
    now = {r["release"] for r in wanted["releases"]}
    for release in wanted["releases"]:
        old = before.get(release["release"])
        if old is None:
            return f"+ release {release['release']}"
        if releases.outputs(release) != old:
            return f"{release['release']}: {releases.update_reason(release, old)}"
    for name in before:
        if name not in now:
            return f"- release {name} (helm uninstall)"
    if recorded.get("objects") != wanted["objects"]:
        return "objects changed"
    if recorded.get("node_labels") != wanted["node_labels"]:
        return "node labels changed"
    return "inputs changed"


def first_control_plane(resolved: ResolvedLab) -> str | None:
    k8s = resolved.lab.kubernetes
    planes = sorted(n.name for n in resolved.nodes.values() if k8s and n.group == k8s.control_plane)
    return planes[0] if planes else None


def api_endpoint(resolved: ResolvedLab) -> str | None:
    """The address pods reach the API server at without kube-proxy: the VIP, else the first control
    plane's lab address (what kubeadm advertises); None when the lab gives neither."""
    from deploy.inputs import lab_address

    k8s = resolved.lab.kubernetes
    if k8s is None:
        return None
    if k8s.vip:
        return k8s.vip
    first = first_control_plane(resolved)
    return lab_address(resolved.nodes[first]) if first else None


def cluster_nodes(resolved: ResolvedLab) -> list[str]:
    k8s = resolved.lab.kubernetes
    groups = {k8s.control_plane, *k8s.worker_groups} if k8s else set()
    return sorted(n.name for n in resolved.nodes.values() if n.group in groups)
