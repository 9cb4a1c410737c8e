"""The cluster through the official ``kubernetes`` client (no kubectl), after kubeadm bootstrap.

    client_for(kubeconfig)                    an ApiClient of its own (no global config)
    apply(api, manifests)                     server-side apply of any kind; "Kind/name" that changed
    delete_object(api, api_version, kind, name, namespace=None) -> bool
    exists(api, api_version, kind, name, namespace=None) -> bool
    remove_labels(api, api_version, kind, name, keys) -> list[str]   JSON merge patch, each key null
    list_names(api, api_version, kind, label_selector="") -> list[str]
    wait_nodes_ready / node_pod_cidrs / wait_pod_cidrs / delete_node / drain      (kube_nodes.py)
    wait_rollout / not_ready_pods                                                 (kube_rollout.py)

Apply: each object is PATCHed with ``application/apply-patch+yaml`` (the JSON body is valid
YAML), ``fieldManager`` and ``force=true``, at the path that API discovery gives for its
``apiVersion``/``kind`` (plural and scope from ``/api/v1`` or ``/apis/<group>/<version>``, as
kubectl resolves them; read once per call). An object counts as changed when its
``metadata.resourceVersion`` after the apply differs from the one read just before (absent
before = created): a real API server keeps the resourceVersion on a no-op apply.

Every failure is a :class:`deploy.errors.StageError` of ``stage`` (default "cluster") naming the
object and the API server's own message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from deploy.cluster.kube_api import Discovery, Resource, request, server_message
from deploy.cluster.kube_nodes import delete_node, drain, node_pod_cidrs, wait_nodes_ready, wait_pod_cidrs
from deploy.cluster.kube_rollout import not_ready_pods, wait_rollout
from deploy.errors import StageError

APPLY = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
ApiClient = client.ApiClient


def client_for(kubeconfig: Path) -> client.ApiClient:
    """An ApiClient for ``kubeconfig``; the file is only read (no token refresh written back)."""
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), persist_config=False
    )
    return api


def object_id(obj: dict[str, Any], resource: Resource | None = None) -> str:
    """``Kind/name``, or ``Kind/namespace/name`` for namespaced objects."""
    meta = obj.get("metadata") or {}
    namespaced = resource.namespaced if resource else "namespace" in meta
    ns = f"{meta.get('namespace') or 'default'}/" if namespaced else ""
    return f"{obj.get('kind')}/{ns}{meta.get('name')}"


def apply(
    api: client.ApiClient, manifests: list[dict[str, Any]], field_manager: str = "labdeploy", *, stage: str = "cluster",
    dry_run: bool = False,
) -> list[str]:
    """Server-side apply each manifest in order; the ids (:func:`object_id`) of those that changed.
    ``dry_run``: the API server validates and admits each one and stores nothing."""
    discovery = Discovery(api, stage)
    changed = []
    for obj in manifests:
        resource = discovery.resource(str(obj.get("apiVersion")), str(obj.get("kind")))
        if apply_one(api, resource, obj, field_manager, stage, dry_run=dry_run):
            changed.append(object_id(obj, resource))
    return changed


def apply_one(api: client.ApiClient, resource: Resource, obj: dict[str, Any], manager: str, stage: str, *,
              dry_run: bool = False) -> bool:
    """Apply one object; whether the API server changed it (created or new resourceVersion)."""
    meta = obj.get("metadata") or {}
    name, namespace = str(meta.get("name") or ""), meta.get("namespace")
    if not name:
        raise StageError(stage, f"cannot apply a {resource.kind} without metadata.name")
    path = resource.path(name, namespace)
    before = _resource_version(api, path, object_id(obj, resource), stage)
    query = [("fieldManager", manager), ("force", True), *([("dryRun", "All")] if dry_run else [])]
    try:
        after = request(api, "PATCH", path, query=query, body=obj, content_type=APPLY)
    except ApiException as exc:
        raise StageError(
            stage,
            f"server-side apply of {object_id(obj, resource)} refused: {server_message(exc)}",
            hint="the API server's message names the field; fix the manifest that produced it",
        ) from exc
    return before is None or (after.get("metadata") or {}).get("resourceVersion") != before


def _resource_version(api: client.ApiClient, path: str, what: str, stage: str) -> str | None:
    """The stored object's resourceVersion ("" when it has none), None when it does not exist."""
    try:
        current = request(api, "GET", path)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise StageError(stage, f"reading {what} before applying it: {server_message(exc)}") from exc
    return str((current.get("metadata") or {}).get("resourceVersion") or "")


