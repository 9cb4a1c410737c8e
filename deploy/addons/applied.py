"""What labdeploy applies itself around a typed add-on's Helm releases, recorded so that removing the
add-on (or one of those objects or labels while it stays) leaves nothing behind.

    record(addon, created)        the ``applied`` outputs of ``addon:<name>`` (below)
    union(a, b) / stale(old, new) what two records hold together; what only the older one has
    remove(api, record)           delete the objects (already gone is fine), strip the label keys
    describe(record)              the plan's words: "delete PeerAuthentication istio-system/default, ..."

A record names, never holds, what was applied (no data, so no secret)::

    objects             [{apiVersion, kind, namespace, name}]   in the order applied (removed last first)
    namespace_labels    {namespace: [label keys]}               what a Namespace manifest of the add-on set
    node_labels         {node: [label keys]}
    created_namespaces  [namespace]                             the add-on's own namespaces labdeploy created

A Namespace manifest of a typed add-on only labels the namespace: the lab names it (Istio's enrolled
namespaces) and the user's workloads live there, so it loses its labels and is never deleted. The one
exception is the namespace of the add-on's own releases when labdeploy created it (``gpu-operator``,
applied before the release for its ConfigMaps): it goes after the releases are uninstalled.
"""

from __future__ import annotations

from typing import Any

from deploy.addons.typed import TypedAddon

Record = dict[str, Any]
NAMESPACE = ("v1", "Namespace")


def record(addon: TypedAddon, created: list[str]) -> Record:
    """What ``addon`` applies beyond its releases; ``created``: its own namespaces labdeploy created."""
    return {"objects": [_ref(o) for o in addon.objects if _kind(o) != NAMESPACE],
            "namespace_labels": {_meta(o)["name"]: sorted(_meta(o).get("labels") or {})
                                 for o in addon.objects if _kind(o) == NAMESPACE and _meta(o).get("labels")},
            "node_labels": {node: sorted(labels) for node, labels in addon.node_labels.items() if labels},
            "created_namespaces": sorted(created)}


def own_namespaces(addon: TypedAddon) -> list[str]:
    """The Namespace manifests of ``addon`` that are its releases' namespaces (it may delete these)."""
    homes = {r.namespace for r in addon.releases}
    return [_meta(o)["name"] for o in addon.objects if _kind(o) == NAMESPACE and _meta(o)["name"] in homes]


def union(a: Record, b: Record) -> Record:
    """Everything of both (``b``'s reference of an object both name)."""
    keep = [o for o in a.get("objects", []) if _identity(o) not in {_identity(n) for n in b.get("objects", [])}]
    return {"objects": keep + list(b.get("objects", [])),
            "namespace_labels": _merge_keys(a.get("namespace_labels", {}), b.get("namespace_labels", {})),
            "node_labels": _merge_keys(a.get("node_labels", {}), b.get("node_labels", {})),
            "created_namespaces": sorted({*a.get("created_namespaces", []), *b.get("created_namespaces", [])})}


def stale(old: Record, new: Record) -> Record:
    """What ``old`` applied that ``new`` no longer does. The add-on's own namespaces are not stale while
    it stays (its releases live there)."""
    wanted = {_identity(o) for o in new.get("objects", [])}
    return {"objects": [o for o in old.get("objects", []) if _identity(o) not in wanted],
            "namespace_labels": _minus_keys(old.get("namespace_labels", {}), new.get("namespace_labels", {})),
            "node_labels": _minus_keys(old.get("node_labels", {}), new.get("node_labels", {})),
            "created_namespaces": []}


def remove(api: Any, found: Record, stage: str) -> list[str]:
    """Delete the recorded objects (last applied first), then strip the label keys from namespaces
    and nodes; what changed, in words (nothing on a cluster that is already clean)."""
    from deploy.cluster import kube

    done = [f"deleted {_ref_id(o)}" for o in reversed(found.get("objects", []))
            if kube.delete_object(api, o["apiVersion"], o["kind"], o["name"], o.get("namespace"), stage=stage)]
    for kind, key in (("Namespace", "namespace_labels"), ("Node", "node_labels")):
        for name, keys in sorted(found.get(key, {}).items()):
            removed = kube.remove_labels(api, "v1", kind, name, list(keys), stage=stage)
            done += [f"removed {', '.join(removed)} from {kind} {name}"] if removed else []
    return done


def describe(found: Record) -> list[str]:
    """The cleanup of ``found`` before the releases go, as the plan words it."""
    objects = [f"delete {_ref_id(o)}" for o in reversed(found.get("objects", []))]
    labels = [f"unlabel {kind} {name} ({', '.join(keys)})"
              for kind, key in (("namespace", "namespace_labels"), ("node", "node_labels"))
              for name, keys in sorted(found.get(key, {}).items()) if keys]
    return objects + labels


def _merge_keys(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict[str, list[str]]:
    return {name: sorted({*a.get(name, []), *b.get(name, [])}) for name in sorted({*a, *b})}


def _minus_keys(old: dict[str, list[str]], new: dict[str, list[str]]) -> dict[str, list[str]]:
    out = {name: sorted(set(keys) - set(new.get(name, []))) for name, keys in sorted(old.items())}
    return {name: keys for name, keys in out.items() if keys}


def _ref(obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "namespace": _meta(obj).get("namespace"),
            "name": _meta(obj)["name"]}


def _identity(ref: dict[str, Any]) -> tuple[str, str, str | None, str]:
    """An object whatever its version: the group, not the apiVersion (v1beta1 -> v1 is the same object)."""
    return ref["apiVersion"].rpartition("/")[0], ref["kind"], ref.get("namespace"), ref["name"]


def _ref_id(ref: dict[str, Any]) -> str:
    where = f"{ref['namespace']}/" if ref.get("namespace") else ""
    return f"{ref['kind']} {where}{ref['name']}"


def _kind(obj: dict[str, Any]) -> tuple[str, str]:
    return str(obj.get("apiVersion")), str(obj.get("kind"))


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta
