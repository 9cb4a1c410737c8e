"""The ``addon:<name>`` resources of a lab, and how the plan words their changes.

    resources(resolved, joined, built)   the typed add-ons and the ``addons:`` entries, in dependency order:
                                          addon:cni after the cluster; every other add-on after addon:cni
                                          (CNI -> everything), an entry also after its after: names and the
                                          bundle step that builds helm (when this run builds it)
    order_only(resource, dep)             a Helm add-on's add-on dependencies only order its install
    update_reason / delete_reason         "cilium: upgrade 1.16.5 → 1.17.0", "no longer in the lab: helm uninstall ..."
                                          (a typed add-on's also names the objects and labels it removes first)

Their inputs: the bridge CNI and the RuntimeClasses hash their spec and the nodes; a Helm-installed add-on
hashes each release's chart identity and rendered values (:mod:`deploy.addons.releases`), and a typed one
also the objects and node labels labdeploy sets around its releases (:mod:`deploy.addons.typed`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy.addons import applied, releases, typed
from deploy.model.resolve import ResolvedLab
from deploy.resources import Resource, ResourceId

CNI = ResourceId("addon", "cni")


def resources(resolved: ResolvedLab, joined: tuple[ResourceId, ...], built: list[Resource]) -> list[Resource]:
    k8s = resolved.lab.kubernetes
    if k8s is None:
        return []
    lab_dir = resolved.lab_dir or Path.cwd()
    helm_typed = typed.typed_addons(resolved)
    nodes = typed.cluster_nodes(resolved)
    spec = k8s.model_dump()
    cni_spec = k8s.cni.model_dump(exclude_defaults=True) if k8s.cni else None  # a new default changes no hash
    wanted = {"cni": cni_spec, "mesh": spec["mesh"], "gpu": spec["gpu_operator"],
              "runtimes": spec["runtimes"] if set(spec["runtimes"]) - {"runc"} else None}
    cni = (CNI,) if wanted["cni"] else ()
    helm = _helm_build(resolved, built, bool(helm_typed))
    out = []
    for name, value in wanted.items():
        if not value:
            continue
        deps = joined if name == "cni" else (*joined, *cni)
        if name in helm_typed:
            out.append(Resource(ResourceId("addon", name), "addon", name, None, (*deps, *helm),
                                typed.inputs(helm_typed[name], resolved.lab.mirrors.charts, lab_dir)))
        else:
            out.append(Resource(ResourceId("addon", name), "addon", name, None, deps, {"spec": value, "nodes": nodes}))
    first = (*joined, *cni, *helm)
    return out + [Resource(ResourceId("addon", a.name), "addon", a.name, None,
                           (*first, *(ResourceId("addon", d) for d in a.after if ResourceId("addon", d) not in first)),
                           releases.inputs(a, resolved.lab.mirrors.charts, lab_dir)) for a in resolved.lab.addons]


def _helm_build(resolved: ResolvedLab, built: list[Resource], typed_helm: bool) -> tuple[ResourceId, ...]:
    """The bundle step that builds helm, where the lab builds its bundle and has Helm releases
    (``typed_helm``: a typed add-on is one)."""
    k8s = resolved.lab.kubernetes
    if k8s is None or not (resolved.lab.addons or typed_helm):
        return ()
    from deploy.bundle import ArtifactKey
    from deploy.bundle.catalog import minor

    step = ResourceId("bundle", str(ArtifactKey("helm", minor(k8s.version).helm)))
    return (step,) if any(r.id == step for r in built) else ()


def is_helm(resource: Resource) -> bool:
    return resource.kind == "addon" and ("chart" in resource.inputs or "releases" in resource.inputs)


def order_only(resource: Resource, dep: ResourceId) -> bool:
    """A Helm add-on's add-on dependencies order installs; their change leaves its own releases as they
    are (a re-run would only add a helm revision that changes nothing)."""
    return dep.kind == "addon" and is_helm(resource)


def update_reason(resource: Resource, recorded: dict[str, Any]) -> str:
    if resource.kind == "addon" and "chart" in resource.inputs:
        return releases.update_reason(resource.inputs, recorded)
    if resource.kind == "addon" and "releases" in resource.inputs:
        return typed.update_reason(resource.inputs, recorded)
    return "inputs changed"


def delete_reason(recorded: dict[str, Any]) -> str:
    if "releases" in recorded:
        return "no longer in the lab: " + "; ".join(_typed_removal(recorded))
    return releases.delete_reason(recorded)


def _typed_removal(recorded: dict[str, Any]) -> list[str]:
    """What removing a typed add-on does, in order: its objects and labels, its releases, its namespaces."""
    found = recorded.get("applied") or {}
    names = ", ".join(f"{r['release']} -n {r['namespace']}" for r in reversed(recorded["releases"]))
    cleanup = ", ".join(applied.describe(found))
    created = ", ".join(found.get("created_namespaces", []))
    return [*([cleanup] if cleanup else []), *([f"helm uninstall {names}"] if names else []),
            *([f"delete Namespace {created} (unless a release of the lab is left there)"] if created else [])]
