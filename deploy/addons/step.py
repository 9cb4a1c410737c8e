"""The ``addons`` stage for the lab's Helm releases: ``helm upgrade --install``, and uninstall on removal.

An ``addons:`` entry is one release (:func:`install`); a typed add-on (Cilium, Istio, the GPU operator) is
its releases in order with the objects and node labels labdeploy sets around them (:func:`install_typed`):
releases it no longer has are uninstalled first, last installed first, and the objects and labels it
applied on an earlier run but no longer wants are removed last. What it applied is recorded in its
outputs (``applied``, :mod:`deploy.addons.applied`), so that removing the add-on (:func:`teardown_addon`)
deletes those objects and strips those labels before its releases are uninstalled.

Helm is the bundle's (``deploy bundle build`` makes it); it runs on the host with the kubeconfig the
cluster stage wrote, and keeps its own cache under the state folder. The values file is written
next to it (0600: values may carry what a chart treats as secret) and handed to helm as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from deploy.addons import applied, charts, releases, values
from deploy.addons.helm import STAGE, Helm, Release
from deploy.addons.typed import TypedAddon
from deploy.atomic import atomic_write
from deploy.errors import StageError
from deploy.model.schema_addons import AddonSpec
from deploy.resources import Outputs, Resource


def is_release(resource: Resource) -> bool:
    return "chart" in resource.inputs


def is_typed(resource: Resource) -> bool:
    return "releases" in resource.inputs


def install(resource: Resource, ctx: Any) -> Outputs:
    addon = _spec(ctx, resource.name)
    recorded = ctx.outputs_of(resource.id)
    helm = helm_for(ctx)
    if recorded.get("release") and recorded.get("namespace") != addon.namespace:  # moved: the old one goes first
        helm.uninstall(recorded["release"], recorded["namespace"])
    try:
        _upgrade(helm, addon, ctx)
    except StageError as exc:  # helm may have left a failed release: recorded, so dropping the entry uninstalls it
        raise StageError(STAGE, str(exc), hint=exc.hint, left=releases.outputs(resource.inputs)) from None
    return releases.outputs(resource.inputs)


def install_typed(resource: Resource, ctx: Any) -> Outputs:
    from deploy.addons.typed import gone, outputs, typed_addons
    from deploy.cluster.stage import cluster_api

    addon = typed_addons(ctx.resolved).get(resource.name)
    if addon is None:
        raise StageError(STAGE, f"add-on {resource.name} is not in the lab any more")
    earlier = ctx.outputs_of(resource.id).get("applied") or {}
    helm = helm_for(ctx)
    for old in gone(resource.inputs, ctx.outputs_of(resource.id)):
        _say(ctx, resource.name, f"helm uninstall {old['release']} -n {old['namespace']}")
        helm.uninstall(old["release"], old["namespace"])
    api = cluster_api(ctx) if addon.objects or addon.node_labels or earlier else None
    wanted = applied.record(addon, created_namespaces(api, addon, earlier))
    try:
        _converge(addon, api, helm, ctx)
    except StageError as exc:  # what may be installed or applied by now is recorded, so a removal undoes it
        left = {**outputs(resource.inputs), "applied": applied.union(earlier, wanted)}
        raise StageError(STAGE, str(exc), hint=exc.hint, left=left) from None
    for done in applied.remove(api, applied.stale(earlier, wanted), STAGE) if api is not None else []:
        _say(ctx, resource.name, f"{done} (no longer in the lab)")
    return {**outputs(resource.inputs), "applied": wanted}


def _converge(addon: TypedAddon, api: Any, helm: Helm, ctx: Any) -> None:
    """The objects before, the releases in order, the objects after and the node labels."""
    from deploy.cluster import kube

    if addon.before:
        kube.apply(api, list(addon.before), stage=STAGE)
    for spec in addon.releases:
        _say(ctx, addon.name, f"helm upgrade --install {spec.name} {spec.chart} {spec.version} -n {spec.namespace}")
        _upgrade(helm, spec, ctx)
    if addon.after:
        kube.apply(api, list(addon.after), stage=STAGE)
    if addon.node_labels:
        kube.apply(api, node_label_patches(addon.node_labels), field_manager=LABEL_MANAGER, stage=STAGE)


def created_namespaces(api: Any, addon: TypedAddon, earlier: applied.Record) -> list[str]:
    """The add-on's own namespaces labdeploy created: on an earlier run, or now (absent before it applies them)."""
    from deploy.cluster import kube

    before = set(earlier.get("created_namespaces", []))
    return sorted(before | {ns for ns in applied.own_namespaces(addon)
                            if ns not in before and not kube.exists(api, "v1", "Namespace", ns, stage=STAGE)})


def _say(ctx: Any, name: str, message: str) -> None:
    from deploy.cluster.stage import progress

    progress(ctx)(f"addons: {name}: {message}")


LABEL_MANAGER = "labdeploy-addons"  # its own field manager: a label the lab drops is removed by the next apply