def delete_object(
    api: client.ApiClient,
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None = None,
    *,
    stage: str = "cluster",
) -> bool:
    """Delete one object (background propagation); False when it was already gone (or the API server
    serves no such kind any more: its CRD went, and the object with it)."""
    resource = Discovery(api, stage).find(api_version, kind)
    if resource is None:
        return False
    try:
        request(api, "DELETE", resource.path(name, namespace), query=[("propagationPolicy", "Background")])
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise StageError(stage, f"deleting {kind}/{name}: {server_message(exc)}") from exc
    return True


def exists(api: client.ApiClient, api_version: str, kind: str, name: str, namespace: str | None = None, *,
           stage: str = "cluster") -> bool:
    """Whether the object is stored (False also when its kind is not served)."""
    resource = Discovery(api, stage).find(api_version, kind)
    if resource is None:
        return False
    return _resource_version(api, resource.path(name, namespace), f"{kind}/{name}", stage) is not None


def remove_labels(api: client.ApiClient, api_version: str, kind: str, name: str, keys: list[str], *,
                  stage: str = "cluster") -> list[str]:
    """Remove the label ``keys`` of a cluster-scoped object (a JSON merge patch setting each to null);
    the keys it had. Nothing when the object is gone or has none of them."""
    path = Discovery(api, stage).resource(api_version, kind).path(name)
    try:
        labels = (request(api, "GET", path).get("metadata") or {}).get("labels") or {}
    except ApiException as exc:
        if exc.status == 404:
            return []
        raise StageError(stage, f"reading {kind}/{name}: {server_message(exc)}") from exc
    present = sorted(k for k in keys if k in labels)
    if present:
        _merge_patch(api, path, {"metadata": {"labels": dict.fromkeys(present)}}, f"{kind}/{name}", stage)
    return present


def _merge_patch(api: client.ApiClient, path: str, body: dict[str, Any], what: str, stage: str) -> None:
    try:
        request(api, "PATCH", path, body=body, content_type=MERGE_PATCH)
    except ApiException as exc:
        if exc.status != 404:  # gone meanwhile: nothing left to patch
            raise StageError(stage, f"patching {what}: {server_message(exc)}") from exc


def list_names(
    api: client.ApiClient, api_version: str, kind: str, label_selector: str = "", *, stage: str = "cluster"
) -> list[str]:
    """Names of the objects of ``kind`` (all namespaces) matching ``label_selector``, sorted."""
    resource = Discovery(api, stage).resource(api_version, kind)
    base = resource.path()
    if resource.namespaced:  # /api/v1/namespaces/default/pods -> /api/v1/pods
        base = base.replace("/namespaces/default", "", 1)
    query = [("labelSelector", label_selector)] if label_selector else []
    try:
        listing = request(api, "GET", base, query=query)
    except ApiException as exc:
        raise StageError(stage, f"listing {kind} in {api_version}: {server_message(exc)}") from exc
    return sorted(str((item.get("metadata") or {}).get("name")) for item in listing.get("items") or [])


__all__ = [
    "ApiClient",
    "Resource",
    "apply",
    "client_for",
    "delete_node",
    "delete_object",
    "drain",
    "exists",
    "list_names",
    "node_pod_cidrs",
    "not_ready_pods",
    "remove_labels",
    "request",
    "wait_nodes_ready",
    "wait_pod_cidrs",
    "wait_rollout",
]
