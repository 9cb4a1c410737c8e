"""The ``addons`` stage for the lab's Helm releases: ``helm upgrade --install``, and uninstall on removal.

An ``addons:`` entry is one release (:func:`install`); a typed add-on (Cilium, Istio, the GPU operator) is
its releases in order with the objects and node labels labdeploy sets around them (:func:`install_typed`):
releases it no longer has are uninstalled first, last installed first.

Helm is the bundle's (``deploy bundle build`` makes it); it runs on the host with the kubeconfig the
cluster stage wrote, and keeps its own cache under the state folder. The values file is written
next to it (0600: values may carry what a chart treats as secret) and handed to helm as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from deploy.addons import charts, releases, values
from deploy.addons.helm import STAGE, Helm, Release
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
    from deploy.cluster import kube
    from deploy.cluster.stage import cluster_api, progress

    addon = typed_addons(ctx.resolved).get(resource.name)
    if addon is None:
        raise StageError(STAGE, f"add-on {resource.name} is not in the lab any more")
    log = progress(ctx)
    helm = helm_for(ctx)
    for old in gone(resource.inputs, ctx.outputs_of(resource.id)):
        log(f"addons: {resource.name}: helm uninstall {old['release']} -n {old['namespace']}")
        helm.uninstall(old["release"], old["namespace"])
    api = cluster_api(ctx) if addon.objects or addon.node_labels else None
    if api is not None and addon.before:
        kube.apply(api, list(addon.before), stage=STAGE)
    for spec in addon.releases:
        log(f"addons: {resource.name}: helm upgrade --install {spec.name} {spec.chart} {spec.version} "
            f"-n {spec.namespace}")
        try:
            _upgrade(helm, spec, ctx)
        except StageError as exc:  # what may be installed by now is recorded (uninstall ignores the missing)
            raise StageError(STAGE, str(exc), hint=exc.hint, left=outputs(resource.inputs)) from None
    if api is not None and addon.after:
        kube.apply(api, list(addon.after), stage=STAGE)
    if api is not None and addon.node_labels:
        kube.apply(api, node_label_patches(addon.node_labels), field_manager=LABEL_MANAGER, stage=STAGE)
    return outputs(resource.inputs)


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
    """``helm uninstall`` of a release the lab no longer has (nothing when the whole lab goes)."""
    recorded = ctx.outputs_of(f"addon:{name}")
    if ctx.destroying:
        return  # the cluster goes with its machines
    installed = recorded.get("releases") or ([recorded] if "release" in recorded else [])
    if not installed:
        return  # the bridge CNI and the RuntimeClasses are no Helm releases
    helm = helm_for(ctx)
    for release in reversed(installed):
        helm.uninstall(release["release"], release["namespace"])


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
