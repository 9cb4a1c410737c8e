"""The ``addons`` stage for the lab's Helm releases: ``helm upgrade --install``, and uninstall on removal.

Helm is the bundle's (``deploy bundle build`` makes it); it runs on the host with the kubeconfig the
cluster stage wrote, and keeps its own cache under the state folder. The values file is written
next to it (0600: values may carry what a chart treats as secret) and handed to helm as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy.addons import charts, releases, values
from deploy.addons.helm import STAGE, Helm, Release
from deploy.atomic import atomic_write
from deploy.errors import StageError
from deploy.model.schema_addons import AddonSpec
from deploy.resources import Outputs, Resource


def is_release(resource: Resource) -> bool:
    return "chart" in resource.inputs


def install(resource: Resource, ctx: Any) -> Outputs:
    addon = _spec(ctx, resource.name)
    lab_dir = Path(ctx.lab_file).parent
    values_file = ctx.state_dir / "addons" / f"{addon.name}.values.yaml"
    values_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(values_file, values.render(addon, lab_dir).encode(), 0o600)
    source = charts.source(addon, ctx.resolved.lab.mirrors.charts, lab_dir)
    release = Release(addon.name, addon.namespace, source, values_file, addon.wait, addon.timeout, addon.atomic)
    helm = helm_for(ctx)
    recorded = ctx.outputs_of(resource.id)
    if recorded.get("release") and recorded.get("namespace") != addon.namespace:  # moved: the old one goes first
        helm.uninstall(recorded["release"], recorded["namespace"])
    helm.upgrade(release)
    return releases.outputs(resource.inputs)


def teardown_addon(_provider: object, name: str, ctx: Any) -> None:
    """``helm uninstall`` of a release the lab no longer has (nothing when the whole lab goes)."""
    recorded = ctx.outputs_of(f"addon:{name}")
    if ctx.destroying or "release" not in recorded:
        return  # the cluster goes with its machines; the typed add-ons are no Helm releases
    helm_for(ctx).uninstall(recorded["release"], recorded["namespace"])


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
