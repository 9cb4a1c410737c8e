"""Istio as the lab's mesh: the charts of https://istio-release.storage.googleapis.com/charts.

Istio's "Install with Helm" guides (1.24) install, in this order and all in istio-system:

    ambient   istio-base (base), istiod (istiod, profile=ambient), istio-cni (cni, profile=ambient),
              ztunnel (ztunnel)
    sidecar   istio-base (base), istiod (istiod)

and optionally istio-ingress (gateway) in istio-ingress; labs have no load balancer, so its Service is
a NodePort. Around the charts labdeploy creates: the namespaces the lab enrols, labelled
``istio.io/dataplane-mode=ambient`` or ``istio-injection=enabled`` (before the releases, so istiod's
first reconciliation sees them), and the mesh-wide PeerAuthentication ``istio-system/default`` with
the lab's mTLS mode (after base installed its CRD). The lab's ``mesh.istio.values`` go over istiod's.
"""

from __future__ import annotations

from typing import Any

from deploy.addons.typed import TypedAddon
from deploy.addons.values import merge
from deploy.model.resolve import ResolvedLab
from deploy.model.schema_addons import AddonSpec
from deploy.model.schema_kubernetes import IstioSpec

REPO = "https://istio-release.storage.googleapis.com/charts"
NAMESPACE = "istio-system"
GATEWAY_NAMESPACE = "istio-ingress"
TIMEOUT = 600
AMBIENT_LABEL = ("istio.io/dataplane-mode", "ambient")
SIDECAR_LABEL = ("istio-injection", "enabled")


def releases(spec: IstioSpec) -> list[AddonSpec]:
    ambient = spec.mode == "ambient"
    profile: dict[str, Any] = {"profile": "ambient"} if ambient else {}

    def chart(name: str, chart_name: str, values: dict[str, Any], namespace: str = NAMESPACE) -> AddonSpec:
        return AddonSpec(name=name, chart=chart_name, version=spec.version, repo=REPO, namespace=namespace,
                         values=values, timeout=TIMEOUT)

    out = [chart("istio-base", "base", {"defaultRevision": "default"}),
           chart("istiod", "istiod", merge(profile, spec.values))]
    if ambient:
        out += [chart("istio-cni", "cni", profile), chart("ztunnel", "ztunnel", {})]
    if spec.ingress_gateway:
        out.append(chart("istio-ingress", "gateway", {"service": {"type": "NodePort"}}, GATEWAY_NAMESPACE))
    return out


def namespaces(spec: IstioSpec) -> list[dict[str, Any]]:
    key, value = AMBIENT_LABEL if spec.mode == "ambient" else SIDECAR_LABEL
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {key: value}}}
            for name in dict.fromkeys(spec.namespaces)]


def peer_authentication(spec: IstioSpec) -> dict[str, Any]:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": NAMESPACE}, "spec": {"mtls": {"mode": spec.mtls}}}


def addon(_resolved: ResolvedLab, spec: IstioSpec) -> TypedAddon:
    return TypedAddon("mesh", tuple(releases(spec)), before=tuple(namespaces(spec)),
                      after=(peer_authentication(spec),))