def node_label_patches(labels: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """Server-side apply bodies that set only these labels on existing Nodes."""
    return [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": dict(values)}}
            for node, values in sorted(labels.items())]


def _upgrade(helm: Helm, addon: AddonSpec, ctx: Any) -> None:
    lab_dir = Path(ctx.lab_file).parent
    values_file = ctx.state_dir / "addons" / f"{addon.name}.values.yaml"
    values_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(values_file, values.render(addon, lab_dir).encode(), 0o600)
    source = charts.source(addon, ctx.resolved.lab.mirrors.charts, lab_dir)
    try:
        helm.upgrade(Release(addon.name, addon.namespace, source, values_file, addon.wait, addon.timeout,
                             addon.atomic))
    except StageError as exc:
        if not addon.wait or not any(sign in str(exc) for sign in TIMED_OUT):
            raise
        raise StageError(STAGE, f"{exc}\n{_waiting_for(ctx, addon)}", hint=exc.hint) from None


TIMED_OUT = ("context deadline exceeded", "timed out waiting for the condition")


def _waiting_for(ctx: Any, addon: AddonSpec) -> str:
    """What helm --wait was waiting for: the pods of the release's namespace that are not Ready."""
    from deploy.cluster import kube
    from deploy.cluster.stage import cluster_api

    try:
        pods = kube.not_ready_pods(cluster_api(ctx), addon.namespace)
    except (ApiException, HTTPError, OSError, StageError) as exc:
        return f"(the pods of namespace {addon.namespace} could not be read: {exc})"
    if not pods:
        return f"every pod of namespace {addon.namespace} is Ready (helm waited for another resource)"
    return f"not ready in namespace {addon.namespace} after {addon.timeout} s: " + "; ".join(pods)


def teardown_addon(_provider: object, name: str, ctx: Any) -> None:
    """A typed add-on the lab no longer has: the objects labdeploy applied around it deleted and its
    labels stripped, then ``helm uninstall`` of its releases (and of an ``addons:`` entry's release),
    last installed first, then the namespaces labdeploy created for it. Nothing when the whole lab goes."""
    from deploy.cluster.stage import cluster_api

    recorded = ctx.outputs_of(f"addon:{name}")
    if ctx.destroying:
        return  # the cluster goes with its machines
    installed = recorded.get("releases") or ([recorded] if "release" in recorded else [])
    found: applied.Record = recorded.get("applied") or {}
    if not installed and not found:
        return  # the bridge CNI and the RuntimeClasses are no Helm releases
    helm = helm_for(ctx) if installed else None  # before touching the cluster: a missing helm changes nothing
    api = cluster_api(ctx) if found else None
    for done in applied.remove(api, found, STAGE) if found else []:
        _say(ctx, name, done)
    for release in reversed(installed):
        assert helm is not None
        helm.uninstall(release["release"], release["namespace"])
    _delete_namespaces(ctx, api, name, found.get("created_namespaces", []))


def _delete_namespaces(ctx: Any, api: Any, name: str, created: list[str]) -> None:
    """The namespaces labdeploy created for a removed add-on, unless a release of the lab still lives there."""
    from deploy.cluster import kube

    for namespace in sorted(set(created) - _release_namespaces(ctx)):
        if kube.delete_object(api, "v1", "Namespace", namespace, stage=STAGE):
            _say(ctx, name, f"deleted Namespace {namespace}")


def _release_namespaces(ctx: Any) -> set[str]:
    from deploy.addons.typed import typed_addons

    addons: list[AddonSpec] = ctx.resolved.lab.addons
    typed = [r.namespace for t in typed_addons(ctx.resolved).values() for r in t.releases]
    return {a.namespace for a in addons} | set(typed)


def helm_for(ctx: Any) -> Helm:
    from deploy.bundle import ArtifactKey
    from deploy.bundle.catalog import minor
    from deploy.bundle.recipes_tools import HELM_VERSION
    from deploy.bundle.store import BundleStore

    k8s = ctx.resolved.lab.kubernetes  # None when the lab dropped kubernetes: and its releases go with it
    version = minor(k8s.version).helm if k8s is not None else HELM_VERSION
    stored = BundleStore().get(ArtifactKey("helm", version))
    if stored is None:
        raise StageError(STAGE, f"helm {version} is not in the bundle store",
                         hint=f"deploy bundle build --kubernetes {k8s.version if k8s else '<minor>'} makes it")
    kubeconfig = Path(ctx.outputs_of("cluster:kubernetes")["kubeconfig"])
    return Helm(stored.path, ctx.state_dir / "helm", kubeconfig)


def _spec(ctx: Any, name: str) -> AddonSpec:
    addons: list[AddonSpec] = ctx.resolved.lab.addons
    found = next((a for a in addons if a.name == name), None)
    if found is None:
        raise StageError(STAGE, f"add-on {name} is not in the lab any more")
    return found
